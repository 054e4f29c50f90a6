// A rotation that is a member of a RotationGroup: prepared and verified, it tells its group and
// holds before promote until the group decides. The decision is never taken from a message: the
// member asks the worker, which reads it from the audit trail (see activities/groups.ts). A member
// that waits too long, or is cancelled while held, writes "abort" there itself unless the group
// already decided; so a lost group never leaves members half promoted.
import { CancellationScope, condition, getExternalWorkflowHandle, isCancellation, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { refuse } from './input';
import { groupDecidedSignal, groupWorkflowId, memberPreparedSignal, type GroupVerdict, type RotationPlan } from './messages';
import type { RotationProgress } from './progress';

const { groupVerdict } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '30s',
  heartbeatTimeout: '15s',
  // The verdict must arrive: without it the member can neither promote nor roll back.
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: ['NotAuthorized', 'UnknownSecret'] },
});

/** The group aborted: the member rolls back like any rotation that failed before promote. */
export class GroupAborted extends Error {}

export interface GroupRelease {
  name: string;
  runId: string;
  /** The worker's token releasing this run's pending version; promote checks it. */
  release: string;
}

export class GroupMembership {
  private rang = false;

  private constructor(
    private readonly group: string,
    private readonly groupRunId: string,
    private readonly holdTimeoutMs: number,
    private readonly progress: RotationProgress,
  ) {
    setHandler(groupDecidedSignal, () => {
      this.rang = true;
    });
  }

  /**
   * The membership the input asks for, if the run really is a child of that group's workflow (the
   * parent is Temporal's record, not the input's word) and the worker's group lists the secret.
   */
  static of(group: string | undefined, plan: RotationPlan, progress: RotationProgress): GroupMembership | undefined {
    if (group === undefined) return undefined;
    const parent = workflowInfo().parent;
    if (parent?.workflowId !== groupWorkflowId(group)) refuse(`input.group: this rotation was not started by the workflow ${groupWorkflowId(group)}`);
    if (plan.group?.name !== group) refuse(`input.group: the worker's group ${group} does not list this secret`);
    return new GroupMembership(group, parent.runId, plan.group.holdTimeoutMs, progress);
  }

  /** Tell the group this member is prepared, then wait for its decision: a release, or GroupAborted. */
  async held(report: { secret: string; specHash: string; pendingVersionId: string; receipts: Record<string, string | undefined> }): Promise<GroupRelease> {
    const { secret, pendingVersionId } = report;
    this.progress.enter('held');
    await getExternalWorkflowHandle(groupWorkflowId(this.group), this.groupRunId).signal(memberPreparedSignal, { ...report, runId: workflowInfo().runId });
    const ask = (abortIfUndecided: boolean, why?: string): Promise<GroupVerdict> =>
      CancellationScope.nonCancellable(() => groupVerdict({ secret, group: this.group, groupRunId: this.groupRunId, pendingVersionId, abortIfUndecided, why }));
    const deadline = Date.now() + this.holdTimeoutMs;
    for (;;) {
      let verdict: GroupVerdict;
      try {
        const rang = await condition(() => this.rang, Math.max(0, deadline - Date.now()));
        this.rang = false;
        verdict = rang ? await ask(false) : await ask(true, `no decision within the hold timeout`);
      } catch (err) {
        if (!isCancellation(err)) throw err;
        // Cancelled while held: abort, unless the group already released (then only forward).
        verdict = await ask(true, 'the member was cancelled while held');
      }
      if (verdict.decision === 'release' && typeof verdict.release === 'string') {
        log.info('released by the group', { secret, group: this.group });
        return { name: this.group, runId: this.groupRunId, release: verdict.release };
      }
      if (verdict.decision === 'abort') throw new GroupAborted(`group ${this.group} aborted${verdict.detail ? ` (${verdict.detail.slice(0, 300)})` : ''}`);
      // Rung without a decision behind it (a forged ring): keep waiting.
      log.warn('group doorbell without a decision; still held', { secret, group: this.group });
    }
  }
}
