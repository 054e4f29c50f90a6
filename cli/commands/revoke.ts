import { userInfo } from 'node:os';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { formatDuration } from '../../lib/duration';
import { loadManifests } from '../../lib/manifest';
import { formatProgress, formatReport } from '../../lib/report';
import { connectClient } from '../../lib/temporal';
import {
  REQUESTED_BY_ATTRIBUTE,
  SECRET_ATTRIBUTE,
  TASK_QUEUE,
  emergencyWorkflowId,
  progressQuery,
  rotationWorkflowId,
  type RotationReport,
} from '../../workflows/messages';
import type { emergencyRevoke } from '../../workflows/emergencyRevoke';
import { EXIT, UsageError, err, follow, out, parse, uiLink } from '../common';

/**
 * `rekey revoke NAME --emergency --reason TEXT [-f DIR] [--revoke-first]`: a compromised secret is
 * rotated at once, superseding any rotation in flight, and the time from this command until the
 * target rejected the old credential is printed.
 */
export async function revoke(args: string[]): Promise<number> {
  const commandStart = Date.now();
  const { values, positionals } = parse(
    args,
    {
      emergency: { type: 'boolean' },
      reason: { type: 'string' },
      file: { type: 'string', short: 'f' },
      'revoke-first': { type: 'boolean' },
      as: { type: 'string' },
    },
    ['NAME'],
  );
  const [name] = positionals;
  if (!values.emergency) throw new UsageError('revoke is for compromised secrets and needs --emergency; for a planned change use rekey rotate');
  if (!values.reason) throw new UsageError('revoke --emergency needs --reason (it goes into the audit trail)');
  let spec;
  if (values.file) {
    const manifest = (await loadManifests(values.file as string)).secrets.get(name);
    if (!manifest) throw new UsageError(`no Secret named "${name}" under ${values.file}`);
    spec = manifest.spec;
  }
  const requestedBy = (values.as as string | undefined) ?? process.env.REKEY_USER ?? userInfo().username;
  const client = await connectClient();
  const workflowId = emergencyWorkflowId(name);
  try {
    await client.workflow.start<typeof emergencyRevoke>('emergencyRevoke', {
      taskQueue: process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'FAIL',
      args: [{ secret: name, spec, reason: values.reason as string, requestedBy, revokeFirst: values['revoke-first'] === true }],
      typedSearchAttributes: [
        { key: SECRET_ATTRIBUTE, value: name },
        { key: REQUESTED_BY_ATTRIBUTE, value: requestedBy },
      ],
      staticSummary: `EMERGENCY revoke of ${name}: ${values.reason}`,
    });
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) {
      err(`an emergency revoke of ${name} is already running (workflow ${workflowId})`);
      return EXIT.conflict;
    }
    throw e;
  }
  err(`emergency revoke of ${name} started; any rotation in flight is cancelled and rolled back first`);
  err(`  ${uiLink(rotationWorkflowId(name))}`);
  const result = client.workflow.getHandle(workflowId).result() as Promise<RotationReport>;
  await follow(
    result,
    async () => {
      const progress = await client.workflow.getHandle(rotationWorkflowId(name)).query(progressQuery);
      return progress.emergency ? formatProgress(progress) : undefined;
    },
    250,
  );
  try {
    const report = await result;
    out(formatReport(report));
    if (report.revokedAt) {
      out(`time to revoke: ${formatDuration(Date.parse(report.revokedAt) - commandStart)} (from this command until the old credential was rejected)`);
    }
    return report.outcome === 'rotated' ? EXIT.ok : EXIT.rolledBack;
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      err(`emergency revoke failed: ${e.cause?.message ?? e.message}`);
      return EXIT.rolledBack;
    }
    throw e;
  }
}
