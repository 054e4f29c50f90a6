// Configuration in git that refers to the secret (never holds it): a field of a YAML or JSON file
// set to a reference to the new version, such as "${secretId}#${versionId}". Two-phase, with the
// store as the decision:
//   deploy (prepare): a branch rekey/<secret>/<version> with the change, pushed; the base untouched;
//   verify: the manifest's command runs in a clone of that branch;
//   commit (at promote): the base gets the change (fast-forward, or the change made again on a base
//     that moved), and the branch goes;
//   abort (rollback): the base refers to the current version again (if a commit got that far), and
//     the branch goes.
// Every step can be repeated: the branch is named after the rotation's version, its commit has the
// version's date (so the same change is the same commit), and each step first looks at what is there.
// The repository's content is untrusted: hooks never run, the file is bounded and must be a plain
// file inside the clone, and nothing from the repository is executed but the manifest's command.
import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, sep } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { isMap, isScalar, parse, parseDocument } from 'yaml';
import { isRekeyVersionId } from '../../lib/version-token';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween } from '../../lib/schema';
import { textOf, type Consumer, type Health, type VersionRef } from '../provider';
import { readCurrent, storeSchema } from '../stores';
import { runBounded, type Exited } from './process';

const MAX_FILE_BYTES = 1024 * 1024;
const PUSH_ATTEMPTS = 5;

const gitUrl = z
  .string()
  .max(2000)
  .refine((url) => /^(file|git|ssh|https):\/\//.test(url), 'must be a file://, git://, ssh:// or https:// URL')
  .refine((url) => !URL.canParse(url) || !new URL(url).password, 'must not carry a password; put a token in credentials (a store reference)');

/** A field path such as "database.passwordRef" or "spec.env[0].value" split into keys and indexes. */
export const fieldPath = z
  .string()
  .max(500)
  .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+|\[\d{1,4}\])*$/, 'must be a field path such as database.passwordRef or env[0].value');

/** What the field is set to: text with ${versionId}, ${secretId} and ${secret}; nothing else is filled. */
export const reference = z
  .string()
  .min(1)
  .max(500)
  .refine((text) => [...text.matchAll(/\$\{([^}]*)\}/g)].every((m) => ['versionId', 'secretId', 'secret'].includes(m[1])), 'may use ${versionId}, ${secretId} and ${secret} only')
  .refine((text) => text.split('${versionId}').length === 2, 'must contain ${versionId} once (it changes, and says which version it names)');

/** A branch name git and GitHub both take. */
export const branchName = z
  .string()
  .regex(/^[A-Za-z0-9._/-]{1,200}$/, 'must be a branch name')
  .refine((b) => !b.includes('..') && !b.startsWith('-') && !b.endsWith('/') && !b.endsWith('.lock'), 'must be a branch name');
/** A file's path relative to the repository's root, never outside it or in .git. */
export const pathInRepository = z
  .string()
  .min(1)
  .max(500)
  .refine((p) => !p.startsWith('/') && !normalize(p).split(sep).includes('..') && !p.split('/').includes('.git'), 'must be a path inside the repository');
/** Field path -> reference; at least one. */
export const fieldsToSet = z.record(fieldPath, reference).refine((s) => Object.keys(s).length > 0 && Object.keys(s).length <= 20, 'must set 1 to 20 fields');
export const commitAuthor = z.object({ name: z.string().min(1).max(100).regex(/^[^<>\n]+$/), email: z.string().max(200).regex(/^[^<>\s]+@[^<>\s]+$/) }).strict().default({ name: 'rekey', email: 'rekey@localhost' });

