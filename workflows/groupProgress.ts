// What a group rotation shows while it runs: the groupProgress query, the stage search attribute
// (RekeyStage=approve lists groups waiting for people, like rotations), and the Temporal UI's
// "current details" panel with every member's state. Bookkeeping only; it decides nothing.
import { log, setCurrentDetails, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { DecisionBoard } from './approvals';
import {
  STAGE_ATTRIBUTE,
  groupProgressQuery,
  type ApprovalProgress,
  type GroupInput,
  type GroupMemberProgress,
  type GroupPlan,
  type GroupProgress,
  type GroupReport,
  type GroupStage,
  type MemberState,
} from './messages';

export class GroupBoard implements DecisionBoard {
  readonly state: GroupProgress;

  constructor(input: GroupInput) {
    const approval: ApprovalProgress = { required: false, needed: 0, approvedBy: [], ignored: [], ignoredCount: 0, waitingFor: [], escalated: false };
    this.state = { group: input.group, stage: 'preparing', requestedBy: input.requestedBy, reason: input.reason, members: [], approval };
    setHandler(groupProgressQuery, () => this.state);
  }

  get stage(): GroupStage {
    return this.state.stage;
  }

  get approval(): ApprovalProgress {
    return this.state.approval;
  }

  get subject(): string {
    return `group ${this.state.group}`;
  }

  planned(plan: GroupPlan): void {
    this.state.specHash = plan.specHash;
    this.state.members = plan.members.map(([secret]) => ({ secret, state: 'waiting' }));
    this.enter('preparing');
  }

  enter(stage: GroupStage): void {
    this.state.stage = stage;
    upsertSearchAttributes([{ key: STAGE_ATTRIBUTE, value: stage }]);
    this.show();
    log.info('group stage', { group: this.state.group, stage });
  }

  member(secret: string): GroupMemberProgress | undefined {
    return this.state.members.find((m) => m.secret === secret);
  }

  setMember(secret: string, state: MemberState, extra: Partial<GroupMemberProgress> = {}): void {
    const member = this.member(secret);
    if (!member) return;
    Object.assign(member, { ...extra, state });
    this.show();
  }

  count(state: MemberState): number {
    return this.state.members.filter((m) => m.state === state).length;
  }

  show(report?: GroupReport): void {
    setCurrentDetails(describe(this.state, report));
  }
}

/** Untrusted text as code on one line, so it cannot become a link, a heading or a table cell. */
const literal = (text: string) => `\`${text.replaceAll('`', "'").replaceAll('|', '/').replace(/\s+/g, ' ')}\``;

function describe(p: GroupProgress, report?: GroupReport): string {
  const a = p.approval;
  const lines = [
    `### Group rotation of \`${p.group}\``,
    report ? `**Outcome:** ${report.outcome}${report.failure ? `: ${literal(report.failure)}` : ''}` : `**Stage:** ${p.stage}${p.decision ? ` (decided: ${p.decision})` : ''}`,
    `Requested by ${literal(p.requestedBy ?? 'unknown')} (unverified label)`,
    '',
    `Spec \`${p.specHash ?? '?'}\``,
  ];
  if (a.required) {
    lines.push(
      '',
      `**Approval (once for the whole group):** ${a.approvedBy.length} of ${a.needed}` +
        (a.approvedBy.length ? ` (approved by ${a.approvedBy.map((x) => x.approver).join(', ')})` : '') +
        (a.rejectedBy ? `, rejected by ${a.rejectedBy.approver}` : '') +
        (p.stage === 'approve' ? `; waiting for ${a.waitingFor.join(', ') || 'nobody eligible'}` : '') +
        (a.ignoredCount ? `; ${a.ignoredCount} invalid decision(s) ignored` : ''),
    );
    if (p.stage === 'approve') lines.push('', `Approve: \`rekey approve --group ${p.group} --key ~/.ssh/id_ed25519\` (or \`--print\` and send it as the signal \`approve\`).`);
  }
  lines.push('', '| member | state | pending version | detail |', '|---|---|---|---|');
  lines.push(...p.members.map((m) => `| ${m.secret} | ${m.state} | ${m.pendingVersionId ? `\`${m.pendingVersionId}\`` : ''} | ${m.detail ? literal(m.detail) : ''} |`));
  return lines.join('\n');
}
