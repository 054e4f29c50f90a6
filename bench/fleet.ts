// `npm run bench:fleet`: fleets of N secrets (default 100, 500, 1000; REKEY_BENCH_FLEET_SIZES) with a
// cheap store-only secret and two file consumers each, against the server's own ceiling for no-op
// activities measured in the same run. Prints; asserts nothing.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities } from '../activities/rotation';
import { rekeyDataConverter } from '../lib/codec';
import { stringify } from 'yaml';
import { loadManifests } from '../lib/manifest';
import { sm, stack, temporalClient, uniqueId } from '../tests/helpers';
import { fleetWorkflowId, rotationWorkflowId, type FleetItem, type FleetSummary, type RotationReport } from '../workflows/messages';

Runtime.install({ logger: new DefaultLogger('WARN') });

const SIZES = (process.env.REKEY_BENCH_FLEET_SIZES ?? '100,500,1000').split(',').map(Number);
const MAX_PARALLEL = Number(process.env.REKEY_BENCH_FLEET_PARALLEL ?? 20);
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];

async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) await work(items[next++]);
  }));
}

async function main(): Promise<void> {
  const client = await temporalClient();
  const taskQueue = uniqueId('rekey-bench-fleet-');
  // The worker's manifest folder; each fleet size adds its file, and the worker picks it up.
  const manifestDir = await mkdtemp(join(tmpdir(), 'rekey-bench-manifests-'));
  const worker = await Worker.create({
    connection: await NativeConnection.connect({ address: stack.temporalAddress }),
    taskQueue,
    dataConverter: rekeyDataConverter(),
    workflowsPath: require.resolve('./workflows'),
    activities: { ...createActivities({ healthPollMs: 100, manifestDirs: [manifestDir] }), noop: async () => undefined },
    maxConcurrentActivityTaskExecutions: 200,
    maxConcurrentWorkflowTaskExecutions: 100,
  });
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);
  const rows: Record<string, number>[] = [];

  await worker.runUntil(async () => {
    // The ceiling: as many no-op activities as the server completes, same worker, same machine.
    // Spread over many workflows, as a fleet is: one workflow alone is bounded by its own task rate.
    const [workflows, each] = [50, 60];
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: workflows }, () => client.workflow.execute('noopCeiling', { taskQueue, workflowId: uniqueId('noop-'), args: [each, 4] })),
    );
    const ceiling = (workflows * each) / ((performance.now() - t0) / 1000);
    console.log(`no-op activity ceiling: ${ceiling.toFixed(0)} activities/s (${workflows} workflows x ${each} activities, 4 in flight each)`);

    for (const n of SIZES) {
      const dir = await mkdtemp(join(tmpdir(), 'rekey-bench-fleet-'));
      const prefix = uniqueId('bf');
      const docs = Array.from({ length: n }, (_, i) => ({
        apiVersion: 'rekey.dev/v1',
        kind: 'Secret',
        metadata: { name: `${prefix}-${i}` },
        spec: {
          store: { type: 'aws-secrets-manager', secretId: `rekey-bench/${prefix}/${i}` },
          generator: { type: 'random-bytes', size: 16 },
          consumers: ['a', 'b'].map((c) => ({ type: 'command', name: c, file: join(dir, `${i}-${c}.json`) })),
          policy: { overlap: '0s' },
        },
      }));
      const file = join(manifestDir, `${prefix}.yaml`);
      await writeFile(file, docs.map((d) => stringify(d)).join('---\n'));
      const set = await loadManifests(file);
      const items: FleetItem[] = docs.map((d) => [d.metadata.name, set.secrets.get(d.metadata.name)!.specHash]);
      await pool(docs, 20, async (d) => {
        await sm.send(new CreateSecretCommand({ Name: d.spec.store.secretId, SecretString: '{"value":"seed"}' }));
      });
      const fleetId = fleetWorkflowId(uniqueId(`bench-${n}-`));
      const start = performance.now();
      const summary: FleetSummary = await client.workflow.execute('rotateFleet', {
        taskQueue,
        workflowId: fleetId,
        args: [{ fleet: `bench-${n}`, items, maxParallel: MAX_PARALLEL }],
      });
      const seconds = (performance.now() - start) / 1000;
      const latencies: number[] = [];
      await pool(items, 20, async ([secret]) => {
        const report: RotationReport = await client.workflow.getHandle(rotationWorkflowId(secret)).result();
        latencies.push(Date.parse(report.finishedAt) - Date.parse(report.startedAt));
      });
      const sample = await client.workflow.getHandle(rotationWorkflowId(items[0][0])).fetchHistory();
      const events = sample.events!.length;
      const activities = sample.events!.filter((e) => e.activityTaskScheduledEventAttributes).length;
      let fleetRuns = 0;
      for await (const _ of client.workflow.list({ query: `WorkflowId = '${fleetId}'` })) fleetRuns++;
      const rate = summary.rotated.length / seconds;
      const row = {
        secrets: n,
        rotated: summary.rotated.length,
        secondsTotal: seconds,
        secretsPerSecond: rate,
        p50LatencyMs: quantile(latencies, 0.5),
        p95LatencyMs: quantile(latencies, 0.95),
        historyEventsPerRotation: events,
        activitiesPerRotation: activities,
        fleetRunsAfterContinueAsNew: fleetRuns,
        noopCeilingPerSecond: ceiling,
        ratioToCeiling: (rate * activities) / ceiling,
        workerPeakRssMiB: peakRss / 2 ** 20,
      };
      rows.push(row);
      console.log(
        `N=${n}: ${row.rotated} rotated in ${seconds.toFixed(1)} s = ${rate.toFixed(1)} secrets/s; latency p50 ${row.p50LatencyMs} ms, p95 ${row.p95LatencyMs} ms; ` +
          `${events} events and ${activities} activities per rotation; ${fleetRuns} fleet runs; ` +
          `ratio to ceiling ${(row.ratioToCeiling * 100).toFixed(0)}%; peak RSS ${row.workerPeakRssMiB.toFixed(0)} MiB`,
      );
    }
  });
  clearInterval(sampler);
  console.log(`BENCH_FLEET_JSON ${JSON.stringify(rows)}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench:fleet: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
