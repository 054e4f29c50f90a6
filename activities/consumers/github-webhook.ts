// The sender of a webhook signing secret: GitHub signs each delivery with the hook's secret
// (X-Hub-Signature-256), and the receivers are the Secret's other consumers, deployed with
// `keys: current-and-previous` so they accept both keys while GitHub switches. This consumer does
// nothing at deploy (the receivers must hold the new key first); at commit, just before promote, it
// switches the hook's secret and proves, with a ping, that the receiver answers 2xx to a delivery
// signed with the new key; abort switches the hook back.
// https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { durationBetween } from '../../lib/schema';
import { parseDuration } from '../../lib/duration';
import { githubClient, waitFor, githubConnectionSchema, onGitHub, organizationSchema, repositorySchema, splitRepository, type GitHubClient } from '../github';
import { textOf, type Consumer, type Credential, type Health, type VersionRef } from '../provider';

// Hook URLs appear in failures and reports: a token in one would be published.
const hookUrl = z.url().refine((url) => !URL.canParse(url) || (!new URL(url).username && !new URL(url).password && !new URL(url).search), {
  message: 'must not carry a user name, password or query (they would show in reports)',
});
const repositoryHook = z.object({ repository: repositorySchema }).strict();
const organizationHook = z.object({ organization: organizationSchema }).strict();

export const githubWebhookSchema = z
  .object({
    type: z.literal('github-webhook'),
    name: z.string().min(1),
    github: githubConnectionSchema,
    /** The field of the stored value that is the signing secret. */
    field: z.string().min(1).max(200).default('value'),
    /** Each hook by its id, or by its URL when ids differ between environments. */
    hooks: z
      .array(z.union([repositoryHook.extend({ id: z.number().int().positive() }).strict(), repositoryHook.extend({ url: hookUrl }).strict(), organizationHook.extend({ id: z.number().int().positive() }).strict(), organizationHook.extend({ url: hookUrl }).strict()]))
      .min(1)
      .max(20),
    /** How long a ping's delivery may take to show up in the hook's delivery list. */
    pingTimeout: durationBetween('5s', '10m').default('60s'),
  })
  .strict();
export type GitHubWebhookSpec = z.infer<typeof githubWebhookSchema>;
type Hook = GitHubWebhookSpec['hooks'][number];
type Delivery = { id: number; event: string; redelivery: boolean; status: string; status_code: number };

/** How far back the delivery list is read for a ping (100 deliveries a page). */
const MAX_DELIVERY_PAGES = 10;

const NEEDS = { repository: 'repository_hooks=write', organization: 'organization_hooks=write' };

/** The calls for a repository's or an organisation's hook, one shape for both. */
function hookApi(gh: GitHubClient, hook: Hook) {
  if ('repository' in hook) {
    const base = splitRepository(hook.repository);
    return {
      where: hook.repository,
      needs: NEEDS.repository,
      list: async () => (await gh.rest.repos.listWebhooks({ ...base, per_page: 100 })).data.map((h) => ({ id: h.id, url: h.config.url })),
      get: async (hook_id: number) => (await gh.rest.repos.getWebhookConfigForRepo({ ...base, hook_id })).data,
      // Only `secret`: a partial update leaves url, content type and TLS checking as they are.
      // https://docs.github.com/en/rest/repos/webhooks#update-a-webhook-configuration-for-a-repository
      setSecret: async (hook_id: number, secret: string) => void (await gh.rest.repos.updateWebhookConfigForRepo({ ...base, hook_id, secret })),
      ping: async (hook_id: number) => void (await gh.rest.repos.pingWebhook({ ...base, hook_id })),
      deliveries: (hook_id: number) => gh.paginate.iterator(gh.rest.repos.listWebhookDeliveries, { ...base, hook_id, per_page: 100 }),
    };
  }
  const org = hook.organization;
  return {
    where: `organisation ${org}`,
    needs: NEEDS.organization,
    list: async () => (await gh.rest.orgs.listWebhooks({ org, per_page: 100 })).data.map((h) => ({ id: h.id, url: h.config.url })),
    get: async (hook_id: number) => (await gh.rest.orgs.getWebhookConfigForOrg({ org, hook_id })).data,
    setSecret: async (hook_id: number, secret: string) => void (await gh.rest.orgs.updateWebhookConfigForOrg({ org, hook_id, secret })),
    ping: async (hook_id: number) => void (await gh.rest.orgs.pingWebhook({ org, hook_id })),
    deliveries: (hook_id: number) => gh.paginate.iterator(gh.rest.orgs.listWebhookDeliveries, { org, hook_id, per_page: 100 }),
  };
}

const describe = (hook: Hook) => `${'repository' in hook ? hook.repository : `organisation ${hook.organization}`} hook ${'id' in hook ? hook.id : hook.url}`;

