// The contract the Temporal UI, the CLI and the SDK use to talk to a rotation: input, result,
// query and search attributes. Nothing here ever holds a secret value: names and version ids only.
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AuditHead } from '../lib/audit';
import type { Person, SignedDocument, Signer } from '../lib/signed';

export type { AuditEvent, AuditHead } from '../lib/audit';
export type { SignedDocument } from '../lib/signed';

export const TASK_QUEUE = 'rekey';

/** One rotation per secret at a time: Temporal refuses a second workflow with the same id. */
export function rotationWorkflowId(secret: string): string {
  return `rotation/${secret}`;
}

/**
 * What starts a rotation. It names a secret; the spec comes from the worker's own manifests, and
 * nothing here can choose a command, a host or an approver. Every field is untrusted and checked.
 */
export interface RotationInput {
  /** metadata.name of the Secret manifest. */
  secret: string;
  /**
   * sha256 of the spec the requester reviewed (`rekey plan` and `rekey rotate` print it). The
   * worker refuses the rotation if its own manifest differs. Omitted: whatever the worker has.
   */
  specHash?: string;
  reason?: string;
  /** A label for people to read; who asked is proven only by `request`. */
  requestedBy?: string;
  /** The requester's signed request (`rekey rotate --key`): that person cannot approve it. */
  request?: SignedDocument;
  /**
   * The RotationGroup this rotation is a member of: it then holds before promote until the group
   * decides. Only honoured for a child of the workflow group/<name> whose manifest lists the secret.
   */
  group?: string;
  /**
   * The secret is compromised: a break-glass key holder's signed authorisation (`rekey revoke
   * --emergency --key`). No approval wait and no overlap; with revokeFirst (in the signed document)
   * the old credential is revoked right after the target learns the new one, before consumers have
   * it, and nothing after that point can roll back.
   */
  emergency?: SignedDocument;
}

/** Input of the emergencyRevoke workflow (id `emergency/<name>`). */
export interface EmergencyInput {
  secret: string;
  specHash?: string;
  reason?: string;
  requestedBy?: string;
  /** The break-glass authorisation, signed. */
  authorization: SignedDocument;
}

export function emergencyWorkflowId(secret: string): string {
  return `emergency/${secret}`;
}

/** The durable timer that removes what a revoke only disabled (an inactive IAM key), one per revoked version. */
export function retireWorkflowId(secret: string, versionId: string): string {
  return `retire/${secret}/${versionId}`;
}

/** What a retire workflow is started with: names and ids only, checked again by the worker. */
export interface RetireInput {
  secret: string;
  specHash: string;
  /** The revoked version whose credential goes. */
  versionId: string;
  /** The rotation (workflow id/run id) whose revoke record says when it was revoked. */
  revokedBy: string;
}

/**
 * What the worker's manifests say about a rotation, as the workflow needs it: names, numbers and
 * public keys, never a command or a host. Returned by the resolveRotation activity.
 */
export interface RotationPlan {
  specHash: string;
  consumers: string[];
  /**
   * Consumers with a phase beyond deploy and verify: `commit` ones switch at promote (a webhook
   * sender), `finalize` ones hold two versions until revoke and are then redeployed with the new one alone.
   */
  phases?: { commit: string[]; finalize: string[] };
  hasTarget: boolean;
  /** The target accepts old and new at once after prepare (see Target.acceptsBoth). */
  targetAcceptsBoth: boolean;
  overlapMs: number;
  maxParallelConsumers: number;
  timeoutsMs: { generate: number; prepare: number; deploy: number; verify: number; revoke: number; rollback: number };
  approval: {
    required: boolean;
    minApprovals: number;
    requireSignedRequest: boolean;
    timeoutMs: number;
    onTimeout: 'abort' | 'escalate';
    escalationLimitMs: number;
    approvers: Person[];
  };
  breakGlass: Person[];
  /** Set when the rotation runs as a member of a RotationGroup: it holds before promote. */
  group?: { name: string; holdTimeoutMs: number };
  /** Everyone the manifests know, to tell who signed a request. */
  people: Person[];
}

export const STAGES = ['generate', 'prepare', 'deploy', 'verify', 'approve', 'held', 'promote', 'overlap', 'revoke', 'post-verify', 'rollback', 'done'] as const;
export type Stage = (typeof STAGES)[number];

export type ConsumerState = 'waiting' | 'deploying' | 'deployed' | 'verifying' | 'verified' | 'committing' | 'committed' | 'finalizing' | 'finalized' | 'failed' | 'aborting' | 'rolling-back' | 'rolled-back';

export interface ConsumerProgress {
  name: string;
  state: ConsumerState;
  detail?: string;
}

