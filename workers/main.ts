// The worker process: `npm run worker`. Configure it with the standard Temporal environment
// settings, REKEY_TASK_QUEUE (default "rekey"), REKEY_MANIFESTS (the folders of reviewed manifests:
// the only specs this worker ever acts on), REKEY_AUDIT_* (the audit trail and its key) and
// REKEY_METRICS_ADDRESS (host:port to serve Prometheus metrics on; unset, none are served).
import { loadAuditSigner, auditSettingsFromEnv } from '../lib/audit-trails';
import { loadManifests } from '../lib/manifest';
import { installMetrics, watchSecretAges, type AgeWatch } from './metrics';
import { createRekeyWorker } from './worker';

async function main(): Promise<void> {
  const manifestDirs = (process.env.REKEY_MANIFESTS ?? '').split(':').filter(Boolean);
  if (!manifestDirs.length) throw new Error('set REKEY_MANIFESTS to the folder(s) of reviewed manifests this worker acts on (colon-separated)');
  // Refuse to start on manifests or an audit key that would refuse every rotation anyway.
  const set = await loadManifests(...manifestDirs);
  const signer = await loadAuditSigner(auditSettingsFromEnv().key);
  console.error(`rekey worker: ${set.secrets.size} secret(s) from ${manifestDirs.join(', ')}; audit records signed by ${signer.keyId}`);
  const metricsAddress = process.env.REKEY_METRICS_ADDRESS;
  let ages: AgeWatch | undefined;
  if (metricsAddress) {
    ages = watchSecretAges(installMetrics(metricsAddress), manifestDirs);
    console.error(`rekey worker: Prometheus metrics on http://${metricsAddress}/metrics`);
  }
  const worker = await createRekeyWorker({ manifestDirs });
  console.error(`rekey worker polling task queue "${worker.options.taskQueue}" in namespace "${worker.options.namespace}"`);
  try {
    await worker.run();
  } finally {
    ages?.stop();
  }
}

main().catch((err) => {
  console.error(`rekey worker: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
