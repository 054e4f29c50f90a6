// Every side effect of a rotation, one activity per step. Activities get a secret name, the hash
// of its spec and version ids from the workflow; they take the spec from the worker's own
// manifests (never from their arguments), read values from the store themselves, and return ids
// and verdicts only.
import { createHash } from 'node:crypto';
import { heartbeat, log, sleep } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { AuditSettings } from '../lib/audit-trails';
import { checkBreakGlass, validApprovals, type RunBinding } from '../lib/authority';
import { parseDuration } from '../lib/duration';
import type { SecretEntry, SecretSpec } from '../lib/manifest';
import type { SignedDocument, Signer } from '../lib/signed';
import type { FleetItem, RotationPlan } from '../workflows/messages';
import { createAuditActivities } from './audit';
import { createConsumer, type ConsumerSpec } from './consumers';
import { createGenerator } from './generators';
import { REFUSED, WorkerManifests, type SpecUse } from './manifests';
import type { Credential, SecretStore, Target, VersionRef } from './provider';
import { openStore } from './stores';
import { createTarget } from './targets';

/** Failure types the workflow must not retry: retrying cannot change the answer. */
export const NON_RETRYABLE = {
  ...REFUSED,
  noCurrentVersion: 'NoCurrentVersion',
  consumerUnhealthy: 'ConsumerUnhealthy',
  targetRejected: 'TargetRejectedCredential',
  foreignPending: 'ForeignPendingVersion',
  externalRotation: 'ExternalRotation',
  notAuthorized: 'NotAuthorized',
} as const;

/** Which secret, and which reviewed spec of it. */
export interface RotationRef {
  secret: string;
  specHash: string;
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
  /** A pending version an abandoned rekey rotation left behind and this one cleared. */
  discardedStaleVersionId?: string;
}

export interface ConsumerStep extends RotationRef {
  consumer: string;
  versionId: string;
}

/** What promote must see before there is no way back: the run, and the signed approvals or break-glass. */
export interface PromoteStep extends RotationRef {
  pendingVersionId: string;
  binding: RunBinding;
  approvals: SignedDocument[];
  requester?: Signer;
  emergency?: SignedDocument;
}

export interface RevokeStep extends RotationRef {
  oldVersionId: string;
  newVersionId: string;
  namespace: string;
  /** Only a revoke-first emergency may revoke before the new version is current. */
  emergency?: SignedDocument;
}

export interface PostVerification {
  oldRejected: boolean;
  newAccepted: boolean;
  detail: string;
}

export interface ActivityOptions {
  /** The worker's reviewed manifests (REKEY_MANIFESTS): the only source of specs. */
  manifestDirs?: string[];
  /** How often a consumer's health is probed while waiting for it. */
  healthPollMs?: number;
  /** Where the audit trail is and which key signs it (default: the REKEY_AUDIT_* environment). */
  audit?: AuditSettings;
}

/**
 * The pending version's id, derived from the rotation (workflow id + run id): every retry of
 * createPendingVersion asks the store for the same ClientRequestToken, so one rotation writes
 * exactly one version. Shaped as a UUID (AWS requires 32-64 characters) whose last group checks
 * the rest, so any tool can tell a version rekey wrote from one another tool wrote.
 */
export function versionTokenFor(rotationId: string): string {
  const h = createHash('sha256').update(`rekey:${rotationId}`).digest('hex');
  const head = `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}`;
  return `${head}-${versionCheck(head)}`;
}

function versionCheck(head: string): string {
  return createHash('sha256').update(`rekey-version:${head}`).digest('hex').slice(0, 12);
}

