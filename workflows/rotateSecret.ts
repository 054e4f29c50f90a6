// The rotation runbook as a durable workflow. Read it top to bottom:
//   authorize -> generate + store-dual -> prepare target -> deploy to consumers -> verify
//   -> approve (if asked; a group member holds for its group instead) -> commit producers + promote
//   (point of no return) -> overlap -> revoke
//   -> finalize consumers -> post-verify
// Any failure before promote rolls back in reverse order; after promote it only moves forward.
import { ApplicationFailure, CancellationScope, isCancellation, log, sleep, workflowInfo } from '@temporalio/workflow';
import type { PendingVersion, PostVerification, Receipts } from '../activities/rotation';
import type { RunBinding } from '../lib/authority';
import { ApprovalFailure, Approvals } from './approvals';
import { authorize, causeOf, unverified } from './authorize';
import { ConsumerFailure, ConsumerPhases } from './consumers';
import { GroupAborted, GroupMembership, type GroupRelease } from './groupHold';
import { Evidence } from './evidence';
import { checkRotationInput, refuse } from './input';
import {
  OUTCOME_ATTRIBUTE,
  REQUESTED_BY_ATTRIBUTE,
  SECRET_ATTRIBUTE,
  rotationWorkflowId,
  type RotationInput,
  type RotationReport,
} from './messages';
import { RotationProgress } from './progress';
import { retireLater } from './retireCredential';
import { activitiesFor } from './stages';

/** How long a released group member waits, at most, between attempts to commit. */
const RELEASED_RETRY_MAX_MS = 10 * 60_000;

/** The audit trail could not take the rotation's evidence: it does not promote. */
class AuditFailure extends Error {}

