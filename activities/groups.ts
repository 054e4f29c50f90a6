// Atomic groups, the worker's side. The group's decision (release every member, or abort them all)
// is one record in the audit trail under an id derived from the group's run: whoever writes it
// first decides, and nothing can write the other answer afterwards. That record is the 2PC
// coordinator's log, kept outside the coordinator: a member that lost its group (terminated,
// timed out) reads it, or writes "abort" if nobody decided yet, and every member ends the same way.
//
// A member joins its group's run in the trail before it reports prepared (group-member/<member
// run>). From then on the worker, not the member's workflow, keeps the 2PC promise: only joined
// runs are released, a joined run rolls back only once the abort is written, and never after a
// release (a forged activity result or a forged workflow cannot split the group).
import { Context } from '@temporalio/activity';
import type { ApplicationFailure } from '@temporalio/common';
import { headOf, type AuditRecord, type SignedEvidence } from '../lib/audit';
import { groupBinding, membersLine, validApprovals } from '../lib/authority';
import { parseDuration } from '../lib/duration';
import type { GroupEntry, SecretEntry } from '../lib/manifest';
import type { SignedDocument } from '../lib/signed';
import { versionTokenFor } from '../lib/version-token';
import { isGroupWorkflowId, rotationWorkflowId, type GroupPlan, type GroupVerdict, type MemberPrepared } from '../workflows/messages';
import { UNUSABLE_PATH, beating, receiptFor, receiptHolds, unusable, type AuditContext } from './audit';
import type { WorkerManifests } from './manifests';

export interface GroupDeps {
  manifests: WorkerManifests;
  audit: AuditContext;
  thisRotation(): { rotationId: string; workflowId: string; runId: string; token: string };
  refused(message: string): ApplicationFailure;
  /** The receipts promote asks of a member (every consumer deployed and healthy, the target). */
  verificationReceipts(entry: SecretEntry): string[];
  planApproval(entry: GroupEntry): GroupPlan['approval'];
}

const decisionId = (groupRotationId: string) => `group-decision/${groupRotationId}`;
const memberId = (memberRotationId: string) => `group-member/${memberRotationId}`;
const releaseReceipt = (groupRotationId: string) => `group-release:${groupRotationId}`;
const RELEASED = 'members ';
const JOINED = 'joined ';

/** The member versions a release record names ("members a@v1,b@v2"). */
function releasedMembers(record: AuditRecord): string[] {
  return record.event === 'group-released' && record.detail?.startsWith(RELEASED) ? record.detail.slice(RELEASED.length).split(',') : [];
}

/** "group/payments-2026-...Z/<run>" -> "group/payments-2026-...Z" */
const workflowOf = (rotationId: string) => rotationId.slice(0, rotationId.lastIndexOf('/'));