export const gitopsConsumerSchema = z
  .object({
    type: z.literal('gitops'),
    name: z.string().min(1),
    repository: gitUrl,
    /** An https token, sent as an Authorization header (never in the URL, the argv or a log). */
    credentials: z.object({ store: storeSchema, field: z.string().min(1).default('token') }).strict().optional(),
    /** A private git server's CA (PEM file on the worker), for https:// repositories. */
    tls: z.object({ ca: z.string().min(1).max(500).refine((p) => p.startsWith('/'), 'must be an absolute path') }).strict().optional(),
    /** The base branch the change lands on at promote. */
    branch: branchName.default('main'),
    /** The file to change, relative to the repository's root. */
    path: pathInRepository,
    set: fieldsToSet,
    /**
     * Sign rekey's commits with this SSH private key (OpenSSH format, read from the store for each
     * commit, written only to the private temp folder of the clone): git's gpg.format=ssh.
     */
    signingKey: z.object({ store: storeSchema, field: z.string().min(1).default('value') }).strict().optional(),
    author: commitAuthor,
    /** Run in a clone of the prepared branch (exit 0: healthy), with PATH, HOME and REKEY_* only. */
    verify: z.string().min(1).max(2000).optional(),
    commandTimeout: durationBetween('1s', '1h').default('2m'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    // The token is a header: over anything but https it would travel in clear or reach a local repository's hooks.
    if (spec.credentials && !spec.repository.startsWith('https://')) ctx.addIssue({ code: 'custom', path: ['credentials'], message: 'is for https:// repositories only' });
  });
export type GitopsConsumerSpec = z.infer<typeof gitopsConsumerSchema>;

/** `value` as YAML (and JSON, for double quotes) in the quoting the old value had; plain only where it reads back as the same text. */
function quoted(value: string, type: string | undefined): string {
  if (type === 'QUOTE_SINGLE') return `'${value.replaceAll("'", "''")}'`;
  if (type === 'PLAIN' && /^[A-Za-z0-9_./@-][A-Za-z0-9_./:#@-]*$/.test(value) && parse(`k: ${value}`)?.k === value) return value;
  return JSON.stringify(value);
}

const fill = (template: string, v: VersionRef) => template.replaceAll('${versionId}', v.versionId).replaceAll('${secretId}', v.storeRef).replaceAll('${secret}', v.secret);

/** The version id a value built from `template` names (for this secret and store), if it is one. */
function referencedVersion(value: string, template: string, v: VersionRef): string | undefined {
  const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = template
    .split(/(\$\{versionId\}|\$\{secretId\}|\$\{secret\})/)
    .map((part) => (part === '${versionId}' ? '([0-9A-Za-z-]{1,64})' : part === '${secretId}' ? literal(v.storeRef) : part === '${secret}' ? literal(v.secret) : literal(part)))
    .join('');
  return new RegExp(`^${pattern}$`).exec(value)?.[1];
}

const isJson = (text: string) => {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
};

/** A file of the repository rekey will not edit: a person must look (retrying changes nothing). */
export const refusedEdit = (spec: { name: string }, message: string) => ApplicationFailure.nonRetryable(`consumer ${spec.name}: ${message}`, 'ConsumerUnhealthy');

/**
 * `text` (the YAML or JSON file at `spec.path`) with each field of `spec.set` referring to `ref`,
 * everything else byte for byte; undefined when it already does. With `onlyFromRekey`, a field
 * changes only if it refers to another version rekey made: what a person wrote is never overwritten.
 */
export function editedText(spec: { name: string; path: string; set: Record<string, string> }, text: string, ref: VersionRef, onlyFromRekey = false): string | undefined {
  const refusedFile = (message: string) => refusedEdit(spec, message);
  const doc = parseDocument(text, { keepSourceTokens: true, uniqueKeys: true });
  if (doc.errors.length) throw refusedFile(`${spec.path} is not valid YAML or JSON (${doc.errors[0].message.split('\n')[0].slice(0, 200)})`);
  if (!isMap(doc.contents)) throw refusedFile(`${spec.path} is not a mapping`);
  const fields = Object.entries(spec.set).map(([path, template]) => {
    const keys = [...path.matchAll(/([A-Za-z0-9_-]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1]));
    const node = doc.getIn(keys, true);
    // A text value in plain or quoted style, nothing that other fields share (an anchor) or that
    // spans lines (a block scalar): the edit is then one value in one place.
    if (!isScalar(node) || typeof node.value !== 'string' || !node.range || node.anchor || node.tag || !['PLAIN', 'QUOTE_DOUBLE', 'QUOTE_SINGLE'].includes(node.type ?? '')) {
      throw refusedFile(`${spec.path}: ${path} is not a single text value (plain or quoted, without anchor or tag)`);
    }
    return { path, keys, node, value: fill(template, ref), was: referencedVersion(node.value, template, ref) };
  });
  // Reverting, only fields that name another of rekey's versions change: a person's pin stays.
  const changing = fields.filter((f) => f.node.value !== f.value && (!onlyFromRekey || (f.was !== undefined && f.was !== ref.versionId && isRekeyVersionId(f.was))));
  // Each value is replaced where it stands in the text, in its own quoting: everything else of
  // the file (comments, spacing, key order, line width) stays byte for byte.
  const edits = changing.map((f) => ({ start: f.node.range![0], end: f.node.range![1], text: quoted(f.value, f.node.type) }));
  if (!edits.length) return undefined;
  let out = text;
  for (const e of edits.sort((x, y) => y.start - x.start)) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  // Read back: the new text must mean the old file with exactly these fields changed.
  const expected = parseDocument(text);
  for (const f of changing) expected.setIn(f.keys, f.value);
  const reread = parseDocument(out, { uniqueKeys: true });
  const jsonStill = !text.trimStart().startsWith('{') || isJson(out);
  if (reread.errors.length || !jsonStill || JSON.stringify(reread.toJS()) !== JSON.stringify(expected.toJS())) {
    throw refusedFile(`${spec.path}: the change would not read back as intended; nothing was written`);
  }
  return out;
}

/** The branch a rotation prepares: one per rotation (its version id), never shared. */
export const branchFor = (secret: string, versionId: string) => `rekey/${secret}/${versionId}`;

/** rekey's commit message: it names the version, and where the value is, never the value. */
export const commitMessage = (ref: VersionRef, what: string) => `rekey: ${ref.secret} ${what} ${ref.versionId}\n\nMade by rekey for a rotation of ${ref.secret}; the value itself is in ${ref.storeRef}.`;

export function gitopsConsumer(spec: GitopsConsumerSpec): Consumer {
  const commandTimeoutMs = parseDuration(spec.commandTimeout);
  /** When the step this consumer works for must be done (commit, abort): no git call outlives it. */
  let deadline: number | undefined;
  const timeoutMs = () => Math.max(1_000, Math.min(commandTimeoutMs, deadline === undefined ? Infinity : deadline - Date.now()));

  let token: Promise<string | undefined> | undefined;
  /** git with the repository's hooks, the user's and the system's configuration out of the way. */
  async function git(cwd: string, args: string[], signal?: AbortSignal, extraEnv: Record<string, string> = {}): Promise<Exited> {
    token ??= spec.credentials ? readCurrent(spec.credentials.store).then((c) => textOf(c, spec.credentials!.field)) : Promise.resolve(undefined);
    const bearer = await token;
    if (spec.credentials && !bearer) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: the credentials store has no text field ${spec.credentials.field}`, 'ConsumerUnhealthy');
    if (bearer && !/^[\x21-\x7e]{1,4096}$/.test(bearer)) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: the stored token is not a header-safe token`, 'ConsumerUnhealthy');
    const config: [string, string][] = [
      ['core.hooksPath', '/dev/null'],
      ['protocol.allow', 'never'],
      ['protocol.file.allow', 'always'],
      ['protocol.git.allow', 'always'],
      ['protocol.ssh.allow', 'always'],
      ['protocol.https.allow', 'always'],
      ['commit.gpgSign', 'false'],
      ['advice.detachedHead', 'false'],
      // A redirect would carry the token to whatever host the server names.
      ['http.followRedirects', 'false'],
      ...(spec.tls ? [['http.sslCAInfo', spec.tls.ca] as [string, string]] : []),
      ...(bearer ? [['http.extraHeader', `Authorization: Bearer ${bearer}`] as [string, string]] : []),
    ];
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: cwd,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GIT_ASKPASS: '/bin/false',
      GIT_LITERAL_PATHSPECS: '1',
      GIT_CONFIG_COUNT: String(config.length),
      ...Object.fromEntries(config.flatMap(([k, v], i) => [[`GIT_CONFIG_KEY_${i}`, k], [`GIT_CONFIG_VALUE_${i}`, v]])),
      ...extraEnv,
    };
    return run('git', args, cwd, env, signal);
  }

  const run = (file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<Exited> =>
    runBounded(file, args, { cwd, env, signal, timeoutMs: timeoutMs(), keepOutput: true });

  /** git that must succeed; its output is not repeated (it may name the URL), only what failed. */
  async function must(cwd: string, what: string, args: string[], signal?: AbortSignal, extraEnv?: Record<string, string>): Promise<string> {
    const result = await git(cwd, args, signal, extraEnv);
    if (result.code !== 0) throw new Error(`consumer ${spec.name}: git ${what} failed (exit ${result.code})${hint(result.out)}`);
    return result.out;
  }
  /** git's own words for the common failures, without URLs or anything else from the output. */
  const hint = (out: string) =>
    moved(out) ? ': the branch moved' : /not found|does not appear to be a git repository|Could not read from remote/.test(out) ? ': repository or branch not found' : /Authentication failed|HTTP 40[13]/.test(out) ? ': authentication failed' : '';
  const moved = (out: string) => /\(non-fast-forward\)|\(fetch first\)/.test(out);

  async function withClone<T>(branch: string, work: (dir: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'rekey-gitops-'));
    try {
      // The tip only: rekey reads one file and commits on top; history could be any size.
      await must(dir, `clone of ${branch}`, ['clone', '--quiet', '--depth', '1', '--no-tags', '--single-branch', '--branch', branch, '--', spec.repository, 'repo'], signal);
      return await work(join(dir, 'repo'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Does the remote have `branch`, and at which commit? */
  async function remoteHead(branch: string, signal?: AbortSignal): Promise<string | undefined> {
    // Exactly that ref: a planted refs/heads/x/refs/heads/... must not match.
    return (await remoteBranches(`refs/heads/${branch}`, signal)).find(([, name]) => name === branch)?.[0];
  }

  /** [commit, branch name] of the remote's branches matching `pattern`. */
  async function remoteBranches(pattern: string, signal?: AbortSignal): Promise<[string, string][]> {
    const dir = await mkdtemp(join(tmpdir(), 'rekey-gitops-'));
    try {
      const out = await must(dir, 'ls-remote', ['ls-remote', '--heads', '--', spec.repository, pattern], signal);
      return out
        .split('\n')
        .map((line) => line.split('\t'))
        .filter(([sha, ref]) => /^[0-9a-f]{40}$/.test(sha ?? '') && ref?.startsWith('refs/heads/'))
        .map(([sha, ref]) => [sha, ref.slice('refs/heads/'.length)]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * The file, changed to refer to `ref`; undefined when it already does. With `onlyFromRekey`, it
   * changes only if a field refers to another version rekey made (a commit of a rotation that
   * failed or was abandoned): what a person wrote there is never overwritten.
   */
  async function change(clone: string, ref: VersionRef, onlyFromRekey = false): Promise<string | undefined> {
    const file = join(clone, spec.path);
    // Every component a plain folder or file: a symlink could point the edit outside the clone.
    let at = clone;
    for (const part of spec.path.split('/').filter(Boolean)) {
      at = join(at, part);
      const stat = await lstat(at).catch(() => undefined);
      if (!stat) throw refusedFile(`${spec.path} does not exist on ${spec.branch}`);
      if (stat.isSymbolicLink()) throw refusedFile(`${spec.path} goes through a symlink in the repository`);
    }
    if ((await lstat(file)).size > MAX_FILE_BYTES) throw refusedFile(`${spec.path} is over 1 MiB`);
    const text = await readFile(file, 'utf8');
    const out = editedText(spec, text, ref, onlyFromRekey);
    if (out === undefined) return undefined;
    await writeFile(file, out);
    return out;
  }
  const refusedFile = (message: string) => refusedEdit(spec, message);

  /** Commit the change in `clone`, dated like the version, so the same change is the same commit. */
  async function commitChange(clone: string, ref: VersionRef, message: string, signal?: AbortSignal): Promise<string> {
    const date = ref.createdAt ?? new Date(0).toISOString();
    await must(clone, 'add', ['add', '--', spec.path], signal);
    const who = ['-c', `user.name=${spec.author.name}`, '-c', `user.email=${spec.author.email}`];
    let signing: string[] = [];
    if (spec.signingKey) {
      const key = textOf(await readCurrent(spec.signingKey.store), spec.signingKey.field);
      if (!key) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: the signing key's store has no text field ${spec.signingKey.field}`, 'ConsumerUnhealthy');
      // Beside the clone, in the folder only the worker can enter, and only while git signs.
      const keyFile = join(dirname(clone), `signing-key-${randomBytes(8).toString('hex')}`);
      await writeFile(keyFile, key.endsWith('\n') ? key : `${key}\n`, { mode: 0o600, flag: 'wx' });
      // Ed25519 signatures are deterministic: a retried commit is still the same commit.
      signing = ['-c', 'gpg.format=ssh', '-c', `user.signingKey=${keyFile}`, '-c', 'commit.gpgSign=true'];
      try {
        await must(clone, 'commit', [...who, ...signing, 'commit', '--quiet', '--no-verify', '-m', message], signal, { GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date });
      } finally {
        await rm(keyFile, { force: true });
      }
    } else {
      await must(clone, 'commit', [...who, 'commit', '--quiet', '--no-verify', '-m', message], signal, { GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date });
    }
    return (await must(clone, 'rev-parse', ['rev-parse', 'HEAD'], signal)).trim();
  }

  /**
   * Make the base refer to `ref`: the change again on the newest base, pushed, retried while the
   * base moves. `guard` is asked before every push. Says what it did.
   */
  async function landOnBase(ref: VersionRef, message: string, guard: () => Promise<void>, signal?: AbortSignal, onlyFromRekey = false): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      const outcome = await withClone(spec.branch, async (clone) => {
        if (!(await change(clone, ref, onlyFromRekey))) return onlyFromRekey ? `${spec.branch} refers to no other version of rekey's: left as it is` : `${spec.branch} already refers to ${ref.versionId}`;
        const sha = await commitChange(clone, ref, message, signal);
        await guard();
        const pushed = await git(clone, ['push', '--quiet', 'origin', `HEAD:refs/heads/${spec.branch}`], signal);
        if (pushed.code === 0) return `${spec.branch} now refers to ${ref.versionId} (${sha.slice(0, 12)})`;
        if (!moved(pushed.out)) throw new Error(`consumer ${spec.name}: git push to ${spec.branch} failed (exit ${pushed.code})${hint(pushed.out)}`);
        return undefined;
      }, signal);
      if (outcome) return outcome;
      // Someone pushed to the base meanwhile: make the change again on top of theirs.
      if (attempt >= PUSH_ATTEMPTS) throw new Error(`consumer ${spec.name}: ${spec.branch} kept moving; gave up after ${PUSH_ATTEMPTS} attempts`);
    }
  }

  async function deleteBranch(branch: string, signal?: AbortSignal): Promise<void> {
    if (!(await remoteHead(branch, signal))) return;
    const dir = await mkdtemp(join(tmpdir(), 'rekey-gitops-'));
    try {
      await must(dir, 'init', ['init', '--quiet'], signal);
      await must(dir, `delete of ${branch}`, ['push', '--quiet', '--', spec.repository, `:refs/heads/${branch}`], signal);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }


  return {
    name: spec.name,

    // Prepare: the change on a branch of its own, the base untouched.
    async deploy(ref, _credential, { signal, rollback } = {}) {
      // Nothing was changed on the base before commit (abort sees to that): only the branch goes.
      if (rollback) return deleteBranch(branchFor(ref.secret, rollback.pendingVersionId), signal);
      const branch = branchFor(ref.secret, ref.versionId);
      await withClone(spec.branch, async (clone) => {
        await must(clone, 'checkout', ['checkout', '--quiet', '-B', branch], signal);
        // A base that already refers to this version gets a branch at its own head: commit has nothing to do.
        if (await change(clone, ref)) await commitChange(clone, ref, commitMessage(ref, 'uses'), signal);
        // The branch is this rotation's alone: what is there from an earlier attempt is replaced.
        await must(clone, `push of ${branch}`, ['push', '--quiet', '--force', 'origin', `HEAD:refs/heads/${branch}`], signal);
      }, signal);
    },

    async health(ref, signal): Promise<Health> {
      const branch = branchFor(ref.secret, ref.versionId);
      if (!(await remoteHead(branch, signal))) return { healthy: false, detail: `branch ${branch} is not there yet` };
      if (!spec.verify) return { healthy: true, detail: `branch ${branch} prepared` };
      const verify = spec.verify;
      return withClone(branch, async (clone) => {
        // HOME is an empty folder of its own, not the clone: the repository's dotfiles (.gitconfig,
        // .npmrc, .kube/config) would otherwise configure the tools verify runs.
        const home = await mkdtemp(join(dirname(clone), 'home-'));
        const env = { PATH: process.env.PATH, HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', REKEY_SECRET: ref.secret, REKEY_VERSION_ID: ref.versionId, REKEY_BRANCH: branch };
        const result = await run('/bin/sh', ['-c', verify], clone, env, signal);
        // The command's output may quote the repository: only its exit status is reported.
        return result.code === 0 ? { healthy: true, detail: `verify passed on ${branch}` } : { healthy: false, detail: `verify exited with status ${result.code} on ${branch}` };
      }, signal);
    },

    async commit(ref, _credential, options) {
      deadline = options.deadline;
      await options.guard();
      const landed = await landOnBase(ref, commitMessage(ref, 'uses'), options.guard, options.signal);
      await deleteBranch(branchFor(ref.secret, ref.versionId), options.signal);
      return landed;
    },

    // The base back on the current version if a commit got that far: it refers to another version
    // rekey made (this rotation's, or one a terminated rotation committed), never to what a person
    // put there. And the prepared branch gone.
    async abort(current, _credential, options) {
      deadline = options.deadline;
      await options.guard();
      await landOnBase(current, commitMessage(current, 'back to'), options.guard, options.signal, true);
      // This rotation's branch, and any a terminated rotation of this secret left (named after one of rekey's versions).
      const prefix = `rekey/${current.secret}/`;
      const stale = (await remoteBranches(`refs/heads/${prefix}*`, options.signal))
        .map(([, name]) => name)
        .filter((name) => name.startsWith(prefix) && isRekeyVersionId(name.slice(prefix.length)) && name !== branchFor(current.secret, current.versionId));
      for (const name of new Set([branchFor(current.secret, options.pendingVersionId), ...stale])) await deleteBranch(name, options.signal);
    },
  };
}
