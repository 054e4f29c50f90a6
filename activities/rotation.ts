// Every side effect of a rotation, one activity per step. Activities get secret names and version
// ids from the workflow, read values from the store themselves, and return ids and verdicts only.
import { createHash } from 'node:crypto';
import { heartbeat, log, sleep } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { parseDuration } from '../lib/duration';
import { loadManifests, type SecretSpec } from '../lib/manifest';
import { createAuditActivities } from './audit';
import { createConsumer, type ConsumerSpec } from './consumers';
import { createGenerator } from './generators';
import type { Credential, SecretStore, Target, VersionRef } from './provider';
import { openStore } from './stores';
import { createTarget } from './targets';

/** Failure types the workflow must not retry: retrying cannot change the answer. */
export const NON_RETRYABLE = {
  unknownSecret: 'UnknownSecret',
  noCurrentVersion: 'NoCurrentVersion',
  consumerUnhealthy: 'ConsumerUnhealthy',
  targetRejected: 'TargetRejectedCredential',
} as const;

export interface RotationRef {
  secret: string;
  spec: SecretSpec;
}

export interface VersionPair extends RotationRef {
  currentVersionId: string;
  pendingVersionId: string;
}

export interface PendingVersion {
  currentVersionId: string;
  pendingVersionId: string;
  /** False when an earlier attempt of this rotation already wrote it. */
  created: boolean;
  /** A pending version some other, abandoned rotation left behind and this one cleared. */
  discardedStaleVersionId?: string;
}

export interface ConsumerStep extends RotationRef {
  consumer: string;
  versionId: string;
}

export interface PostVerification {
  oldRejected: boolean;
  newAccepted: boolean;
  detail: string;
}

export interface ActivityOptions {
  /** Where the worker finds Secret manifests when a rotation is started by name only. */
  manifestDirs?: string[];
  /** How often a consumer's health is probed while waiting for it. */
  healthPollMs?: number;
  /** The audit log file (default REKEY_AUDIT_LOG, then .data/audit/audit.jsonl). */
  auditLogPath?: string;
}

/**
 * The pending version's id, derived from the rotation (workflow id + run id): every retry of
 * createPendingVersion asks the store for the same ClientRequestToken, so one rotation writes
 * exactly one version. Formatted as a UUID because AWS requires 32-64 characters.
 */
