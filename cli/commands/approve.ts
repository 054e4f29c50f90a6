import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { groupBinding, membersLine } from '../../lib/authority';
import { loadManifests } from '../../lib/manifest';
import type { DecisionDocument } from '../../lib/signed';
import { connectClient, temporalSettings } from '../../lib/temporal';
import { versionTokenFor } from '../../lib/version-token';
import { decideUpdate, groupProgressQuery, groupWorkflowId, progressQuery, rotationWorkflowId } from '../../workflows/messages';
import { EXIT, UsageError, err, out, parse, rootCause, withDeadline } from '../common';
import { SIGN_OPTIONS, keyChoice, signDocument, validity } from '../sign';

/**
 * `rekey approve|reject NAME --key PATH [--agent] [--comment TEXT] [--expires 1h] [-f DIR] [--print]`:
 * sign a decision bound to the run waiting now (its run id, pending version and spec) and send it
 * as the checked update, or print it for the Temporal UI's signal form. With `--group NAME` instead
 * of NAME: one decision for a RotationGroup, bound to every member's pending version.
 */
export function decide(approve: boolean) {
  return async (args: string[]): Promise<number> => {
    if (args.includes('--as') || args.some((a) => a.startsWith('--as='))) {
      throw new UsageError('--as is gone: a decision counts only when signed with your key (--key ~/.ssh/id_ed25519)');
    }
    const options = { ...SIGN_OPTIONS, comment: { type: 'string' }, expires: { type: 'string' }, file: { type: 'string', short: 'f' }, print: { type: 'boolean' }, group: { type: 'string' } } as const;
    const grouped = args.includes('--group') || args.some((a) => a.startsWith('--group='));
    const { values, positionals } = parse(args, options, grouped ? [] : ['NAME']);
    const name = grouped ? (values.group as string) : positionals[0];
    const key = keyChoice(values, 'a decision');
    const comment = values.comment as string | undefined;
    if (comment !== undefined && comment.length > 500) throw new UsageError('--comment: at most 500 characters');
    const client = await connectClient();
    if (grouped) {
      const doc = await groupDecision(client, name, approve, values.file as string | undefined);
      if (!doc) return EXIT.usage;
      return send(client, { ...doc, ...(comment ? { comment } : {}), ...validity(values.expires as string | undefined, '1h') }, `group ${name}`, key, values.print === true);
    }
    const workflowId = rotationWorkflowId(name);
    const handle = client.workflow.getHandle(workflowId);
    let runId: string;
    try {
      runId = (await handle.describe()).runId;
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) {
        err(`no rotation of ${name} is running (workflow ${workflowId})`);
        return EXIT.usage;
      }
      throw e;
    }
    const progress = await withDeadline(client.workflow.getHandle(workflowId, runId).query(progressQuery));
    if (!progress) {
      err(`the rotation of ${name} did not answer (is a rekey worker running?)`);
      return EXIT.unavailable;
    }
    if (progress.stage !== 'approve' || !progress.versions.pending || !progress.specHash) {
      err(`the rotation of ${name} is not waiting for approval (stage: ${progress.stage})`);
      return EXIT.usage;
    }
    // The pending version must be the one this run writes (its id derives from the run): sign nothing else.
    if (progress.versions.pending !== versionTokenFor(`${workflowId}/${runId}`)) {
      err(`refusing to sign: the pending version ${progress.versions.pending} is not the one run ${runId} writes`);
      return EXIT.usage;
    }
    if (values.file) {
      // Approve only what you reviewed: the rotation must run the spec your manifests say.
      const mine = (await loadManifests(values.file as string)).secrets.get(name);
      if (!mine) throw new UsageError(`no Secret named "${name}" under ${values.file}`);
      if (mine.specHash !== progress.specHash) {
        err(`refusing to sign: the rotation runs spec ${progress.specHash}, but ${values.file} says ${mine.specHash}`);
        return EXIT.usage;
      }
    }
    const doc: DecisionDocument = {
      kind: 'rekey.dev/decision',
      namespace: temporalSettings().namespace,
      workflowId,
      runId,
      secret: name,
      pendingVersionId: progress.versions.pending,
      specHash: progress.specHash,
      decision: approve ? 'approve' : 'reject',
      ...(comment ? { comment } : {}),
      ...validity(values.expires as string | undefined, '1h'),
    };
    return send(client, doc, `the rotation of ${name}`, key, values.print === true);
  };
}

