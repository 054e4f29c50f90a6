import { userInfo } from 'node:os';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { formatDuration } from '../../lib/duration';
import { loadManifests } from '../../lib/manifest';
import type { BreakGlassDocument } from '../../lib/signed';
import { formatProgress, formatReport } from '../../lib/report';
import { connectClient, temporalSettings } from '../../lib/temporal';
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
import { EXIT, UsageError, err, follow, out, parse, rootCause, uiLink } from '../common';
import { SIGN_OPTIONS, keyChoice, signDocument, validity } from '../sign';

/**
 * `rekey revoke NAME --emergency --reason TEXT --key PATH [-f DIR] [--revoke-first]`: a compromised
 * secret is rotated at once, superseding any rotation in flight, on the signature of a break-glass
 * key holder; the time from this command until the target rejected the old credential is printed.
 */
export async function revoke(args: string[]): Promise<number> {
  const commandStart = Date.now();
  const { values, positionals } = parse(
    args,
    {
      ...SIGN_OPTIONS,
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
  const reason = values.reason as string;
  if (reason.length > 500) throw new UsageError('--reason: at most 500 characters');
  const key = keyChoice(values, 'an emergency rotation (break-glass)');
  let specHash: string | undefined;
  if (values.file) {
    const manifest = (await loadManifests(values.file as string)).secrets.get(name);
    if (!manifest) throw new UsageError(`no Secret named "${name}" under ${values.file}`);
    specHash = manifest.specHash;
  }
  const requestedBy = (values.as as string | undefined) ?? process.env.REKEY_USER ?? userInfo().username;
  const doc: BreakGlassDocument = {
    kind: 'rekey.dev/break-glass',
    namespace: temporalSettings().namespace,
    secret: name,
    ...(specHash ? { specHash } : {}),
    revokeFirst: values['revoke-first'] === true,
    reason,
    ...validity(undefined, '15m'),
  };
  const authorization = await signDocument(doc, key);
  const client = await connectClient();
  const workflowId = emergencyWorkflowId(name);
  try {
    await client.workflow.start<typeof emergencyRevoke>('emergencyRevoke', {
      taskQueue: process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'FAIL',
      args: [{ secret: name, specHash, reason, requestedBy, authorization }],
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
      err(`emergency revoke failed: ${rootCause(e)}`);
      return EXIT.rolledBack;
    }
    throw e;
  }
}
