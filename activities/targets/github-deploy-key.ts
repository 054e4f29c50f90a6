// A repository's deploy key: an SSH key that may read (or write) one repository. GitHub allows
// several deploy keys per repository, so rotation is natively dual: prepare adds the new key next
// to the old one, revoke deletes the old one. rekey titles every key it adds
// `rekey <secret> <version id>` and deletes only keys with its title: a key a person added is never
// touched (revoke then says so). The stored value is the private key (generator ssh-ed25519) with
// the public key beside it.
// https://docs.github.com/en/rest/deploy-keys/deploy-keys
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { githubClient, githubConnectionSchema, onGitHub, repositorySchema, splitRepository, type GitHubClient } from '../github';
import { textOf, type Credential, type Target, type TargetAccount, type TargetContext } from '../provider';

export const githubDeployKeySchema = z
  .object({
    type: z.literal('github-deploy-key'),
    github: githubConnectionSchema,
    repository: repositorySchema,
    /** Read-only keys can clone but not push: the default, as GitHub's. */
    readOnly: z.boolean().default(true),
  })
  .strict();
export type GitHubDeployKeySpec = z.infer<typeof githubDeployKeySchema>;

/**
 * None shared: a repository holds many deploy keys, each rotation's are titled with its secret's
 * name, and revoke and undo delete only those, so two secrets on one repository never touch each
 * other's keys.
 */
export function githubDeployKeyAccounts(_spec: GitHubDeployKeySpec): TargetAccount[] {
  return [];
}

const NEEDS = 'administration=write';
const MAX_PAGES = 10;

/** A public key as GitHub compares it: type and base64 blob, without the comment. */
function keyOf(credential: Credential, which: string): string {
  const line = textOf(credential, 'publicKey');
  const [type, blob] = line?.trim().split(/\s+/) ?? [];
  if (!type || !blob) throw ApplicationFailure.nonRetryable(`github-deploy-key: the ${which} version has no publicKey (use the ssh-ed25519 generator)`, 'TargetRefused');
  return `${type} ${blob}`;
}

const titleFor = (context: TargetContext, versionId: string) => `rekey ${context.secret} ${versionId}`;