/** Sign `doc` and send it as the checked update (or print it for the UI's signal form). */
async function send(client: Client, doc: DecisionDocument, what: string, key: ReturnType<typeof keyChoice>, print: boolean): Promise<number> {
  const signed = await signDocument(doc, key);
  err(`signed: ${doc.decision} ${what}, run ${doc.runId}, pending version(s) ${doc.pendingVersionId}, spec ${doc.specHash}, valid until ${doc.expiresAt}`);
  if (print) {
    // For the Temporal UI: "Send a Signal", signal `${doc.decision}`, paste this line as its data.
    out(JSON.stringify(signed));
    return EXIT.ok;
  }
  try {
    const result = await client.workflow.getHandle(doc.workflowId, doc.runId).executeUpdate(decideUpdate, { args: [signed] });
    const verb = doc.decision === 'approve' ? 'approved' : 'rejected';
    if (result.outcome === 'waiting') out(`${verb} by ${result.approver}: ${result.approvals} of ${result.needed} approvals, still waiting`);
    else if (result.outcome === 'approved') out(`${verb} by ${result.approver}: ${result.approvals} of ${result.needed} approvals, ${what} proceeds to promote`);
    else out(`${verb} by ${result.approver}: ${what} rolls back`);
    return EXIT.ok;
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) {
      err(`refused: ${rootCause(e)}`);
      return EXIT.usage;
    }
    throw e;
  }
}

/**
 * The unsigned decision for the group waiting now: its run, its spec and every member's pending
 * version, each checked to be the one that member's run writes. Undefined (said why) if there is none.
 */
async function groupDecision(client: Client, group: string, approve: boolean, file: string | undefined): Promise<Omit<DecisionDocument, 'issuedAt' | 'expiresAt'> | undefined> {
  const workflowId = groupWorkflowId(group);
  let runId: string;
  try {
    runId = (await client.workflow.getHandle(workflowId).describe()).runId;
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) {
      err(`no rotation of group ${group} is running (workflow ${workflowId})`);
      return undefined;
    }
    throw e;
  }
  const progress = await withDeadline(client.workflow.getHandle(workflowId, runId).query(groupProgressQuery));
  if (!progress) {
    err(`the group ${group} did not answer (is a rekey worker running?)`);
    return undefined;
  }
  if (progress.stage !== 'approve' || !progress.specHash) {
    err(`group ${group} is not waiting for approval (stage: ${progress.stage})`);
    return undefined;
  }
  for (const m of progress.members) {
    if (!m.runId || m.pendingVersionId !== versionTokenFor(`${rotationWorkflowId(m.secret)}/${m.runId}`)) {
      err(`refusing to sign: member ${m.secret}'s pending version ${m.pendingVersionId ?? '(none)'} is not the one its run ${m.runId ?? '(none)'} writes`);
      return undefined;
    }
  }
  if (file) {
    const mine = (await loadManifests(file)).groups.get(group);
    if (!mine) throw new UsageError(`no RotationGroup named "${group}" under ${file}`);
    if (mine.specHash !== progress.specHash) {
      err(`refusing to sign: the group runs spec ${progress.specHash}, but ${file} says ${mine.specHash}`);
      return undefined;
    }
  }
  const members = membersLine(progress.members.map((m) => ({ secret: m.secret, pendingVersionId: m.pendingVersionId! })));
  for (const m of progress.members) err(`  ${m.secret}: pending ${m.pendingVersionId} (run ${m.runId})`);
  return { kind: 'rekey.dev/decision', ...groupBinding(temporalSettings().namespace, workflowId, runId, group, progress.specHash, members), decision: approve ? 'approve' : 'reject' };
}
