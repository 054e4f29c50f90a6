// Atomic groups as a durable two-phase commit. Read it top to bottom:
//   authorize -> prepare every member (each its usual rotation/<name>, held before promote)
//   -> approve once for the group -> release (the one decision, written to the audit trail)
//   -> every member commits and promotes.
// Any member failing before the release aborts them all; each rolls back as a rotation does.
// Temporal is the coordinator, so its crash is only a pause; and the decision lives in the audit
// trail, so even a group that is terminated leaves its members one answer (see groupHold.ts).
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  CancellationScope,
  ChildWorkflowFailure,
  ParentClosePolicy,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { groupBinding, membersLine } from '../lib/authority';
import { ApprovalFailure, Approvals } from './approvals';
import { causeOf, unverified } from './authorize';
import { Evidence } from './evidence';
import { GroupBoard } from './groupProgress';
import { checkGroupInput, refuse } from './input';
import {
  groupDecidedSignal,
  groupWorkflowId,
  isGroupWorkflowId,
  memberPreparedSignal,
  rotationWorkflowId,
  type GroupInput,
  type GroupPlan,
  type GroupReport,
  type MemberPrepared,
  type RotationReport,
} from './messages';
import { rotateSecret } from './rotateSecret';

const { resolveGroup, decideGroup } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '30s',
  heartbeatTimeout: '15s',
  // The decision must be written whatever the weather: retried until it is, unless refused.
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: ['NotAuthorized', 'UnknownSecret', 'SpecMismatch', 'NoManifests'] },
});

/** Why the group aborts before its release. */
class GroupFailure extends Error {}

const MAX_RECEIPT_CHARS = 100;
/** Two per consumer (at most 64) and the target's. */
const MAX_RECEIPTS = 129;
const RECEIPT_NAME = /^(target|(deployed|consumer):.{1,200})$/s;
const FAILED = Symbol('a member failed');

export async function rotateGroup(untrusted: GroupInput): Promise<GroupReport> {
  // 0. authorize: the members, their specs and the approvers are the worker's, never the input's.
  const input = checkGroupInput(untrusted);
  const { group } = input;
  const info = workflowInfo();
  // One run per group at a time (a schedule's run is group/<name>-<time>); members are singletons anyway.
  if (!isGroupWorkflowId(info.workflowId, group)) refuse(`a rotation of group ${group} must run as workflow ${groupWorkflowId(group)}, not ${info.workflowId}`);
  const startedAt = new Date().toISOString();
  const board = new GroupBoard(input);
  const evidence = new Evidence(`${info.workflowId}/${info.runId}`, group, () => ({}));
  let plan: GroupPlan;
  try {
    plan = await resolveGroup({ group, specHash: input.specHash });
  } catch (err) {
    evidence.record('refused', unverified(input.requestedBy), { reason: input.reason, detail: causeOf(err) });
    return refuse(causeOf(err), await evidence.settle());
  }
  board.planned(plan);
  evidence.record('requested', unverified(input.requestedBy), { reason: input.reason, detail: `group spec ${plan.specHash}: ${plan.members.map(([s]) => s).join(', ')}` });

  const members = new GroupMembers(group, plan, board, input);
  const binding = () => {
    const line = members.preparedLine();
    return line === undefined ? undefined : groupBinding(info.namespace, info.workflowId, info.runId, group, plan.specHash, line);
  };
  const approvals = new Approvals(plan.approval, board, evidence, undefined, binding, plan.approval.required);
  const decide = (decision: 'release' | 'abort', reason?: string) =>
    CancellationScope.nonCancellable(() => decideGroup({ group, specHash: plan.specHash, decision, members: members.reports(), approvals: approvals.signed, reason }));

  let failure: string | undefined;
  try {
    // 1. prepare: every member generates, stores, deploys and verifies, then holds.
    await members.prepare();
    // 2. approve once for the whole group, with every member verified in front of the approvers.
    if (plan.approval.required) await members.unlessOneFails(approvals.decided());
    if (!(await evidence.written())) throw new GroupFailure('the audit trail could not be written; refusing to release without evidence');
    // A member may have failed while people decided.
    members.check();
    // 3. release: the point of no return for every member at once. Written first, then announced.
    board.enter('releasing');
    const decided = await decide('release');
    if (decided.decision !== 'release') throw new GroupFailure(`the group was aborted before it could release (${decided.detail})`);
    evidence.note(decided.head);
  } catch (err) {
    failure = isCancellation(err) ? 'group cancelled' : err instanceof GroupFailure || err instanceof ApprovalFailure ? err.message : causeOf(err);
    // Abort, unless a release was written first: then that decision stands and the group goes on.
    const decided = await decide('abort', failure);
    evidence.note(decided.head);
    if (decided.decision === 'abort') {
      board.state.decision = 'abort';
      board.enter('aborting');
      await members.abort();
      const report = finish('rolled-back', failure);
      if (isCancellation(err)) throw err;
      return report;
    }
  }

  // 4. commit: every member is told; each asks the worker, gets its release and promotes.
  board.state.decision = 'release';
  await members.release();
  const outcome = members.all('rotated') ? 'rotated' : 'incomplete';
  return finish(outcome, outcome === 'rotated' ? failure && `released despite: ${failure}` : members.problems());

  function finish(outcome: GroupReport['outcome'], why?: string): GroupReport {
    board.enter('done');
    const report: GroupReport = {
      group,
      outcome,
      specHash: plan.specHash,
      requestedBy: input.requestedBy,
      reason: input.reason,
      startedAt,
      finishedAt: new Date().toISOString(),
      failure: why,
      members: board.state.members,
      approval: board.approval,
    };
    board.show(report);
    return report;
  }
}