export async function rotateSecret(untrusted: RotationInput): Promise<RotationReport> {
  // 0. authorize: nothing in the input is trusted; the spec, the approvers and the break-glass
  //    keys come from the worker's own manifests.
  const input = checkRotationInput(untrusted);
  const { secret } = input;
  const info = workflowInfo();
  // One rotation per secret holds only if every rotation of it runs under this one id.
  if (info.workflowId !== rotationWorkflowId(secret)) refuse(`a rotation of ${secret} must run as workflow ${rotationWorkflowId(secret)}, not ${info.workflowId}`);
  const rotationId = `${info.workflowId}/${info.runId}`;
  const startedAt = new Date().toISOString();
  const progress = new RotationProgress(secret, input.requestedBy, input.emergency !== undefined);
  // A notice names the stage that failed, not the rollback that followed it.
  const noticeStage = () => progress.state.stages.filter((s) => s.stage !== 'rollback').pop()?.stage;
  const evidence = new Evidence(rotationId, secret, () => progress.state.versions, noticeStage, (pair) => progress.attribute(pair));
  const warnings: string[] = [];
  let revokedAt: string | undefined;
  let sessionsEnded: number | undefined;
  progress.attribute({ key: SECRET_ATTRIBUTE, value: secret });

  const { plan, requester, emergency } = await authorize(input, evidence);
  const revokeFirst = emergency?.doc.revokeFirst === true;
  const requestedBy = requester?.name ?? input.requestedBy;
  Object.assign(progress.state, { specHash: plan.specHash, requestedBy, requester, reason: input.reason });
  if (requestedBy) progress.attribute({ key: REQUESTED_BY_ATTRIBUTE, value: requestedBy });
  // A signed request was recorded when authorize claimed it; an unsigned one is recorded here.
  if (!requester) evidence.record('requested', unverified(input.requestedBy), { reason: input.reason, detail: `spec ${plan.specHash}, unsigned request${emergency ? ', emergency' : ''}` });

  const act = activitiesFor(plan);
  const ref = { secret, specHash: plan.specHash };
  progress.state.consumers = plan.consumers.map((name) => ({ name, state: 'waiting' }));
  let versions: PendingVersion | undefined;
  const binding = (): RunBinding | undefined =>
    versions && { namespace: info.namespace, workflowId: info.workflowId, runId: info.runId, secret, pendingVersionId: versions.pendingVersionId, specHash: plan.specHash };
  // A member of a group holds for the group's one decision instead of its own.
  const membership = GroupMembership.of(input.group, plan, progress);
  let released: GroupRelease | undefined;
  const approvalRequired = plan.approval.required && !emergency && !membership;
  const approvals = new Approvals(plan.approval, progress, evidence, requester, binding, approvalRequired);
  const overlapMs = emergency ? 0 : plan.overlapMs;

  // 1. generate + store-dual: the new value sits next to the old one as the pending version.
  progress.enter('generate');
  try {
    // Activity results can be forged (anyone may complete an activity): read them defensively;
    // the worker checks every id it is handed again.
    versions = { ...(await act.generate.createPendingVersion({ ...ref, namespace: info.namespace, emergency: emergency?.signed })) };
  } catch (err) {
    progress.ended('failed');
    evidence.record('failed', 'rekey', { detail: causeOf(err) });
    const head = await evidence.settle();
    throw ApplicationFailure.create({ message: `generate: ${causeOf(err)}`, type: 'RotationFailed', nonRetryable: true, cause: err as Error, details: head ? [head] : undefined });
  }
  progress.state.versions = { current: versions.currentVersionId, pending: versions.pendingVersionId };
  const pair = { ...ref, currentVersionId: versions.currentVersionId, pendingVersionId: versions.pendingVersionId };
  const old = { ...ref, oldVersionId: pair.currentVersionId, newVersionId: pair.pendingVersionId };
  /** The worker's signed word for each verification; commit and promote will not move without them. */
  const receipts: Receipts = {};
  const consumers = new ConsumerPhases(plan, act, progress, ref, pair, receipts);

  /** Nothing to finalize between revoke and post-verify: the revoke activity checks right after revoking. */
  const postVerifyAtRevoke = !revokeFirst && !plan.phases?.finalize?.length;
  let postVerified: PostVerification | undefined;

  /** The worker records the revoke in the audit trail itself, before the target changes. */
  async function revokeOld(): Promise<void> {
    const revoked = (await act.forward.revokeOldCredential({ ...old, namespace: info.namespace, emergency: emergency?.signed, postVerify: postVerifyAtRevoke })) ?? {};
    postVerified = revoked.postVerified;
    evidence.note(revoked.head);
    sessionsEnded = revoked.sessionsEnded;
    if (typeof revoked.warning === 'string') warnings.push(`revoke: ${revoked.warning.slice(0, 500)}`);
    revokedAt = new Date().toISOString();
    // Revoke only disabled the old credential (an IAM key): a durable timer removes it later.
    if (revoked.retire === true) await retireLater({ secret, specHash: plan.specHash, versionId: old.oldVersionId, revokedBy: rotationId });
  }

  /** What commit and promote show the worker: the run, the receipts, the signed decisions. */
  const promoteStep = () => ({
    ...ref,
    pendingVersionId: pair.pendingVersionId,
    binding: binding()!,
    receipts,
    approvals: revokeFirst ? [] : approvals.signed,
    request: input.request,
    emergency: emergency?.signed,
    group: released,
  });

  /**
   * Released by its group, a member commits and promotes however long it takes: going back would
   * split the group (the worker refuses it anyway). A commit that keeps failing is for a person to
   * fix (a conflicting change in a repository, say); each attempt is logged at error level.
   */
  async function commitReleased(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await consumers.commit(promoteStep);
        await promote();
        return;
      } catch (err) {
        const why = causeOf(err);
        if (attempt === 1) warnings.push(`commit after the group's release failed (${why}); retried until it succeeded`);
        log.error("a released group member could not commit; retrying (fix the consumer: the rest of the group promoted)", { secret, attempt, detail: why });
        await sleep(Math.min(RELEASED_RETRY_MAX_MS, 15_000 * attempt));
      }
    }
  }

  /**
   * Consumers' health and the target's word are independent: asked at once. The first failure
   * cancels the other checks and waits for them to stop, so rollback never runs beside a check.
   */
  function verifyAll() {
    return CancellationScope.cancellable(async () => {
      const checks = [consumers.verify(), act.verify.verifyTarget(pair)] as const;
      try {
        return (await Promise.all(checks))[1];
      } catch (err) {
        CancellationScope.current().cancel();
        await Promise.allSettled(checks);
        throw err;
      }
    });
  }

  /** The worker checks everything once more and records the promote in the audit trail itself. */
  async function promote(): Promise<void> {
    progress.enter('promote');
    evidence.note(await CancellationScope.nonCancellable(() => act.forward.promoteVersion(promoteStep())));
  }

  try {
    // 2. prepare target: it learns the new credential while the old one still works.
    progress.enter('prepare');
    // A revoke-first emergency goes straight on (its commits overwrite whatever producers hold).
    if (!revokeFirst) await consumers.resetProducers();
    await act.prepare.prepareTarget(pair);
    if (revokeFirst) {
      // The worst leaks: stop the old credential now; consumers catch up, and there is no way back.
      progress.enter('revoke');
      await CancellationScope.nonCancellable(revokeOld);
    }

    // 3. deploy to consumers, in parallel up to the policy's limit.
    progress.enter('deploy');
    await consumers.deploy();

    // 4. verify: every consumer healthy on the new version, and the target accepts it.
    progress.enter('verify');
    receipts.target = (await verifyAll())?.receipt;

    // 5. approve, if the policy asks: people decide with everything verified in front of them.
    if (approvalRequired) await approvals.decided();
    // The evidence so far (request, decisions, break-glass) must be in the audit trail before
    // anything becomes irreversible: no promote goes unaudited.
    if (!(await evidence.written())) throw new AuditFailure('the audit trail could not be written; refusing to promote without evidence');
    //    A group member instead tells its group it is prepared and holds for the group's decision;
    //    released, it only goes forward (below): the rest of its group promotes too.
    if (membership) released = await membership.held({ ...ref, pendingVersionId: pair.pendingVersionId, receipts });

    // 6. commit + promote: producers of the secret (a webhook sender) switch to the new version and
    //    prove it end to end, then pending becomes current. The worker checks the signed approvals
    //    (or the break-glass) and its receipts before each; refused, the rotation rolls back.
    if (released) await CancellationScope.nonCancellable(commitReleased);
    else {
      await consumers.commit(promoteStep);
      await promote();
    }
  } catch (err) {
    const failedStage = progress.stage;
    const message = err instanceof ConsumerFailure || err instanceof ApprovalFailure || err instanceof AuditFailure || err instanceof GroupAborted ? err.message : causeOf(err);
    const cancelled = isCancellation(err);
    if (revokedAt) {
      // The old credential is already dead (revoke-first): going back would restore a leaked
      // credential or strand every consumer. Whatever happened, cancellation included, go forward.
      warnings.push(`${failedStage}: ${cancelled ? 'cancelled after the old credential was revoked; finishing' : message}`);
      await promote();
    } else {
      // Compensation must run to the end even when the rotation itself was cancelled.
      const incomplete = await CancellationScope.nonCancellable(() => rollback());
      if (incomplete) {
        warnings.push(`ROLLBACK INCOMPLETE: ${incomplete}`);
        log.error('rollback incomplete: a person must finish it', { secret, detail: incomplete });
      }
      const failure = { stage: failedStage, message: cancelled ? 'rotation cancelled' : message, consumer: err instanceof ConsumerFailure ? err.consumer : undefined };
      evidence.record(incomplete ? 'rollback-incomplete' : 'rolled-back', 'rekey', { detail: incomplete ? `${failure.message}; ${incomplete}` : failure.message });
      const report = await CancellationScope.nonCancellable(() => finish(incomplete ? 'rollback-incomplete' : 'rolled-back', failure));
      // An incomplete rollback fails the run (schedules with pauseOnFailure stop, fleets count it
      // failed, the UI shows it red); the report rides in the failure's details.
      if (incomplete) throw ApplicationFailure.create({ type: 'RollbackIncomplete', nonRetryable: true, message: `rollback incomplete: ${incomplete}`, details: [report] });
      if (cancelled) throw err;
      return report;
    }
  }

  // From here on there is no rollback: the rotation only moves forward, even if cancelled.
  return CancellationScope.nonCancellable(async () => {
    if (!revokedAt) {
      // 7. overlap: both credentials work while connections opened with the old one drain.
      progress.enter('overlap');
      if (overlapMs > 0) await sleep(overlapMs);

      // 8. revoke: the old credential stops working at the target.
      progress.enter('revoke');
      await revokeOld();
    }
    // Consumers that held both versions through the overlap keep the new one alone.
    warnings.push(...(await consumers.finalize()));

    // 9. post-verify: old rejected, new accepted. A failure here alerts; it cannot undo anything.
    progress.enter('post-verify');
    const { head, ...check } = postVerified ?? (await act.forward.postVerify({ ...old, receipts })) ?? { oldRejected: false, newAccepted: false, detail: 'no verdict' };
    evidence.note(head);
    if (!check.oldRejected || !check.newAccepted) {
      warnings.push(`post-verify: ${check.detail}`);
      log.error('post-verify found a problem', { secret, detail: check.detail });
    }
    return finish('rotated', undefined, check);
  });

  /**
   * Reverse order: producers switched back, consumers back to the current version, then the
   * target, then the store. A step that cannot be undone stops the rollback there (undoing the
   * target under a consumer that still holds the new credential would break it): what is left, the
   * pending version included, stays for a person to finish. Says what could not be undone, or nothing.
   */
  async function rollback(): Promise<string | undefined> {
    progress.enter('rollback');
    const { stuck, why, leftAsTheyAre } = await consumers.rollback();
    if (stuck.length) {
      const what = `could not roll back consumer(s) ${stuck.join(', ')} (${why})`;
      // Every consumer still holds the new version: undoing the target would lock them all out.
      if (leftAsTheyAre) return `${what}; the target and the pending version ${pair.pendingVersionId} were left as they are`;
      // Where old and new both work, leaving the target alone keeps every consumer working. Where
      // only one can (one account, one password), the consumers rolled back need the old one back.
      if (plan.targetAcceptsBoth) return `${what}; the target and the pending version ${pair.pendingVersionId} were left as they are`;
      try {
        await act.rollback.undoTarget(pair);
      } catch (err) {
        return `${what}, nor undo the target (${causeOf(err)}); the pending version ${pair.pendingVersionId} was left in place`;
      }
      return `${what}; the target was undone for the others, and the pending version ${pair.pendingVersionId} was left in place`;
    }
    try {
      await act.rollback.undoTarget(pair);
    } catch (err) {
      return `could not undo the target (${causeOf(err)}); the pending version ${pair.pendingVersionId} was left in place`;
    }
    try {
      await act.rollback.discardPendingVersion({ ...ref, pendingVersionId: pair.pendingVersionId });
    } catch (err) {
      return `could not discard the pending version ${pair.pendingVersionId} (${causeOf(err)})`;
    }
    return undefined;
  }

  /** The report, once every audit record is written (its stage, outcome and trail set as one upsert). */
  function finish(outcome: RotationReport['outcome'], failure?: RotationReport['failure'], postVerify?: RotationReport['postVerify']): Promise<RotationReport> {
    return progress.batch(async () => {
      const report = summary(outcome, failure, postVerify);
      report.auditHead = await evidence.settle();
      progress.show(report);
      return report;
    });
  }

  function summary(outcome: RotationReport['outcome'], failure?: RotationReport['failure'], postVerify?: RotationReport['postVerify']): RotationReport {
    progress.enter('done');
    progress.attribute({ key: OUTCOME_ATTRIBUTE, value: outcome });
    return {
      secret,
      outcome,
      specHash: plan.specHash,
      requestedBy,
      requester,
      reason: input.reason,
      startedAt,
      finishedAt: new Date().toISOString(),
      versions: {
        before: pair.currentVersionId,
        after: outcome === 'rotated' ? pair.pendingVersionId : pair.currentVersionId,
        pending: pair.pendingVersionId,
      },
      discardedStaleVersionId: versions!.discardedStaleVersionId,
      stages: progress.state.stages,
      consumers: progress.state.consumers,
      failure,
      postVerify,
      approval: progress.approval,
      emergency: emergency !== undefined,
      revokedAt,
      sessionsEnded,
      warnings: warnings.length ? warnings : undefined,
    };
  }

}
