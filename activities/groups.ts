// Atomic groups, the worker's side. The group's decision (release every member, or abort them all)
// is one record in the audit trail under an id derived from the group's run: whoever writes it
// first decides, and nothing can write the other answer afterwards. That record is the 2PC
// coordinator's log, kept outside the coordinator: a member that lost its group (terminated,
// timed out) reads it, or writes "abort" if nobody decided yet, and every member ends the same way.
import { Context } from '@temporalio/activity';
import type { ApplicationFailure } from '@temporalio/common';
import { headOf, type AuditRecord, type SignedEvidence } from '../lib/audit';
import { groupBinding, membersLine, validApprovals } from '../lib/authority';
import { parseDuration } from '../lib/duration';
import type { GroupEntry, SecretEntry } from '../lib/manifest';
import type { SignedDocument } from '../lib/signed';
import { versionTokenFor } from '../lib/version-token';
import { groupWorkflowId, rotationWorkflowId, type GroupPlan, type GroupVerdict, type MemberPrepared } from '../workflows/messages';
import { beating, receiptFor, receiptHolds, unusable, type AuditContext } from './audit';
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
const releaseReceipt = (groupRotationId: string) => `group-release:${groupRotationId}`;
const RELEASED = 'members ';

/** The member versions a release record names ("members a@v1,b@v2"). */
function releasedMembers(record: AuditRecord): string[] {
  return record.event === 'group-released' && record.detail?.startsWith(RELEASED) ? record.detail.slice(RELEASED.length).split(',') : [];
}

export function createGroupActivities({ manifests, audit, thisRotation, refused, verificationReceipts, planApproval }: GroupDeps) {
  /** The group this activity's workflow (group/<name>) rotates. */
  const thisGroup = (name: string) => {
    const run = thisRotation();
    if (run.workflowId !== groupWorkflowId(name)) throw refused(`only the workflow ${groupWorkflowId(name)} may decide for group ${name}, not ${run.workflowId}`);
    return run;
  };

  const decide = async (event: 'group-released' | 'group-aborted', groupRotationId: string, group: string, actor: string, detail: string, approvals?: SignedEvidence[]) =>
    beating(async () => {
      const trail = await audit.trail();
      const { record } = await trail
        .append({ id: decisionId(groupRotationId), rotationId: groupRotationId, secret: group, event, actor, at: new Date().toISOString(), detail, ...(approvals?.length ? { approvals } : {}) })
        .catch(unusable);
      return { record, head: headOf(record, await audit.signer()) };
    });

  return {
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
     * The group's decision, written once. Release only when every member of the worker's own
     * manifest reported a run of the spec the group started with whose pending version that run
     * wrote and whose consumers and target this worker verified (its receipts), and the group's
     * approval holds. Abort any time before that. Either way, if the other answer was written
     * first, that one stands and is returned.
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
        approvedWith = accepted.map(({ signed, signer }) => ({ ...signed, signer: signer.name, fingerprint: signer.fingerprint, key: signer.key }));
      }
      return settle('group-released', `${RELEASED}${line}`, approvedWith);
    },

    /**
     * A held member asks what its group decided. With `abortIfUndecided` (its hold timed out, or it
     * was cancelled while held) it writes the abort itself if nobody decided yet. A release comes
     * with the worker's token for this member's version, which promote checks.
     */
    async groupVerdict(request: { secret: string; group: string; groupRunId: string; pendingVersionId: string; abortIfUndecided: boolean; why?: string }): Promise<GroupVerdict> {
      const run = thisRotation();
      if (run.workflowId !== rotationWorkflowId(request.secret)) throw refused(`only the workflow ${rotationWorkflowId(request.secret)} may ask for its group's decision`);
      if (request.pendingVersionId !== run.token) throw refused(`group verdict: version ${request.pendingVersionId} is not the one this rotation wrote`);
      const group = await manifests.group(request.group);
      if (!group.spec.secrets.includes(request.secret)) throw refused(`group ${request.group} does not list ${request.secret}`);
      const groupRotationId = `${groupWorkflowId(request.group)}/${request.groupRunId}`;
      const trail = await audit.trail();
      let record = await trail.find(decisionId(groupRotationId)).catch(unusable);
      if (!record && request.abortIfUndecided) {
        record = (await decide('group-aborted', groupRotationId, request.group, `rekey (member ${request.secret})`, `aborted by member ${request.secret}: ${(request.why ?? 'gave up waiting').slice(0, 300)}`)).record;
      }
      if (!record) return { decision: 'undecided' };
      if (record.event === 'group-aborted') return { decision: 'abort', detail: record.detail };
      if (!releasedMembers(record).includes(`${request.secret}@${request.pendingVersionId}`)) {
        // Released, but not this run's version: this run is not the member the group prepared.
        return { decision: 'abort', detail: `the group released other versions than ${request.pendingVersionId}` };
      }
      return { decision: 'release', release: await receiptFor(audit, run.rotationId, releaseReceipt(groupRotationId), request.pendingVersionId), detail: record.detail };
    },
  };
}

/** Does `token` release this member run's version for that group run? Promote asks. */
export async function releaseHolds(audit: AuditContext, token: unknown, memberRotationId: string, group: { name: string; runId: string }, pendingVersionId: string): Promise<boolean> {
  return receiptHolds(audit, token, memberRotationId, releaseReceipt(`${groupWorkflowId(group.name)}/${group.runId}`), pendingVersionId);
}
