// What the tests of a target (Redis, RabbitMQ) do the same way: rotate through a worker and read
// the history back, run `rekey validate --check-targets`, and kill a worker mid-rotation.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { allText, decodedPayloadText, killAndFinish, manifests, settled, spawnWorker, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

/** One rotation through a worker: its report or failure, and its history as text (payloads decoded) for leak scans. */
export async function rotateWithHistory(secret: string, spec: object): Promise<{ report?: RotationReport; failure?: string; history: string }> {
  const trusted = await manifests({ [secret]: spec });
  const result = await withWorker(
    async (taskQueue) => settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] })),
    { manifestDirs: [trusted.dir] },
  );
  const raw = await (await temporalClient()).workflow.getHandle(rotationWorkflowId(secret)).fetchHistory();
  return { ...result, history: `${allText(raw)}\n${await decodedPayloadText(raw)}` };
}

/** `rekey validate --check-targets`: its exit code and everything it printed. */
export function checkTargets(dir: string): Promise<{ code: number; out: string }> {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'validate', '-f', dir, '--check-targets'], { cwd: ROOT }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
  );
}

/**
 * Start a rotation of `secret` (its spec gets a consumer whose reload takes 3 s) on a worker process,
 * SIGKILL that worker during deploy and let a second one finish: the report and the first worker's stderr.
 */
export async function rotateKilledMidDeploy(secret: string, spec: (consumers: object[]) => object): Promise<{ report: RotationReport; stderr: string }> {
  const dir = await tempDir();
  const trusted = await manifests({ [secret]: spec([{ type: 'command', name: 'slow', file: join(dir, 'r.json'), reload: 'sleep 3' }]) });
  const taskQueue = uniqueId('rekey-crash-');
  const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] });
  const first = spawnWorker(taskQueue, trusted.dir);
  let stderr = '';
  first.stderr!.on('data', (d) => (stderr += d));
  for (let i = 0; i < 300 && (await handle.query(progressQuery).catch(() => undefined))?.stage !== 'deploy'; i++) await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 1000)); // the 3 s reload is running on this worker
  return { report: await killAndFinish(first, taskQueue, trusted.dir, handle.result()), stderr };
}
