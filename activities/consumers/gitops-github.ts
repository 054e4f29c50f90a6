// GitOps on GitHub, through the REST API (no clone): a field of a YAML or JSON file in a GitHub
// repository refers to the new version ("${secretId}#${versionId}"), landed by a pull request that
// GitHub's required checks passed. Two-phase, with the store as the decision:
//   deploy (prepare): rekey's commit (the edit on the base's head, made with the git data API) on a
//     branch rekey/<secret>/<version> of its own; the base untouched, no pull request yet;
//   verify: the checks the base requires (branch protection, plus any the manifest names) are green
//     on that commit; one that fails ends verify at once, naming it;
//   commit (at promote): a pull request from the branch, merged with the manifest's method, pinned to
//     the commit rekey made and whose checks it saw (`sha`); a base that moved meanwhile gets the
//     edit made again on its new head, the branch reset to it, and the checks waited for again;
//   abort (rollback): the base back on the current version if a merge got that far; the pull request
//     closed and the branch deleted, with those an abandoned rotation of the secret left.
// Every step can be repeated: objects are content-addressed and rekey's commit has the version's
// date, so the same edit on the same base is the same commit; each step first looks at what is there.
// What GitHub holds is untrusted: a branch of rekey's name is adopted only if its head is the exact
// commit rekey would make, replaced only if its head is a commit of rekey's, and otherwise refused;
// only a commit rekey computed itself is ever merged; nothing but rekey's branches is deleted.
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { isRekeyVersionId } from '../../lib/version-token';
import { githubClient, githubConnectionSchema, onGitHub, repositorySchema, splitRepository, waitFor, type GitHubClient } from '../github';
import type { Consumer, Health, VersionRef } from '../provider';
import { branchFor, branchName, commitAuthor, commitMessage, editedText, fieldsToSet, pathInRepository, refusedEdit } from './gitops';

const MAX_FILE_BYTES = 1024 * 1024;
/** Merges tried while the base keeps moving (each makes the edit again and waits for its checks). */
const MERGE_ATTEMPTS = 5;
/** A check run's name or a commit status's context. */
const checkName = z.string().min(1).max(200).regex(/^[^\x00-\x1f]+$/, 'must be a check name');

export const gitopsGithubConsumerSchema = z
  .object({
    type: z.literal('gitops-github'),
    name: z.string().min(1),
    github: githubConnectionSchema,
    /** owner/name on that GitHub. */
    repository: repositorySchema,
    /** The base branch the pull request merges into at promote. */
    branch: branchName.default('main'),
    /** The file to change, relative to the repository's root. */
    path: pathInRepository,
    set: fieldsToSet,
    /** Author and committer of rekey's commit (dated like the version, so a retry makes the same commit). */
    author: commitAuthor,
    /** How the pull request merges. */
    mergeMethod: z.enum(['merge', 'squash', 'rebase']).default('squash'),
    /**
     * When the pull request opens: at promote (default: nobody sees one that may never merge), or
     * at deploy, for required checks that run only on pull requests (GitHub Actions `on:
     * pull_request`). Either way rekey merges it only at promote; one a person merges earlier is
     * reverted by rollback.
     */
    openPullRequest: z.enum(['at-promote', 'at-deploy']).default('at-promote'),
    /**
     * Checks that must be green besides those the base's branch protection requires; `appId` pins
     * the GitHub App that must report it (a check of the same name from another app does not count).
     */
    checks: z
      .array(z.union([checkName, z.object({ name: checkName, appId: z.number().int().positive() }).strict()]))
      .max(50)
      .default([]),
    /** Merge although neither branch protection nor `checks` requires any check. Off: such a rotation fails at verify. */
    allowNoChecks: z.boolean().default(false),
  })
  .strict();
export type GitopsGithubConsumerSpec = z.infer<typeof gitopsGithubConsumerSchema>;

/** A check that must be green; appId undefined: from any app, or a commit status of that context. */
interface RequiredCheck { name: string; appId?: number }

/** The activity's log; nothing outside an activity (a consumer called directly, in a script). */
function note(level: 'info' | 'warn', message: string, meta: Record<string, unknown>): void {
  try {
    log[level](message, meta);
  } catch {
    // No activity context.
  }
}