export function createGroupActivities({ manifests, audit, thisRotation, refused, verificationReceipts, planApproval }: GroupDeps) {
  /** The group this activity's workflow rotates (group/<name>, or a schedule's group/<name>-<time>). */
  const thisGroup = (name: string) => {
    const run = thisRotation();
    if (!isGroupWorkflowId(run.workflowId, name)) throw refused(`only the workflow group/${name} may decide for group ${name}, not ${run.workflowId}`);
    return run;
  };

  const find = async (id: string) =>
    (await audit.trail()).find(id).catch((err) => {
      // A trail that cannot exist holds no record (no run joined a group through it): a rotation
      // must still be able to roll back when its evidence could not be written.
      if (UNUSABLE_PATH.includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    });

  /** The group run a member run joined, from the trail (never from the workflow's word). */
  const joinedBy = async (memberRotationId: string): Promise<{ groupRotationId: string; group: string } | undefined> => {
    const record = await find(memberId(memberRotationId));
    if (!record || record.event !== 'group-joined' || record.rotationId !== memberRotationId || !record.detail?.startsWith(JOINED) || !record.reason) return undefined;
    return { groupRotationId: record.detail.slice(JOINED.length), group: record.reason };
  };

  /** The group's decision, written by the worker for that group run and no one else. */
  const decisionOf = async (groupRotationId: string): Promise<AuditRecord | undefined> => {
    const record = await find(decisionId(groupRotationId));
    return record && record.rotationId === groupRotationId && (record.event === 'group-released' || record.event === 'group-aborted') ? record : undefined;
  };

  const decide = async (event: 'group-released' | 'group-aborted', groupRotationId: string, group: string, actor: string, detail: string, approvals?: SignedEvidence[]) =>
    beating(async () => {
      const { record } = await (await audit.trail())
        .append({ id: decisionId(groupRotationId), rotationId: groupRotationId, secret: group, event, actor, at: new Date().toISOString(), detail, ...(approvals?.length ? { approvals } : {}) })
        .catch(unusable);
      return { record, head: headOf(record, await audit.signer()) };
    });

  /** The decision for a joined member's group, writing the abort first if nobody decided yet. */
  const decisionOrAbort = async (joined: { groupRotationId: string; group: string }, by: string, why: string): Promise<AuditRecord> =>
    (await decisionOf(joined.groupRotationId)) ?? (await decide('group-aborted', joined.groupRotationId, joined.group, `rekey (member ${by})`, `aborted by member ${by}: ${why.slice(0, 300)}`)).record;

  const activities = {
    /** The group as the worker's manifests declare it: refused if it differs from what was reviewed. */
    async resolveGroup(request: { group: string; specHash?: string }): Promise<GroupPlan> {
      thisGroup(request.group);
      const group = await manifests.group(request.group, request.specHash);
      const { secrets } = await manifests.set();
      return {
        specHash: group.specHash,
        members: group.spec.secrets.map((secret) => [secret, secrets.get(secret)!.specHash]),
        maxParallel: group.spec.maxParallel ?? group.spec.secrets.length,
        approval: planApproval(group),
        holdTimeoutMs: parseDuration(group.spec.holdTimeout),
      };
    },

    /**
     * A prepared member joins its group's run, once: the worker will release only joined runs,
     * and roll a joined run back only once the group has aborted.
     */
    async joinGroup(request: { secret: string; group: string; groupWorkflowId: string; groupRunId: string; pendingVersionId: string }): Promise<void> {
      const run = thisRotation();
      if (run.workflowId !== rotationWorkflowId(request.secret)) throw refused(`only the workflow ${rotationWorkflowId(request.secret)} may join a group for ${request.secret}`);
      if (request.pendingVersionId !== run.token) throw refused(`join: version ${request.pendingVersionId} is not the one this rotation wrote`);
      if (!isGroupWorkflowId(request.groupWorkflowId, request.group)) throw refused(`join: ${request.groupWorkflowId} is not a run of group ${request.group}`);
      const group = await manifests.group(request.group);
      if (!group.spec.secrets.includes(request.secret)) throw refused(`group ${request.group} does not list ${request.secret}`);
      const groupRotationId = `${request.groupWorkflowId}/${request.groupRunId}`;
      await beating(async () => {
        const { record } = await (await audit.trail())
          .append({
            id: memberId(run.rotationId),
            rotationId: run.rotationId,
            secret: request.secret,
            event: 'group-joined',
            actor: 'rekey',
            at: new Date().toISOString(),
            versions: { pending: request.pendingVersionId },
            reason: request.group,
            detail: `${JOINED}${groupRotationId}`,
          })
          .catch(unusable);
        if (record.detail !== `${JOINED}${groupRotationId}`) throw refused(`this rotation already joined another group run (${String(record.detail).slice(JOINED.length, 200)})`);
      });
    },

    /**
     * The group's decision, written once. Release only when every member of the worker's own
     * manifest is a run that joined this group run, whose pending version that run wrote, whose
     * consumers and target this worker verified (its receipts) and whose own approval policy the
     * group's signed approvals also meet, and the group's approval holds. Abort any time before
     * that. Either way, if the other answer was written first, that one stands and is returned.
     */
    async decideGroup(request: {
      group: string;
      specHash: string;
      decision: 'release' | 'abort';
      members: MemberPrepared[];
      approvals: SignedDocument[];
      reason?: string;
    }): Promise<{ decision: 'release' | 'abort'; detail: string; head: ReturnType<typeof headOf> }> {
      const run = thisGroup(request.group);
      const settle = async (event: 'group-released' | 'group-aborted', detail: string, approvals?: SignedEvidence[]) => {
        const { record, head } = await decide(event, run.rotationId, request.group, 'rekey', detail, approvals);
        const decision = record.event === 'group-released' ? 'release' : 'abort';
        return { decision, detail: record.detail ?? '', head } as const;
      };
      if (request.decision === 'abort') return settle('group-aborted', `aborted: ${(request.reason ?? 'no reason given').slice(0, 500)}`);

      const group = await manifests.group(request.group, request.specHash);
      const { secrets } = await manifests.set();
      const reported = new Map<string, MemberPrepared>();
      for (const m of Array.isArray(request.members) ? request.members : []) {
        if (m && typeof m.secret === 'string' && !reported.has(m.secret)) reported.set(m.secret, m);
      }
      const members: { secret: string; pendingVersionId: string }[] = [];
      for (const secret of group.spec.secrets) {
        const m = reported.get(secret);
        if (!m) throw refused(`release refused: member ${secret} has not reported prepared`);
        const memberRotationId = `${rotationWorkflowId(secret)}/${m.runId}`;
        // A member's pending version id derives from its run: a report naming another one is not that run's.
        if (typeof m.runId !== 'string' || m.pendingVersionId !== versionTokenFor(memberRotationId)) {
          throw refused(`release refused: member ${secret} reported a pending version its run did not write`);
        }
        if ((await joinedBy(memberRotationId))?.groupRotationId !== run.rotationId) throw refused(`release refused: member ${secret}'s run ${m.runId} did not join this group run`);
        const entry = secrets.get(secret);
        if (!entry || entry.specHash !== m.specHash) throw refused(`release refused: member ${secret} runs a spec the worker no longer has`);
        for (const receipt of verificationReceipts(entry)) {
          if (!(await receiptHolds(audit, m.receipts?.[receipt], memberRotationId, receipt, m.pendingVersionId))) {
            throw refused(`release refused: member ${secret}: ${receipt} was not verified on ${m.pendingVersionId} by a rekey worker`);
          }
        }
        members.push({ secret, pendingVersionId: m.pendingVersionId });
      }
      const line = membersLine(members);
      let approvedWith: SignedEvidence[] = [];
      if (group.spec.approval.required) {
        const { namespace } = Context.current().info;
        const binding = groupBinding(namespace, run.workflowId, run.runId, request.group, group.specHash, line);
        const { accepted, problems } = validApprovals(request.approvals, group.approvers, binding, undefined);
        if (accepted.length < group.spec.approval.minApprovals) {
          throw refused(`release refused: ${accepted.length} valid signed approval(s) of ${group.spec.approval.minApprovals} needed${problems.length ? ` (${problems.slice(0, 3).join('; ')})` : ''}`);
        }
        // The group's decision stands in for each member's own: it must meet each member's policy too.
        for (const secret of group.spec.secrets) {
          const own = secrets.get(secret)!;
          if (!own.spec.policy.approval.required) continue;
          const theirs = validApprovals(request.approvals, own.approvers, binding, undefined).accepted.length;
          if (theirs < own.spec.policy.approval.minApprovals) throw refused(`release refused: ${secret} needs ${own.spec.policy.approval.minApprovals} approval(s) by its own approvers; the group's decision has ${theirs}`);
        }
        approvedWith = accepted.map(({ signed, signer }) => ({ ...signed, signer: signer.name, fingerprint: signer.fingerprint, key: signer.key }));
      }
      return settle('group-released', `${RELEASED}${line}`, approvedWith);
    },

    /**
     * A held member asks what its group decided. With `abortIfUndecided` (its hold timed out, or it
     * was cancelled while held) it writes the abort itself if nobody decided yet. A release comes
     * with the worker's token for this member's version, which promote checks.
     */
    async groupVerdict(request: { secret: string; pendingVersionId: string; abortIfUndecided: boolean; why?: string }): Promise<GroupVerdict> {
      const run = thisRotation();
      if (run.workflowId !== rotationWorkflowId(request.secret)) throw refused(`only the workflow ${rotationWorkflowId(request.secret)} may ask for its group's decision`);
      if (request.pendingVersionId !== run.token) throw refused(`group verdict: version ${request.pendingVersionId} is not the one this rotation wrote`);
      const joined = await joinedBy(run.rotationId);
      if (!joined) throw refused('group verdict: this rotation has not joined a group');
      const record = request.abortIfUndecided ? await decisionOrAbort(joined, request.secret, request.why ?? 'gave up waiting') : await decisionOf(joined.groupRotationId);
      if (!record) return { decision: 'undecided' };
      if (record.event === 'group-aborted') return { decision: 'abort', detail: record.detail };
      if (!releasedMembers(record).includes(`${request.secret}@${request.pendingVersionId}`)) {
        // Released, but not this run's version: this run is not the member the group prepared.
        return { decision: 'abort', detail: `the group released other versions than ${request.pendingVersionId}` };
      }
      return { decision: 'release', release: await receiptFor(audit, run.rotationId, releaseReceipt(joined.groupRotationId), request.pendingVersionId), detail: record.detail };
    },
  };

  return {
    activities,

    /**
     * Before a rotation undoes anything: a run that joined a group rolls back only once its group
     * aborted (written now if nobody decided), and never once the group released it. Without this,
     * one member told to roll back after the release (a forged result, a failed audit write) would
     * leave the group half promoted.
     */
    async beforeRollback(what: string): Promise<void> {
      const run = thisRotation();
      const joined = await joinedBy(run.rotationId);
      if (!joined) return;
      const secret = run.workflowId.slice('rotation/'.length);
      const record = await decisionOrAbort(joined, secret, `rolled back (${what})`);
      if (record.event === 'group-released' && releasedMembers(record).includes(`${secret}@${run.token}`)) {
        throw refused(`${what} refused: group ${joined.group} released this version (${workflowOf(joined.groupRotationId)}); a released member goes forward, never back`);
      }
    },

    /** Does `token` release this run's version for the group run it joined? Promote and commit ask. */
    async released(token: unknown, pendingVersionId: string): Promise<string | undefined> {
      const run = thisRotation();
      const joined = await joinedBy(run.rotationId);
      if (!joined) return undefined;
      return (await receiptHolds(audit, token, run.rotationId, releaseReceipt(joined.groupRotationId), pendingVersionId)) ? joined.group : undefined;
    },
  };
}
