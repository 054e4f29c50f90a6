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

/** The rekey worker: the rotation workflows plus every provider's activities. */
export async function createRekeyWorker(options: RekeyWorkerOptions = {}): Promise<Worker> {
  const { config, namespace, address } = temporalSettings();
  const connection = options.connection ?? (await NativeConnection.connect({ ...config.connectionOptions, address }));
  const dataConverter = rekeyDataConverter();
  if (!dataConverter) console.error('rekey worker: REKEY_CODEC_KEYRING is not set, so payloads in Temporal are NOT encrypted');
  return Worker.create({
    dataConverter,
    connection,
    namespace,
    taskQueue: options.taskQueue ?? process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE,
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath: require.resolve('../workflows') }),
    activities: createActivities(options),
  });
}
