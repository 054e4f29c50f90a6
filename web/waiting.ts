// What the approvals page shows of one run waiting for a decision, and the exact decision document
// an approver's passkey signs for it: the same document `rekey approve` signs. Everything read
// from a workflow (its progress answer) is untrusted: it is only shown (escaped by the page), and
// the document is offered only when the run's own ids vouch for it (the pending version derives
// from the run; the spec is the reviewed one). The workflow's validator decides in the end.
import type { DecisionDocument } from '../lib/signed';
import { versionTokenFor } from '../lib/version-token';
import { groupBinding, membersLine } from '../lib/authority';
import { isGroupWorkflowId, rotationWorkflowId, type GroupProgress, type Progress } from '../workflows/messages';

/** One line of what a person needs to decide. */
export interface Fact {
  label: string;
  value: string;
}

export interface Waiting {
  workflowId: string;
  runId: string;
  /** A rotation, or a RotationGroup deciding once for all its members. */
  kind: 'rotation' | 'group';
  /** The secret's (or group's) name. */
  title: string;
  facts: Fact[];
  /** Why this page will not offer a decision for it (it still lists it, so nobody wonders). */
  problems: string[];
  /** The document to sign; undefined when there are problems. */
  document?: (decision: 'approve' | 'reject', comment: string | undefined, now: number) => DecisionDocument;
}

/** How long a decision signed on the page stays valid: long enough to tap, short enough not to linger. */
export const PAGE_DECISION_TTL_MS = 15 * 60_000;

const MAX_SHOWN = 200;
/** Names listed per fact: a progress answer is anyone's JSON, and a page must stay a page. */
const MAX_LISTED = 32;
const text = (v: unknown, fallback = '?'): string => (typeof v === 'string' && v ? v.slice(0, MAX_SHOWN) : fallback);
const list = (names: string[]): string => names.slice(0, MAX_LISTED).join(', ') + (names.length > MAX_LISTED ? ` and ${names.length - MAX_LISTED} more` : '');

/**
 * A waiting rotation as the page shows it. `reviewedSpecHash` is the spec hash of the secret in
 * the server's own manifests (undefined if it has none): a rotation running another spec is not
 * offered for signing, like `rekey approve -f DIR`.
 */
export function rotationWaiting(namespace: string, workflowId: string, runId: string, progress: Progress, reviewedSpecHash: string | undefined): Waiting {
  const secret = text(progress?.secret);
  const approval = progress?.approval;
  const consumers = Array.isArray(progress?.consumers) ? progress.consumers : [];
  const verified = consumers.filter((c) => c?.state === 'verified').map((c) => text(c.name));
  const facts: Fact[] = [
    { label: 'secret', value: secret },
    { label: 'requested by', value: progress?.requester ? `${text(progress.requester.name)} (signed, ${text(progress.requester.fingerprint)})` : `${text(progress?.requestedBy, 'unknown')} (unsigned label)` },
    { label: 'why', value: text(progress?.reason, '(no reason given)') },
    { label: 'consumers verified', value: `${verified.length} of ${consumers.length}${verified.length ? `: ${list(verified)}` : ''}` },
    { label: 'versions', value: `current ${text(progress?.versions?.current)} → pending ${text(progress?.versions?.pending)}` },
    { label: 'spec', value: text(progress?.specHash) },
    {
      label: 'approvals',
      value: `${Array.isArray(approval?.approvedBy) ? approval.approvedBy.length : 0} of ${Number(approval?.needed) || 0}${Array.isArray(approval?.approvedBy) && approval.approvedBy.length ? ` (${list(approval.approvedBy.map((a) => text(a?.approver)))})` : ''}`,
    },
    { label: 'waiting for', value: Array.isArray(approval?.waitingFor) && approval.waitingFor.length ? list(approval.waitingFor.map((n) => text(n))) : 'nobody eligible' },
    { label: 'deadline', value: `${text(approval?.deadline, 'unknown')}${approval?.escalated ? ' (escalated)' : ''}` },
  ];
  const problems: string[] = [];
  if (progress?.stage !== 'approve') problems.push(`not waiting for approval (stage ${text(progress?.stage)})`);
  if (workflowId !== rotationWorkflowId(secret)) problems.push(`workflow ${workflowId} is not the rotation of ${secret}`);
  const pending = progress?.versions?.pending;
  if (pending !== versionTokenFor(`${workflowId}/${runId}`)) problems.push(`the pending version is not the one run ${runId} writes`);
  if (reviewedSpecHash === undefined) problems.push(`${secret} is not in this server's manifests`);
  else if (progress?.specHash !== reviewedSpecHash) problems.push(`the rotation runs spec ${text(progress?.specHash)}, but the reviewed manifests say ${reviewedSpecHash}`);
  const binding = { namespace, workflowId, runId, secret, pendingVersionId: text(pending), specHash: text(reviewedSpecHash) };
  return {
    workflowId,
    runId,
    kind: 'rotation',
    title: secret,
    facts,
    problems,
    document: problems.length ? undefined : (decision, comment, now) => decisionDocument(binding, decision, comment, now),
  };
}

