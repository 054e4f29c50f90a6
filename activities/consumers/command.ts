import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readlink, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, parse, resolve, sep } from 'node:path';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { consumerKeysSchema, durationBetween } from '../../lib/schema';
import type { Consumer, Credential, DeployOptions, Health, VersionRef } from '../provider';
import { runBounded } from './process';

export const commandConsumerSchema = z
  .object({
    type: z.literal('command'),
    name: z.string().min(1),
    /** Where the credential is written (mode 0600, replaced atomically). */
    file: z.string().min(1),
    format: z.enum(['json', 'env']).default('json'),
    /** The fields of the stored value written to the file (default: all of them). */
    fields: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a field name')).min(1).max(100).optional(),
    /**
     * Run after the file is written, with a minimal environment: PATH, HOME, REKEY_FILE,
     * REKEY_SECRET, REKEY_VERSION_ID and the variables `env` names; never the worker's credentials.
     */
    reload: z.string().min(1).optional(),
    /** Exit status 0 means healthy; same environment as reload. */
    health: z.string().min(1).optional(),
    /** Variables of the worker's environment the commands may see (e.g. KUBECONFIG); each must be in a Settings env list. */
    env: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')).default([]),
    commandTimeout: durationBetween('1s', '1h').default('30s'),
    /** With current-and-previous the file also holds the version being replaced, under `previous` (json) or PREVIOUS_* (env). */
    keys: consumerKeysSchema,
  })
  .strict();
export type CommandConsumerSpec = z.infer<typeof commandConsumerSchema>;

/**
 * Names a shell, a dynamic loader or a runtime acts on when an env file is loaded (`set -a; .`,
 * systemd EnvironmentFile): whoever can write the store must not choose them.
 */
const ACTIVE_NAMES = /^(LD_.*|PATH|BASH_ENV|ENV|IFS|PS4|SHELLOPTS|BASHOPTS|CDPATH|GLOBIGNORE|NODE_OPTIONS|NODE_PATH|PYTHON.*|PERL5.*|PERLLIB|RUBYOPT|RUBYLIB|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|GCONV_PATH|HOSTALIASES|LOCALDOMAIN|RES_OPTIONS|TMPDIR)$/;

