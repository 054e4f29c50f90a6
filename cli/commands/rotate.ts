import { userInfo } from 'node:os';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { loadManifests } from '../../lib/manifest';
import { formatProgress, formatReport } from '../../lib/report';
import { connectClient } from '../../lib/temporal';
import { REQUESTED_BY_ATTRIBUTE, SECRET_ATTRIBUTE, TASK_QUEUE, progressQuery, rotationWorkflowId, type RotationReport } from '../../workflows/messages';
import type { rotateSecret } from '../../workflows/rotateSecret';
import { EXIT, UsageError, err, out, parse, uiLink } from '../common';

export async function rotate(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    { file: { type: 'string', short: 'f' }, reason: { type: 'string' }, as: { type: 'string' }, wait: { type: 'boolean' } },
    ['NAME'],
  );
  const [name] = positionals;
  if (!values.file) throw new UsageError('rotate needs -f DIR (the folder or file with the Secret manifests)');
  const manifests = await loadManifests(values.file as string);
  const manifest = manifests.secrets.get(name);
  if (!manifest) {
    throw new UsageError(`no Secret named "${name}" under ${values.file} (found: ${[...manifests.secrets.keys()].join(', ') || 'none'})`);
  }
  const requestedBy = (values.as as string | undefined) ?? process.env.REKEY_USER ?? userInfo().username;
  const client = await connectClient();
  const workflowId = rotationWorkflowId(name);
  let handle;
  try {
    handle = await client.workflow.start<typeof rotateSecret>('rotateSecret', {
      taskQueue: process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'FAIL',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      args: [{ secret: name, spec: manifest.spec, reason: values.reason as string | undefined, requestedBy }],
      typedSearchAttributes: [
        { key: SECRET_ATTRIBUTE, value: name },
        { key: REQUESTED_BY_ATTRIBUTE, value: requestedBy },
      ],
      staticSummary: `rotate ${name}${values.reason ? `: ${values.reason}` : ''}`,
    });
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) {
      err(`a rotation of ${name} is already running (workflow ${workflowId}); follow it with: rekey status ${name}`);
      return EXIT.conflict;
    }
    throw e;
  }
  err(`started rotation of ${name}: workflow ${workflowId}, run ${handle.firstExecutionRunId}`);
  if (process.env.REKEY_TEMPORAL_UI) err(`  watch it: ${uiLink(workflowId, handle.firstExecutionRunId)}`);
  if (!values.wait) return EXIT.ok;
  return waitAndReport(client, workflowId, handle.firstExecutionRunId);
}

export async function waitAndReport(client: Client, workflowId: string, runId?: string): Promise<number> {
  const handle = client.workflow.getHandle(workflowId, runId);
  const result = handle.result() as Promise<RotationReport>;
  let done = false;
  void result.finally(() => (done = true)).catch(() => undefined);
  let last = '';
  while (!done) {
    const line = await handle.query(progressQuery).then(formatProgress, () => '');
    if (line && line !== last) err(`  ${line}`);
    last = line || last;
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
  try {
    const report = await result;
    out(formatReport(report));
    return report.outcome === 'rotated' ? EXIT.ok : EXIT.rolledBack;
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      err(`rotation failed: ${e.cause?.message ?? e.message}`);
      return EXIT.rolledBack;
    }
    throw e;
  }
}

