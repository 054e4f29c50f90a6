import { formatDuration } from '../../lib/duration';
import { connectClient } from '../../lib/temporal';
import { WAITING_FOR_DECISION, groupProgressQuery, progressQuery } from '../../workflows/messages';
import { EXIT, err, out, parse, plain, uiLink, withDeadline } from '../common';

/** `rekey pending`: every rotation and group waiting for a decision, found by its RekeyStage search attribute. */
export async function pending(args: string[]): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' } }, []);
  const client = await connectClient();
  const waiting = [];
  for await (const wf of client.workflow.list({ query: WAITING_FOR_DECISION })) waiting.push(wf);
  // Asked in parallel, each with a deadline: one rotation without a live worker must not stall the list.
  const isGroup = (workflowId: string) => workflowId.startsWith('group/');
  const answers = await Promise.all(
    waiting.map((wf) => {
      const handle = client.workflow.getHandle(wf.workflowId, wf.runId);
      return isGroup(wf.workflowId) ? withDeadline(handle.query(groupProgressQuery)) : withDeadline(handle.query(progressQuery));
    }),
  );
  const rows = [];
  for (const [i, wf] of waiting.entries()) {
    const answer = answers[i];
    if (answer && 'group' in answer) {
      if (answer.stage !== 'approve') continue;
      rows.push({
        group: answer.group,
        members: answer.members.map((m) => m.secret),
        workflowId: wf.workflowId,
        runId: wf.runId,
        requestedBy: answer.requestedBy,
        waitingSince: undefined as string | undefined,
        approvals: answer.approval.approvedBy.map((a) => a.approver),
        needed: answer.approval.needed,
        waitingFor: answer.approval.waitingFor,
        escalated: answer.approval.escalated,
      });
      continue;
    }
    const progress = answer;
    if (!progress) {
      err(`${wf.workflowId}: waits for approval, but no worker answered (is a rekey worker running on task queue ${wf.taskQueue}?)`);
      continue;
    }
    if (progress.stage !== 'approve') continue;
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
    const what = 'group' in r ? `group ${r.group} (${(r.members ?? []).join(', ')})` : r.secret;
    out(
      plain(
        `${what}  requested by ${r.requestedBy ?? 'unknown'}  ${r.approvals.length}/${r.needed} approvals` +
          `  waiting ${waited} for ${r.waitingFor.join(', ') || 'nobody eligible'}${r.escalated ? '  ESCALATED' : ''}`,
      ),
    );
    out(`  ${uiLink(r.workflowId, r.runId)}`);
  }
  return EXIT.ok;
}
