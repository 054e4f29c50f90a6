import { userInfo } from 'node:os';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { loadManifests, selectSecrets } from '../../lib/manifest';
import { formatProgress, formatReport } from '../../lib/report';
import type { RequestDocument } from '../../lib/signed';
import { connectClient, temporalSettings } from '../../lib/temporal';
import {
  REQUESTED_BY_ATTRIBUTE,
  SECRET_ATTRIBUTE,
  TASK_QUEUE,
  fleetProgressQuery,
  fleetWorkflowId,
  groupProgressQuery,
  groupWorkflowId,
  progressQuery,
  rotationWorkflowId,
  type FleetSummary,
  type GroupReport,
  type RotationReport,
} from '../../workflows/messages';
import type { rotateGroup } from '../../workflows/rotateGroup';
import type { rotateFleet } from '../../workflows/rotateFleet';
import type { rotateSecret } from '../../workflows/rotateSecret';
import { EXIT, UsageError, err, follow, out, parse, rootCause, uiLink, withDeadline } from '../common';
import { SIGN_OPTIONS, keyChoice, signDocument, validity } from '../sign';

const ROTATE_OPTIONS = {
  ...SIGN_OPTIONS,
  file: { type: 'string', short: 'f' },
  reason: { type: 'string' },
  as: { type: 'string' },
  wait: { type: 'boolean' },
  all: { type: 'boolean' },
  selector: { type: 'string' },
  'max-parallel': { type: 'string' },
  group: { type: 'string' },
} as const;

/** Who asked (a label, unverified) and why, from --as and --reason, bounded like the workflow bounds them. */
function labels(values: { as?: unknown; reason?: unknown }): { requestedBy: string; reason?: string } {
  const requestedBy = (values.as as string | undefined) ?? process.env.REKEY_USER ?? userInfo().username;
  const reason = values.reason as string | undefined;
  if (reason !== undefined && reason.length > 500) throw new UsageError('--reason: at most 500 characters');
  if (requestedBy.length > 100) throw new UsageError('--as: at most 100 characters');
  return { requestedBy, reason };
}

