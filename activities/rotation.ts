// Every side effect of a rotation, one activity per step. Activities get a secret name, the hash
// of its spec and version ids from the workflow; they take the spec from the worker's own
// manifests (never from their arguments), read values from the store themselves, and return ids
// and verdicts only.
import { Context, heartbeat, log, sleep } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { headOf, type AuditEvent, type AuditHead, type SignedEvidence } from '../lib/audit';
import type { AuditSettings } from '../lib/audit-trails';
import { checkBreakGlass, checkRequest, validApprovals, type RunBinding } from '../lib/authority';
import { signedOnly, verifySigned } from '../lib/signed';
import { parseDuration } from '../lib/duration';
import type { ApprovalPolicy, SecretEntry, SecretSpec } from '../lib/manifest';
import type { Person, SignedDocument, Signer } from '../lib/signed';
import { isRekeyVersionId, versionTokenFor } from '../lib/version-token';
import { emergencyWorkflowId, isGroupWorkflowId, retireWorkflowId, rotationWorkflowId, type FleetItem, type RetireInput, type RotationPlan } from '../workflows/messages';

export { isRekeyVersionId, versionTokenFor };
import { UNUSABLE_PATH, auditContext, beating, claimId, createAuditActivities, receiptFor, receiptHolds, unusable, type AuditContext } from './audit';
import { createConsumer, type ConsumerSpec } from './consumers';
import { createGenerator } from './generators';
import { configureGitHubClients, type GitHubClientSettings } from './github';
import { createGroupActivities } from './groups';
import { createNotifyActivities, type NotifySettings } from './notify';
import { REFUSED, WorkerManifests, type SpecUse } from './manifests';
import type { Credential, DeployOptions, Revoked, SecretStore, Target, TargetContext, VersionRef } from './provider';
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

/** What verify hands to promote: the worker's signed word that it checked each consumer and the target. */
export type Receipts = Record<string, string | undefined>;

export interface Verified {
  detail: string;
  /** Signed by the worker (see receiptFor); promote requires one per consumer and target. */
  receipt: string;
}

/**
 * What promote must see before there is no way back: the run, the verification receipts, and the
 * signed approvals (with the signed request, which says whose approvals do not count) or break-glass.
 */
export interface PromoteStep extends RotationRef {
  pendingVersionId: string;
  binding: RunBinding;
  receipts: Receipts;
  approvals: SignedDocument[];
  request?: SignedDocument;
  emergency?: SignedDocument;
  /** A group member: the worker's token releasing this version, issued when the whole group decided. */
  group?: { release: string };
}

export interface RevokeStep extends RotationRef {
  oldVersionId: string;
  newVersionId: string;
  namespace: string;
  /** Only a revoke-first emergency may revoke before the new version is current. */
  emergency?: SignedDocument;
  /** Nothing stands between revoke and post-verify (no consumer to finalize): check right after revoking. */
  postVerify?: boolean;
}

export type PostVerifyStep = RotationRef & { oldVersionId: string; newVersionId: string; receipts?: Receipts };

export interface PostVerification {
  oldRejected: boolean;
  newAccepted: boolean;
  detail: string;
  /** Where the worker's record of the verdict left the audit trail. */
  head?: AuditHead;
}

export interface ActivityOptions {
  /** The worker's reviewed manifests (REKEY_MANIFESTS): the only source of specs. */
  manifestDirs?: string[];
  /** How often a consumer's health is probed while waiting for it. */
  healthPollMs?: number;
  /** Where the audit trail is and which key signs it (default: the REKEY_AUDIT_* environment). */
  audit?: AuditSettings;
  /** How the GitHub providers pace and retry their calls (tests: no spacing, quick polls). */
  github?: Partial<GitHubClientSettings>;
  /** How notifications retry (tests: quick backoff) and where the Temporal UI is. */
  notify?: Partial<NotifySettings>;
}

/**
 * The rotation this activity works for, from Temporal's own record of the activity, never from
 * its arguments: anyone who may write to the namespace can complete an activity with a result of
 * their choosing, so the version ids the workflow passes on are checked against this.
 */
function thisRotation(): { rotationId: string; workflowId: string; runId: string; token: string } {
  const execution = Context.current().info.workflowExecution;
  if (!execution) throw ApplicationFailure.nonRetryable('rekey activities run only as part of a rotation workflow', NON_RETRYABLE.notAuthorized);
  const { workflowId, runId } = execution;
  const rotationId = `${workflowId}/${runId}`;
  return { rotationId, workflowId, runId, token: versionTokenFor(rotationId) };
}

function refused(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, NON_RETRYABLE.notAuthorized);
}

/** The activity runs for the workflow rotation/<secret>, the one rotation of `secret` that may act. */
function requireRotationOf(secret: string): void {
  const { workflowId } = thisRotation();
  if (workflowId !== rotationWorkflowId(secret)) throw refused(`only the workflow ${rotationWorkflowId(secret)} may act on ${secret}, not ${workflowId}`);
}

/** What a workflow reports about itself (Evidence.record); everything else is an activity's to write. */
const WORKFLOW_EVENTS = new Set<AuditEvent['event']>(['refused', 'requested', 'approved', 'rejected', 'approval-ignored', 'escalated', 'failed', 'rolled-back', 'rollback-incomplete', 'superseded']);

/** A rotation and an emergency record events of their secret, a group of its own name. */
function recordsFor(workflowId: string, subject: unknown): boolean {
  if (typeof subject !== 'string') return false;
  return workflowId === rotationWorkflowId(subject) || workflowId === emergencyWorkflowId(subject) || isGroupWorkflowId(workflowId, subject);
}