export function githubWebhook(spec: GitHubWebhookSpec): Consumer {
  const secretOf = (credential: Credential) => {
    const value = textOf(credential, spec.field);
    if (!value) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: the stored value has no text field ${spec.field}`, 'ConsumerUnhealthy');
    return value;
  };

  /** The hook's id, checked to exist and to be readable with the token. */
  async function resolve(gh: GitHubClient, hook: Hook): Promise<number> {
    const api = hookApi(gh, hook);
    if ('id' in hook) {
      await onGitHub(`read of ${describe(hook)}`, api.where, api.needs, () => api.get(hook.id));
      return hook.id;
    }
    const found = (await onGitHub(`hook list`, api.where, api.needs, api.list)).filter((h) => h.url === hook.url);
    if (found.length !== 1) {
      throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: ${found.length} hooks of ${api.where} deliver to ${hook.url}; name the hook by id`, 'ConsumerUnhealthy');
    }
    return found[0].id;
  }

  /**
   * The hook's deliveries newer than `known` (newest first), reading pages until one it knew
   * shows up: a busy hook may push a ping off the first page.
   */
  async function newDeliveries(api: ReturnType<typeof hookApi>, id: number, what: string, known?: Set<number>): Promise<Delivery[]> {
    const found: Delivery[] = [];
    await onGitHub(`delivery list of ${what}`, api.where, api.needs, async () => {
      let pages = 0;
      for await (const page of api.deliveries(id)) {
        for (const d of page.data) {
          if (known?.has(d.id)) return;
          found.push(d);
        }
        if (!known || ++pages >= MAX_DELIVERY_PAGES) return;
      }
    });
    return found;
  }

  /** Switch one hook to `secret`, ping it, and wait for that ping's delivery: 2xx or a failure that says what the receiver answered. */
  async function switchAndPing(gh: GitHubClient, hook: Hook, secret: string, { signal, guard, deadline }: { signal?: AbortSignal; guard: () => Promise<void>; deadline: number }): Promise<string> {
    const api = hookApi(gh, hook);
    const id = await resolve(gh, hook);
    const what = describe(hook);
    // Switching with no time left to see the ping would leave the hook switched and unproven.
    const timeLeft = Math.min(parseDuration(spec.pingTimeout), deadline - Date.now());
    if (timeLeft < 1_000) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: no time left in the verify stage to switch ${what} and see its ping`, 'ConsumerUnhealthy');
    await guard();
    await onGitHub(`secret switch of ${what}`, api.where, api.needs, () => api.setSecret(id, secret));
    // What GitHub delivered before this point may have been signed with the old key: only a ping
    // delivered after the switch proves the new one.
    const before = new Set((await newDeliveries(api, id, what)).map((d) => d.id));
    // GitHub answers the ping request at once and delivers it afterwards.
    // https://docs.github.com/en/rest/repos/webhooks#ping-a-repository-webhook
    await onGitHub(`ping of ${what}`, api.where, api.needs, () => api.ping(id));
    const ping = await waitFor(timeLeft, signal, async () =>
      (await newDeliveries(api, id, what, before)).filter((d) => d.event === 'ping' && d.redelivery === false).at(-1),
    );
    if (!ping) throw ApplicationFailure.nonRetryable(`consumer ${spec.name}: no delivery of the ping to ${what} within ${Math.round(timeLeft / 1000)}s`, 'ConsumerUnhealthy');
    // A listed delivery was attempted, and its answer is final; status code 0 means no connection.
    if (!Number.isInteger(ping.status_code) || ping.status_code < 200 || ping.status_code >= 300) {
      throw ApplicationFailure.nonRetryable(
        `consumer ${spec.name}: the receiver of ${what} answered ${ping.status_code} (${String(ping.status).slice(0, 100)}) to a ping signed with the new key`,
        'ConsumerUnhealthy',
      );
    }
    return `${what}: ping signed with the new key answered ${ping.status_code}`;
  }

  return {
    name: spec.name,

    // The hook keeps signing with the current key until commit: the receivers must hold the new one first.
    async deploy(_ref, _credential, { signal, rollback } = {}) {
      // Deploy changed nothing, so a rollback has nothing to put back (abort switched the hook back).
      if (rollback) return;
      const gh = await githubClient(spec.github, signal);
      for (const hook of spec.hooks) await resolve(gh, hook);
    },

    async health(): Promise<Health> {
      return { healthy: true, detail: `${spec.hooks.length} hook(s) found; they switch to the new key at promote` };
    },

    async commit(_ref: VersionRef, credential, options) {
      const gh = await githubClient(spec.github, options.signal);
      const secret = secretOf(credential);
      const proved: string[] = [];
      for (const hook of spec.hooks) proved.push(await switchAndPing(gh, hook, secret, options));
      return proved.join('; ');
    },

    async abort(_current: VersionRef, credential, { signal, guard }) {
      const gh = await githubClient(spec.github, signal);
      const secret = secretOf(credential);
      for (const hook of spec.hooks) {
        const api = hookApi(gh, hook);
        const id = await resolve(gh, hook);
        await guard();
        await onGitHub(`secret switch back of ${describe(hook)}`, api.where, api.needs, () => api.setSecret(id, secret));
      }
    },
  };
}