/** The members as child workflows: started, heard from, told, and waited for. */
class GroupMembers {
  private readonly runs = new Map<string, string>();
  private readonly prepared = new Map<string, MemberPrepared>();
  private readonly scopes = new Map<string, CancellationScope>();
  private readonly results: Promise<void>[] = [];
  /** The first member that failed, or a member already rotating on its own. */
  private failed?: string;

  constructor(
    private readonly group: string,
    private readonly plan: GroupPlan,
    private readonly board: GroupBoard,
    private readonly input: GroupInput,
  ) {
    // Anyone may signal: only a report from the run this group started counts, and the worker
    // believes nothing in it but its own receipts.
    setHandler(memberPreparedSignal, (report) => {
      const clean = wellFormed(report);
      if (!clean || this.runs.get(clean.secret) !== clean.runId || this.board.member(clean.secret)?.state !== 'preparing') return;
      this.prepared.set(clean.secret, clean);
      this.board.setMember(clean.secret, 'prepared', { pendingVersionId: clean.pendingVersionId });
    });
  }

  /** Start the members, at most maxParallel preparing at once; resolve when all hold, throw if one fails. */
  async prepare(): Promise<void> {
    for (const [secret, specHash] of this.plan.members) {
      await condition(() => this.failed !== undefined || this.board.count('preparing') < this.plan.maxParallel);
      if (this.failed) break;
      await this.start(secret, specHash);
    }
    await this.unlessOneFails(condition(() => this.prepared.size === this.plan.members.length));
  }

  /** Throws GroupFailure naming the first member that failed, if one did. */
  check(): void {
    if (this.failed !== undefined) throw new GroupFailure(this.failed);
  }

  /** `work`, unless a member fails first (then GroupFailure naming it). */
  async unlessOneFails<T>(work: Promise<T>): Promise<T> {
    // Never rejects: a rejection nobody awaits would fail the workflow task.
    const failed = condition(() => this.failed !== undefined).then(() => FAILED);
    const first = await Promise.race([work, failed]);
    if (first === FAILED) throw new GroupFailure(this.failed);
    return first as T;
  }