export function versionTokenFor(rotationId: string): string {
  const h = createHash('sha256').update(`rekey:${rotationId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Heartbeat while `work` runs, so a killed worker is noticed within the heartbeat timeout. */
async function withHeartbeat<T>(work: () => Promise<T>): Promise<T> {
  const timer = setInterval(() => heartbeat(), 3_000);
  try {
    heartbeat();
    return await work();
  } finally {
    clearInterval(timer);
  }
}

function consumerSpec(ref: RotationRef, name: string): ConsumerSpec {
  const spec = ref.spec.consumers.find((c) => c.name === name);
  if (!spec) throw ApplicationFailure.nonRetryable(`secret ${ref.secret} has no consumer ${name}`, NON_RETRYABLE.unknownSecret);
  return spec;
}

function targetOf(ref: RotationRef): Target | undefined {
  return ref.spec.target ? createTarget(ref.spec.target) : undefined;
}

export function createActivities(options: ActivityOptions = {}) {
  const healthPollMs = options.healthPollMs ?? 1_000;

  const readPair = async (ref: VersionPair, store: SecretStore) =>
    Promise.all([store.read(ref.currentVersionId), store.read(ref.pendingVersionId)]);

  return {
    ...createAuditActivities(options),

    async resolveSecretSpec(secret: string): Promise<SecretSpec> {
      if (!options.manifestDirs?.length) {
        throw ApplicationFailure.nonRetryable(
          `no spec was given for ${secret} and the worker has no manifest folder (set REKEY_MANIFESTS)`,
          NON_RETRYABLE.unknownSecret,
        );
      }
      const set = await loadManifests(...options.manifestDirs);
      const manifest = set.secrets.get(secret);
      if (!manifest) {
        const known = [...set.secrets.keys()].join(', ') || 'none';
        throw ApplicationFailure.nonRetryable(`no Secret named ${secret} in ${options.manifestDirs.join(', ')} (known: ${known})`, NON_RETRYABLE.unknownSecret);
      }
      return manifest.spec;
    },

    async createPendingVersion(ref: RotationRef & { rotationId: string }): Promise<PendingVersion> {
      return withHeartbeat(async () => {
        const store = openStore(ref.spec.store);
        const token = versionTokenFor(ref.rotationId);
        const versions = await store.versions();
        if (!versions.current) {
          throw ApplicationFailure.nonRetryable(
            `${store.ref} has no AWSCURRENT version: store the initial credential before rotating`,
            NON_RETRYABLE.noCurrentVersion,
          );
        }
        let discardedStaleVersionId: string | undefined;
        if (versions.pending && versions.pending !== token) {
          // Only one rotation per secret runs (workflow id rotation/<name>), so a foreign pending
          // version belongs to one that crashed or was terminated. Clear it instead of blocking forever.
          await store.discardPending(versions.pending);
          discardedStaleVersionId = versions.pending;
          log.warn('discarded a stale pending version', { secret: ref.secret, versionId: versions.pending });
        }
        if (versions.all.includes(token)) {
          const { created } = await store.putPending(token, {});
          return { currentVersionId: versions.current, pendingVersionId: token, created, discardedStaleVersionId };
        }
        const current = await store.read(versions.current);
        const material = createGenerator(ref.spec.generator).generate();
        const target = targetOf(ref);
        const next: Credential = target ? target.nextCredential(current, material) : { value: material };
        const { versionId, created } = await store.putPending(token, next);
        log.info('stored pending version', { secret: ref.secret, versionId, created });
        return { currentVersionId: versions.current, pendingVersionId: versionId, created, discardedStaleVersionId };
      });
    },

    async prepareTarget(ref: VersionPair): Promise<void> {
      const target = targetOf(ref);
      if (!target) return;
      await withHeartbeat(async () => {
        const [current, next] = await readPair(ref, openStore(ref.spec.store));
        await target.prepare(next, current);
      });
    },

    async undoTarget(ref: VersionPair): Promise<void> {
      const target = targetOf(ref);
      if (!target) return;
      await withHeartbeat(async () => {
        const [current, next] = await readPair(ref, openStore(ref.spec.store));
        await target.undo(next, current);
      });
    },

    async verifyTarget(ref: VersionPair): Promise<string> {
      const target = targetOf(ref);
      if (!target) return 'no target configured';
      return withHeartbeat(async () => {
        const next = await openStore(ref.spec.store).read(ref.pendingVersionId);
        const verdict = await target.accepts(next);
        if (!verdict.accepted) {
          throw ApplicationFailure.nonRetryable(`target rejected the new credential: ${verdict.reason}`, NON_RETRYABLE.targetRejected);
        }
        return 'target accepts the new credential';
      });
    },

    async deployToConsumer(step: ConsumerStep): Promise<void> {
      await withHeartbeat(async () => {
        const store = openStore(step.spec.store);
        const consumer = createConsumer(consumerSpec(step, step.consumer));
        const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId };
        await consumer.deploy(ref, await store.read(step.versionId));
      });
    },

    /** Poll the consumer's health until it reports the version, or fail at `deadline` (epoch ms). */
    async awaitConsumerHealthy(step: ConsumerStep & { deadline: number }): Promise<string> {
      const store = openStore(step.spec.store);
      const consumer = createConsumer(consumerSpec(step, step.consumer));
      const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId };
      for (let probe = 1; ; probe++) {
        const health = await consumer.health(ref);
        heartbeat({ probe, detail: health.detail });
        if (health.healthy) return health.detail;
        if (Date.now() + healthPollMs > step.deadline) {
          throw ApplicationFailure.nonRetryable(
            `consumer ${step.consumer} not healthy on version ${step.versionId} after ${probe} probes: ${health.detail}`,
            NON_RETRYABLE.consumerUnhealthy,
          );
        }
        await sleep(healthPollMs);
      }
    },

    async promoteVersion(ref: RotationRef & { pendingVersionId: string }): Promise<void> {
      await withHeartbeat(() => openStore(ref.spec.store).promote(ref.pendingVersionId));
    },

    async discardPendingVersion(ref: RotationRef & { pendingVersionId: string }): Promise<void> {
      await withHeartbeat(() => openStore(ref.spec.store).discardPending(ref.pendingVersionId));
    },

    async revokeOldCredential(ref: RotationRef & { oldVersionId: string; newVersionId: string }): Promise<void> {
      const target = targetOf(ref);
      if (!target) return;
      await withHeartbeat(async () => {
        const store = openStore(ref.spec.store);
        const [old, next] = await Promise.all([store.read(ref.oldVersionId), store.read(ref.newVersionId)]);
        await target.revoke(old, next);
      });
    },

    /** The fleet items whose current version is older than their policy's maxAge (no maxAge: never due). */
    async filterOverdue(items: { secret: string; spec: SecretSpec }[]): Promise<string[]> {
      const due: string[] = [];
      for (const item of items) {
        heartbeat(item.secret);
        if ((await currentAge(item.spec)).overdue) due.push(item.secret);
      }
      return due;
    },

    async postVerify(ref: RotationRef & { oldVersionId: string; newVersionId: string }): Promise<PostVerification> {
      const target = targetOf(ref);
      if (!target) return { oldRejected: true, newAccepted: true, detail: 'no target configured' };
      return withHeartbeat(async () => {
        const store = openStore(ref.spec.store);
        const [old, next] = await Promise.all([store.read(ref.oldVersionId), store.read(ref.newVersionId)]);
        const [oldVerdict, newVerdict] = [await target.accepts(old), await target.accepts(next)];
        const oldRejected = !oldVerdict.accepted;
        const newAccepted = newVerdict.accepted;
        const detail = [
          oldRejected ? 'old credential rejected' : 'OLD CREDENTIAL STILL ACCEPTED',
          newAccepted ? 'new credential accepted' : `NEW CREDENTIAL REJECTED (${newVerdict.reason})`,
        ].join('; ');
        return { oldRejected, newAccepted, detail };
      });
    },
  };
}

export type RotationActivities = ReturnType<typeof createActivities>;

/** How old the current version is, and whether that exceeds the policy's maxAge. */
export async function currentAge(spec: SecretSpec, now = Date.now()): Promise<{ createdAt?: string; ageMs?: number; overdue: boolean }> {
  const store = openStore(spec.store);
  const { current } = await store.versions();
  const currentCreatedAt = current ? await store.createdAt(current) : undefined;
  if (!currentCreatedAt) return { overdue: false };
  const ageMs = now - Date.parse(currentCreatedAt);
  const overdue = spec.policy.maxAge !== undefined && ageMs > parseDuration(spec.policy.maxAge);
  return { createdAt: currentCreatedAt, ageMs, overdue };
}
