// People in the loop: the `decide` update (refused by its validator before anything reaches
// history) and its signal twins for the Temporal UI. A decision counts only when it is signed by a
// key the worker's manifests list for an approver of this secret, and is bound to this run, this
// pending version and this spec; the requester's keys never count. Names are labels; keys decide.
import { ApplicationFailure, condition, log, setHandler } from '@temporalio/workflow';
import { checkDecision, type RunBinding } from '../lib/authority';
import { signedOnly, type DecisionDocument, type Opened, type SignedDocument, type Signer } from '../lib/signed';
import { signerFingerprint } from '../lib/sshsig';
import type { Evidence } from './evidence';
import { IGNORED_KEPT, approveSignal, decideUpdate, rejectSignal, type ApprovalProgress, type DecisionResult, type RotationPlan } from './messages';

/** Where decisions are awaited and shown: a rotation, or a group of them. */
export interface DecisionBoard {
  readonly stage: string;
  readonly approval: ApprovalProgress;
  /** "the rotation of db-password", "group payments" */
  readonly subject: string;
  enter(stage: 'approve'): void;
  show(): void;
}

/** No approval came in time, or a rejection did: the rotation rolls back. */
export class ApprovalFailure extends Error {}

const MAX_REASON = 200;

export class Approvals {
  private readonly approvals: SignedDocument[] = [];

  constructor(
    private readonly policy: RotationPlan['approval'],
    private readonly progress: DecisionBoard,
    private readonly evidence: Evidence,
    private readonly requester: Signer | undefined,
    /** Known once the pending version exists. */
    private readonly binding: () => RunBinding | undefined,
    /** The policy asks for approval (an authorised emergency does not wait for it). */
    required: boolean,
  ) {
    const approval = progress.approval;
    approval.required = required;
    approval.needed = required ? policy.minApprovals : 0;

    setHandler(decideUpdate, (signed) => this.accept(this.check(signed), signed), {
      validator: (signed) => {
        const opened = this.check(signed);
        if (!opened.ok) throw new Error(opened.reason);
      },
    });
    setHandler(approveSignal, (signed) => this.signalled('approve', signed));
    setHandler(rejectSignal, (signed) => this.signalled('reject', signed));
  }

  /** The valid signed approvals so far: promote shows them to the worker, which checks them again. */
  get signed(): SignedDocument[] {
    return [...this.approvals];
  }

  /** Why a decision cannot count now, or the decision. Changes nothing: validators must not. */
  private check(signed: SignedDocument): Opened<DecisionDocument> {
    const { stage, approval } = this.progress;
    if (stage !== 'approve') return { ok: false, reason: `${this.progress.subject} is not waiting for approval (stage: ${stage})` };
    const binding = this.binding();
    if (!binding) return { ok: false, reason: `${this.progress.subject} has nothing to decide on yet` };
    if (approval.rejectedBy) return { ok: false, reason: `the rotation was rejected by ${approval.rejectedBy.approver}` };
    const opened = checkDecision(signed, this.policy.approvers, binding, this.requester, { now: Date.now() });
    // One person, and one key, counts once (the loader also refuses a key under two names).
    if (opened.ok && approval.approvedBy.some((a) => a.approver === opened.signer.name || a.fingerprint === opened.signer.fingerprint)) {
      return { ok: false, reason: `${opened.signer.name} has already approved` };
    }
    return opened;
  }

  private accept(opened: Opened<DecisionDocument>, signed: SignedDocument): DecisionResult {
    // An ApplicationFailure fails this update only; any other error would fail the workflow task.
    if (!opened.ok) throw ApplicationFailure.nonRetryable(opened.reason, 'DecisionRefused');
    const { doc, signer } = opened;
    const approval = this.progress.approval;
    const entry = { approver: signer.name, fingerprint: signer.fingerprint, comment: doc.comment, at: new Date().toISOString() };
    if (doc.decision === 'approve') {
      approval.approvedBy.push(entry);
      this.approvals.push(signed);
    } else {
      approval.rejectedBy ??= entry;
    }
    approval.waitingFor = approval.waitingFor.filter((a) => a !== signer.name);
    this.evidence.record(doc.decision === 'approve' ? 'approved' : 'rejected', signer.name, {
      reason: doc.comment,
      signed: { ...signedOnly(signed), signer: signer.name, fingerprint: signer.fingerprint, key: signer.key },
    });
    this.progress.show();
    const outcome = approval.rejectedBy ? 'rejected' : approval.approvedBy.length >= approval.needed ? 'approved' : 'waiting';
    return { approvals: approval.approvedBy.length, needed: approval.needed, outcome, approver: signer.name };
  }