export function githubDeployKey(spec: GitHubDeployKeySpec): Target {
  const base = splitRepository(spec.repository);
  const where = spec.repository;

  async function keys(gh: GitHubClient) {
    const list: { id: number; key: string; title: string; readOnly: boolean }[] = [];
    await onGitHub('deploy key list', where, NEEDS, async () => {
      let pages = 0;
      for await (const page of gh.paginate.iterator(gh.rest.repos.listDeployKeys, { ...base, per_page: 100 })) {
        for (const k of page.data) {
          // GitHub's answers are read, not trusted: a key that is not text is nobody's.
          if (typeof k.key !== 'string' || typeof k.title !== 'string') continue;
          list.push({ id: k.id, key: k.key.trim().split(/\s+/).slice(0, 2).join(' '), title: k.title, readOnly: k.read_only === true });
        }
        if (++pages >= MAX_PAGES) throw new Error(`${where} has more than ${MAX_PAGES * 100} deploy keys; rekey reads no further`);
      }
    });
    return list;
  }
  const find = async (gh: GitHubClient, key: string) => (await keys(gh)).find((k) => k.key === key);

  return {
    acceptsBoth: true,

    nextCredential(current, material) {
      const publicKey = material.beside?.publicKey;
      if (!publicKey) throw ApplicationFailure.nonRetryable('github-deploy-key needs generator ssh-ed25519 (a key pair)', 'TargetRefused');
      return { ...current, value: material.value, publicKey };
    },

    async prepare(next, _current, context) {
      const gh = await githubClient(spec.github);
      const key = keyOf(next, 'new');
      const title = titleFor(context, context.nextVersionId);
      const existing = await find(gh, key);
      // A retried prepare finds the key it added (its response may have been lost).
      if (existing?.title === title) return;
      if (existing) throw ApplicationFailure.nonRetryable(`github-deploy-key: the new key is already a deploy key of ${where} titled "${existing.title.slice(0, 100)}"`, 'TargetRefused');
      try {
        await onGitHub('deploy key creation', where, NEEDS, () => gh.rest.repos.createDeployKey({ ...base, title, key, read_only: spec.readOnly }));
      } catch (err) {
        if (!(err instanceof ApplicationFailure && err.details?.[0] === 422)) throw err;
        // A create whose answer was lost and was sent again finds its own key "already in use".
        if ((await find(gh, key))?.title === title) return;
        // GitHub keeps each key on one repository only.
        throw ApplicationFailure.nonRetryable(`github-deploy-key: GitHub refused the new key for ${where}: ${err.message}`, 'TargetRefused');
      }
    },

    async undo(next, _current, context) {
      const gh = await githubClient(spec.github);
      const found = await find(gh, keyOf(next, 'new'));
      if (found && found.title === titleFor(context, context.nextVersionId)) {
        await onGitHub('deploy key deletion', where, NEEDS, () => gh.rest.repos.deleteDeployKey({ ...base, key_id: found.id }));
      }
    },

    async revoke(old, next, { context }) {
      const [oldKey, nextKey] = [keyOf(old, 'old'), keyOf(next, 'new')];
      if (oldKey === nextKey) throw ApplicationFailure.nonRetryable(`github-deploy-key: the old and the new version hold the same key; nothing was deleted from ${where}`, 'TargetRefused');
      const gh = await githubClient(spec.github);
      const listed = await keys(gh);
      const mine = (k: { title: string }) => k.title.startsWith(`rekey ${context.secret} `);
      // rekey's keys for other versions of this very store (neither the new one nor the old one)
      // were left by a rotation that was terminated before it could undo its prepare: they go too.
      // Keys titled for versions this store never had may be another installation's: left alone.
      const versions = new Set(context.storeVersionIds ?? []);
      const leftovers = listed.filter((k) => mine(k) && versions.has(k.title.slice(`rekey ${context.secret} `.length)) && k.key !== oldKey && k.key !== nextKey);
      const found = listed.find((k) => k.key === oldKey);
      for (const k of [...(found && mine(found) ? [found] : []), ...leftovers]) {
        await onGitHub('deploy key deletion', where, NEEDS, () => gh.rest.repos.deleteDeployKey({ ...base, key_id: k.id }));
      }
      if (found && !mine(found)) {
        return { warning: `the old deploy key of ${where} ("${found.title.slice(0, 100)}", id ${found.id}) was not added by rekey, so it was left in place: delete it in the repository's settings once nothing uses it` };
      }
      return {};
    },

    // GitHub can only say whether the key is there; an SSH login to GitHub is beyond what rekey checks.
    async accepts(credential) {
      const gh = await githubClient(spec.github);
      const found = await find(gh, keyOf(credential, 'checked'));
      if (!found) return { accepted: false, reason: `not a deploy key of ${where}` };
      if (found.readOnly !== spec.readOnly) return { accepted: false, reason: `a deploy key of ${where}, but ${found.readOnly ? 'read-only' : 'read-write'}` };
      return { accepted: true };
    },

    // Without changing anything: the token may list (and so manage) the keys, and the current key is one of them.
    async preflight(current) {
      const gh = await githubClient(spec.github);
      try {
        const found = (await keys(gh)).find((k) => k.key === keyOf(current, 'current'));
        if (!found) return [`the current key is not a deploy key of ${where}: add it, or a rotation will only add keys`];
        if (found.readOnly !== spec.readOnly) return [`the current deploy key of ${where} is ${found.readOnly ? 'read-only' : 'read-write'}, the manifest says ${spec.readOnly ? 'read-only' : 'read-write'}`];
        return [];
      } catch (err) {
        return [(err as Error).message];
      }
    },
  };
}