/** Did rekey write this version? (A random UUID passes with odds of one in 2^54.) */
export function isRekeyVersionId(versionId: string): boolean {
  const m = /^([0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-a[0-9a-f]{3})-([0-9a-f]{12})$/.exec(versionId);
  return m !== null && versionCheck(m[1]) === m[2];
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

function consumerSpec(entry: SecretEntry, name: string): ConsumerSpec {
  const spec = entry.spec.consumers.find((c) => c.name === name);
  if (!spec) throw ApplicationFailure.nonRetryable(`secret ${entry.metadata.name} has no consumer ${name}`, NON_RETRYABLE.unknownSecret);
  return spec;
}

function targetOf(spec: SecretSpec): Target | undefined {
  return spec.target ? createTarget(spec.target) : undefined;
}

function planOf(entry: SecretEntry, people: Map<string, { name: string; keys: string[] }>, breakGlass: { name: string; keys: string[] }[]): RotationPlan {
  const { policy } = entry.spec;
  const ms = parseDuration;
  const everyone = new Map(people);
  for (const p of [...entry.approvers, ...breakGlass]) everyone.set(p.name, p);
  return {
    specHash: entry.specHash,
    consumers: entry.spec.consumers.map((c) => c.name),
    hasTarget: entry.spec.target !== undefined,
    overlapMs: ms(policy.overlap),
    maxParallelConsumers: policy.maxParallelConsumers,
    timeoutsMs: {
      generate: ms(policy.timeouts.generate),
      prepare: ms(policy.timeouts.prepare),
      deploy: ms(policy.timeouts.deploy),
      verify: ms(policy.timeouts.verify),
      revoke: ms(policy.timeouts.revoke),
    },
    approval: {
      required: policy.approval.required,
      minApprovals: policy.approval.minApprovals,
      timeoutMs: ms(policy.approval.timeout),
      onTimeout: policy.approval.onTimeout,
      escalationLimitMs: ms(policy.approval.escalationLimit),
      approvers: entry.approvers,
    },
    breakGlass,
    people: [...everyone.values()],
  };
}

export function createActivities(options: ActivityOptions = {}) {
  const healthPollMs = options.healthPollMs ?? 1_000;
  const manifests = new WorkerManifests(options.manifestDirs ?? []);
  const specFor = async (ref: RotationRef, use: SpecUse) => (await manifests.forStep(ref, use)).spec;

  const readPair = async (ref: VersionPair, store: SecretStore) =>
    Promise.all([store.read(ref.currentVersionId), store.read(ref.pendingVersionId)]);

  return {
    ...createAuditActivities(options.audit),

    /**
     * The first step of every rotation: the worker's own manifest for `secret`, refused if it
     * differs from the spec the requester reviewed. Reads nothing but the worker's files.
     */
    async resolveRotation(request: { secret: string; specHash?: string }): Promise<RotationPlan> {
      const entry = await manifests.current(request.secret, request.specHash);
      const { settings } = await manifests.set();
      return planOf(entry, settings.people, settings.breakGlass);
    },

    async createPendingVersion(ref: RotationRef & { rotationId: string }): Promise<PendingVersion> {
      const spec = await specFor(ref, 'started-with');
      return withHeartbeat(async () => {
        const store = openStore(spec.store);
        const external = await store.externalRotation();
        if (external) {
          throw ApplicationFailure.nonRetryable(
            `${store.ref}: ${external}; rekey will not rotate a secret another mechanism rotates (turn that off, or remove the manifest)`,
            NON_RETRYABLE.externalRotation,
          );
        }
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
          if (!isRekeyVersionId(versions.pending)) {
            // Someone else (an AWS rotation Lambda, a person) is mid-rotation: theirs to finish, not ours to discard.
            throw ApplicationFailure.nonRetryable(
              `${store.ref} has a pending version ${versions.pending} that rekey did not write; nothing was changed. ` +
                'Let whoever wrote it finish or cancel, or remove its AWSPENDING label, then rotate again',
              NON_RETRYABLE.foreignPending,
            );
          }
          // rekey's own, and only one rotation per secret runs (workflow id rotation/<name>): it
          // belongs to a rotation that crashed or was terminated. Clear it instead of blocking forever.
          await store.discardPending(versions.pending);
          discardedStaleVersionId = versions.pending;
          log.warn('discarded a pending version an abandoned rotation left', { secret: ref.secret, versionId: versions.pending });
        }
        if (versions.all.includes(token)) {
          // Written by an earlier attempt of this rotation: relabelled if need be, never rewritten.
          const { created } = await store.putPending(token, {});
          return { currentVersionId: versions.current, pendingVersionId: token, created, discardedStaleVersionId };
        }
        const current = await store.read(versions.current);
        const material = createGenerator(spec.generator).generate();
        const target = targetOf(spec);
        const next: Credential = target ? target.nextCredential(current, material) : { value: material };
        const { versionId, created } = await store.putPending(token, next);
        log.info('stored pending version', { secret: ref.secret, versionId, created });
        return { currentVersionId: versions.current, pendingVersionId: versionId, created, discardedStaleVersionId };
      });
    },

    async prepareTarget(ref: VersionPair): Promise<void> {
      const spec = await specFor(ref, 'started-with');
      const target = targetOf(spec);
      if (!target) return;
      await withHeartbeat(async () => {
        const [current, next] = await readPair(ref, openStore(spec.store));
        await target.prepare(next, current);
      });
    },

    async undoTarget(ref: VersionPair): Promise<void> {
      const spec = await specFor(ref, 'finish');
      const target = targetOf(spec);
      if (!target) return;
      await withHeartbeat(async () => {
        const [current, next] = await readPair(ref, openStore(spec.store));
        await target.undo(next, current);
      });
    },

    async verifyTarget(ref: VersionPair): Promise<string> {
      const spec = await specFor(ref, 'started-with');
      const target = targetOf(spec);
      if (!target) return 'no target configured';
      return withHeartbeat(async () => {
        const next = await openStore(spec.store).read(ref.pendingVersionId);
        const verdict = await target.accepts(next);
        if (!verdict.accepted) {
          throw ApplicationFailure.nonRetryable(`target rejected the new credential: ${verdict.reason}`, NON_RETRYABLE.targetRejected);
        }
        return 'target accepts the new credential';
      });
    },

    /** Deploy a version to one consumer: the new one (before promote) or the current one again (rollback). */
    async deployToConsumer(step: ConsumerStep & { rollback?: boolean }): Promise<void> {
      const entry = await manifests.forStep(step, step.rollback ? 'finish' : 'started-with');
      await withHeartbeat(async () => {
        const store = openStore(entry.spec.store);
        const consumer = createConsumer(consumerSpec(entry, step.consumer));
        const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId };
        await consumer.deploy(ref, await store.read(step.versionId));
      });
    },

    /** Poll the consumer's health until it reports the version, or fail at `deadline` (epoch ms). */
    async awaitConsumerHealthy(step: ConsumerStep & { deadline: number }): Promise<string> {
      const entry = await manifests.forStep(step, 'started-with');
      const store = openStore(entry.spec.store);
      const consumer = createConsumer(consumerSpec(entry, step.consumer));
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

    /**
     * The point of no return. Before moving the label, the worker checks with its own manifests
     * that the policy is met: enough valid signed approvals of this very run, or a break-glass
     * signature. Whatever the workflow was told, nothing unapproved is promoted.
     */
    async promoteVersion(step: PromoteStep): Promise<void> {
      const entry = await manifests.forStep(step, 'started-with');
      const { settings } = await manifests.set();
      if (step.binding.secret !== step.secret || step.binding.pendingVersionId !== step.pendingVersionId || step.binding.specHash !== step.specHash) {
        throw ApplicationFailure.nonRetryable('promote refused: the approvals are bound to another rotation', NON_RETRYABLE.notAuthorized);
      }
      if (step.emergency) {
        const verdict = checkBreakGlass(step.emergency, settings.breakGlass, { namespace: step.binding.namespace, secret: step.secret, specHash: step.specHash }, {});
        if (!verdict.ok) throw ApplicationFailure.nonRetryable(`promote refused: the break-glass authorisation does not hold: ${verdict.reason}`, NON_RETRYABLE.notAuthorized);
      } else if (entry.spec.policy.approval.required) {
        const { approvedBy, problems } = validApprovals(step.approvals, entry.approvers, step.binding, step.requester);
        const needed = entry.spec.policy.approval.minApprovals;
        if (approvedBy.length < needed) {
          throw ApplicationFailure.nonRetryable(
            `promote refused: ${approvedBy.length} valid signed approval(s) of ${needed} needed${problems.length ? ` (${problems.slice(0, 3).join('; ')})` : ''}`,
            NON_RETRYABLE.notAuthorized,
          );
        }
      }
      await withHeartbeat(() => openStore(entry.spec.store).promote(step.pendingVersionId));
    },

    async discardPendingVersion(ref: RotationRef & { pendingVersionId: string }): Promise<void> {
      const spec = await specFor(ref, 'finish');
      await withHeartbeat(() => openStore(spec.store).discardPending(ref.pendingVersionId));
    },

    /**
     * Make the old credential stop working. Refused while the old version is still the store's
     * current one (promote has not happened), unless a revoke-first emergency is authorised: the
     * credential everyone is told to use is never the one revoked.
     */
    async revokeOldCredential(step: RevokeStep): Promise<void> {
      const spec = await specFor(step, 'finish');
      const target = targetOf(spec);
      if (!target) return;
      await withHeartbeat(async () => {
        const store = openStore(spec.store);
        const { current } = await store.versions();
        if (current !== step.newVersionId) {
          const emergency = step.emergency
            ? checkBreakGlass(step.emergency, (await manifests.set()).settings.breakGlass, { namespace: step.namespace, secret: step.secret, specHash: step.specHash }, {})
            : undefined;
          if (!emergency?.ok || !emergency.doc.revokeFirst) {
            throw ApplicationFailure.nonRetryable(
              `refusing to revoke version ${step.oldVersionId}: the new version ${step.newVersionId} is not current` +
                (emergency && !emergency.ok ? ` and the break-glass authorisation does not hold (${emergency.reason})` : ''),
              NON_RETRYABLE.notAuthorized,
            );
          }
        }
        const [old, next] = await Promise.all([store.read(step.oldVersionId), store.read(step.newVersionId)]);
        await target.revoke(old, next);
      });
    },

    /** The fleet items whose current version is older than their policy's maxAge (no maxAge: never due). */
    async filterOverdue(items: FleetItem[]): Promise<string[]> {
      const due: string[] = [];
      for (const [secret, specHash] of items) {
        heartbeat(secret);
        const spec = await specFor({ secret, specHash }, 'finish');
        if ((await currentAge(spec)).overdue) due.push(secret);
      }
      return due;
    },

    async postVerify(step: RotationRef & { oldVersionId: string; newVersionId: string }): Promise<PostVerification> {
      const spec = await specFor(step, 'finish');
      const target = targetOf(spec);
      if (!target) return { oldRejected: true, newAccepted: true, detail: 'no target configured' };
      return withHeartbeat(async () => {
        const store = openStore(spec.store);
        const [old, next] = await Promise.all([store.read(step.oldVersionId), store.read(step.newVersionId)]);
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