  /** A signal cannot be refused before it lands in history, so an invalid one is counted and ignored. */
  private signalled(as: 'approve' | 'reject', signed: SignedDocument): void {
    let opened: Opened<DecisionDocument>;
    try {
      opened = this.check(signed);
    } catch {
      opened = { ok: false, reason: 'not a well-formed signed decision' };
    }
    if (opened.ok && opened.doc.decision !== as) opened = { ok: false, reason: `signed "${opened.doc.decision}" but sent as the ${as} signal` };
    if (opened.ok) {
      this.accept(opened, signed);
      return;
    }
    const approval = this.progress.approval;
    const from = claimedSigner(signed);
    const reason = opened.reason.slice(0, MAX_REASON);
    approval.ignoredCount++;
    approval.ignored.push({ from, reason, at: new Date().toISOString() });
    if (approval.ignored.length > IGNORED_KEPT) approval.ignored.shift();
    // The first few go into the audit trail; a flood is only counted, so it cannot flood the trail.
    if (approval.ignoredCount <= IGNORED_KEPT) this.evidence.record('approval-ignored', from, { detail: reason });
    log.warn('ignored an approval signal', { subject: this.progress.subject, reason });
    this.progress.show();
  }

  /** The approve stage: wait for enough approvals or one rejection, escalating on timeout if asked. */
  async decided(): Promise<void> {
    const policy = this.policy;
    const approval = this.progress.approval;
    this.progress.enter('approve');
    approval.waitingFor = policy.approvers.map((p) => p.name).filter((name) => name !== this.requester?.name);
    const started = Date.now();
    approval.deadline = new Date(started + policy.timeoutMs).toISOString();
    this.progress.show();
    this.evidence.notify('approval-requested');
    const decided = () => approval.rejectedBy !== undefined || approval.approvedBy.length >= approval.needed;
    let inTime = await condition(decided, policy.timeoutMs);
    if (!inTime && policy.onTimeout === 'escalate') {
      approval.escalated = true;
      approval.deadline = new Date(started + policy.escalationLimitMs).toISOString();
      this.evidence.record('escalated', 'rekey', { detail: `no decision within ${formatMs(policy.timeoutMs)}; waiting until ${formatMs(policy.escalationLimitMs)}` });
      log.warn('approval escalated', { subject: this.progress.subject, waitingFor: approval.waitingFor });
      this.progress.show();
      inTime = await condition(decided, Math.max(0, policy.escalationLimitMs - policy.timeoutMs));
    }
    if (!inTime) {
      const limit = policy.onTimeout === 'escalate' ? policy.escalationLimitMs : policy.timeoutMs;
      throw new ApprovalFailure(`no approval within ${formatMs(limit)} (${approval.approvedBy.length} of ${approval.needed})`);
    }
    if (approval.rejectedBy) {
      const { approver, comment } = approval.rejectedBy;
      throw new ApprovalFailure(`rejected by ${approver}${comment ? `: ${comment}` : ''}`);
    }
  }
}

/** Who an ignored decision claims to be from (an SSH key's fingerprint or a passkey's credential id), for people to read. */
function claimedSigner(signed: unknown): string {
  if (!signed || typeof signed !== 'object') return 'unsigned';
  const { signature, passkey } = signed as { signature?: unknown; passkey?: { credentialId?: unknown } };
  if (typeof signature === 'string' && signature.length <= 4096) return signerFingerprint(signature) || 'unsigned';
  const id = passkey && typeof passkey === 'object' ? passkey.credentialId : undefined;
  if (typeof id === 'string' && /^[A-Za-z0-9_-]{1,1366}$/.test(id)) return `passkey ${id.slice(0, 24)}`;
  return 'unsigned';
}

/** 2000 -> "2s", 90000 -> "1m30s", 3600000 -> "1h": how the manifests write durations. */
function formatMs(ms: number): string {
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join('') || `${ms}ms`;
}
