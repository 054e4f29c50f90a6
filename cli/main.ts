// The `rekey` command. Every subcommand validates its input before it touches anything.
import { userInfo } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ManifestError, loadManifests, secretJsonSchema } from '../lib/manifest';
import { formatProgress, formatReport } from '../lib/report';
import { connectClient, temporalSettings } from '../lib/temporal';
import {
  REQUESTED_BY_ATTRIBUTE,
  SECRET_ATTRIBUTE,
  TASK_QUEUE,
  progressQuery,
  rotationWorkflowId,
  type RotationReport,
} from '../workflows/messages';
import type { rotateSecret } from '../workflows/rotateSecret';

const EXIT = { ok: 0, rolledBack: 1, usage: 2, conflict: 3, unavailable: 4 } as const;

class UsageError extends Error {}

const HELP = `rekey: durable, zero-downtime secret rotation on Temporal

usage:
  rekey rotate NAME -f DIR [--reason TEXT] [--as USER] [--wait]
                              start a rotation of the Secret NAME declared under DIR
  rekey status NAME           show the latest rotation of NAME: stage, consumers, outcome
  rekey validate -f DIR       check every manifest under DIR and list the secrets
  rekey schema                print the JSON Schema of Secret manifests (for editors)
  rekey help                  this text

Temporal is reached through TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY and
TEMPORAL_TLS_* (or a TEMPORAL_PROFILE); the task queue is REKEY_TASK_QUEUE (default "${TASK_QUEUE}").
Exit status: 0 done, 1 rolled back, 2 bad input, 3 already rotating, 4 Temporal unreachable.`;

function parse(args: string[], options: ParseArgsConfig['options'], positionals: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.positionals.length !== positionals.length) {
    throw new UsageError(positionals.length ? `expected ${positionals.join(' ')}` : `unexpected argument ${parsed.positionals[0]}`);
  }
  return { values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals };
}

const out = (line = '') => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);

async function rotate(args: string[]): Promise<number> {
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

function uiLink(workflowId: string, runId?: string): string {
  const { namespace } = temporalSettings();
  const base = process.env.REKEY_TEMPORAL_UI ?? 'http://127.0.0.1:8233';
  return `${base}/namespaces/${namespace}/workflows/${encodeURIComponent(workflowId)}${runId ? `/${runId}` : ''}`;
}

async function waitAndReport(client: Client, workflowId: string, runId?: string): Promise<number> {
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

async function status(args: string[]): Promise<number> {
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
    out(`  stage: ${formatProgress(await handle.query(progressQuery))}`);
  } else if (description.status.name === 'COMPLETED') {
    out(formatReport((await handle.result()) as RotationReport));
  }
  out(`  ${uiLink(workflowId, description.runId)}`);
  return EXIT.ok;
}

async function validate(args: string[]): Promise<number> {
  const { values } = parse(args, { file: { type: 'string', short: 'f' } }, []);
  if (!values.file) throw new UsageError('validate needs -f DIR');
  const manifests = await loadManifests(values.file as string);
  for (const [name, m] of manifests.secrets) {
    out(`${name}  ${m.spec.store.type}  ${m.spec.target?.type ?? 'no target'}  ${m.spec.consumers.length} consumer(s)  (${m.source})`);
  }
  err(`${manifests.secrets.size} secret(s) valid`);
  return EXIT.ok;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'rotate':
        return await rotate(rest);
      case 'status':
        return await status(rest);
      case 'validate':
        return await validate(rest);
      case 'schema':
        out(JSON.stringify(secretJsonSchema(), null, 2));
        return EXIT.ok;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        out(HELP);
        return command === undefined ? EXIT.usage : EXIT.ok;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof ManifestError) {
      err('invalid manifests, nothing was started:');
      for (const issue of e.issues) err(`  ${issue.source}: ${issue.path ? `${issue.path}: ` : ''}${issue.message}`);
      return EXIT.usage;
    }
    if (e instanceof UsageError) {
      err(`rekey: ${e.message}\nrun "rekey help" for usage`);
      return EXIT.usage;
    }
    if (e instanceof Error && e.message.startsWith('cannot reach Temporal')) {
      err(`rekey: ${e.message}`);
      return EXIT.unavailable;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      err(`rekey: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