export interface StageTiming {
  stage: Stage;
  startedAt: string;
  durationMs?: number;
}

export interface ApprovalEntry {
  approver: string;
  /** The key that signed the decision. */
  fingerprint: string;
  comment?: string;
  at: string;
}

/** How many refused decisions are kept in full; beyond that they are only counted. */
export const IGNORED_KEPT = 20;

export interface ApprovalProgress {
  required: boolean;
  needed: number;
  approvedBy: ApprovalEntry[];
  rejectedBy?: ApprovalEntry;
  /** Decisions refused (unsigned, unknown key, expired, another run, the requester...), the last 20. */
  ignored: { from: string; reason: string; at: string }[];
  /** All refused decisions, counted. */
  ignoredCount: number;
  /** Approvers who may still decide. */
  waitingFor: string[];
  escalated: boolean;
  /** When the wait ends (the timeout, or the escalation limit once escalated), ISO 8601. */
  deadline?: string;
}

export interface Progress {
  secret: string;
  stage: Stage;
  /** The spec the rotation runs (its hash): approvers sign for it. */
  specHash?: string;
  /** The requester's label, or the person whose key signed the request. */
  requestedBy?: string;
  /** The key that signed the request, when it was signed. */
  requester?: Signer;
  /** Why, as the requester wrote it (untrusted text, bounded by the input's checks). */
  reason?: string;
  emergency: boolean;
  approval: ApprovalProgress;
  versions: { current?: string; pending?: string };
  consumers: ConsumerProgress[];
  stages: StageTiming[];
}

/** rollback-incomplete: something could not be undone; the report's warnings say what a person must finish. */
export type Outcome = 'rotated' | 'rolled-back' | 'rollback-incomplete';

export interface RotationReport {
  secret: string;
  outcome: Outcome;
  specHash: string;
  requestedBy?: string;
  requester?: Signer;
  reason?: string;
  startedAt: string;
  finishedAt: string;
  versions: { before: string; after: string; pending: string };
  /** A pending version an abandoned earlier rotation left behind, cleared by this one. */
  discardedStaleVersionId?: string;
  stages: StageTiming[];
  consumers: ConsumerProgress[];
  /** Set when rolled back: the stage and the cause. */
  failure?: { stage: Stage; message: string; consumer?: string };
  postVerify?: { oldRejected: boolean; newAccepted: boolean; detail: string };
  approval: ApprovalProgress;
  emergency: boolean;
  /** When the target stopped accepting the old credential (ISO 8601), for time-to-revoke. */
  revokedAt?: string;
  /** Sessions opened with the old credential that revoke ended. */
  sessionsEnded?: number;
  /** Problems that could not roll anything back (after promote, or after a revoke-first). */
  warnings?: string[];
  /** Where this rotation left the audit trail: `rekey audit verify` finds a trail cut short of it. */
  auditHead?: AuditHead;
}

export const progressQuery = defineQuery<Progress>('progress');

/**
 * The visibility query for runs waiting for people: rekey's own workflow types only (anyone may
 * start some other workflow that sets RekeyStage=approve, to crowd the list).
 */
export const WAITING_FOR_DECISION = "RekeyStage = 'approve' AND ExecutionStatus = 'Running' AND WorkflowType IN ('rotateSecret', 'rotateGroup')";

export interface DecisionResult {
  approvals: number;
  needed: number;
  outcome: 'waiting' | 'approved' | 'rejected';
  /** Who the signature says decided. */
  approver: string;
}
/**
 * The checked way to decide: a signed decision document (`rekey approve NAME --key`). Its validator
 * verifies the signature and the binding to this run, and refuses before anything reaches history.
 */
export const decideUpdate = defineUpdate<DecisionResult, [SignedDocument]>('decide');

/**
 * Signal twins for the Temporal UI's "Send a Signal" form: paste what `rekey approve NAME --print`
 * prints. Checked like the update; an invalid one is counted as ignored and never counted as a vote.
 */
export const approveSignal = defineSignal<[SignedDocument]>('approve');
export const rejectSignal = defineSignal<[SignedDocument]>('reject');

export const SECRET_ATTRIBUTE = defineSearchAttributeKey('RekeySecret', 'KEYWORD');
export const STAGE_ATTRIBUTE = defineSearchAttributeKey('RekeyStage', 'KEYWORD');
export const OUTCOME_ATTRIBUTE = defineSearchAttributeKey('RekeyOutcome', 'KEYWORD');
export const REQUESTED_BY_ATTRIBUTE = defineSearchAttributeKey('RekeyRequestedBy', 'KEYWORD');
/** The audit trail a rotation wrote to, so `rekey audit verify` finds the heads that belong to it. */
export const AUDIT_TRAIL_ATTRIBUTE = defineSearchAttributeKey('RekeyAuditTrail', 'KEYWORD');

