// The contract the Temporal UI, the CLI and the SDK use to talk to a rotation: input, result,
// query and search attributes. Nothing here ever holds a secret value: names and version ids only.
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { SecretSpec } from '../lib/manifest';

export const TASK_QUEUE = 'rekey';

/** One rotation per secret at a time: Temporal refuses a second workflow with the same id. */
export function rotationWorkflowId(secret: string): string {
  return `rotation/${secret}`;
}

export interface RotationInput {
  /** metadata.name of the Secret manifest. */
  secret: string;
  /** The validated manifest spec (references only). Omitted: the worker loads it from REKEY_MANIFESTS. */
  spec?: SecretSpec;
  reason?: string;
  requestedBy?: string;
  /**
   * The secret is compromised: no approval wait and no overlap. With revokeFirst the old credential
   * is revoked right after the target learns the new one, before consumers have it (downtime
   * accepted), and nothing after that point can roll back.
   */
  emergency?: { revokeFirst?: boolean };
}

/** Input of the emergencyRevoke workflow (id `emergency/<name>`). */
export type EmergencyInput = Omit<RotationInput, 'emergency'> & { revokeFirst?: boolean };

export function emergencyWorkflowId(secret: string): string {
  return `emergency/${secret}`;
}

export const STAGES = ['generate', 'prepare', 'deploy', 'verify', 'approve', 'promote', 'overlap', 'revoke', 'post-verify', 'rollback', 'done'] as const;
export type Stage = (typeof STAGES)[number];

export type ConsumerState = 'waiting' | 'deploying' | 'deployed' | 'verifying' | 'verified' | 'failed' | 'rolling-back' | 'rolled-back';

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

export interface ApprovalProgress {
  required: boolean;
  needed: number;
  approvedBy: { approver: string; comment?: string; at: string }[];
  rejectedBy?: { approver: string; comment?: string; at: string };
  /** Decisions that were refused (wrong approver, the requester, a repeat), with why. */
  ignored: { approver: string; reason: string; at: string }[];
  /** Approvers who may still decide. */
  waitingFor: string[];
  escalated: boolean;
}

export interface Progress {
  secret: string;
  stage: Stage;
  requestedBy?: string;
  emergency: boolean;
  approval: ApprovalProgress;
  versions: { current?: string; pending?: string };
  consumers: ConsumerProgress[];
  stages: StageTiming[];
}

export type Outcome = 'rotated' | 'rolled-back';

export interface RotationReport {
  secret: string;
  outcome: Outcome;
  requestedBy?: string;
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
  /** Problems that could not roll anything back (after promote, or after a revoke-first). */
  warnings?: string[];
}

export const progressQuery = defineQuery<Progress>('progress');

/** An approver's decision. Sent by `rekey approve|reject`, the SDK or `temporal workflow update`. */
export interface Decision {
  approver: string;
  approve: boolean;
  comment?: string;
}
export interface DecisionResult {
  approvals: number;
  needed: number;
  outcome: 'waiting' | 'approved' | 'rejected';
}
/** The checked way to decide: an invalid decision is refused by its validator and never enters history. */
export const decideUpdate = defineUpdate<DecisionResult, [Decision]>('decide');

/**
 * Signal twins for the Temporal UI's "Send a Signal" form: {"approver": "alice", "comment": "..."}.
 * Checked like the update; an invalid one is recorded as ignored and never counted.
 */
export interface SignalDecision {
  approver: string;
  comment?: string;
}
export const approveSignal = defineSignal<[SignalDecision]>('approve');
export const rejectSignal = defineSignal<[SignalDecision]>('reject');

export const SECRET_ATTRIBUTE = defineSearchAttributeKey('RekeySecret', 'KEYWORD');
export const STAGE_ATTRIBUTE = defineSearchAttributeKey('RekeyStage', 'KEYWORD');
export const OUTCOME_ATTRIBUTE = defineSearchAttributeKey('RekeyOutcome', 'KEYWORD');
export const REQUESTED_BY_ATTRIBUTE = defineSearchAttributeKey('RekeyRequestedBy', 'KEYWORD');

/** One line of the audit trail. Who, what, when, why and which versions; never a value. */
export interface AuditEvent {
  /** workflow id + run id of the rotation: with `event` and `actor`, what makes a record unique. */
  rotationId: string;
  secret: string;
  event: 'requested' | 'approved' | 'rejected' | 'approval-ignored' | 'escalated' | 'promoted' | 'revoked' | 'rolled-back' | 'failed' | 'superseded';
  /** Who did it: the requester, the approver, or "rekey" for the engine's own steps. */
  actor: string;
  /** When it happened, in workflow time (ISO 8601). */
  at: string;
  reason?: string;
  versions?: { current?: string; pending?: string };
  detail?: string;
}

/** One secret a fleet rotates: its name and spec (references only). */
export interface FleetItem {
  secret: string;
  spec: SecretSpec;
}

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
