// GitHub Actions secrets: repository, environment and organisation secrets that workflows read.
// Values are write-only at GitHub: deploy seals the value with the scope's public key (libsodium
// sealed box) and writes it with that key's id; verify can only see when a secret was last written
// (updated_at) and, when the manifest names one, run a probe workflow that uses the secret.
// https://docs.github.com/en/rest/actions/secrets
import { ApplicationFailure } from '@temporalio/common';
import sodium from 'libsodium-wrappers';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween } from '../../lib/schema';
import { githubClient, waitFor, githubConnectionSchema, onGitHub, organizationSchema, repositorySchema, splitRepository, type GitHubClient } from '../github';
import { textOf, type Consumer, type Credential, type Health, type VersionRef } from '../provider';

// GitHub's rules for secret names: letters, digits and _, not starting with a digit or GITHUB_.
const secretName = z
  .string()
  .max(200)
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be letters, digits and _, not starting with a digit')
  .refine((name) => !/^GITHUB_/i.test(name), 'must not start with GITHUB_ (reserved by GitHub)');

const repositoryTarget = z
  .object({
    repository: repositorySchema,
    /** An environment's secret instead of the repository's. */
    // '.' and '..' would be resolved away in the URL and write the repository's secret instead.
    environment: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[^\x00-\x1f/\\?#%]+$/, 'must be an environment name')
      .refine((name) => name.trim() === name && name !== '.' && name !== '..', 'must be an environment name')
      .optional(),
    name: secretName,
  })
  .strict();

const organizationTarget = z
  .object({
    organization: organizationSchema,
    name: secretName,
    /** Which repositories may use it; GitHub requires it on every write, so rekey always sends it. */
    visibility: z.enum(['all', 'private', 'selected']),
    selectedRepositories: z.array(repositorySchema).max(100).optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    if (t.visibility === 'selected' && !t.selectedRepositories?.length) ctx.addIssue({ code: 'custom', path: ['selectedRepositories'], message: 'is required when visibility is selected' });
    if (t.visibility !== 'selected' && t.selectedRepositories) ctx.addIssue({ code: 'custom', path: ['selectedRepositories'], message: 'is only for visibility: selected' });
  });

export const githubActionsSecretSchema = z
  .object({
    type: z.literal('github-actions-secret'),
    name: z.string().min(1),
    github: githubConnectionSchema,
    /** The field of the stored value that becomes the Actions secret. */
    field: z.string().min(1).max(200).default('value'),
    targets: z.array(z.union([repositoryTarget, organizationTarget])).min(1).max(50),
    /**
     * A workflow that proves the new value works (it uses the secret and fails if it does not):
     * dispatched with the version id as input `rekey_version_id`, it must conclude success.
     */
    verifyWorkflow: z
      .object({
        repository: repositorySchema,
        /** The workflow file name (verify.yml) or id. */
        workflow: z.union([z.string().regex(/^[A-Za-z0-9._-]{1,255}$/, 'must be a workflow file name'), z.number().int().positive()]),
        ref: z.string().min(1).max(255).default('main'),
        timeout: durationBetween('10s', '6h').default('10m'),
      })
      .strict()
      .optional(),
  })
  .strict();
export type GitHubActionsSecretSpec = z.infer<typeof githubActionsSecretSchema>;
type Target = GitHubActionsSecretSpec['targets'][number];

const describe = (t: Target) =>
  'organization' in t ? `organisation ${t.organization} secret ${t.name}` : `${t.repository}${t.environment ? ` environment ${t.environment}` : ''} secret ${t.name}`;
const NEEDS = { repository: 'secrets=write', environment: 'environments=write,secrets=write', organization: 'organization_secrets=write' };
const needsOf = (t: Target) => ('organization' in t ? NEEDS.organization : t.environment ? NEEDS.environment : NEEDS.repository);

/** libsodium's crypto_box_seal: only the holder of the scope's private key (GitHub) can open it. */
async function seal(value: string, publicKeyBase64: string): Promise<string> {
  await sodium.ready;
  return Buffer.from(sodium.crypto_box_seal(Buffer.from(value, 'utf8'), Buffer.from(publicKeyBase64, 'base64'))).toString('base64');
}

/** The calls for one target's scope (repository, environment or organisation), one shape for all three. */
function scopeApi(gh: GitHubClient, t: Target) {
  const secret_name = t.name;
  if ('organization' in t) {
    const org = t.organization;
    return {
      where: `organisation ${org}`,
      publicKey: () => gh.rest.actions.getOrgPublicKey({ org }),
      get: async () => (await gh.rest.actions.getOrgSecret({ org, secret_name })).data,
      put: async (encrypted_value: string, key_id: string, what: string) => {
        const selected = t.selectedRepositories
          ? await Promise.all(t.selectedRepositories.map(async (full) => (await onGitHub(what, full, 'metadata=read', () => gh.rest.repos.get(splitRepository(full)))).data.id))
          : undefined;
        // Visibility is sent on every write: GitHub requires it, and would otherwise reset it.
        await gh.rest.actions.createOrUpdateOrgSecret({ org, secret_name, encrypted_value, key_id, visibility: t.visibility, ...(selected ? { selected_repository_ids: selected } : {}) });
      },
    };
  }
  const { owner, repo } = splitRepository(t.repository);
  if (t.environment) {
    const environment_name = t.environment;
    return {
      where: `${t.repository} environment ${environment_name}`,
      publicKey: () => gh.rest.actions.getEnvironmentPublicKey({ owner, repo, environment_name }),
      get: async () => (await gh.rest.actions.getEnvironmentSecret({ owner, repo, environment_name, secret_name })).data,
      put: async (encrypted_value: string, key_id: string) => void (await gh.rest.actions.createOrUpdateEnvironmentSecret({ owner, repo, environment_name, secret_name, encrypted_value, key_id })),
    };
  }
  return {
    where: t.repository,
    publicKey: () => gh.rest.actions.getRepoPublicKey({ owner, repo }),
    get: async () => (await gh.rest.actions.getRepoSecret({ owner, repo, secret_name })).data,
    put: async (encrypted_value: string, key_id: string) => void (await gh.rest.actions.createOrUpdateRepoSecret({ owner, repo, secret_name, encrypted_value, key_id })),
  };
}

export function githubActionsSecret(spec: GitHubActionsSecretSpec): Consumer {
  const valueOf = (credential: Credential) => {
    const value = textOf(credential, spec.field);
    if (!value) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: the stored value has no text field ${spec.field}`, 'ConsumerUnhealthy');
    return value;
  };

  async function write(gh: GitHubClient, t: Target, value: string): Promise<void> {
    const api = scopeApi(gh, t);
    const what = `write of ${describe(t)}`;
    const { data: key } = await onGitHub(what, api.where, needsOf(t), api.publicKey);
    const encrypted_value = await seal(value, key.key);
    await onGitHub(what, api.where, needsOf(t), () => api.put(encrypted_value, key.key_id, what));
  }

  /** When GitHub last wrote the secret; a missing one reads as never. */
  async function updatedAt(gh: GitHubClient, t: Target): Promise<string | undefined> {
    const api = scopeApi(gh, t);
    const what = `read of ${describe(t)}`;
    try {
      return (await onGitHub(what, api.where, needsOf(t), api.get)).updated_at;
    } catch (err) {
      if (!(err instanceof ApplicationFailure && err.details?.[0] === 404)) throw err;
      // GitHub answers 404 for a scope the token cannot see, too: only if the scope's public key
      // can be read is it the secret that is missing (an unhealthy consumer, not a refusal).
      await onGitHub(what, api.where, needsOf(t), api.publicKey);
      return undefined;
    }
  }

  async function runVerifyWorkflow(gh: GitHubClient, ref: VersionRef, signal?: AbortSignal): Promise<Health> {
    const v = spec.verifyWorkflow!;
    const { owner, repo } = splitRepository(v.repository);
    const what = `verify workflow ${v.workflow}`;
    // return_run_details makes GitHub answer with the run it created, so no run list is guessed at.
    // https://docs.github.com/en/rest/actions/workflows#create-a-workflow-dispatch-event
    const { data } = await onGitHub(what, v.repository, 'actions=write', () =>
      gh.rest.actions.createWorkflowDispatch({ owner, repo, workflow_id: v.workflow, ref: v.ref, inputs: { rekey_version_id: ref.versionId }, return_run_details: true }),
    );
    const runId = (data as { workflow_run_id?: number } | undefined)?.workflow_run_id;
    if (!runId) return { healthy: false, final: true, detail: `GitHub did not say which run ${what} started (GitHub Enterprise Server before return_run_details?)` };
    const run = await waitFor(parseDuration(v.timeout), signal, async () => {
      const { data } = await onGitHub(what, v.repository, 'actions=read', () => gh.rest.actions.getWorkflowRun({ owner, repo, run_id: runId }));
      return data.status === 'completed' ? data : undefined;
    });
    if (!run) return { healthy: false, final: true, detail: `verify workflow run ${runId} did not complete within ${v.timeout}` };
    return run.conclusion === 'success'
      ? { healthy: true, detail: `verify workflow run ${runId} succeeded` }
      : { healthy: false, final: true, detail: `verify workflow run ${runId} concluded ${run.conclusion ?? 'without a conclusion'}` };
  }

  return {
    name: spec.name,

    async deploy(_ref, credential, { signal } = {}) {
      const gh = await githubClient(spec.github, signal);
      const value = valueOf(credential);
      // One after the other: GitHub asks integrators not to write concurrently.
      for (const t of spec.targets) await write(gh, t, value);
    },

    async health(ref, signal): Promise<Health> {
      const gh = await githubClient(spec.github, signal);
      // GitHub keeps whole seconds; the version was stored before deploy wrote it, so a write for
      // it is never earlier than the second the store wrote it in.
      const since = ref.createdAt ? Math.floor(Date.parse(ref.createdAt) / 1000) * 1000 : undefined;
      for (const t of spec.targets) {
        const at = await updatedAt(gh, t);
        if (!at) return { healthy: false, detail: `${describe(t)} does not exist` };
        if (since !== undefined && Date.parse(at) < since) return { healthy: false, detail: `${describe(t)} was last written at ${at}, before this version existed` };
      }
      if (spec.verifyWorkflow) return runVerifyWorkflow(gh, ref, signal);
      return { healthy: true, detail: `${spec.targets.length} secret(s) written after the version was stored` };
    },
  };
}