export async function rotate(args: string[]): Promise<number> {
  const many = args.includes('--all') || args.some((a) => a === '--selector' || a.startsWith('--selector='));
  if (many) return rotateMany(args);
  if (args.some((a) => a === '--group' || a.startsWith('--group='))) return rotateGroupCommand(args);
  const { values, positionals } = parse(args, ROTATE_OPTIONS, ['NAME']);
  const [name] = positionals;
  if (!values.file) throw new UsageError('rotate needs -f DIR (the folder or file with the Secret manifests)');
  const manifests = await loadManifests(values.file as string);
  const manifest = manifests.secrets.get(name);
  if (!manifest) {
    throw new UsageError(`no Secret named "${name}" under ${values.file} (found: ${[...manifests.secrets.keys()].join(', ') || 'none'})`);
  }
  const { requestedBy, reason } = labels(values);
  const workflowId = rotationWorkflowId(name);
  // The worker rotates only if its own manifest has exactly the spec reviewed here.
  err(`${name}: spec ${manifest.specHash} (${manifest.source})`);
  let request;
  if (values.key) {
    // Signed, the request proves who asked: that person's keys cannot approve it.
    const doc: RequestDocument = {
      kind: 'rekey.dev/request',
      namespace: temporalSettings().namespace,
      workflowId,
      secret: name,
      specHash: manifest.specHash,
      ...(reason ? { reason } : {}),
      ...validity(undefined, '15m'),
    };
    request = await signDocument(doc, keyChoice(values, 'the request'));
  }
  const client = await connectClient();
  let handle;
  try {
    handle = await client.workflow.start<typeof rotateSecret>('rotateSecret', {
      taskQueue: process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'FAIL',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      args: [{ secret: name, specHash: manifest.specHash, reason, requestedBy, ...(request ? { request } : {}) }],
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
  await follow(result, async () => {
    const progress = await withDeadline(handle.query(progressQuery), 3000);
    return progress ? formatProgress(progress) : `no worker has answered yet (is a rekey worker polling task queue "${process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE}"?)`;
  });
  try {
    const report = await result;
    out(formatReport(report));
    return report.outcome === 'rotated' ? EXIT.ok : EXIT.rolledBack;
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      err(`rotation failed: ${rootCause(e)}`);
      return EXIT.rolledBack;
    }
    throw e;
  }
}


/** `team=payments,class=database` -> {team: 'payments', class: 'database'} */
function parseSelector(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of text.split(',')) {
    const [k, v, ...rest] = pair.split('=');
    if (!k || v === undefined || rest.length) throw new UsageError(`--selector: "${pair}" is not label=value (e.g. --selector team=payments)`);
    labels[k.trim()] = v.trim();
  }
  return labels;
}

/** `rekey rotate --all | --selector team=payments -f DIR [--max-parallel N]`: one fleet, one summary. */
async function rotateMany(args: string[]): Promise<number> {
  const { values } = parse(args, ROTATE_OPTIONS, []);
  if (!values.file) throw new UsageError('rotate --all/--selector needs -f DIR');
  if (values.all && values.selector) throw new UsageError('give --all or --selector, not both');
  const maxParallel = Number(values['max-parallel'] ?? 4);
  if (!Number.isInteger(maxParallel) || maxParallel < 1) throw new UsageError(`--max-parallel: "${values['max-parallel']}" is not a positive whole number`);
  const manifests = await loadManifests(values.file as string);
  const names = values.all ? [...manifests.secrets.keys()].sort() : selectSecrets(manifests, { labels: parseSelector(values.selector as string) });
  if (!names.length) throw new UsageError(`no Secret under ${values.file} matches ${values.selector ? `--selector ${values.selector}` : '--all'}`);
  const requestedBy = (values.as as string | undefined) ?? process.env.REKEY_USER ?? userInfo().username;
  const client = await connectClient();
  const fleet = `adhoc-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  const handle = await client.workflow.start<typeof rotateFleet>('rotateFleet', {
    taskQueue: process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
    workflowId: fleetWorkflowId(fleet),
    args: [{ fleet, items: names.map((secret) => [secret, manifests.secrets.get(secret)!.specHash]), maxParallel, requestedBy, reason: values.reason as string | undefined }],
    staticSummary: `rotate ${names.length} secrets, ${maxParallel} at a time`,
  });
  err(`rotating ${names.length} secret(s), ${maxParallel} at a time: workflow ${handle.workflowId}`);
  const result = handle.result() as Promise<FleetSummary>;
  await follow(result, async () => {
    const p = await withDeadline(handle.query(fleetProgressQuery), 2000);
    return p && `${p.done}/${p.total} done${p.running.length ? `, rotating ${p.running.join(', ')}` : ''}`;
  });
  const summary = await result;
  out(formatFleetSummary(summary));
  return summary.failed.length || summary.rolledBack.length ? EXIT.rolledBack : EXIT.ok;
}

export function formatFleetSummary(s: FleetSummary): string {
  const lines = [
    `rotated ${s.rotated.length}, rolled back ${s.rolledBack.length}, skipped (already rotating) ${s.skipped.length}, not due ${s.notDue.length}, failed ${s.failed.length}`,
  ];
  for (const r of s.rolledBack) lines.push(`  rolled back ${r.secret}: ${r.reason}`);
  for (const f of s.failed) lines.push(`  failed ${f.secret}: ${f.reason}`);
  if (s.skipped.length) lines.push(`  skipped: ${s.skipped.join(', ')}`);
  return lines.join('\n');
}

/**
 * `rekey rotate --group NAME -f DIR [--reason TEXT] [--as LABEL] [--wait]`: every member of the
 * RotationGroup or none. Refuses, naming it, if a member is already rotating on its own.
 */
async function rotateGroupCommand(args: string[]): Promise<number> {
  const { values } = parse(args, ROTATE_OPTIONS, []);
  if (!values.file) throw new UsageError('rotate --group needs -f DIR (the folder with the RotationGroup and Secret manifests)');
  if (values.key) throw new UsageError('--key: group requests are not signed yet; approvers sign the group decision (rekey approve --group)');
  const name = values.group as string;
  const manifests = await loadManifests(values.file as string);
  const group = manifests.groups.get(name);
  if (!group) throw new UsageError(`no RotationGroup named "${name}" under ${values.file} (found: ${[...manifests.groups.keys()].join(', ') || 'none'})`);
  const { requestedBy, reason } = labels(values);
  err(`group ${name}: spec ${group.specHash} (${group.source}); members ${group.spec.secrets.join(', ')}`);
  const client = await connectClient();
  // The group would refuse too, but only after starting the members before it; say it first.
  for (const secret of group.spec.secrets) {
    const running = await client.workflow
      .getHandle(rotationWorkflowId(secret))
      .describe()
      .then((d) => d.status.name === 'RUNNING', () => false);
    if (running) {
      err(`${secret} is already rotating on its own (workflow ${rotationWorkflowId(secret)}); the group rotates only when none of its members is. Follow it with: rekey status ${secret}`);
      return EXIT.conflict;
    }
  }
  const workflowId = groupWorkflowId(name);
  let handle;
  try {
    handle = await client.workflow.start<typeof rotateGroup>('rotateGroup', {
      taskQueue: process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'FAIL',
      args: [{ group: name, specHash: group.specHash, reason, requestedBy }],
      staticSummary: `rotate group ${name} (${group.spec.secrets.length} secrets, all or nothing)${reason ? `: ${reason}` : ''}`,
    });
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) {
      err(`a rotation of group ${name} is already running (workflow ${workflowId})`);
      return EXIT.conflict;
    }
    throw e;
  }
  err(`started rotation of group ${name}: workflow ${workflowId}, run ${handle.firstExecutionRunId}`);
  if (process.env.REKEY_TEMPORAL_UI) err(`  watch it: ${uiLink(workflowId, handle.firstExecutionRunId)}`);
  if (!values.wait) return EXIT.ok;
  const result = handle.result() as Promise<GroupReport>;
  await follow(result, async () => {
    const p = await withDeadline(handle.query(groupProgressQuery), 3000);
    return p ? `${p.stage}: ${p.members.map((m) => `${m.secret} ${m.state}`).join(', ')}${p.stage === 'approve' ? ` (waiting for ${p.approval.waitingFor.join(', ')}: rekey approve --group ${name})` : ''}` : 'no worker has answered yet';
  });
  try {
    const report = await result;
    out(`group ${name}: ${report.outcome}${report.failure ? ` (${report.failure})` : ''}`);
    for (const m of report.members) out(`  ${m.secret}: ${m.state}${m.detail ? ` (${m.detail})` : ''}`);
    return report.outcome === 'rotated' ? EXIT.ok : EXIT.rolledBack;
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      err(`group rotation failed: ${rootCause(e)}`);
      return EXIT.rolledBack;
    }
    throw e;
  }
}
