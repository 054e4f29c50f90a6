// Who may do what to a rotation, decided from signed documents and the keys the trusted manifests
// list. The workflow asks these before anything reaches history (update validators, the start of
// a run); the activities that cross the point of no return ask them again, from the worker's own
// manifests, so a forged activity result cannot promote or revoke. Pure: runs in the sandbox.
import {
  mismatch,
  openSigned,
  signedOnly,
  type BreakGlassDocument,
  type DecisionDocument,
  type Opened,
  type Person,
  type RequestDocument,
  type SignedDocument,
  type Signer,
} from './signed';

/** What a decision must be bound to: this namespace, this run, this pending version, this spec. */
export interface RunBinding {
  namespace: string;
  workflowId: string;
  runId: string;
  secret: string;
  pendingVersionId: string;
  specHash: string;
}

export interface TimeCheck {
  /** Epoch ms to check issuedAt/expiresAt against; undefined skips it (re-verification later). */
  now?: number;
}

/** The requester's signed request: proves who asked, so that person cannot approve. */
export function checkRequest(
  signed: unknown,
  people: readonly Person[],
  expect: { namespace: string; workflowId: string; secret: string; specHash: string },
  time: TimeCheck,
): Opened<RequestDocument> {
  const opened = openSigned<RequestDocument>(signed, 'rekey.dev/request', people, time.now);
  if (!opened.ok) return opened;
  const { namespace, workflowId, secret, specHash } = expect;
  const wrong = mismatch(opened.doc, { namespace, workflowId, secret }) ?? (opened.doc.specHash !== undefined ? mismatch(opened.doc, { specHash }) : undefined);
  return wrong ? { ok: false, reason: wrong } : opened;
}

/** A break-glass authorisation: only keys of the manifests' breakGlass people count. */
export function checkBreakGlass(
  signed: unknown,
  breakGlass: readonly Person[],
  expect: { namespace: string; secret: string; specHash: string },
  time: TimeCheck,
): Opened<BreakGlassDocument> {
  if (breakGlass.length === 0) return { ok: false, reason: 'no break-glass keys are declared (Settings spec.breakGlass)' };
  const opened = openSigned<BreakGlassDocument>(signed, 'rekey.dev/break-glass', breakGlass, time.now);
  if (!opened.ok) return opened;
  const { namespace, secret, specHash } = expect;
  const wrong = mismatch(opened.doc, { namespace, secret }) ?? (opened.doc.specHash !== undefined ? mismatch(opened.doc, { specHash }) : undefined);
  if (wrong) return { ok: false, reason: wrong };
  if (typeof opened.doc.revokeFirst !== 'boolean' || typeof opened.doc.reason !== 'string' || !opened.doc.reason) {
    return { ok: false, reason: 'a break-glass document needs revokeFirst (true or false) and a reason' };
  }
  return opened;
}

/** One approver's decision on one run; the requester's keys never count. */
export function checkDecision(
  signed: unknown,
  approvers: readonly Person[],
  binding: RunBinding,
  requester: Signer | undefined,
  time: TimeCheck,
): Opened<DecisionDocument> {
  const opened = openSigned<DecisionDocument>(signed, 'rekey.dev/decision', approvers, time.now);
  if (!opened.ok) return opened;
  const wrong = mismatch(opened.doc, { ...binding });
  if (wrong) return { ok: false, reason: wrong };
  if (opened.doc.decision !== 'approve' && opened.doc.decision !== 'reject') return { ok: false, reason: 'decision must be "approve" or "reject"' };
  if (requester && opened.doc.decision === 'approve' && (opened.signer.key === requester.key || opened.signer.name === requester.name)) {
    return { ok: false, reason: `${opened.signer.name} requested this rotation (signed with ${requester.fingerprint}) and cannot approve it (two-person rule)` };
  }
  return opened;
}

/** The distinct approvers whose signed approvals of this run are valid, and why the others are not. */
export function validApprovals(
  approvals: readonly unknown[],
  approvers: readonly Person[],
  binding: RunBinding,
  requester: Signer | undefined,
  time: TimeCheck = {},
): { approvedBy: Signer[]; accepted: { signed: SignedDocument; signer: Signer }[]; problems: string[] } {
  const accepted: { signed: SignedDocument; signer: Signer }[] = [];
  const problems: string[] = [];
  for (const signed of approvals) {
    const opened = checkDecision(signed, approvers, binding, requester, time);
    if (!opened.ok) problems.push(opened.reason);
    else if (opened.doc.decision !== 'approve') problems.push(`${opened.signer.name} rejected`);
    // Kept as signed, nothing more: these go into promote's audit record.
    else if (!accepted.some((a) => a.signer.name === opened.signer.name || a.signer.key === opened.signer.key)) accepted.push({ signed: signedOnly(signed as SignedDocument), signer: opened.signer });
  }
  return { approvedBy: accepted.map((a) => a.signer), accepted, problems };
}

/** What a group's release is bound to: every member and the version it promotes, in the group's order. */
export function membersLine(members: { secret: string; pendingVersionId: string }[]): string {
  return members.map((m) => `${m.secret}@${m.pendingVersionId}`).join(',');
}

/**
 * The binding a group's decision is signed for: the group's run (workflow group/<name>), its spec,
 * and in place of one pending version the line of every member's (see membersLine).
 */
export function groupBinding(namespace: string, workflowId: string, runId: string, group: string, specHash: string, members: string): RunBinding {
  return { namespace, workflowId, runId, secret: group, pendingVersionId: members, specHash };
}
