import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities, type ActivityOptions } from '../activities/rotation';
import { rekeyDataConverter } from '../lib/codec';
import { temporalSettings } from '../lib/temporal';
import { TASK_QUEUE } from '../workflows/messages';

export interface RekeyWorkerOptions extends ActivityOptions {
  taskQueue?: string;
  connection?: NativeConnection;
  /** A prebuilt bundle (tests build one per file); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkerOptions['workflowBundle'];
}

/**
 * A worker started before Temporal (a reboot, a rolling deploy) waits for it and says so, instead
 * of exiting with a transport error.
 */
async function connectPatiently(options: Parameters<typeof NativeConnection.connect>[0] & { address: string }): Promise<NativeConnection> {
  for (let waitMs = 1_000; ; waitMs = Math.min(waitMs * 2, 30_000)) {
    try {
      return await NativeConnection.connect(options);
    } catch (err) {
      console.error(`rekey worker: waiting for Temporal at ${options.address} (${(err as Error).message.split('\n')[0]}); retrying in ${waitMs / 1000}s`);
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
}

/**
 * The workflows: bundled at start with webpack (the default), or a bundle built beforehand
 * (`npm run -s bundle-workflows`, path in REKEY_WORKFLOW_BUNDLE) so the worker starts faster and
 * never holds webpack in memory: its peak RSS is its own work. Build it from the same commit.
 */
function workflowCode(bundle: RekeyWorkerOptions['workflowBundle']) {
  if (bundle) return { workflowBundle: bundle };
  const prebuilt = process.env.REKEY_WORKFLOW_BUNDLE;
  return prebuilt ? { workflowBundle: { codePath: prebuilt } } : { workflowsPath: require.resolve('../workflows') };
}

/** The rekey worker: the rotation workflows plus every provider's activities. */
export async function createRekeyWorker(options: RekeyWorkerOptions = {}): Promise<Worker> {
  const { config, namespace, address } = temporalSettings();
  const connection = options.connection ?? (await connectPatiently({ ...config.connectionOptions, address }));
  const dataConverter = rekeyDataConverter();
  if (!dataConverter) console.error('rekey worker: REKEY_CODEC_KEYRING is not set, so payloads in Temporal are NOT encrypted');
  return Worker.create({
    dataConverter,
    connection,
    namespace,
    taskQueue: options.taskQueue ?? process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
    ...workflowCode(options.workflowBundle),
    activities: createActivities(options),
  });
}
