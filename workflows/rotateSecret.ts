// The rotation runbook as a durable workflow. Read it top to bottom:
//   generate + store-dual -> prepare target -> deploy to consumers -> verify -> approve (if asked)
//   -> promote (point of no return) -> overlap -> revoke -> post-verify
// Any failure before promote rolls back in reverse order; after promote it only moves forward.
import {
  ActivityFailure,
  CancellationScope,
  condition,
  isCancellation,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
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
  approveSignal,
  decideUpdate,
  progressQuery,
  rejectSignal,
  type AuditEvent,
  type ConsumerProgress,
  type Decision,
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
  const options = {
    generate: stageOptions(ms(t.generate)),
    prepare: stageOptions(ms(t.prepare)),
    deploy: stageOptions(ms(t.deploy)),
    // The health poll runs until its own deadline; the activity gets a little more to report it.
    verify: stageOptions(ms(t.verify) + 30_000),
    // After promote there is no way back: retry until it works, however long that takes.
    forward: stageOptions(ms(t.revoke), { scheduleToCloseTimeout: undefined, retry: { initialInterval: '1s', maximumInterval: '1m' } }),
    // Rollback must finish too, but it cannot wait forever: it is bounded generously.
    rollback: stageOptions(60_000, { scheduleToCloseTimeout: '10m', retry: { maximumInterval: '30s' } }),
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

/** Evidence must be written even across crashes; it is idempotent per rotation, event and actor. */
const auditLog = proxyActivities<RotationActivities>(
  stageOptions(30_000, { scheduleToCloseTimeout: '1h', retry: { maximumInterval: '1m' } }),
);

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

/** No approval came, or a rejection did: roll back. */
class ApprovalFailure extends Error {}

export async function rotateSecret(input: RotationInput): Promise<RotationReport> {
  const { secret } = input;
  const emergency = input.emergency !== undefined;
  const revokeFirst = input.emergency?.revokeFirst === true;
  const startedAt = new Date().toISOString();
  const rotationId = `${workflowInfo().workflowId}/${workflowInfo().runId}`;
  const progress: Progress = {
    secret,
    stage: 'generate',
    requestedBy: input.requestedBy,
    emergency,
    versions: {},
    consumers: [],
    stages: [],
    approval: { required: false, needed: 0, approvedBy: [], ignored: [], waitingFor: [], escalated: false },
  };
  const approval = progress.approval;
  let approvers: string[] = [];
  const audits: Promise<void>[] = [];
  const warnings: string[] = [];
  let revokedAt: string | undefined;

  setHandler(progressQuery, () => progress);

  // --- approvals: an update with a validator, and signal twins for the Temporal UI -------------
  /** Why a decision cannot count, or undefined if it can. Must not change state: validators can't. */
  function refuse(decision: Decision): string | undefined {
    if (progress.stage !== 'approve') return `the rotation of ${secret} is not waiting for approval (stage: ${progress.stage})`;
    if (!decision || typeof decision.approver !== 'string' || !decision.approver) return 'approver is required';
    if (!approvers.includes(decision.approver)) {
      return `${decision.approver} is not an approver of ${secret} (approvers: ${approvers.join(', ')})`;
    }
    if (decision.approve && decision.approver === input.requestedBy) {
      return `${decision.approver} requested this rotation and cannot approve it (two-person rule)`;
    }
    if (approval.approvedBy.some((a) => a.approver === decision.approver)) return `${decision.approver} has already approved`;
    return undefined;
  }

  function accept(decision: Decision): void {
    const entry = { approver: decision.approver, comment: decision.comment, at: new Date().toISOString() };
    if (decision.approve) approval.approvedBy.push(entry);
    else approval.rejectedBy ??= entry;
    approval.waitingFor = approval.waitingFor.filter((a) => a !== decision.approver);
    audit(decision.approve ? 'approved' : 'rejected', decision.approver, { reason: decision.comment });
    setCurrentDetails(describe(progress));
  }

  function decisionResult() {
    const outcome = approval.rejectedBy ? 'rejected' : approval.approvedBy.length >= approval.needed ? 'approved' : 'waiting';
    return { approvals: approval.approvedBy.length, needed: approval.needed, outcome } as const;
  }

  setHandler(
    decideUpdate,
    (decision) => {
      accept(decision);
      return decisionResult();
    },
    {
      validator: (decision) => {
        const why = refuse(decision);
        if (why) throw new Error(why);
      },
    },
  );

  const signalled = (approve: boolean) => (d: { approver: string; comment?: string }) => {
    const decision = { approver: d?.approver, comment: d?.comment, approve };
    const why = refuse(decision);
    if (why) {
      // A signal cannot be refused before it lands in history, so it is recorded and ignored.
      approval.ignored.push({ approver: String(d?.approver ?? ''), reason: why, at: new Date().toISOString() });
      audit('approval-ignored', String(d?.approver ?? 'unknown'), { detail: why });
      log.warn('ignored an approval signal', { secret, reason: why });
      return;
    }
    accept(decision);
  };
  setHandler(approveSignal, signalled(true));
  setHandler(rejectSignal, signalled(false));

  // --- bookkeeping ---------------------------------------------------------------------------
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

  function audit(event: AuditEvent['event'], actor: string, extra: Partial<AuditEvent> = {}): void {
    const record: AuditEvent = {
      rotationId,
      secret,
      event,
      actor,
      at: new Date().toISOString(),
      versions: { ...progress.versions },
      ...extra,
    };
    // Started now, awaited before the workflow ends; a failing audit write is loud but never blocks.
    audits.push(
      auditLog.recordAuditEvent(record).catch((err) => {
        log.error('could not write the audit record', { secret, event, error: causeOf(err) });
      }),
    );
  }

  function consumer(name: string): ConsumerProgress {
    return progress.consumers.find((c) => c.name === name)!;
  }

  function setConsumer(name: string, state: ConsumerProgress['state'], detail?: string): void {
    Object.assign(consumer(name), { state, detail });
    setCurrentDetails(describe(progress));
  }

  audit('requested', input.requestedBy ?? 'unknown', { reason: input.reason, detail: emergency ? `emergency${revokeFirst ? ', revoke first' : ''}` : undefined });
  enter('generate');
  const spec = input.spec ?? (await proxyActivities<RotationActivities>(stageOptions(30_000)).resolveSecretSpec(secret));
  const act = activitiesFor(spec);
  const ref = { secret, spec };
  progress.consumers = spec.consumers.map((c) => ({ name: c.name, state: 'waiting' }));
  approvers = spec.policy.approval.approvers;
  approval.required = spec.policy.approval.required && !emergency;
  approval.needed = approval.required ? spec.policy.approval.minApprovals : 0;
  const overlapMs = emergency ? 0 : parseDuration(spec.policy.overlap);

  // 1. generate + store-dual: the new value sits next to the old one as the pending version.
  let versions: PendingVersion;
  try {
    versions = await act.generate.createPendingVersion({ ...ref, rotationId });
  } catch (err) {
    audit('failed', 'rekey', { detail: causeOf(err) });
    await Promise.all(audits);
    throw err;
  }
  progress.versions = { current: versions.currentVersionId, pending: versions.pendingVersionId };
  const pair = { ...ref, currentVersionId: versions.currentVersionId, pendingVersionId: versions.pendingVersionId };
  const old = { ...ref, oldVersionId: pair.currentVersionId, newVersionId: pair.pendingVersionId };
  const consumerNames = spec.consumers.map((c) => c.name);
  const touched = new Set<string>();

  async function revokeOld(): Promise<void> {
    await act.forward.revokeOldCredential(old);
    revokedAt = new Date().toISOString();
    audit('revoked', 'rekey', { detail: `old version ${pair.currentVersionId} no longer accepted` });
  }

  try {
    // 2. prepare target: it learns the new credential while the old one still works.
    enter('prepare');
    await act.prepare.prepareTarget(pair);
    if (revokeFirst) {
      // The worst leaks: stop the old credential now; consumers catch up, and there is no way back.
      enter('revoke');
      await CancellationScope.nonCancellable(revokeOld);
    }

    // 3. deploy to consumers, in parallel up to the policy's limit.
    enter('deploy');
    await everyConsumer(async (name) => {
      setConsumer(name, 'deploying');
      touched.add(name);
      await act.deploy.deployToConsumer.executeWithOptions(act.withSummary('deploy', `deploy ${pair.pendingVersionId} to ${name}`), [
        { ...ref, consumer: name, versionId: pair.pendingVersionId },
      ]);
      setConsumer(name, 'deployed');
    });

    // 4. verify: every consumer healthy on the new version, and the target accepts it.
    enter('verify');
    const deadline = Date.now() + parseDuration(spec.policy.timeouts.verify);
    await everyConsumer(async (name) => {
      setConsumer(name, 'verifying');
      const detail = await act.verify.awaitConsumerHealthy.executeWithOptions(act.withSummary('verify', `wait until ${name} is healthy on the new version`), [
        { ...ref, consumer: name, versionId: pair.pendingVersionId, deadline },
      ]);
      setConsumer(name, 'verified', detail);
    });
    await act.verify.verifyTarget(pair);

    // 5. approve, if the policy asks: people decide with everything verified in front of them.
    if (approval.required) await awaitApproval();
  } catch (err) {
    const failedStage = progress.stage;
    const message = err instanceof ConsumerFailure || err instanceof ApprovalFailure ? err.message : causeOf(err);
    const cancelled = isCancellation(err);
    if (revokeFirst && revokedAt && !cancelled) {
      // The old credential is already dead: going back would strand every consumer. Go forward.
      warnings.push(`${failedStage}: ${message}`);
    } else {
      // Compensation must run to the end even when the rotation itself was cancelled.
      await CancellationScope.nonCancellable(() => rollback());
      const report = finish('rolled-back', {
        stage: failedStage,
        message: cancelled ? 'rotation cancelled' : message,
        consumer: err instanceof ConsumerFailure ? err.consumer : undefined,
      });
      audit('rolled-back', 'rekey', { detail: report.failure!.message });
      await CancellationScope.nonCancellable(() => Promise.all(audits));
      if (cancelled) throw err;
      return report;
    }
  }

  // From here on there is no rollback: the rotation only moves forward, even if cancelled.
  return CancellationScope.nonCancellable(async () => {
    // 6. promote: pending becomes current, the old current becomes previous.
    enter('promote');
    await act.forward.promoteVersion({ ...ref, pendingVersionId: pair.pendingVersionId });
    audit('promoted', 'rekey', { detail: `current is now ${pair.pendingVersionId}` });

    if (!revokedAt) {
      // 7. overlap: both credentials work while connections opened with the old one drain.
      enter('overlap');
      if (overlapMs > 0) await sleep(overlapMs);

      // 8. revoke: the old credential stops working at the target.
      enter('revoke');
      await revokeOld();
    }

    // 9. post-verify: old rejected, new accepted. A failure here alerts; it cannot undo anything.
    enter('post-verify');
    const check = await act.forward.postVerify(old);
    if (!check.oldRejected || !check.newAccepted) {
      warnings.push(`post-verify: ${check.detail}`);
      log.error('post-verify found a problem', { secret, detail: check.detail });
    }
    const report = finish('rotated', undefined, check);
    await Promise.all(audits);
    return report;
  });

  async function awaitApproval(): Promise<void> {
    const policy = spec.policy.approval;
    enter('approve');
    approval.waitingFor = approvers.filter((a) => a !== input.requestedBy);
    setCurrentDetails(describe(progress));
    const decided = () => approval.rejectedBy !== undefined || approval.approvedBy.length >= approval.needed;
    const timeoutMs = parseDuration(policy.timeout);
    let inTime = await condition(decided, timeoutMs);
    if (!inTime && policy.onTimeout === 'escalate') {
      approval.escalated = true;
      audit('escalated', 'rekey', { detail: `no decision within ${policy.timeout}; waiting until ${policy.escalationLimit}` });
      log.warn('approval escalated', { secret, waitingFor: approval.waitingFor });
      setCurrentDetails(describe(progress));
      inTime = await condition(decided, Math.max(0, parseDuration(policy.escalationLimit) - timeoutMs));
    }
    if (!inTime) {
      const limit = policy.onTimeout === 'escalate' ? policy.escalationLimit : policy.timeout;
      throw new ApprovalFailure(`no approval within ${limit} (${approval.approvedBy.length} of ${approval.needed})`);
    }
    if (approval.rejectedBy) {
      const { approver, comment } = approval.rejectedBy;
      throw new ApprovalFailure(`rejected by ${approver}${comment ? `: ${comment}` : ''}`);
    }
  }

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
      await act.rollback.deployToConsumer.executeWithOptions(act.withSummary('rollback', `roll ${name} back to ${pair.currentVersionId}`), [
        { ...ref, consumer: name, versionId: pair.currentVersionId },
      ]);
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
      approval,
      emergency,
      revokedAt,
      warnings: warnings.length ? warnings : undefined,
    };
    setCurrentDetails(describe(progress, report));
    return report;
  }
}

