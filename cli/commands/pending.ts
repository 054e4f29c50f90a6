import { formatDuration } from '../../lib/duration';
import { connectClient } from '../../lib/temporal';
import { progressQuery } from '../../workflows/messages';
import { EXIT, err, out, parse, uiLink } from '../common';

/** `rekey pending`: every rotation waiting for a decision, found by its RekeyStage search attribute. */
export async function pending(args: string[]): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' } }, []);
  const client = await connectClient();
  const rows = [];
  for await (const wf of client.workflow.list({ query: `RekeyStage = 'approve' AND ExecutionStatus = 'Running'` })) {
    const progress = await client.workflow.getHandle(wf.workflowId, wf.runId).query(progressQuery).catch(() => undefined);
    if (!progress || progress.stage !== 'approve') continue;
    rows.push({
      secret: progress.secret,
      workflowId: wf.workflowId,
      runId: wf.runId,
      requestedBy: progress.requestedBy,
      waitingSince: progress.stages.find((s) => s.stage === 'approve')?.startedAt,
      approvals: progress.approval.approvedBy.map((a) => a.approver),
      needed: progress.approval.needed,
      waitingFor: progress.approval.waitingFor,
      escalated: progress.approval.escalated,
    });
  }
  if (values.json) {
    for (const row of rows) out(JSON.stringify(row));
    return EXIT.ok;
  }
  if (!rows.length) {
    err('no rotation is waiting for approval');
    return EXIT.ok;
  }
  for (const r of rows) {
    const waited = r.waitingSince ? formatDuration(Date.now() - Date.parse(r.waitingSince)) : '?';
    out(
      `${r.secret}  requested by ${r.requestedBy ?? 'unknown'}  ${r.approvals.length}/${r.needed} approvals` +
        `  waiting ${waited} for ${r.waitingFor.join(', ') || 'nobody eligible'}${r.escalated ? '  ESCALATED' : ''}`,
    );
    out(`  ${uiLink(r.workflowId, r.runId)}`);
  }
  return EXIT.ok;
}
