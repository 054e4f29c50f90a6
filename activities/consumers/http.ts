import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { consumerKeysSchema, durationBetween } from '../../lib/schema';
import type { Consumer, DeployOptions, Health, VersionRef } from '../provider';
import { describeStore, readCurrent, storeSchema } from '../stores';

// URLs are echoed into failure details and reports, so a password in one would be published.
const urlWithoutCredentials = (field: string) =>
  z.url().refine((url) => !URL.canParse(url) || (!new URL(url).username && !new URL(url).password), {
    message: `${field} must not carry a user name or password; put credentials in headers (a store reference)`,
  });

/** A header's value read from a store when a request is made, so a token never sits in a manifest or a workflow input. */
const storedHeaderSchema = z
  .object({
    store: storeSchema,
    field: z.string().min(1),
    /** Put before the stored value, e.g. "Bearer ". */
    prefix: z.string().default(''),
  })
  .strict();

export const httpConsumerSchema = z
  .object({
    type: z.literal('http'),
    name: z.string().min(1),
    /**
     * POSTed {secret, store, versionId}: the service fetches that version from the store itself,
     * so the value never travels through rekey.
     */
    reloadUrl: urlWithoutCredentials('reloadUrl'),
    /** Must answer 2xx with a body that contains the version id the service is using. */
    healthUrl: urlWithoutCredentials('healthUrl'),
    headers: z.record(z.string(), z.union([z.string(), storedHeaderSchema])).default({}),
    requestTimeout: durationBetween('100ms', '10m').default('10s'),
    /** With current-and-previous the reload body also names the version being replaced (previousVersionId). */
    keys: consumerKeysSchema,
  })
  .strict();
export type HttpConsumerSpec = z.infer<typeof httpConsumerSchema>;

export function httpConsumer(spec: HttpConsumerSpec): Consumer {
  const timeoutMs = parseDuration(spec.requestTimeout);

  /** The headers with stored values read now; errors name the header and the store, never a value. */
  async function headers(extra: Record<string, string> = {}): Promise<Headers> {
    const out = new Headers(extra);
    for (const [name, value] of Object.entries(spec.headers)) {
      let text: string;
      if (typeof value === 'string') text = value;
      else {
        const stored = (await readCurrent(value.store))[value.field];
        if (!stored) throw new Error(`header ${name} of consumer ${spec.name}: ${describeStore(value.store)} has no field ${value.field}`);
        text = value.prefix + stored;
      }
      try {
        out.set(name, text);
      } catch {
        // fetch's own message quotes the offending value.
        throw new Error(`header ${name} of consumer ${spec.name} is not a valid HTTP header (name or value)`);
      }
    }
    return out;
  }

  // Redirects are not followed: they would carry the headers to wherever the service points.
  const request = async (url: string, init: RequestInit, cancelled?: AbortSignal) =>
    fetch(url, { ...init, redirect: 'manual', signal: cancelled ? AbortSignal.any([AbortSignal.timeout(timeoutMs), cancelled]) : AbortSignal.timeout(timeoutMs) });

  return {
    name: spec.name,

    async deploy(ref: VersionRef, _credential: unknown, { signal: cancelled, previous }: DeployOptions = {}) {
      const res = await request(
        spec.reloadUrl,
        {
          method: 'POST',
          headers: await headers({ 'content-type': 'application/json' }),
          body: JSON.stringify({ secret: ref.secret, store: ref.storeRef, versionId: ref.versionId, ...(previous ? { previousVersionId: previous.ref.versionId } : {}) }),
        },
        cancelled,
      );
      await res.body?.cancel();
      if (!res.ok) throw new Error(`reload of consumer ${spec.name} answered HTTP ${res.status}`);
    },

    async health(ref: VersionRef, cancelled?: AbortSignal): Promise<Health> {
      try {
        const res = await request(spec.healthUrl, { headers: await headers() }, cancelled);
        const body = await res.text();
        if (!res.ok) return { healthy: false, detail: `health answered HTTP ${res.status}` };
        if (!body.includes(ref.versionId)) return { healthy: false, detail: 'healthy but not yet using the new version' };
        return { healthy: true, detail: 'healthy and using the new version' };
      } catch (err) {
        return { healthy: false, detail: `health request failed: ${(err as Error).message}` };
      }
    },
  };
}