/** Markdown for the Temporal UI's "current details" panel. */
function describe(progress: Progress, report?: RotationReport): string {
  const a = progress.approval;
  const lines = [
    `### ${progress.emergency ? 'EMERGENCY rotation' : 'Rotation'} of \`${progress.secret}\``,
    report
      ? `**Outcome:** ${report.outcome}${report.failure ? ` at ${report.failure.stage}: ${report.failure.message}` : ''}`
      : `**Stage:** ${progress.stage}`,
    `Requested by ${progress.requestedBy ?? 'unknown'}`,
    '',
    `Versions: current \`${progress.versions.current ?? '?'}\`, pending \`${progress.versions.pending ?? '?'}\``,
  ];
  if (a.required) {
    lines.push(
      '',
      `**Approval:** ${a.approvedBy.length} of ${a.needed}` +
        (a.approvedBy.length ? ` (approved by ${a.approvedBy.map((x) => x.approver).join(', ')})` : '') +
        (a.rejectedBy ? `, rejected by ${a.rejectedBy.approver}` : '') +
        (progress.stage === 'approve' ? `; waiting for ${a.waitingFor.join(', ') || 'nobody eligible'}${a.escalated ? ' (escalated)' : ''}` : ''),
    );
    if (progress.stage === 'approve') {
      lines.push('', 'Approve: send the signal `approve` with `{"approver": "<you>", "comment": "..."}` (or `reject`).');
    }
  }
  lines.push('', '| consumer | state | detail |', '|---|---|---|', ...progress.consumers.map((c) => `| ${c.name} | ${c.state} | ${c.detail ?? ''} |`));
  return lines.join('\n');
}
