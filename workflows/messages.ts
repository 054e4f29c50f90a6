// The contract the Temporal UI, the CLI and the SDK use to talk to a rotation: input, result,
// query and search attributes. Nothing here ever holds a secret value: names and version ids only.
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery } from '@temporalio/workflow';
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
}

export const STAGES = ['generate', 'prepare', 'deploy', 'verify', 'promote', 'overlap', 'revoke', 'post-verify', 'rollback', 'done'] as const;
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

export interface Progress {
  secret: string;
  stage: Stage;
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
}

export const progressQuery = defineQuery<Progress>('progress');

export const SECRET_ATTRIBUTE = defineSearchAttributeKey('RekeySecret', 'KEYWORD');
export const STAGE_ATTRIBUTE = defineSearchAttributeKey('RekeyStage', 'KEYWORD');
export const OUTCOME_ATTRIBUTE = defineSearchAttributeKey('RekeyOutcome', 'KEYWORD');
export const REQUESTED_BY_ATTRIBUTE = defineSearchAttributeKey('RekeyRequestedBy', 'KEYWORD');
