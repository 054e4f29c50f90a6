import { WorkflowNotFoundError } from '@temporalio/client';
import { formatProgress, formatReport } from '../../lib/report';
import { connectClient } from '../../lib/temporal';
import { progressQuery, rotationWorkflowId, type RotationReport } from '../../workflows/messages';
import { EXIT, err, out, parse, uiLink, withDeadline } from '../common';

export async function status(args: string[]): Promise<number> {
  const { positionals } = parse(args, {}, ['NAME']);
  const [name] = positionals;
  const client = await connectClient();
  const workflowId = rotationWorkflowId(name);
  const handle = client.workflow.getHandle(workflowId);
  let description;
  try {
    description = await handle.describe();
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) {
      err(`no rotation of ${name} found (workflow ${workflowId})`);
      return EXIT.usage;
    }
    throw e;
  }
  out(`${workflowId}  run ${description.runId}  ${description.status.name}  started ${description.startTime.toISOString()}`);
  if (description.status.name === 'RUNNING') {
    const progress = await withDeadline(handle.query(progressQuery));
    out(progress ? `  stage: ${formatProgress(progress)}` : `  no worker answered on task queue ${description.taskQueue}: is a rekey worker running?`);
  } else if (description.status.name === 'COMPLETED') {
    out(formatReport((await handle.result()) as RotationReport));
  }
  out(`  ${uiLink(workflowId, description.runId)}`);
  return EXIT.ok;
}