/**
 * A waiting RotationGroup as the page shows it: one decision for every member, bound to each
 * member's pending version (offered only if each derives from that member's run, as `rekey approve
 * --group` checks) and to the group's reviewed spec hash, which covers the members' specs.
 */
export function groupWaiting(namespace: string, workflowId: string, runId: string, progress: GroupProgress, reviewedSpecHash: string | undefined): Waiting {
  const group = text(progress?.group);
  const approval = progress?.approval;
  const members = (Array.isArray(progress?.members) ? progress.members : []).slice(0, MAX_LISTED);
  const facts: Fact[] = [
    { label: 'group', value: group },
    { label: 'requested by', value: `${text(progress?.requestedBy, 'unknown')} (unsigned label)` },
    { label: 'why', value: text(progress?.reason, '(no reason given)') },
    ...members.map((m) => ({ label: `member ${text(m?.secret)}`, value: `${text(m?.state)}, pending ${text(m?.pendingVersionId)}` })),
    { label: 'spec', value: text(progress?.specHash) },
    {
      label: 'approvals',
      value: `${Array.isArray(approval?.approvedBy) ? approval.approvedBy.length : 0} of ${Number(approval?.needed) || 0}${Array.isArray(approval?.approvedBy) && approval.approvedBy.length ? ` (${list(approval.approvedBy.map((a) => text(a?.approver)))})` : ''}`,
    },
    { label: 'waiting for', value: Array.isArray(approval?.waitingFor) && approval.waitingFor.length ? list(approval.waitingFor.map((n) => text(n))) : 'nobody eligible' },
  ];
  const problems: string[] = [];
  if (progress?.stage !== 'approve') problems.push(`not waiting for approval (stage ${text(progress?.stage)})`);
  if (!isGroupWorkflowId(workflowId, group)) problems.push(`workflow ${workflowId} is not a run of group ${group}`);
  for (const m of members) {
    if (typeof m?.runId !== 'string' || m.pendingVersionId !== versionTokenFor(`${rotationWorkflowId(text(m.secret))}/${m.runId}`)) problems.push(`member ${text(m?.secret)}'s pending version is not the one its run writes`);
  }
  if (members.length === 0) problems.push('the group lists no members');
  if (reviewedSpecHash === undefined) problems.push(`group ${group} is not in this server's manifests`);
  else if (progress?.specHash !== reviewedSpecHash) problems.push(`the group runs spec ${text(progress?.specHash)}, but the reviewed manifests say ${reviewedSpecHash}`);
  const binding = groupBinding(namespace, workflowId, runId, group, text(reviewedSpecHash), membersLine(members.map((m) => ({ secret: text(m?.secret), pendingVersionId: text(m?.pendingVersionId) }))));
  return {
    workflowId,
    runId,
    kind: 'group',
    title: `group ${group}`,
    facts,
    problems,
    document: problems.length ? undefined : (decision, comment, now) => decisionDocument(binding, decision, comment, now),
  };
}

/** The decision document, as `rekey approve` builds it (kind, binding, decision, comment, validity). */
export function decisionDocument(
  binding: { namespace: string; workflowId: string; runId: string; secret: string; pendingVersionId: string; specHash: string },
  decision: 'approve' | 'reject',
  comment: string | undefined,
  now: number,
): DecisionDocument {
  return {
    kind: 'rekey.dev/decision',
    ...binding,
    decision,
    ...(comment ? { comment } : {}),
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + PAGE_DECISION_TTL_MS).toISOString(),
  };
}
