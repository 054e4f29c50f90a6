// What the tests of a target (Redis, RabbitMQ, MySQL) do the same way: rotate through a worker and
// read the history back, run `rekey validate --check-targets`, keep a client logging in during a
// rotation, and kill a worker mid-rotation.
import { join } from 'node:path';
import { GetSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { allText, decodedPayloadText, killAndFinish, manifests, rekeyCli, settled, sm, spawnWorker, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

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
export async function checkTargets(dir: string): Promise<{ code: number; out: string }> {
  const { code, out, errOut } = await rekeyCli(['validate', '-f', dir, '--check-targets']);
  return { code, out: `${out}${errOut}` };
}

/**
 * While `rotate` runs, a client logs in again and again with whatever the store calls current
 * (`logIn` says whether the target let it in): how many logins it made and how many were refused.
 */
export async function clientDuringRotation<T>(secretId: string, logIn: (current: { username: string; password: string }) => Promise<boolean>, rotate: () => Promise<T>): Promise<{ result: T; logins: number; failures: number }> {
  let [logins, failures, running] = [0, 0, true];
  const traffic = (async () => {
    while (running) {
      const current = JSON.parse((await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: 'AWSCURRENT' }))).SecretString!);
      if (await logIn(current)) logins++;
      else failures++;
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  try {
    return { result: await rotate(), logins, failures };
  } finally {
    running = false;
    await traffic;
  }
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
