// How the runbook calls its activities: per-stage timeouts and retries from the worker's plan,
// and a bounded fan-out over consumers. The runbook itself is workflows/rotateSecret.ts.
import { ActivityCancellationType, proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import type { RotationPlan } from './messages';

/** Failures retrying cannot change: refused by the worker's manifests, checks or the target. */
const NON_RETRYABLE_TYPES = [
  'UnknownSecret',
  'SpecMismatch',
  'SpecChanged',
  'NoManifests',
  'NoCurrentVersion',
  'ConsumerUnhealthy',
  'TargetRejectedCredential',
  'ForeignPendingVersion',
  'ExternalRotation',
  'NotAuthorized',
  'TargetRefused',
  'AuditUnavailable',
  'GitHubRefused',
];

/** Activity options for one stage: its manifest timeout bounds the stage, retries included. */
function stageOptions(timeoutMs: number, overrides: Partial<ActivityOptions> = {}): ActivityOptions {
  return {
    startToCloseTimeout: timeoutMs,
    scheduleToCloseTimeout: timeoutMs,
    // Every activity heartbeats while it runs, so a killed worker is noticed in seconds.
    heartbeatTimeout: '15s',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '15s', nonRetryableErrorTypes: NON_RETRYABLE_TYPES },
    ...overrides,
  };
}

export function activitiesFor(plan: RotationPlan) {
  const t = plan.timeoutsMs;
  const options = {
    generate: stageOptions(t.generate),
    // What rollback undoes must have stopped before rollback starts: a cancelled step is waited for.
    prepare: stageOptions(t.prepare, { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED }),
    deploy: stageOptions(t.deploy, { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED }),
    // The health poll runs until its own deadline; the activity gets a little more to report it.
    verify: stageOptions(t.verify + 30_000, { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED }),
    // After promote there is no way back: retry until it works, however long that takes.
    forward: stageOptions(t.revoke, {
      scheduleToCloseTimeout: undefined,
      retry: { initialInterval: '1s', maximumInterval: '1m', nonRetryableErrorTypes: NON_RETRYABLE_TYPES },
    }),
    // Rollback must finish too, but it cannot wait forever: it is bounded generously.
    rollback: stageOptions(Math.min(60_000, t.rollback), { scheduleToCloseTimeout: t.rollback, retry: { maximumInterval: '30s', nonRetryableErrorTypes: NON_RETRYABLE_TYPES } }),
  };
  const proxy = (o: ActivityOptions) => proxyActivities<RotationActivities>(o);
  return {
    generate: proxy(options.generate),
    prepare: proxy(options.prepare),
    deploy: proxy(options.deploy),
    verify: proxy(options.verify),
    forward: proxy(options.forward),
    rollback: proxy(options.rollback),
    /** Per-consumer calls carry a summary, so the UI's timeline says which consumer each one is. */
    withSummary: (stage: keyof typeof options, summary: string): ActivityOptions => ({ ...options[stage], summary }),
  };
}

/** Run `work` for every item with at most `limit` in flight, settling all of them. */
export async function forEachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<PromiseSettledResult<void>[]> {
  const results: PromiseSettledResult<void>[] = new Array(items.length);
  let next = 0;
  async function lane(): Promise<void> {
    while (next < items.length) {
      const i = next++;
      try {
        await work(items[i]);
        results[i] = { status: 'fulfilled', value: undefined };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