/** `versionId` must be the pending version this very rotation wrote. */
function requireOwnVersion(versionId: string, what: string): void {
  if (versionId !== thisRotation().token) throw refused(`${what}: version ${versionId} is not the one this rotation wrote`);
}

/** `versionId` must be the store's current version (before promote: the old one everyone uses). */
async function requireCurrent(store: SecretStore, versionId: string, what: string): Promise<void> {
  const { current } = await store.versions();
  if (current !== versionId) throw refused(`${what}: version ${versionId} is not the current version of ${store.ref}`);
}

/**
 * `versionId` is the store's current version and this rotation's own version is pending: the
 * rotation has not promoted (or given up) yet, so putting consumers back on `versionId` is its to do.
 */
async function requireInFlight(store: SecretStore, versionId: string, what: string): Promise<void> {
  const { current, pending } = await store.versions();
  if (current !== versionId) throw refused(`${what}: version ${versionId} is not the current version of ${store.ref}`);
  if (pending !== thisRotation().token) throw refused(`${what}: this rotation has no pending version in ${store.ref} (it was promoted or discarded)`);
}

/** Heartbeat while `work` runs, so a killed worker is noticed within the heartbeat timeout. */
async function withHeartbeat<T>(work: () => Promise<T>, details: () => unknown = () => undefined): Promise<T> {
  const timer = setInterval(() => heartbeat(details()), 3_000);
  try {
    heartbeat(details());
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

const contextOf = (ref: VersionPair): TargetContext => ({ secret: ref.secret, currentVersionId: ref.currentVersionId, nextVersionId: ref.pendingVersionId });

/** Consumers with work at promote (commit) and at revoke (finalize): the plan tells the workflow which. */
function phasesOf(spec: SecretSpec): NonNullable<RotationPlan['phases']> {
  return {
    commit: spec.consumers.filter((c) => createConsumer(c).commit).map((c) => c.name),
    finalize: spec.consumers.filter((c) => holdsTwo(c)).map((c) => c.name),
  };
}

/** A consumer that holds the version being replaced beside the new one until revoke. */
const holdsTwo = (spec: ConsumerSpec) => 'keys' in spec && spec.keys === 'current-and-previous';

function targetOf(spec: SecretSpec): Target | undefined {
  return spec.target ? createTarget(spec.target) : undefined;
}

function approvalPlan(approval: ApprovalPolicy, approvers: Person[]): RotationPlan['approval'] {
  return {
    required: approval.required,
    minApprovals: approval.minApprovals,
    requireSignedRequest: approval.requireSignedRequest,
    timeoutMs: parseDuration(approval.timeout),
    onTimeout: approval.onTimeout,
    escalationLimitMs: parseDuration(approval.escalationLimit),
    approvers,
  };
}

/** What promote asks of a rotation before anything else: every consumer deployed and healthy, and the target. */
function verificationReceipts(entry: SecretEntry): string[] {
  return [...entry.spec.consumers.flatMap((c) => [`deployed:${c.name}`, `consumer:${c.name}`]), 'target'];
}

function planOf(entry: SecretEntry, people: Map<string, { name: string; keys: string[] }>, breakGlass: { name: string; keys: string[] }[]): RotationPlan {
  const { policy } = entry.spec;
  const ms = parseDuration;
  const everyone = new Map(people);
  for (const p of [...entry.approvers, ...breakGlass]) everyone.set(p.name, p);
  return {
    specHash: entry.specHash,
    consumers: entry.spec.consumers.map((c) => c.name),
    phases: phasesOf(entry.spec),
    hasTarget: entry.spec.target !== undefined,
    targetAcceptsBoth: entry.spec.target ? createTarget(entry.spec.target).acceptsBoth : true,
    overlapMs: ms(policy.overlap),
    maxParallelConsumers: policy.maxParallelConsumers,
    timeoutsMs: {
      generate: ms(policy.timeouts.generate),
      prepare: ms(policy.timeouts.prepare),
      deploy: ms(policy.timeouts.deploy),
      verify: ms(policy.timeouts.verify),
      revoke: ms(policy.timeouts.revoke),
      rollback: ms(policy.timeouts.rollback),
    },
    approval: approvalPlan(policy.approval, entry.approvers),
    breakGlass,
    people: [...everyone.values()],
  };
}

export function createActivities(options: ActivityOptions = {}) {
  const healthPollMs = options.healthPollMs ?? 1_000;
  if (options.github) configureGitHubClients(options.github);
  const manifests = new WorkerManifests(options.manifestDirs ?? []);
  const audit: AuditContext = auditContext(options.audit);
  const { recordAuditEvent } = createAuditActivities(audit);
  /**
   * The spec a step of a rotation of `ref.secret` acts on. Only the workflow rotation/<secret>
   * may act: Temporal runs one execution per id at a time, so "this run's version is pending"
   * then means "this is the rotation in flight". Without it, any workflow an attacker runs on the
   * task queue could write a pending version of its own, discard the real rotation's as abandoned,
   * and switch producers or consumers under it.
   */
  const entryFor = (ref: RotationRef, use: SpecUse) => {
    requireRotationOf(ref.secret);
    return manifests.forStep(ref, use, thisRotation().rotationId);
  };
  const specFor = async (ref: RotationRef, use: SpecUse) => (await entryFor(ref, use)).spec;

  /** An emergency this rotation really is: a break-glass signature the manifests accept, claimed by this run. */
  const verifiedEmergency = async (step: RotationRef & { namespace: string; emergency: SignedDocument }): Promise<boolean> => {
    const verdict = checkBreakGlass(step.emergency, (await manifests.set()).settings.breakGlass, { namespace: step.namespace, secret: step.secret, specHash: step.specHash }, {});
    return verdict.ok && (await claimedBy(step.emergency.document)) === thisRotation().rotationId;
  };

  /** The rotation that claimed this signed document (in the audit trail), if any. */
  const claimedBy = async (document: string) => (await (await audit.trail()).find(claimId(document)))?.rotationId;

  /**
   * A signed document is written to the trail under a name only if the worker's own manifests say
   * that key is that person's and the signature holds: the trail never repeats a forged attribution.
   */
  const vouchFor = async (secret: string, signed: SignedEvidence): Promise<SignedEvidence> => {
    const { settings, secrets, groups } = await manifests.set();
    // `secret` names a Secret, or a RotationGroup for a group's decisions.
    const people = [...settings.people.values(), ...(secrets.get(secret)?.approvers ?? []), ...(groups.get(secret)?.approvers ?? []), ...settings.breakGlass];
    const verdict = verifySigned(signed as SignedDocument, people);
    if (!verdict.ok) throw refused(`audit: the signed document attributed to ${signed.signer} does not hold: ${verdict.reason}`);
    // Only the signed part is kept: fields a sender added beside it never reach a signed record.
    const { document, ...proof } = signedOnly(signed as SignedDocument);
    return { document, ...proof, signer: verdict.signer.name, fingerprint: verdict.signer.fingerprint, key: verdict.signer.key };
  };

  /**
   * The activity that crosses a line writes its own record first (promote, revoke) or with its
   * result (post-verify): what the trail says happened does not depend on the workflow having been
   * told the truth. Returns the signed head, which the workflow keeps for its result.
   */
  const witness = async (what: string, event: Omit<AuditEvent, 'id' | 'rotationId' | 'at' | 'actor'>): Promise<AuditHead> => {
    const { rotationId } = thisRotation();
    const { record } = await (await audit.trail())
      .append({ ...event, id: `${what}/${rotationId}`, rotationId, actor: 'rekey', at: new Date().toISOString() })
      .catch(unusable);
    return headOf(record, await audit.signer());
  };

  /** Old rejected, new accepted, no consumer still holding the old one: the worker's verdict, in the trail. */
  const postVerification = async (step: PostVerifyStep, spec: SecretSpec): Promise<PostVerification> => {
    const { rotationId } = thisRotation();
    const target = targetOf(spec);
    // Consumers that held both versions still accept the old one unless the worker finalized them.
    const holding: string[] = [];
    for (const c of spec.consumers.filter(holdsTwo)) {
      if (!(await receiptHolds(audit, step.receipts?.[`finalized:${c.name}`], rotationId, `finalized:${c.name}`, step.newVersionId))) holding.push(c.name);
    }
    const stillHeld = holding.length ? `OLD VERSION STILL ACCEPTED BY ${holding.join(', ')}` : undefined;
    if (!target) {
      if (!holding.length) return { oldRejected: true, newAccepted: true, detail: spec.consumers.some(holdsTwo) ? 'every consumer holds the new version alone' : 'not applicable: no target checks this credential' };
      const head = await witness('post-verify', { secret: step.secret, event: 'post-verified', versions: { current: step.newVersionId }, detail: stillHeld! });
      return { oldRejected: false, newAccepted: true, detail: stillHeld!, head };
    }
    return withHeartbeat(async () => {
      const store = openStore(spec.store);
      const [old, next] = await Promise.all([store.read(step.oldVersionId), store.read(step.newVersionId)]);
      const [oldVerdict, newVerdict] = await Promise.all([target.accepts(old), target.accepts(next)]);
      const oldRejected = !oldVerdict.accepted && !holding.length;
      const newAccepted = newVerdict.accepted;
      const detail = [
        !oldVerdict.accepted ? 'old credential rejected' : 'OLD CREDENTIAL STILL ACCEPTED',
        newAccepted ? 'new credential accepted' : `NEW CREDENTIAL REJECTED (${newVerdict.reason})`,
        ...(stillHeld ? [stillHeld] : []),
      ].join('; ');
      // The verdict goes into the trail from here: a report can be forged, the signed record cannot.
      const head = await witness('post-verify', { secret: step.secret, event: 'post-verified', versions: { current: step.newVersionId }, detail });
      return { oldRejected, newAccepted, detail, head };
    });
  };

  /** Was the old credential revoked by this rotation? Then nothing may roll back to it. */
  const revokedHere = async () => {
    const found = await (await audit.trail()).find(`revoke/${thisRotation().rotationId}`).catch((err) => {
      // A trail that cannot exist holds no revoke record, and without one this worker never revokes.
      if (UNUSABLE_PATH.includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    });
    return found !== undefined;
  };
  const refuseAfterRevoke = async (what: string) => {
    if (await revokedHere()) throw refused(`${what}: this rotation already revoked the old credential; going back would restore a revoked credential`);
  };

  /**
   * What must hold before anything irreversible or visible to the world happens (commit, promote):
   * the version is the one this rotation wrote, every consumer and the target were verified by a
   * rekey worker (receipts; for promote also every commit), and the policy is met (enough signed
   * approvals of this very run, never by the signed requester, or a break-glass authorisation this
   * rotation claimed). Whatever the workflow was told, nothing unverified or unapproved passes.
   */
  const beyondReturn = async (what: 'promote' | 'commit', step: PromoteStep, entry: SecretEntry) => {
    const run = thisRotation();
    requireOwnVersion(step.pendingVersionId, what);
    const { settings } = await manifests.set();
    const binding = step.binding;
    if (binding.workflowId !== run.workflowId || binding.runId !== run.runId || binding.secret !== step.secret || binding.pendingVersionId !== step.pendingVersionId || binding.specHash !== step.specHash) {
      throw refused(`${what} refused: the approvals are bound to another rotation`);
    }
    const breakGlass = step.emergency ? checkBreakGlass(step.emergency, settings.breakGlass, { namespace: binding.namespace, secret: step.secret, specHash: step.specHash }, {}) : undefined;
    if (breakGlass && !breakGlass.ok) throw refused(`${what} refused: the break-glass authorisation does not hold: ${breakGlass.reason}`);
    if (breakGlass?.ok && (await claimedBy(step.emergency!.document)) !== run.rotationId) throw refused(`${what} refused: the break-glass authorisation was not claimed by this rotation`);

    // Verification: a receipt per consumer and for the target, unless a revoke-first emergency
    // already cut the old credential off (then the rotation must go forward, verified or not).
    if (!(breakGlass?.ok && breakGlass.doc.revokeFirst)) {
      const committing = what === 'promote' ? phasesOf(entry.spec).commit.map((name) => `committed:${name}`) : [];
      const needed = [...verificationReceipts(entry), ...committing];
      for (const receipt of needed) {
        if (!(await receiptHolds(audit, step.receipts?.[receipt], run.rotationId, receipt, step.pendingVersionId))) {
          throw refused(`${what} refused: ${receipt} was not verified on ${step.pendingVersionId} by a rekey worker`);
        }
      }
    }

    // A group member's decision is its group's: the worker released this very version only after
    // every member was verified and the group's approval (at least the member's, see checkGroups) held.
    // The group this run joined is the trail's record, not the current manifests: a manifest
    // deployed after the release must not split the group.
    if (step.group !== undefined) {
      const group = await groups.released(step.group.release, step.pendingVersionId);
      if (!group) throw refused(`${what} refused: no group released ${step.pendingVersionId} for this run`);
      return { breakGlass: undefined, approvedWith: [], group };
    }
    const approval = entry.spec.policy.approval;
    let approvedWith: { signed: SignedDocument; signer: Signer }[] = [];
    if (!breakGlass?.ok && approval.required) {
      let requester: Signer | undefined;
      if (step.request) {
        const people = [...settings.people.values(), ...entry.approvers, ...settings.breakGlass];
        const request = checkRequest(step.request, people, { namespace: binding.namespace, workflowId: run.workflowId, secret: step.secret, specHash: step.specHash }, {});
        if (!request.ok || (await claimedBy(step.request.document)) !== run.rotationId) throw refused(`${what} refused: the signed request does not hold`);
        requester = request.signer;
      } else if (approval.requireSignedRequest) {
        throw refused(`${what} refused: ${step.secret} requires a signed request`);
      }
      const { accepted, problems } = validApprovals(step.approvals, entry.approvers, binding, requester);
      if (accepted.length < approval.minApprovals) {
        throw refused(
          `${what} refused: ${accepted.length} valid signed approval(s) of ${approval.minApprovals} needed${problems.length ? ` (${problems.slice(0, 3).join('; ')})` : ''}`,
        );
      }
      approvedWith = accepted;
    }
    return { breakGlass, approvedWith, group: undefined };
  };

  const groups = createGroupActivities({ manifests, audit, thisRotation, refused, verificationReceipts, planApproval: (group) => approvalPlan(group.spec.approval, group.approvers) });

  const readPair = async (ref: VersionPair, store: SecretStore) =>
    Promise.all([store.read(ref.currentVersionId), store.read(ref.pendingVersionId)]);

  return {
    /**
     * Idempotent per event id. A workflow records only its own events, under its own rotation id
     * (`<workflow>/<run>#n`), about the secret or group it is for, and only kinds the workflow
     * itself reports: the records other checks rely on (a group's decision, a claim, a promote or
     * revoke) are written by the activities that cause them, under ids no workflow can take.
     * A signed document in it is written only if the worker's manifests vouch for it.
     */
    async recordAuditEvent(event: AuditEvent): Promise<AuditHead> {
      const run = thisRotation();
      if (!event || event.rotationId !== run.rotationId || typeof event.id !== 'string' || !event.id.startsWith(`${run.rotationId}#`)) {
        throw refused(`audit: a workflow records its own events only (rotation id ${run.rotationId}, event ids ${run.rotationId}#n)`);
      }
      if (!WORKFLOW_EVENTS.has(event.event)) throw refused(`audit: ${String(event.event).slice(0, 40)} is recorded by the step that causes it, never by a workflow`);
      if (!recordsFor(run.workflowId, event.secret)) throw refused(`audit: workflow ${run.workflowId} does not record events of ${String(event.secret).slice(0, 63)}`);
      const signed = event.signed ? await vouchFor(event.secret, event.signed) : undefined;
      return recordAuditEvent({ ...event, ...(signed ? { signed, actor: signed.signer } : {}) });
    },

    /**
     * Use a signed request or break-glass authorisation, once: it is written to the audit trail
     * under an id derived from the document, so a second rotation presenting it is refused.
     */
    async claimSignedDocument(event: Omit<AuditEvent, 'id' | 'rotationId'> & { signed: SignedEvidence }): Promise<AuditHead> {
      const { rotationId } = thisRotation();
      const signed = await vouchFor(event.secret, event.signed);
      return beating(async () => {
        const { record } = await (await audit.trail())
          .append({ ...event, actor: signed.signer, signed, id: claimId(signed.document), rotationId })
          .catch(unusable);
        if (record.rotationId !== rotationId) {
          throw refused(`this signed ${event.event === 'break-glass' ? 'break-glass authorisation' : 'request'} was already used by ${record.rotationId}; sign a new one`);
        }
        return headOf(record, await audit.signer());
      });
    },

    /** Which rotation already used this signed document, if one did. */
    async signedDocumentUse(document: string): Promise<string | undefined> {
      return beating(() => claimedBy(document));
    },

    /**
     * The first step of every rotation: the worker's own manifest for `secret`, refused if it
     * differs from the spec the requester reviewed. Reads nothing but the worker's files.
     */
    async resolveRotation(request: { secret: string; specHash?: string; group?: string }): Promise<RotationPlan> {
      // Read only: the emergency workflow checks a break-glass request against the plan before it starts the rotation.
      if (thisRotation().workflowId !== emergencyWorkflowId(request.secret)) requireRotationOf(request.secret);
      const entry = await manifests.current(request.secret, request.specHash);
      manifests.startedWith(thisRotation().rotationId, entry);
      const { settings } = await manifests.set();
      const plan = planOf(entry, settings.people, settings.breakGlass);
      if (request.group === undefined) return plan;
      const group = await manifests.group(request.group);
      if (!group.spec.secrets.includes(request.secret)) throw refused(`group ${request.group} does not list ${request.secret}; it cannot hold its rotation`);
      return { ...plan, group: { name: request.group, holdTimeoutMs: parseDuration(group.spec.holdTimeout) } };
    },

    ...groups.activities,
    ...createNotifyActivities({ manifests, audit, settings: options.notify }),

    async createPendingVersion(ref: RotationRef & { namespace?: string; emergency?: SignedDocument }): Promise<PendingVersion> {
      const spec = await specFor(ref, 'started-with');
      // What an issuing target noted for a retry of this very activity (see TargetContext.note):
      // kept in the heartbeat, which Temporal hands to the next attempt.
      const info = Context.current().info;
      let note: unknown = info.heartbeatDetails;
      return withHeartbeat(async () => {
        const store = openStore(spec.store);
        const external = await store.externalRotation();
        if (external) {
          throw ApplicationFailure.nonRetryable(
            `${store.ref}: ${external}; rekey will not rotate a secret another mechanism rotates (turn that off, or remove the manifest)`,
            NON_RETRYABLE.externalRotation,
          );
        }
        const { token } = thisRotation();
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
        const target = targetOf(spec);
        let next: Credential;
        if (target?.issue) {
          // The target mints the credential (the manifest has no generator for it).
          next = await target.issue(current, {
            secret: ref.secret,
            currentVersionId: versions.current,
            nextVersionId: token,
            storeVersionIds: versions.all,
            readVersion: (id) => store.read(id),
            emergency: ref.emergency !== undefined && ref.namespace !== undefined && (await verifiedEmergency({ ...ref, namespace: ref.namespace, emergency: ref.emergency })),
            earlierNote: info.heartbeatDetails,
            note: (value) => {
              note = value;
              heartbeat(note);
            },
            signal: Context.current().cancellationSignal,
          });
        } else {
          if (!spec.generator) throw ApplicationFailure.nonRetryable(`${ref.secret} has no generator`, NON_RETRYABLE.unknownSecret);
          const material = createGenerator(spec.generator).generate();
          // Without a target the value is the material (and what goes beside it); every other field of the stored value stays.
          next = target ? target.nextCredential(current, material) : { ...current, ...material.beside, value: material.value };
        }
        const { versionId, created } = await store.putPending(token, next);
        log.info('stored pending version', { secret: ref.secret, versionId, created });
        return { currentVersionId: versions.current, pendingVersionId: versionId, created, discardedStaleVersionId };
      }, () => note);
    },

    async prepareTarget(ref: VersionPair): Promise<void> {
      requireOwnVersion(ref.pendingVersionId, 'prepare');
      const spec = await specFor(ref, 'started-with');
      const target = targetOf(spec);
      if (!target) return;
      await withHeartbeat(async () => {
        const store = openStore(spec.store);
        await requireCurrent(store, ref.currentVersionId, 'prepare');
        const [current, next] = await readPair(ref, store);
        await target.prepare(next, current, contextOf(ref));
      });
    },

    async undoTarget(ref: VersionPair): Promise<void> {
      requireOwnVersion(ref.pendingVersionId, 'undo');
      await refuseAfterRevoke('undo');
      await groups.beforeRollback('undo the target');
      const spec = await specFor(ref, 'finish');
      const target = targetOf(spec);
      if (!target) return;
      await withHeartbeat(async () => {
        const store = openStore(spec.store);
        await requireCurrent(store, ref.currentVersionId, 'undo');
        const [current, next] = await readPair(ref, store);
        await target.undo(next, current, { ...contextOf(ref), nextStoredAt: await store.createdAt(ref.pendingVersionId) });
      });
    },

    async verifyTarget(ref: VersionPair): Promise<Verified> {
      requireOwnVersion(ref.pendingVersionId, 'verify');
      const spec = await specFor(ref, 'started-with');
      const target = targetOf(spec);
      const receipt = await receiptFor(audit, thisRotation().rotationId, 'target', ref.pendingVersionId);
      if (!target) return { detail: 'no target configured', receipt };
      return withHeartbeat(async () => {
        const next = await openStore(spec.store).read(ref.pendingVersionId);
        const verdict = await target.accepts(next, { thorough: true });
        if (!verdict.accepted) {
          throw ApplicationFailure.nonRetryable(`target rejected the new credential: ${verdict.reason}`, NON_RETRYABLE.targetRejected);
        }
        return { detail: 'target accepts the new credential', receipt };
      });
    },

    /** Deploy a version to one consumer: the new one (before promote) or the current one again (rollback). */
    async deployToConsumer(step: ConsumerStep & { rollback?: boolean; previousVersionId?: string }): Promise<{ receipt?: string }> {
      if (!step.rollback) requireOwnVersion(step.versionId, `deploy to ${step.consumer}`);
      else {
        await refuseAfterRevoke(`roll ${step.consumer} back`);
        await groups.beforeRollback(`roll ${step.consumer} back`);
      }
      const entry = await entryFor(step, step.rollback ? 'finish' : 'started-with');
      await withHeartbeat(async () => {
        const store = openStore(entry.spec.store);
        if (step.rollback) await requireInFlight(store, step.versionId, `roll ${step.consumer} back`);
        const spec = consumerSpec(entry, step.consumer);
        const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId, createdAt: await store.createdAt(step.versionId) };
        const options: DeployOptions = { signal: Context.current().cancellationSignal, rollback: step.rollback ? { pendingVersionId: thisRotation().token } : undefined };
        // A consumer that holds two keeps accepting the version this rotation replaces (what
        // producers still sign with) until finalize; it must still be the store's current one.
        // A rollback deploys the current one alone.
        if (holdsTwo(spec) && !step.rollback) {
          const { current } = await store.versions();
          const previous = step.previousVersionId ?? current;
          if (previous !== current) throw refused(`deploy to ${step.consumer}: version ${previous} this rotation replaces is no longer the current version of ${store.ref}`);
          if (previous && previous !== step.versionId) options.previous = { ref: { ...ref, versionId: previous }, credential: await store.read(previous) };
        }
        await createConsumer(spec).deploy(ref, await store.read(step.versionId), options);
      });
      // A consumer without a health check is "healthy" at once: this receipt says it really got the version.
      return step.rollback ? {} : { receipt: await receiptFor(audit, thisRotation().rotationId, `deployed:${step.consumer}`, step.versionId) };
    },

    /** Poll the consumer's health until it reports the version, or fail at `deadline` (epoch ms). */
    async awaitConsumerHealthy(step: ConsumerStep & { deadline: number }): Promise<Verified> {
      requireOwnVersion(step.versionId, `verify ${step.consumer}`);
      const entry = await entryFor(step, 'started-with');
      const store = openStore(entry.spec.store);
      const consumer = createConsumer(consumerSpec(entry, step.consumer));
      const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId, createdAt: await store.createdAt(step.versionId) };
      for (let probe = 1; ; probe++) {
        // A probe may take longer than the heartbeat timeout: keep heartbeating while it runs.
        const health = await withHeartbeat(() => consumer.health(ref, Context.current().cancellationSignal));
        if (Context.current().cancellationSignal.aborted) throw new Error('cancelled');
        heartbeat({ probe, detail: health.detail });
        if (health.healthy) return { detail: health.detail, receipt: await receiptFor(audit, thisRotation().rotationId, `consumer:${step.consumer}`, step.versionId) };
        if (health.final || Date.now() + healthPollMs > step.deadline) {
          throw ApplicationFailure.nonRetryable(
            `consumer ${step.consumer} not healthy on version ${step.versionId} after ${probe} probes: ${health.detail}`,
            NON_RETRYABLE.consumerUnhealthy,
          );
        }
        await sleep(healthPollMs);
      }
    },

    /**
     * The point of no return. Before moving the label, the worker checks, with its own manifests
     * and its own key, that everything promote stands on is real (see beyondReturn), commits included.
     */
    async promoteVersion(step: PromoteStep): Promise<AuditHead> {
      requireOwnVersion(step.pendingVersionId, 'promote');
      const entry = await entryFor(step, 'started-with');
      const { breakGlass, approvedWith, group } = await beyondReturn('promote', step, entry);
      return withHeartbeat(async () => {
        const store = openStore(entry.spec.store);
        const { pending, current } = await store.versions();
        // A retry after the label moved finds it current already; anything else is not ours to promote.
        if (pending !== step.pendingVersionId && current !== step.pendingVersionId) throw refused(`promote refused: ${step.pendingVersionId} is not pending in ${store.ref}`);
        const by = breakGlass?.ok
          ? `break-glass by ${breakGlass.signer.name} (${breakGlass.signer.fingerprint})`
          : group
            ? `released by group ${group}`
            : approvedWith.length
            ? `approved by ${approvedWith.map((a) => `${a.signer.name} (${a.signer.fingerprint})`).join(', ')}`
            : 'no approval required';
        // Evidence first: nothing becomes irreversible without its record in the trail.
        const head = await witness('promote', {
          secret: step.secret,
          event: 'promoted',
          versions: { current: current === step.pendingVersionId ? undefined : current, pending: step.pendingVersionId },
          detail: `${step.pendingVersionId} becomes current; ${by}; verified by this worker: ${Object.keys(step.receipts ?? {}).sort().join(', ') || 'nothing (revoke-first)'}`,
          ...(approvedWith.length ? { approvals: approvedWith.map(({ signed, signer }) => ({ ...signed, signer: signer.name, fingerprint: signer.fingerprint, key: signer.key })) } : {}),
        });
        await store.promote(step.pendingVersionId);
        return head;
      });
    },

    /**
     * Commit one consumer (a webhook sender switches to the new key and proves every receiver
     * accepts it) just before promote, under the same checks as promote: switching a producer is
     * visible to the world, so it waits for the same verification and approvals.
     */
    async commitConsumer(step: PromoteStep & { consumer: string; deadline: number }): Promise<Verified> {
      requireOwnVersion(step.pendingVersionId, `commit ${step.consumer}`);
      const entry = await entryFor(step, 'started-with');
      await beyondReturn('commit', step, entry);
      const consumer = createConsumer(consumerSpec(entry, step.consumer));
      if (!consumer.commit) throw refused(`consumer ${step.consumer} has nothing to commit`);
      const detail = await withHeartbeat(async () => {
        const store = openStore(entry.spec.store);
        // Checked before every change: an attempt that outlived its rotation's rollback switches nothing.
        const guard = async () => {
          const { pending } = await store.versions();
          if (pending !== step.pendingVersionId) throw refused(`commit ${step.consumer}: ${step.pendingVersionId} is not pending in ${store.ref}`);
        };
        await guard();
        const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.pendingVersionId, createdAt: await store.createdAt(step.pendingVersionId) };
        // The consumer's deadline comes before the activity's time limit: it fails by itself rather than being abandoned mid-switch.
        return consumer.commit!(ref, await store.read(step.pendingVersionId), { signal: Context.current().cancellationSignal, guard, deadline: step.deadline });
      });
      return { detail, receipt: await receiptFor(audit, thisRotation().rotationId, `committed:${step.consumer}`, step.pendingVersionId) };
    },

    /**
     * Undo a commit that happened or may have half happened: the producer back on the current
     * version. Only a rotation whose own version is still pending may do it, checked again before
     * every change: another run (or this one after its promote) must not switch a producer back
     * under receivers that are about to keep the new version alone.
     */
    async abortConsumer(step: ConsumerStep): Promise<void> {
      await refuseAfterRevoke(`abort ${step.consumer}`);
      await groups.beforeRollback(`abort ${step.consumer}`);
      const entry = await entryFor(step, 'finish');
      const consumer = createConsumer(consumerSpec(entry, step.consumer));
      if (!consumer.abort) return;
      await withHeartbeat(async () => {
        const store = openStore(entry.spec.store);
        const stillInFlight = () => requireInFlight(store, step.versionId, `abort ${step.consumer}`);
        await stillInFlight();
        const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId };
        // Done before this attempt's time limit, so no attempt is abandoned mid-change.
        const deadline = Date.now() + Context.current().info.startToCloseTimeoutMs - 5_000;
        await consumer.abort!({ ...ref, createdAt: await store.createdAt(step.versionId) }, await store.read(step.versionId), { signal: Context.current().cancellationSignal, guard: stillInFlight, pendingVersionId: thisRotation().token, deadline });
      });
    },

    /**
     * After revoke: a consumer that held two versions gets the new one alone, and must be healthy
     * on it by `deadline`. Only once the new version is current: before that, the old one is what
     * everyone still needs.
     */
    async finalizeConsumer(step: ConsumerStep & { deadline: number; receipts?: Receipts }): Promise<{ detail: string; receipt?: string }> {
      const { rotationId } = thisRotation();
      requireOwnVersion(step.versionId, `finalize ${step.consumer}`);
      const entry = await entryFor(step, 'finish');
      const spec = consumerSpec(entry, step.consumer);
      if (!holdsTwo(spec)) return { detail: 'nothing to finalize' };
      // Until every producer signs with the new version, the old one is what the consumer still gets.
      for (const producer of phasesOf(entry.spec).commit) {
        if (!(await receiptHolds(audit, step.receipts?.[`committed:${producer}`], rotationId, `committed:${producer}`, step.versionId))) {
          throw ApplicationFailure.nonRetryable(`${step.consumer} keeps both versions: ${producer} was not switched to ${step.versionId} by a rekey worker`, NON_RETRYABLE.notAuthorized);
        }
      }
      const store = openStore(entry.spec.store);
      const consumer = createConsumer(spec);
      const ref: VersionRef = { secret: step.secret, storeRef: store.ref, versionId: step.versionId };
      await withHeartbeat(async () => {
        await requireCurrent(store, step.versionId, `finalize ${step.consumer}`);
        await consumer.deploy(ref, await store.read(step.versionId), { signal: Context.current().cancellationSignal });
      });
      for (;;) {
        const health = await withHeartbeat(() => consumer.health(ref, Context.current().cancellationSignal));
        if (health.healthy) return { detail: `holds ${step.versionId} alone; ${health.detail}`, receipt: await receiptFor(audit, rotationId, `finalized:${step.consumer}`, step.versionId) };
        if (health.final || Date.now() + healthPollMs > step.deadline) {
          throw ApplicationFailure.nonRetryable(`consumer ${step.consumer} not healthy on ${step.versionId} alone: ${health.detail}`, NON_RETRYABLE.consumerUnhealthy);
        }
        await sleep(healthPollMs);
      }
    },

    async discardPendingVersion(ref: RotationRef & { pendingVersionId: string }): Promise<void> {
      requireOwnVersion(ref.pendingVersionId, 'discard');
      await groups.beforeRollback('discard the pending version');
      const spec = await specFor(ref, 'finish');
      await withHeartbeat(() => openStore(spec.store).discardPending(ref.pendingVersionId));
    },

    /**
     * Make the old credential stop working. Refused while the old version is still the store's
     * current one (promote has not happened), unless a revoke-first emergency is authorised: the
     * credential everyone is told to use is never the one revoked.
     */
    async revokeOldCredential(step: RevokeStep): Promise<Omit<Revoked, 'retire'> & { head?: AuditHead; retire?: boolean; postVerified?: PostVerification }> {
      requireOwnVersion(step.newVersionId, 'revoke');
      const spec = await specFor(step, 'finish');
      const target = targetOf(spec);
      if (!target) return {};
      return withHeartbeat(async () => {
        const store = openStore(spec.store);
        const { current, previous, all } = await store.versions();
        if (current !== step.newVersionId) {
          const emergency = step.emergency
            ? checkBreakGlass(step.emergency, (await manifests.set()).settings.breakGlass, { namespace: step.namespace, secret: step.secret, specHash: step.specHash }, {})
            : undefined;
          const claimed = emergency?.ok && (await claimedBy(step.emergency!.document)) === thisRotation().rotationId;
          if (!emergency?.ok || !emergency.doc.revokeFirst || !claimed || current !== step.oldVersionId) {
            throw refused(
              `refusing to revoke version ${step.oldVersionId}: the new version ${step.newVersionId} is not current` +
                (emergency && !emergency.ok ? ` and the break-glass authorisation does not hold (${emergency.reason})` : ''),
            );
          }
        } else if (previous !== step.oldVersionId) {
          throw refused(`refusing to revoke version ${step.oldVersionId}: it is not the version this promote replaced (${previous ?? 'none'})`);
        }
        const [old, next] = await Promise.all([store.read(step.oldVersionId), store.read(step.newVersionId)]);
        // Written before the target changes: from here on this rotation never rolls back to the old credential.
        const head = await witness('revoke', {
          secret: step.secret,
          event: 'revoked',
          versions: { current: step.newVersionId, previous: step.oldVersionId },
          detail: `version ${step.oldVersionId} revoked at the target${current !== step.newVersionId ? ' before promote (revoke-first emergency)' : ''}`,
        });
        const context = { secret: step.secret, currentVersionId: step.oldVersionId, nextVersionId: step.newVersionId, storeVersionIds: all };
        const outcome = await target.revoke(old, next, { emergency: step.emergency !== undefined, context });
        if (outcome?.sessionsEnded) log.info('ended sessions of the revoked credential', { secret: step.secret, sessions: outcome.sessionsEnded });
        if (outcome?.warning) log.error('revoke could not finish its work', { secret: step.secret, warning: outcome.warning });
        // Only a target that can retire gets the timer, and only with a duration the worker reads.
        // Only a target that can retire gets the timer (which asks it when the time has come).
        const retire = target.retire !== undefined && outcome?.retire === true;
        // Only after promote: a revoke-first emergency post-verifies once the new version is current.
        const postVerified = step.postVerify && current === step.newVersionId ? await postVerification(step, spec) : undefined;
        return { head, sessionsEnded: outcome?.sessionsEnded, warning: outcome?.warning, retire, postVerified };
      });
    },

    /**
     * Remove what a revoke only disabled (workflow retire/<secret>/<version>, started by that
     * revoke), once the target says it is due; until then, says when to ask again. Anyone who can
     * start a workflow can start one of these, early or for any version: the worker acts only on a
     * version of the secret's store that is neither current nor pending, and only as of when the
     * worker's own audit record says that version was revoked (never a time anyone else wrote).
     */
    async retireOldCredential(step: RetireInput): Promise<{ done: string } | { dueAt: string }> {
      const { workflowId, rotationId } = thisRotation();
      if (workflowId !== retireWorkflowId(step.secret, step.versionId)) throw refused(`only the workflow ${retireWorkflowId(step.secret, step.versionId)} may retire that version, not ${workflowId}`);
      const { spec } = await manifests.forStep(step, 'finish', rotationId);
      const target = targetOf(spec);
      if (!target?.retire) throw refused(`${step.secret}: its target (${spec.target?.type ?? 'none'}) has nothing to retire`);
      return withHeartbeat(async () => {
        const revoked = await (await audit.trail()).find(`revoke/${step.revokedBy}`).catch(unusable);
        if (revoked?.event !== 'revoked' || revoked.secret !== step.secret || revoked.rotationId !== step.revokedBy || revoked.versions?.previous !== step.versionId) {
          throw refused(`refusing to retire version ${step.versionId} of ${step.secret}: the audit trail has no record of ${step.revokedBy.slice(0, 120)} revoking it`);
        }
        const store = openStore(spec.store);
        const { current, pending, all } = await store.versions();
        if (!all.includes(step.versionId) || step.versionId === current || step.versionId === pending) {
          throw refused(`refusing to retire version ${step.versionId} of ${step.secret}: it is ${all.includes(step.versionId) ? 'current or pending' : 'not a version in its store'}`);
        }
        const outcome = await target.retire!(await store.read(step.versionId), { secret: step.secret, versionId: step.versionId, revokedAt: revoked.at });
        if ('dueAt' in outcome) return outcome;
        await (await audit.trail())
          .append({ id: `retire/${rotationId}`, rotationId, secret: step.secret, event: 'retired', actor: 'rekey', at: new Date().toISOString(), versions: { current, previous: step.versionId }, detail: outcome.done.slice(0, 500) })
          .catch(unusable);
        log.info('retired a revoked credential', { secret: step.secret, versionId: step.versionId, detail: outcome.done });
        return outcome;
      });
    },

    /** The fleet items whose current version is older than their policy's maxAge (no maxAge: never due). */
    async filterOverdue(items: FleetItem[]): Promise<string[]> {
      const due: string[] = [];
      for (const [secret, specHash] of items) {
        heartbeat(secret);
        // Read only, and asked by a fleet (not rotation/<secret>): the spec is looked up without acting.
        const spec = await manifests.forStep({ secret, specHash }, 'finish', thisRotation().rotationId).then((e) => e.spec).catch(() => undefined);
        // A secret the worker no longer knows is passed on: its rotation reports the refusal.
        if (!spec || (await currentAge(spec)).overdue) due.push(secret);
      }
      return due;
    },

    async postVerify(step: PostVerifyStep): Promise<PostVerification> {
      requireOwnVersion(step.newVersionId, 'post-verify');
      const spec = await specFor(step, 'finish');
      return postVerification(step, spec);
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