  private async start(secret: string, specHash: string): Promise<void> {
    const scope = new CancellationScope();
    this.scopes.set(secret, scope);
    let started: () => void;
    const isStarted = new Promise<void>((resolve) => (started = resolve));
    const done = scope
      .run(async () => {
        const handle = await startChild(rotateSecret, {
          workflowId: rotationWorkflowId(secret),
          args: [{ secret, specHash, group: this.group, requestedBy: this.input.requestedBy ?? `group ${this.group}`, reason: this.input.reason }],
          // If the group is cancelled or terminated, its members are asked to cancel: preparing ones
          // roll back, held ones settle the group's decision in the audit trail (groupHold.ts).
          parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
          staticSummary: `member of group ${this.group}`,
        });
        this.runs.set(secret, handle.firstExecutionRunId);
        this.board.setMember(secret, 'preparing', { runId: handle.firstExecutionRunId });
        started();
        return (await handle.result()) as RotationReport;
      })
      .then(
        (report) => {
          const failure = report.failure ? `${report.failure.stage}: ${report.failure.message}` : undefined;
          this.board.setMember(secret, report.outcome === 'rotated' ? 'rotated' : 'rolled-back', { detail: failure ?? report.warnings?.join('; ') });
          if (report.outcome !== 'rotated') this.failed ??= `${secret} ${report.outcome}${failure ? ` at ${failure}` : ''}`;
        },
        (err) => {
          const why =
            err instanceof WorkflowExecutionAlreadyStartedError
              ? `${secret} is already rotating on its own (workflow ${rotationWorkflowId(secret)}); a group rotates only when none of its members is rotating`
              : `${secret} failed: ${causeOf(err instanceof ChildWorkflowFailure && err.cause ? err.cause : err)}`;
          this.board.setMember(secret, 'failed', { detail: why });
          this.failed ??= why;
        },
      )
      .finally(() => started());
    this.results.push(done);
    await isStarted;
  }

  /** What the group decides on: every member's version in the manifest's order, once all hold. */
  preparedLine(): string | undefined {
    if (this.prepared.size !== this.plan.members.length) return undefined;
    return membersLine(this.plan.members.map(([secret]) => this.prepared.get(secret)!));
  }

  reports(): MemberPrepared[] {
    return this.plan.members.map(([secret]) => this.prepared.get(secret)).filter((m): m is MemberPrepared => m !== undefined);
  }

  /** The abort is written: held members learn it from the worker, the others are cancelled and roll back. */
  async abort(): Promise<void> {
    await CancellationScope.nonCancellable(async () => {
      for (const [secret, runId] of this.runs) {
        if (this.board.member(secret)?.state === 'preparing') this.scopes.get(secret)?.cancel();
        await this.ring(secret, runId);
      }
      await Promise.all(this.results);
    });
  }

  /** The release is written: every member is told, and the group waits for each to finish. */
  async release(): Promise<void> {
    await CancellationScope.nonCancellable(async () => {
      for (const [secret, runId] of this.runs) {
        this.board.setMember(secret, 'released');
        await this.ring(secret, runId);
      }
      await Promise.all(this.results);
    });
  }

  private async ring(secret: string, runId: string): Promise<void> {
    try {
      await getExternalWorkflowHandle(rotationWorkflowId(secret), runId).signal(groupDecidedSignal);
    } catch {
      // Already finished: it needs no telling.
    }
  }

  all(state: 'rotated'): boolean {
    return this.board.state.members.every((m) => m.state === state);
  }

  problems(): string {
    return this.board.state.members
      .filter((m) => m.state !== 'rotated')
      .map((m) => `${m.secret} ${m.state}${m.detail ? ` (${m.detail})` : ''}`)
      .join('; ');
  }
}

/** A member's report with bounded fields, or undefined: signals are anyone's JSON. */
function wellFormed(report: unknown): MemberPrepared | undefined {
  const r = report as Partial<MemberPrepared> | null;
  const short = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;
  if (!r || typeof r !== 'object' || !short(r.secret, 63) || !short(r.runId, 100) || !short(r.pendingVersionId, 100) || !short(r.specHash, 80)) return undefined;
  if (!r.receipts || typeof r.receipts !== 'object' || Array.isArray(r.receipts)) return undefined;
  // Only receipts promote asks for (a consumer deployed, healthy; the target), each a signature's length.
  const receipts: Record<string, string> = {};
  const entries = Object.entries(r.receipts);
  if (entries.length > MAX_RECEIPTS) return undefined;
  for (const [k, v] of entries) if (RECEIPT_NAME.test(k) && short(v, MAX_RECEIPT_CHARS)) receipts[k] = v;
  return { secret: r.secret, runId: r.runId, pendingVersionId: r.pendingVersionId, specHash: r.specHash, receipts };
}