/** One secret a fleet rotates: its name and the hash of its reviewed spec (compact: fleets are large). */
export type FleetItem = [secret: string, specHash: string];

export interface FleetInput {
  /** The schedule that started it, or "adhoc". */
  fleet: string;
  items: FleetItem[];
  maxParallel: number;
  /** Rotate only secrets whose current version is older than their policy's maxAge. */
  overdueOnly?: boolean;
  requestedBy?: string;
  reason?: string;
  /** Children per run before continuing as new (default 200); small values let tests cross runs. */
  childrenPerRun?: number;
  /** Carried across continue-as-new: what happened so far (items then holds only what is left). */
  summary?: FleetSummary;
}

export interface FleetSummary {
  rotated: string[];
  rolledBack: { secret: string; reason: string }[];
  /** A rotation of the secret was already running (ad hoc or another fleet): not duplicated. */
  skipped: string[];
  /** Not overdue, with overdueOnly. */
  notDue: string[];
  failed: { secret: string; reason: string }[];
}

export interface FleetProgress {
  fleet: string;
  total: number;
  done: number;
  running: string[];
  summary: FleetSummary;
}

export const fleetProgressQuery = defineQuery<FleetProgress>('fleetProgress');

export function fleetWorkflowId(fleet: string): string {
  return `fleet/${fleet}`;
}

/** One run of a group at a time, like rotations. */
export function groupWorkflowId(group: string): string {
  return `group/${group}`;
}

/**
 * Is `workflowId` a run of `group`: group/<name>, or what a Temporal Schedule makes of it (the id
 * followed by "-" and the scheduled time, e.g. group/payments-2026-11-23T02:00:00Z).
 */
export function isGroupWorkflowId(workflowId: string, group: string): boolean {
  const id = groupWorkflowId(group);
  return workflowId === id || (workflowId.startsWith(`${id}-`) && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(workflowId.slice(id.length + 1)));
}

/** What starts a group rotation: a name and the hash of the reviewed RotationGroup spec. Untrusted, checked. */
export interface GroupInput {
  group: string;
  specHash?: string;
  reason?: string;
  requestedBy?: string;
}

/** What the worker's manifests say about a group (resolveGroup): names, hashes, numbers and public keys. */
export interface GroupPlan {
  specHash: string;
  /** Each member and the hash of its Secret spec, as the worker has it now. */
  members: [secret: string, specHash: string][];
  maxParallel: number;
  approval: RotationPlan['approval'];
  holdTimeoutMs: number;
}

/**
 * What a member tells its group once it is prepared and verified. The group passes it to the
 * worker, which believes only the receipts (its own signatures), never this message.
 */
export interface MemberPrepared {
  secret: string;
  runId: string;
  pendingVersionId: string;
  specHash: string;
  receipts: Record<string, string | undefined>;
}
export const memberPreparedSignal = defineSignal<[MemberPrepared]>('memberPrepared');

/**
 * A doorbell: the group has decided. The member asks the worker what was decided (the decision
 * lives in the audit trail), so a forged ring changes nothing.
 */
export const groupDecidedSignal = defineSignal('groupDecided');

/** The decision as the worker gives it to a member: release comes with the worker's signed token. */
export interface GroupVerdict {
  decision: 'release' | 'abort' | 'undecided';
  /** The worker's signature releasing this member's pending version (promote checks it). */
  release?: string;
  detail?: string;
}

export type GroupStage = 'preparing' | 'approve' | 'releasing' | 'aborting' | 'done';
export type MemberState = 'waiting' | 'preparing' | 'prepared' | 'released' | 'rotated' | 'rolled-back' | 'failed';

export interface GroupMemberProgress {
  secret: string;
  state: MemberState;
  runId?: string;
  pendingVersionId?: string;
  detail?: string;
}

export interface GroupProgress {
  group: string;
  stage: GroupStage;
  specHash?: string;
  requestedBy?: string;
  reason?: string;
  members: GroupMemberProgress[];
  approval: ApprovalProgress;
  /** What the group decided, once it has. */
  decision?: 'release' | 'abort';
}
export const groupProgressQuery = defineQuery<GroupProgress>('groupProgress');

/** rotated: every member promoted. rolled-back: none did. incomplete: the report says who did what. */
export interface GroupReport {
  group: string;
  outcome: 'rotated' | 'rolled-back' | 'incomplete';
  specHash: string;
  requestedBy?: string;
  reason?: string;
  startedAt: string;
  finishedAt: string;
  failure?: string;
  members: GroupMemberProgress[];
  approval: ApprovalProgress;
}
