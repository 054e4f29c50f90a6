// The rotation runbook as a durable workflow. Read it top to bottom:
//   generate + store-dual -> prepare target -> deploy to consumers -> verify
//   -> promote (point of no return) -> overlap -> revoke -> post-verify
// Any failure before promote rolls back in reverse order; after promote it only moves forward.
import {
  ActivityFailure,
  CancellationScope,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
  log,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { PendingVersion, RotationActivities } from '../activities/rotation';
import type { SecretSpec } from '../lib/manifest';
import { parseDuration } from '../lib/duration';
import {
  OUTCOME_ATTRIBUTE,
  REQUESTED_BY_ATTRIBUTE,
  SECRET_ATTRIBUTE,
  STAGE_ATTRIBUTE,
  progressQuery,
  type ConsumerProgress,
  type Progress,
  type RotationInput,
  type RotationReport,
  type Stage,
} from './messages';

const NON_RETRYABLE_TYPES = ['UnknownSecret', 'NoCurrentVersion', 'ConsumerUnhealthy', 'TargetRejectedCredential'];

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

function activitiesFor(spec: SecretSpec) {
  const t = spec.policy.timeouts;
  const ms = (d: string) => parseDuration(d);
  return {
    generate: proxyActivities<RotationActivities>(stageOptions(ms(t.generate))),
    prepare: proxyActivities<RotationActivities>(stageOptions(ms(t.prepare))),
    deploy: proxyActivities<RotationActivities>(stageOptions(ms(t.deploy))),
    // The health poll runs until its own deadline; the activity gets a little more to report it.
    verify: proxyActivities<RotationActivities>(stageOptions(ms(t.verify) + 30_000)),
    // After promote there is no way back: retry until it works, however long that takes.
    forward: proxyActivities<RotationActivities>(
      stageOptions(ms(t.revoke), { scheduleToCloseTimeout: undefined, retry: { initialInterval: '1s', maximumInterval: '1m' } }),
    ),
    // Rollback must finish too, but it cannot wait forever: it is bounded generously.
    rollback: proxyActivities<RotationActivities>(stageOptions(60_000, { scheduleToCloseTimeout: '10m', retry: { maximumInterval: '30s' } })),
  };
}

/** Run `work` for every item with at most `limit` in flight, settling all of them. */
async function forEachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<PromiseSettledResult<void>[]> {
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

/** The innermost message of a failure, without Temporal's wrapping ("Activity task failed"). */
function causeOf(err: unknown): string {
  let e = err as Error & { cause?: unknown };
  while (e instanceof ActivityFailure && e.cause) e = e.cause as Error & { cause?: unknown };
  return e?.message ?? String(err);
}

/** A stage failed and a consumer is to blame; the report names it. */
class ConsumerFailure extends Error {
  constructor(readonly consumer: string, message: string) {
    super(message);
  }
}

export async function rotateSecret(input: RotationInput): Promise<RotationReport> {
  const { secret } = input;
  const startedAt = new Date().toISOString();
  const progress: Progress = { secret, stage: 'generate', versions: {}, consumers: [], stages: [] };
  setHandler(progressQuery, () => progress);

  upsertSearchAttributes([
    { key: SECRET_ATTRIBUTE, value: secret },
    ...(input.requestedBy ? [{ key: REQUESTED_BY_ATTRIBUTE, value: input.requestedBy }] : []),
  ]);

  function enter(stage: Stage): void {
    const now = Date.now();
    const open = progress.stages[progress.stages.length - 1];
    if (open && open.durationMs === undefined) open.durationMs = now - Date.parse(open.startedAt);
    progress.stage = stage;
    if (stage !== 'done') progress.stages.push({ stage, startedAt: new Date(now).toISOString() });
    upsertSearchAttributes([{ key: STAGE_ATTRIBUTE, value: stage }]);
    setCurrentDetails(describe(progress));
    log.info('rotation stage', { secret, stage });
  }

  function consumer(name: string): ConsumerProgress {
    return progress.consumers.find((c) => c.name === name)!;
  }

  function setConsumer(name: string, state: ConsumerProgress['state'], detail?: string): void {
    Object.assign(consumer(name), { state, detail });
    setCurrentDetails(describe(progress));
  }

  enter('generate');
  const spec = input.spec ?? (await proxyActivities<RotationActivities>(stageOptions(30_000)).resolveSecretSpec(secret));
  const act = activitiesFor(spec);
  const ref = { secret, spec };
  progress.consumers = spec.consumers.map((c) => ({ name: c.name, state: 'waiting' }));
  const rotationId = `${workflowInfo().workflowId}/${workflowInfo().runId}`;

  // 1. generate + store-dual: the new value sits next to the old one as the pending version.
  const versions: PendingVersion = await act.generate.createPendingVersion({ ...ref, rotationId });
  progress.versions = { current: versions.currentVersionId, pending: versions.pendingVersionId };
  const pair = { ...ref, currentVersionId: versions.currentVersionId, pendingVersionId: versions.pendingVersionId };
  const consumerNames = spec.consumers.map((c) => c.name);
  const touched = new Set<string>();

  try {
    // 2. prepare target: it learns the new credential while the old one still works.
    enter('prepare');
    await act.prepare.prepareTarget(pair);

    // 3. deploy to consumers, in parallel up to the policy's limit.
    enter('deploy');
    await everyConsumer(async (name) => {
      setConsumer(name, 'deploying');
      touched.add(name);
      await act.deploy.deployToConsumer({ ...ref, consumer: name, versionId: pair.pendingVersionId });
      setConsumer(name, 'deployed');
    });

    // 4. verify: every consumer healthy on the new version, and the target accepts it.
    enter('verify');
    const deadline = Date.now() + parseDuration(spec.policy.timeouts.verify);
    await everyConsumer(async (name) => {
      setConsumer(name, 'verifying');
      const detail = await act.verify.awaitConsumerHealthy({ ...ref, consumer: name, versionId: pair.pendingVersionId, deadline });
      setConsumer(name, 'verified', detail);
    });
    await act.verify.verifyTarget(pair);
  } catch (err) {
    const failedStage = progress.stage;
    const message = err instanceof ConsumerFailure ? err.message : causeOf(err);
    const cancelled = isCancellation(err);
    // Compensation must run to the end even when the rotation itself was cancelled.
    await CancellationScope.nonCancellable(() => rollback());
    const report = finish('rolled-back', {
      stage: failedStage,
      message: cancelled ? 'rotation cancelled' : message,
      consumer: err instanceof ConsumerFailure ? err.consumer : undefined,
    });
    if (cancelled) throw err;
    return report;
  }

  // From here on there is no rollback: the rotation only moves forward, even if cancelled.
  return CancellationScope.nonCancellable(async () => {
    // 5. promote: pending becomes current, the old current becomes previous.
    enter('promote');
    await act.forward.promoteVersion({ ...ref, pendingVersionId: pair.pendingVersionId });

    // 6. overlap: both credentials work while connections opened with the old one drain.
    enter('overlap');
    await sleep(parseDuration(spec.policy.overlap));

    // 7. revoke: the old credential stops working at the target.
    enter('revoke');
    const old = { ...ref, oldVersionId: pair.currentVersionId, newVersionId: pair.pendingVersionId };
    await act.forward.revokeOldCredential(old);

    // 8. post-verify: old rejected, new accepted. A failure here alerts; it cannot undo anything.
    enter('post-verify');
    const check = await act.forward.postVerify(old);
    if (!check.oldRejected || !check.newAccepted) log.error('post-verify found a problem', { secret, detail: check.detail });
    return finish('rotated', undefined, check);
  });

  async function everyConsumer(work: (name: string) => Promise<void>): Promise<void> {
    const results = await forEachLimited(consumerNames, spec.policy.maxParallelConsumers, async (name) => {
      try {
        await work(name);
      } catch (err) {
        setConsumer(name, 'failed', causeOf(err));
        throw err;
      }
    });
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed >= 0) {
      const name = consumerNames[failed];
      const reason = (results[failed] as PromiseRejectedResult).reason;
      if (isCancellation(reason)) throw reason;
      throw new ConsumerFailure(name, `consumer ${name}: ${causeOf(reason)}`);
    }
  }

  async function rollback(): Promise<void> {
    enter('rollback');
    // Reverse order: consumers back to the current version, then the target, then the store.
    await forEachLimited([...touched], spec.policy.maxParallelConsumers, async (name) => {
      const failedDetail = consumer(name).state === 'failed' ? consumer(name).detail : undefined;
      setConsumer(name, 'rolling-back', failedDetail);
      await act.rollback.deployToConsumer({ ...ref, consumer: name, versionId: pair.currentVersionId });
      setConsumer(name, 'rolled-back', failedDetail);
    });
    await act.rollback.undoTarget(pair);
    await act.rollback.discardPendingVersion({ ...ref, pendingVersionId: pair.pendingVersionId });
  }

  function finish(outcome: RotationReport['outcome'], failure?: RotationReport['failure'], postVerify?: RotationReport['postVerify']): RotationReport {
    enter('done');
    upsertSearchAttributes([{ key: OUTCOME_ATTRIBUTE, value: outcome }]);
    const report: RotationReport = {
      secret,
      outcome,
      requestedBy: input.requestedBy,
      reason: input.reason,
      startedAt,
      finishedAt: new Date().toISOString(),
      versions: {
        before: pair.currentVersionId,
        after: outcome === 'rotated' ? pair.pendingVersionId : pair.currentVersionId,
        pending: pair.pendingVersionId,
      },
      discardedStaleVersionId: versions.discardedStaleVersionId,
      stages: progress.stages,
      consumers: progress.consumers,
      failure,
      postVerify,
    };
    setCurrentDetails(describe(progress, report));
    return report;
  }
}

/** Markdown for the Temporal UI's "current details" panel. */
function describe(progress: Progress, report?: RotationReport): string {
  const lines = [
    `### Rotation of \`${progress.secret}\``,
    report ? `**Outcome:** ${report.outcome}${report.failure ? ` at ${report.failure.stage}: ${report.failure.message}` : ''}` : `**Stage:** ${progress.stage}`,
    '',
    `Versions: current \`${progress.versions.current ?? '?'}\`, pending \`${progress.versions.pending ?? '?'}\``,
    '',
    '| consumer | state | detail |',
    '|---|---|---|',
    ...progress.consumers.map((c) => `| ${c.name} | ${c.state} | ${c.detail ?? ''} |`),
  ];
  return lines.join('\n');
}