/** What rekey's commit does: a rotation's edit, or putting the base back on the current version. */
type What = 'uses' | 'back to';
const PASSING = new Set(['success', 'neutral', 'skipped']);
const statusOf = (err: unknown) => (err instanceof ApplicationFailure ? (err.details?.[0] as number | undefined) : undefined);
/** GitHub wants seconds: "2026-11-23T10:00:00Z". */
const gitDate = (iso: string | undefined) => new Date(iso ?? 0).toISOString().replace(/\.\d{3}Z$/, 'Z');

export function gitopsGithubConsumer(spec: GitopsGithubConsumerSpec): Consumer {
  const R = splitRepository(spec.repository);
  const where = spec.repository;
  const refused = (message: string) => ApplicationFailure.nonRetryable(`consumer ${spec.name}: ${message}`, 'ConsumerUnhealthy');
  const short = (sha: string) => sha.slice(0, 12);
  const call = async <T>(what: string, needs: string, f: () => Promise<{ data: T }>): Promise<T> => (await onGitHub(what, where, needs, f)).data;

  /** The base's head commit and the checks its protection requires. */
  async function base(gh: GitHubClient): Promise<{ sha: string; required: RequiredCheck[] }> {
    const branch = await call(`read of branch ${spec.branch}`, 'metadata=read', () => gh.rest.repos.getBranch({ ...R, branch: spec.branch }));
    const rule = branch.protection?.required_status_checks;
    // app_id null or -1: any source may report it. https://docs.github.com/en/rest/branches/branch-protection
    const fromRule: RequiredCheck[] = rule?.checks?.length
      ? rule.checks.map((c) => ({ name: c.context, appId: c.app_id && c.app_id > 0 ? c.app_id : undefined }))
      : (rule?.contexts ?? []).map((name) => ({ name }));
    const fromManifest = spec.checks.map((c) => (typeof c === 'string' ? { name: c } : { name: c.name, appId: c.appId }));
    const required = [...fromRule, ...fromManifest].filter((c, i, all) => all.findIndex((d) => d.name === c.name && d.appId === c.appId) === i);
    return { sha: branch.commit.sha, required };
  }

  /** The head of a branch, if it exists. */
  async function headOf(gh: GitHubClient, branch: string): Promise<string | undefined> {
    try {
      return (await call(`read of branch ${branch}`, 'contents=read', () => gh.rest.git.getRef({ ...R, ref: `heads/${branch}` }))).object.sha;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  /** The file at a commit: a plain file of at most 1 MiB, or a refusal saying why not. */
  async function fileAt(gh: GitHubClient, sha: string): Promise<string> {
    let data: unknown;
    try {
      data = await call(`read of ${spec.path}`, 'contents=read', () => gh.rest.repos.getContent({ ...R, path: spec.path, ref: sha }));
    } catch (err) {
      if (statusOf(err) === 404) throw refusedEdit(spec, `${spec.path} does not exist on ${spec.branch}`);
      throw err;
    }
    const file = data as { type?: string; encoding?: string; content?: string; size?: number; path?: string };
    // A folder is a list, a symlink or submodule has its own type: only a plain file is edited. A
    // symlink to a file in the repository is answered as that file, under its own path.
    if (Array.isArray(data) || file.type !== 'file') throw refusedEdit(spec, `${spec.path} is not a plain file`);
    if (file.path !== spec.path) throw refusedEdit(spec, `${spec.path} goes through a symlink in the repository (GitHub answered ${String(file.path).slice(0, 200)})`);
    if ((file.size ?? 0) > MAX_FILE_BYTES || file.encoding !== 'base64' || typeof file.content !== 'string') throw refusedEdit(spec, `${spec.path} is over 1 MiB`);
    return Buffer.from(file.content, 'base64').toString('utf8');
  }

  /**
   * rekey's commit of the edit on `parent`, made with the git data API; undefined when the file at
   * `parent` already refers to `ref` (with `onlyFromRekey`: refers to no other version of rekey's).
   * The same edit on the same parent is the same commit, so calling this again is harmless.
   */
  async function makeCommit(gh: GitHubClient, parent: string, ref: VersionRef, what: What, onlyFromRekey = false): Promise<string | undefined> {
    const text = await fileAt(gh, parent);
    const edited = editedText(spec, text, ref, onlyFromRekey);
    if (edited === undefined) return undefined;
    const writing = `commit of ${spec.path}`;
    const blob = await call(writing, 'contents=write', () => gh.rest.git.createBlob({ ...R, content: Buffer.from(edited, 'utf8').toString('base64'), encoding: 'base64' }));
    const parentCommit = await call(writing, 'contents=read', () => gh.rest.git.getCommit({ ...R, commit_sha: parent }));
    const tree = await call(writing, 'contents=write', () => gh.rest.git.createTree({ ...R, base_tree: parentCommit.tree.sha, tree: [{ path: spec.path, mode: '100644', type: 'blob', sha: blob.sha }] }));
    const who = { ...spec.author, date: gitDate(ref.createdAt) };
    const commit = await call(writing, 'contents=write', () => gh.rest.git.createCommit({ ...R, message: commitMessage(ref, what), tree: tree.sha, parents: [parent], author: who, committer: who }));
    if (commit.parents.length !== 1 || commit.parents[0].sha !== parent || commit.tree.sha !== tree.sha) throw new Error(`consumer ${spec.name}: GitHub answered a commit other than the one asked for`);
    return commit.sha;
  }

  /** Is `sha` a commit rekey made for `ref` (its author, its message for that version, one parent)? Anyone can forge this: it decides only what rekey may replace or delete, never what it merges. */
  async function isRekeys(gh: GitHubClient, sha: string, message: (text: string) => boolean): Promise<boolean> {
    const c = await call('read of a commit', 'contents=read', () => gh.rest.git.getCommit({ ...R, commit_sha: sha }));
    const by = (p: { name?: string; email?: string }) => p.name === spec.author.name && p.email === spec.author.email;
    return by(c.author) && by(c.committer) && c.parents.length === 1 && message(c.message);
  }
  const forVersion = (ref: VersionRef, what: What = 'uses') => (text: string) => text === commitMessage(ref, what);
  const forSecret = (secret: string) => (text: string) => text.startsWith(`rekey: ${secret} uses `) || text.startsWith(`rekey: ${secret} back to `);

  /** The branch at `sha`: created, left as it is, or reset when its head is an earlier commit of rekey's for this version. */
  async function pointBranch(gh: GitHubClient, branch: string, sha: string, ref: VersionRef, guard: () => Promise<void>, what: What = 'uses'): Promise<void> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      const head = await headOf(gh, branch);
      if (head === sha) return;
      if (head !== undefined && !(await isRekeys(gh, head, forVersion(ref, what)))) {
        throw refused(`branch ${branch} exists and its head ${short(head)} is not a commit of rekey's for ${ref.versionId}: refused to reuse or replace it (delete it if it is left over)`);
      }
      await guard();
      try {
        if (head === undefined) await call(`creation of branch ${branch}`, 'contents=write', () => gh.rest.git.createRef({ ...R, ref: `refs/heads/${branch}`, sha }));
        // Forced: the earlier commit was made on a base that has moved since.
        else await call(`reset of branch ${branch}`, 'contents=write', () => gh.rest.git.updateRef({ ...R, ref: `heads/${branch}`, sha, force: true }));
        return;
      } catch (err) {
        // "Reference already exists": an earlier attempt's create landed after all; look again.
        if (statusOf(err) !== 422) throw err;
      }
    }
    throw new Error(`consumer ${spec.name}: branch ${branch} kept changing under rekey`);
  }

  /**
   * Are the required checks green on `sha`? A check run counts only for `sha` and, when a rule pins
   * one, from that app; a commit status only when no app is pinned. Any reporter that failed fails.
   */
  async function checksOn(gh: GitHubClient, sha: string, required: RequiredCheck[], branch: string): Promise<Health> {
    if (!required.length) {
      return spec.allowNoChecks
        ? { healthy: true, detail: `${branch} prepared; no check is required on ${spec.branch}` }
        : { healthy: false, final: true, detail: `no check is required on ${spec.branch} (branch protection) and the manifest names none in checks: nothing would verify the change (allowNoChecks: true merges anyway)` };
    }
    const runs = await onGitHub(`read of the checks of ${branch}`, where, 'checks=read', () => gh.paginate(gh.rest.checks.listForRef, { ...R, ref: sha, filter: 'latest', per_page: 100 }));
    const statuses = (await call(`read of the commit statuses of ${branch}`, 'statuses=read', () => gh.rest.repos.getCombinedStatusForRef({ ...R, ref: sha, per_page: 100 }))).statuses;
    const waiting: string[] = [];
    for (const check of required) {
      const reports = [
        ...runs
          .filter((r) => r.head_sha === sha && r.name === check.name && (check.appId === undefined || r.app?.id === check.appId))
          .sort((a, b) => b.id - a.id)
          .slice(0, 1)
          .map((r) => (r.status !== 'completed' ? { state: r.status, failed: false, done: false } : { state: r.conclusion ?? 'no conclusion', failed: !PASSING.has(r.conclusion ?? ''), done: true })),
        ...(check.appId === undefined
          ? statuses.filter((s) => s.context === check.name).map((s) => ({ state: s.state, failed: s.state === 'failure' || s.state === 'error', done: s.state !== 'pending' }))
          : []),
      ];
      const failed = reports.find((r) => r.failed);
      if (failed) return { healthy: false, final: true, detail: `required check "${check.name}" concluded ${failed.state} on ${branch} (${short(sha)})` };
      if (!reports.some((r) => r.done)) waiting.push(`"${check.name}" ${reports[0]?.state ?? 'not reported yet'}`);
    }
    if (waiting.length) return { healthy: false, detail: `waiting for ${waiting.length} of ${required.length} required check(s) on ${branch} (${short(sha)}): ${waiting.join(', ')}` };
    return { healthy: true, detail: `${required.length} required check(s) green on ${branch} (${short(sha)}): ${required.map((c) => c.name).join(', ')}` };
  }

  /** rekey's pull requests from `branch` into the base: from this repository (never a fork), newest first. */
  async function pullsFrom(gh: GitHubClient, branch: string, state: 'open') {
    const pulls = await call(`read of the pull requests from ${branch}`, 'pull_requests=read', () => gh.rest.pulls.list({ ...R, state, head: `${R.owner}:${branch}`, base: spec.branch, per_page: 100 }));
    return pulls.filter((p) => p.head.ref === branch && p.head.repo?.full_name?.toLowerCase() === spec.repository.toLowerCase() && p.base.ref === spec.branch && p.base.repo?.full_name?.toLowerCase() === spec.repository.toLowerCase());
  }

  /**
   * The open pull request from `branch`, opened now if there is none. One merged earlier says
   * nothing: only the base's file says whether the change is there (land looks at it first).
   */
  async function pullFor(gh: GitHubClient, branch: string, ref: VersionRef, guard: () => Promise<void>, what: What): Promise<number> {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const open = (await pullsFrom(gh, branch, 'open'))[0];
      if (open) return open.number;
      await guard();
      try {
        const created = await call(`opening of a pull request from ${branch}`, 'pull_requests=write', () =>
          gh.rest.pulls.create({
            ...R,
            head: branch,
            base: spec.branch,
            title: `rekey: ${ref.secret} ${what} ${ref.versionId}`,
            body: `Made by rekey for a rotation of \`${ref.secret}\`: ${spec.path} refers to version \`${ref.versionId}\`; the value itself is in ${ref.storeRef}.\n\nrekey merges this at promote, pinned to the commit it made and whose checks it saw; do not push to this branch.`,
            maintainer_can_modify: false,
          }),
        );
        if (!Number.isInteger(created.number)) throw new Error(`consumer ${spec.name}: GitHub's answer to opening a pull request from ${branch} has no number`);
        return created.number;
      } catch (err) {
        // "A pull request already exists": an earlier attempt's create landed after all; look again.
        if (statusOf(err) !== 422) throw err;
      }
    }
    throw new Error(`consumer ${spec.name}: could neither find nor open the pull request from ${branch}`);
  }

  /** Close rekey's pull requests from `branch` and delete it, if its head is a commit of rekey's (`own`). */
  async function removeBranch(gh: GitHubClient, branch: string, own: (text: string) => boolean, guard: () => Promise<void>): Promise<string | undefined> {
    const head = await headOf(gh, branch);
    if (head === undefined) return undefined;
    if (!(await isRekeys(gh, head, own))) {
      note('warn', 'gitops-github: left a branch named like rekey\'s whose head is not rekey\'s commit', { consumer: spec.name, branch, head });
      return `left ${branch}: its head ${short(head)} is not rekey's`;
    }
    for (const pull of await pullsFrom(gh, branch, 'open')) {
      await guard();
      await call(`closing of pull request #${pull.number}`, 'pull_requests=write', () => gh.rest.pulls.update({ ...R, pull_number: pull.number, state: 'closed' }));
    }
    await guard();
    try {
      await call(`deletion of branch ${branch}`, 'contents=write', () => gh.rest.git.deleteRef({ ...R, ref: `heads/${branch}` }));
    } catch (err) {
      // 422 for a ref that is gone already (deleted meanwhile, or by GitHub after a merge).
      if (statusOf(err) !== 422 || (await headOf(gh, branch)) !== undefined) throw err;
    }
    return `deleted ${branch}`;
  }

  /**
   * The base made to refer to `ref` through a pull request from branchFor(ref): rekey's commit on
   * the base's head, its required checks green, merged pinned to that commit; again on the new head
   * while the base moves. Undefined when the base already refers to `ref` (with `onlyFromRekey`:
   * to no other version of rekey's). `guard` is asked before every change GitHub shows (blobs, trees
   * and commits nothing refers to change nothing).
   */
  async function land(gh: GitHubClient, ref: VersionRef, what: What, options: { guard: () => Promise<void>; deadline: number; signal?: AbortSignal; onlyFromRekey?: boolean }): Promise<number | undefined> {
    const { guard, deadline, signal } = options;
    const branch = branchFor(ref.secret, ref.versionId);
    for (let attempt = 1; ; attempt++) {
      const { sha: baseSha, required } = await base(gh);
      // The edit made again on the base as it is now: the commit deploy made if the base has not moved.
      const sha = await makeCommit(gh, baseSha, ref, what, options.onlyFromRekey);
      if (!sha) {
        // Merged by an earlier attempt (or someone made the same edit): nothing left but the branch.
        await removeBranch(gh, branch, forVersion(ref, what), guard);
        return undefined;
      }
      await pointBranch(gh, branch, sha, ref, guard, what);
      let last: Health | undefined;
      const verdict = await waitFor(Math.max(0, deadline - Date.now()), signal, async () => {
        const health = await checksOn(gh, sha, required, branch);
        if (health.detail !== last?.detail) note('info', 'gitops-github: checks', { consumer: spec.name, detail: health.detail });
        last = health;
        return health.healthy || health.final ? health : undefined;
      });
      if (!verdict) throw refused(`the required checks were not green before the deadline: ${last?.detail ?? 'not read'}`);
      if (!verdict.healthy) throw refused(verdict.detail);
      const pull = await pullFor(gh, branch, ref, guard, what);
      await guard();
      try {
        // Pinned to the commit whose checks rekey saw: anything pushed since makes GitHub refuse (409).
        await call(`merge of pull request #${pull}`, 'contents=write', () =>
          gh.rest.pulls.merge({ ...R, pull_number: pull, sha, merge_method: spec.mergeMethod, commit_title: `rekey: ${ref.secret} ${what} ${ref.versionId} (#${pull})`, commit_message: `Made by rekey for a rotation of ${ref.secret}; the value itself is in ${ref.storeRef}.` }),
        );
      } catch (err) {
        // 405: not mergeable now (the base moved under a strict rule, a conflict); 409: the head moved.
        const status = statusOf(err);
        if ((status !== 405 && status !== 409) || attempt >= MERGE_ATTEMPTS) throw err;
        note('info', 'gitops-github: the merge was refused; making the edit again on the base as it is now', { consumer: spec.name, pull, status, attempt });
        continue;
      }
      // Merged, but into what? The pull request may have been retargeted meanwhile: only the base's
      // file says the change landed; if it did not, the next attempt makes it again.
      if (await makeCommit(gh, (await base(gh)).sha, ref, what, options.onlyFromRekey)) {
        if (attempt >= MERGE_ATTEMPTS) throw refused(`pull request #${pull} was merged, but ${spec.branch} still does not refer to ${ref.versionId}`);
        note('warn', 'gitops-github: merged, but the base does not have the change', { consumer: spec.name, pull, attempt });
        continue;
      }
      await removeBranch(gh, branch, forVersion(ref, what), guard);
      return pull;
    }
  }

  const noGuard = async () => {};

  return {
    name: spec.name,

    // Prepare: rekey's commit on a branch of its own; the base untouched, no pull request yet.
    async deploy(ref, _credential, { signal, rollback } = {}) {
      const gh = await githubClient(spec.github, signal);
      // Nothing was merged before commit (abort sees to that): only the branch (and any pull request) goes.
      if (rollback) return void (await removeBranch(gh, branchFor(ref.secret, rollback.pendingVersionId), forVersion({ ...ref, versionId: rollback.pendingVersionId }), noGuard));
      const branch = branchFor(ref.secret, ref.versionId);
      const { sha: baseSha } = await base(gh);
      // A base that already refers to this version gets a branch at its own head: commit has nothing to merge.
      const sha = (await makeCommit(gh, baseSha, ref, 'uses')) ?? baseSha;
      await pointBranch(gh, branch, sha, ref, noGuard);
      if (spec.openPullRequest === 'at-deploy' && sha !== baseSha) await pullFor(gh, branch, ref, noGuard, 'uses');
    },

    async health(ref, signal): Promise<Health> {
      const gh = await githubClient(spec.github, signal);
      const branch = branchFor(ref.secret, ref.versionId);
      const { sha: baseSha, required } = await base(gh);
      const head = await headOf(gh, branch);
      if (!head) return { healthy: false, detail: `branch ${branch} is not there yet` };
      // Someone pushed to rekey's branch: what the checks see is not (only) rekey's edit.
      if (head !== baseSha && !(await isRekeys(gh, head, forVersion(ref)))) return { healthy: false, final: true, detail: `branch ${branch} was changed by someone else: its head ${short(head)} is not rekey's commit` };
      return checksOn(gh, head, required, branch);
    },

    async commit(ref, _credential, { signal, guard, deadline }) {
      const gh = await githubClient(spec.github, signal);
      await guard();
      const pull = await land(gh, ref, 'uses', { guard, deadline, signal });
      return pull === undefined ? `${spec.branch} already refers to ${ref.versionId}` : `pull request #${pull} merged into ${spec.branch} (${spec.mergeMethod}); ${spec.branch} refers to ${ref.versionId}`;
    },

    // The base back on the current version if a merge got that far (it refers to another version
    // rekey made, never to what a person put there); this rotation's pull request closed and branch
    // deleted, and any an abandoned rotation of this secret left.
    async abort(current, _credential, { signal, guard, pendingVersionId, deadline }) {
      const gh = await githubClient(spec.github, signal);
      await guard();
      // Through a pull request like the change itself: the base's protection applies to going back too.
      await land(gh, current, 'back to', { guard, deadline, signal, onlyFromRekey: true });
      const prefix = `rekey/${current.secret}/`;
      const refs = await call(`read of the branches under ${prefix}`, 'contents=read', () => gh.rest.git.listMatchingRefs({ ...R, ref: `heads/${prefix}` }));
      const stale = refs
        .map((r) => r.ref.replace(/^refs\/heads\//, ''))
        .filter((name) => name.startsWith(prefix) && isRekeyVersionId(name.slice(prefix.length)) && name !== branchFor(current.secret, pendingVersionId));
      await removeBranch(gh, branchFor(current.secret, pendingVersionId), forVersion({ ...current, versionId: pendingVersionId }), guard);
      for (const name of stale) await removeBranch(gh, name, forSecret(current.secret), guard);
    },
  };
}
