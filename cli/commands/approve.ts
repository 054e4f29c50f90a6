import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { loadManifests } from '../../lib/manifest';
import type { DecisionDocument } from '../../lib/signed';
import { connectClient, temporalSettings } from '../../lib/temporal';
import { versionTokenFor } from '../../lib/version-token';
import { decideUpdate, progressQuery, rotationWorkflowId } from '../../workflows/messages';
import { EXIT, UsageError, err, out, parse, rootCause, withDeadline } from '../common';
import { SIGN_OPTIONS, keyChoice, signDocument, validity } from '../sign';

/**
 * `rekey approve|reject NAME --key PATH [--agent] [--comment TEXT] [--expires 1h] [-f DIR] [--print]`:
 * sign a decision bound to the run waiting now (its run id, pending version and spec) and send it
 * as the checked update, or print it for the Temporal UI's signal form.
 */
export function decide(approve: boolean) {
  return async (args: string[]): Promise<number> => {
    if (args.includes('--as') || args.some((a) => a.startsWith('--as='))) {
      throw new UsageError('--as is gone: a decision counts only when signed with your key (--key ~/.ssh/id_ed25519)');
    }
    const { values, positionals } = parse(
      args,
      { ...SIGN_OPTIONS, comment: { type: 'string' }, expires: { type: 'string' }, file: { type: 'string', short: 'f' }, print: { type: 'boolean' } },
      ['NAME'],
    );
    const [name] = positionals;
    const key = keyChoice(values, 'a decision');
    const comment = values.comment as string | undefined;
    if (comment !== undefined && comment.length > 500) throw new UsageError('--comment: at most 500 characters');
    const client = await connectClient();
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
    const signed = await signDocument(doc, key);
    err(`signed: ${doc.decision} ${name}, run ${runId}, pending version ${doc.pendingVersionId}, spec ${doc.specHash}, valid until ${doc.expiresAt}`);
    if (values.print) {
      // For the Temporal UI: "Send a Signal", signal `${doc.decision}`, paste this line as its data.
      out(JSON.stringify(signed));
      return EXIT.ok;
    }
    try {
      const result = await client.workflow.getHandle(workflowId, runId).executeUpdate(decideUpdate, { args: [signed] });
      const verb = approve ? 'approved' : 'rejected';
      if (result.outcome === 'waiting') out(`${verb} by ${result.approver}: ${result.approvals} of ${result.needed} approvals, still waiting`);
      else if (result.outcome === 'approved') out(`${verb} by ${result.approver}: ${result.approvals} of ${result.needed} approvals, the rotation of ${name} proceeds to promote`);
      else out(`${verb} by ${result.approver}: the rotation of ${name} rolls back`);
      return EXIT.ok;
    } catch (e) {
      if (e instanceof WorkflowUpdateFailedError) {
        err(`refused: ${rootCause(e)}`);
        return EXIT.usage;
      }
      throw e;
    }
  };
}