function render(spec: CommandConsumerSpec, ref: VersionRef, stored: Credential, previous?: DeployOptions['previous']): string {
  const pick = (c: Credential) => (spec.fields ? Object.fromEntries(spec.fields.filter((f) => f in c).map((f) => [f, c[f]])) : c);
  const withVersion: Credential = { ...pick(stored), rekey_version_id: ref.versionId };
  const older = previous && { ...pick(previous.credential), rekey_version_id: previous.ref.versionId };
  if (older && 'previous' in withVersion) throw new Error(`consumer ${spec.name}: the stored value has a field "previous", which keys: current-and-previous needs for the older version`);
  if (spec.format === 'json') return `${JSON.stringify(older ? { ...withVersion, previous: older } : withVersion, null, 2)}\n`;
  const entries = [...Object.entries(withVersion), ...Object.entries(older ?? {}).map(([k, v]) => [`previous_${k}`, v] as const)];
  const names = new Set<string>();
  return entries
    .map(([k, v]) => {
      // The file is meant to be sourced: a key is shell text, so anything but a name would run.
      const key = k.toUpperCase();
      // Two fields on one name: whichever the loader keeps last would win, unseen.
      if (names.has(key)) throw new Error(`consumer ${spec.name}: two fields of the stored value become ${key} in the env file`);
      names.add(key);
      if (!/^[A-Z_][A-Z0-9_]*$/.test(key)) {
        throw new Error(`consumer ${spec.name}: credential key ${JSON.stringify(k)} is not an environment variable name, so the env file cannot hold it`);
      }
      if (ACTIVE_NAMES.test(key)) {
        throw new Error(`consumer ${spec.name}: credential key ${JSON.stringify(k)} would set ${key} for whatever loads the env file; list the fields to write (fields: [...])`);
      }
      // Nested values are written as JSON text; every value is single-quoted, so nothing in it runs.
      const text = typeof v === 'string' ? v : JSON.stringify(v);
      return `${key}='${text.replaceAll("'", `'\\''`)}'\n`;
    })
    .join('');
}

/** Who may own a folder on the way to a credential: the worker's user or root. */
const trustedOwner = (uid: number) => uid === 0 || uid === process.getuid?.();

/**
 * Create the folder (0700) if missing and refuse one that someone else could swap or fill: owned
 * by another user, writable by group or others, below a folder others may write to (unless it is
 * sticky, as /tmp is), or reached through a symlink someone other than root or the worker owns.
 * Symlinks root owns (Debian's /var/run -> /run) are followed and their target checked the same way.
 */
async function privateFolder(consumer: string, folder: string, depth = 0): Promise<void> {
  if (depth > 8) throw new Error(`consumer ${consumer}: folder ${folder} is reached through too many symlinks`);
  const root = parse(folder).root;
  const parts = folder.slice(root.length).split(sep).filter(Boolean);
  let path = root;
  for (const [i, part] of parts.entries()) {
    const parentStat = await lstat(path);
    path = join(path, part);
    let stat = await lstat(path).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    if (!stat) {
      await mkdir(path, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => (err.code === 'EEXIST' ? undefined : Promise.reject(err)));
      stat = await lstat(path);
    }
    // Anyone who may write to the parent may replace this entry, unless the parent is sticky.
    if (parentStat.mode & 0o002 && !(parentStat.mode & 0o1000)) {
      throw new Error(`consumer ${consumer}: folder ${folder} is below ${dirname(path)}, which others may write to`);
    }
    if (stat.isSymbolicLink()) {
      if (!trustedOwner(stat.uid)) throw new Error(`consumer ${consumer}: folder ${folder} is reached through a symlink someone else owns (${path})`);
      const rest = parts.slice(i + 1);
      return privateFolder(consumer, join(resolve(dirname(path), await readlink(path)), ...rest), depth + 1);
    }
    if (!stat.isDirectory()) throw new Error(`consumer ${consumer}: ${path} in the path of folder ${folder} is not a folder`);
    if (!trustedOwner(stat.uid)) throw new Error(`consumer ${consumer}: ${path} is owned by another user (uid ${stat.uid})`);
    if (i === parts.length - 1 && stat.mode & 0o022) {
      throw new Error(`consumer ${consumer}: folder ${folder} is writable by group or others; make it 0700 or 0755`);
    }
  }
}

/**
 * Replace `file` with `text` so a reader sees the old or the new content, never a mix: a fresh
 * temp file nobody can have planted (random name, O_EXCL, no symlink followed, 0600) is renamed over it.
 */
async function writePrivate(consumer: string, file: string, text: string): Promise<void> {
  const folder = dirname(file);
  await privateFolder(consumer, folder);
  const temp = join(folder, `.${basename(file)}.rekey-${randomBytes(16).toString('hex')}.tmp`);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const handle = await open(temp, flags, 0o600);
  try {
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  // The rename is durable only once the folder's entry is on disk.
  const dir = await open(folder, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Run `command` with `sh -c`; only its exit status is used (its output may echo the file). */
const run = (command: string, env: NodeJS.ProcessEnv, timeoutMs: number, signal?: AbortSignal) => runBounded('/bin/sh', ['-c', command], { env, timeoutMs, signal });

export function commandConsumer(spec: CommandConsumerSpec): Consumer {
  const timeoutMs = parseDuration(spec.commandTimeout);
  // Commands never inherit the worker's environment: its AWS keys, Temporal API key and codec
  // token stay with the worker. Only what a command needs to run, and what the manifest names.
  const passed = ['PATH', 'HOME', ...spec.env];
  const envFor = (ref: VersionRef, previous?: VersionRef): NodeJS.ProcessEnv => ({
    ...Object.fromEntries(passed.filter((name) => process.env[name] !== undefined).map((name) => [name, process.env[name]])),
    REKEY_FILE: spec.file,
    REKEY_SECRET: ref.secret,
    REKEY_VERSION_ID: ref.versionId,
    ...(previous ? { REKEY_PREVIOUS_VERSION_ID: previous.versionId } : {}),
  });

  return {
    name: spec.name,

    async deploy(ref, credential, { signal, previous } = {}) {
      await writePrivate(spec.name, resolve(spec.file), render(spec, ref, credential, previous));
      if (spec.reload) {
        const { code } = await run(spec.reload, envFor(ref, previous?.ref), timeoutMs, signal);
        // Command output may echo the file, so only the exit status is reported.
        if (code !== 0) throw new Error(`reload command of consumer ${spec.name} exited with status ${code}`);
      }
    },

    async health(ref, signal): Promise<Health> {
      if (!spec.health) return { healthy: true, detail: 'no health command configured' };
      const { code } = await run(spec.health, envFor(ref), timeoutMs, signal);
      return code === 0
        ? { healthy: true, detail: 'health command exited 0' }
        : { healthy: false, detail: `health command exited with status ${code}` };
    },
  };
}
