// The worker process: `npm run worker`. Configure it with the standard Temporal environment
// settings, REKEY_TASK_QUEUE (default "rekey") and REKEY_MANIFESTS (folders of Secret manifests, for
// rotations started by name from the temporal CLI or the SDK).
import { createRekeyWorker } from './worker';

async function main(): Promise<void> {
  const manifestDirs = (process.env.REKEY_MANIFESTS ?? '').split(':').filter(Boolean);
  const worker = await createRekeyWorker({ manifestDirs });
  console.error(`rekey worker polling task queue "${worker.options.taskQueue}" in namespace "${worker.options.namespace}"`);
  await worker.run();
}

main().catch((err) => {
  console.error(`rekey worker: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
