// A rotation that is a member of a RotationGroup: prepared and verified, it joins its group's run
// (in the audit trail), tells the group, and holds before promote until the group decides. The
// decision is never taken from a message: the member asks the worker, which reads it from the
// audit trail (see activities/groups.ts). A member that waits too long, or is cancelled while
// held, writes "abort" there itself unless the group already decided; so a lost group never
// leaves members half promoted.
import { CancellationScope, condition, getExternalWorkflowHandle, isCancellation, log, proxyActivities, setHandler, sleep, workflowInfo } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { refuse } from './input';
import { groupDecidedSignal, isGroupWorkflowId, memberPreparedSignal, type GroupVerdict, type RotationPlan } from './messages';
import type { RotationProgress } from './progress';

const { groupVerdict, joinGroup } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '30s',
  heartbeatTimeout: '15s',
  // The verdict must arrive: without it the member can neither promote nor roll back.
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: ['NotAuthorized', 'UnknownSecret'] },
});

/** After an answer of "undecided" (a ring nobody decided behind), the next question waits this long. */
const ASK_SPACING_MS = 10_000;

/** The group aborted: the member rolls back like any rotation that failed before promote. */
export class GroupAborted extends Error {}

export interface GroupRelease {
  /** The worker's token releasing this run's pending version; promote checks it. */
  release: string;
}

export class GroupMembership {
  private rang = false;

  private constructor(
    private readonly group: string,
    private readonly parent: { workflowId: string; runId: string },
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
    if (!parent || !isGroupWorkflowId(parent.workflowId, group)) refuse(`input.group: this rotation was not started by the workflow group/${group}`);
    if (plan.group?.name !== group) refuse(`input.group: the worker's group ${group} does not list this secret`);
    return new GroupMembership(group, parent, plan.group.holdTimeoutMs, progress);
  }

  /** Join the group's run, tell the group, then wait for its decision: a release, or GroupAborted. */
  async held(report: { secret: string; specHash: string; pendingVersionId: string; receipts: Record<string, string | undefined> }): Promise<GroupRelease> {
    const { secret, pendingVersionId } = report;
    this.progress.enter('held');
    // From the join on, the worker rolls this run back only once its group has aborted.
    await CancellationScope.nonCancellable(() => joinGroup({ secret, group: this.group, groupWorkflowId: this.parent.workflowId, groupRunId: this.parent.runId, pendingVersionId }));
    const ask = (abortIfUndecided: boolean, why?: string): Promise<GroupVerdict> =>
      CancellationScope.nonCancellable(() => groupVerdict({ secret, pendingVersionId, abortIfUndecided, why }));
    const deadline = Date.now() + this.holdTimeoutMs;
    let verdict: GroupVerdict | undefined;
    try {
      await getExternalWorkflowHandle(this.parent.workflowId, this.parent.runId).signal(memberPreparedSignal, { ...report, runId: workflowInfo().runId });
    } catch (err) {
      // The group is gone (or this member is being cancelled): settle it in the trail.
      verdict = await ask(true, isCancellation(err) ? 'the member was cancelled while held' : 'its group could not be told');
    }
    while (!verdict || verdict.decision === 'undecided') {
      try {
        if (verdict) await sleep(Math.max(0, Math.min(ASK_SPACING_MS, deadline - Date.now())));
        const rang = await condition(() => this.rang, Math.max(0, deadline - Date.now()));
        this.rang = false;
        verdict = rang ? await ask(false) : await ask(true, 'no decision within the hold timeout');
        // Rung without a decision behind it (a forged ring): keep waiting, and ask again no sooner than ASK_SPACING_MS.
        if (verdict.decision === 'undecided') log.warn('group doorbell without a decision; still held', { secret, group: this.group });
      } catch (err) {
        if (!isCancellation(err)) throw err;
        // Cancelled while held: abort, unless the group already released (then only forward).
        verdict = await ask(true, 'the member was cancelled while held');
      }
    }
    if (verdict.decision === 'release' && typeof verdict.release === 'string') {
      log.info('released by the group', { secret, group: this.group });
      return { release: verdict.release };
    }
    throw new GroupAborted(`group ${this.group} aborted${verdict.detail ? ` (${verdict.detail.slice(0, 300)})` : ''}`);
  }
}
