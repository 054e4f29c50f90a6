import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationSchema } from '../../lib/schema';
import type { Consumer, Health, VersionRef } from '../provider';

export const httpConsumerSchema = z
  .object({
    type: z.literal('http'),
    name: z.string().min(1),
    /**
     * POSTed {secret, store, versionId}: the service fetches that version from the store itself,
     * so the value never travels through rekey.
     */
    reloadUrl: z.url(),
    /** Must answer 2xx with a body that contains the version id the service is using. */
    healthUrl: z.url(),
    headers: z.record(z.string(), z.string()).default({}),
    requestTimeout: durationSchema.default('10s'),
  })
  .strict();
export type HttpConsumerSpec = z.infer<typeof httpConsumerSchema>;

export function httpConsumer(spec: HttpConsumerSpec): Consumer {
  const timeoutMs = parseDuration(spec.requestTimeout);

  return {
    name: spec.name,

    async deploy(ref: VersionRef) {
      const res = await fetch(spec.reloadUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...spec.headers },
        body: JSON.stringify({ secret: ref.secret, store: ref.storeRef, versionId: ref.versionId }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`reload of consumer ${spec.name} answered HTTP ${res.status}`);
    },

    async health(ref: VersionRef): Promise<Health> {
      try {
        const res = await fetch(spec.healthUrl, { headers: spec.headers, signal: AbortSignal.timeout(timeoutMs) });
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
