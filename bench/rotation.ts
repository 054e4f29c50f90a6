// `npm run bench`: what durability costs and how fast a leaked credential dies. It measures and
// prints; it asserts nothing. Runs against the local stack, like the tests.
import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { createConsumer } from '../activities/consumers';
import { createGenerator } from '../activities/generators';
import { versionTokenFor } from '../activities/rotation';
import { openStore } from '../activities/stores';
import { createTarget } from '../activities/targets';
import type { SecretSpec } from '../lib/manifest';
import type { BreakGlassDocument } from '../lib/signed';
import { databaseFixture, manifests, postgresSpec, startWorker, temporalClient, uniqueId } from '../tests/helpers';
import { newKey, people, sign } from '../tests/keys';
import { dropCreatedUsers, redisFixture, redisSpec, type RedisFixture } from '../tests/redis-fixtures';
import { dropCreated as dropCreatedRabbit, rabbitFixture, rabbitSpec, type RabbitFixture } from '../tests/rabbitmq-fixtures';
import { emergencyWorkflowId, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { rotateSecret } from '../workflows/rotateSecret';

Runtime.install({ logger: new DefaultLogger('WARN') });

const RUNS = Number(process.env.REKEY_BENCH_RUNS ?? 10);
const REVOKE_RUNS = Number(process.env.REKEY_BENCH_REVOKE_RUNS ?? 5);

const quantile = (xs: number[], q: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};
const ms = (x: number) => `${x.toFixed(0)} ms`;

/** The same provider calls the workflow's activities make, in the same order, in one process. */
async function rotateDirectly(spec: SecretSpec): Promise<void> {
  const store = openStore(spec.store);
  const target = createTarget(spec.target!);
  const consumers = spec.consumers.map(createConsumer);
  const versions = await store.versions();
  const current = await store.read(versions.current!);
  const next = target.nextCredential(current, createGenerator(spec.generator!).generate());
  const { versionId } = await store.putPending(versionTokenFor(randomUUID()), next);
  const context = { secret: 'bench', currentVersionId: versions.current!, nextVersionId: versionId };
  await target.prepare(next, current, context);
  const ref = (c: { name: string }) => ({ secret: 'bench', storeRef: store.ref, versionId, consumer: c.name });
  await Promise.all(consumers.map((c) => c.deploy(ref(c), next)));
  await Promise.all(consumers.map((c) => c.health(ref(c))));
  if (!(await target.accepts(next)).accepted) throw new Error('direct rotation: new credential rejected');
  await store.promote(versionId);
  await target.revoke(current, next, { context });
  if ((await target.accepts(current)).accepted) throw new Error('direct rotation: old credential still accepted');
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'rekey-bench-'));
  const consumers = ['a', 'b'].map((n) => ({ type: 'command', name: `consumer-${n}`, file: join(dir, `${n}.json`), health: 'true' }));
  const client = await temporalClient();
  const taskQueue = uniqueId('rekey-bench-');
  // The worker's reviewed manifests: the rotated secret, the leaked ones, and a break-glass key.
  const fx = await databaseFixture('alternating-users');
  const leaked = await Promise.all(Array.from({ length: REVOKE_RUNS }, () => databaseFixture('alternating-users')));
  const oncall = await newKey('oncall');
  // A Redis ACL user beside it, when a Redis answers (the bench asserts nothing; it says when it skipped).
  const rx: RedisFixture | undefined = await redisFixture().catch((err) => {
    console.error(`bench: no Redis line: ${(err as Error).message}`);
    return undefined;
  });
  // A RabbitMQ user pair likewise, when the management API answers.
  const mq: RabbitFixture | undefined = await rabbitFixture().catch((err) => {
    console.error(`bench: no RabbitMQ line: ${(err as Error).message}`);
    return undefined;
  });
  const trusted = await manifests(
    {
      [fx.id]: postgresSpec(fx, 'alternating-users', { consumers, policy: { overlap: '0s' } }),
      ...(rx ? { [rx.id]: redisSpec(rx, { consumers, policy: { overlap: '0s' } }) } : {}),
      ...(mq ? { [mq.id]: rabbitSpec(mq, { consumers, policy: { overlap: '0s' } }) } : {}),
      ...Object.fromEntries(leaked.map((l) => [l.id, postgresSpec(l, 'alternating-users', { consumers, policy: { overlap: '1h' } })])),
    },
    people([oncall], ['oncall']),
  );
  const spec = trusted.set.secrets.get(fx.id)!.spec;
  const worker = await startWorker(taskQueue, { healthPollMs: 100, manifestDirs: [trusted.dir] });
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);

  const through: number[] = [];
  const events: number[] = [];
  const direct: number[] = [];
  const [redisThrough, redisDirect]: number[][] = [[], []];
  const [rabbitThrough, rabbitDirect]: number[][] = [[], []];
  const timeToRevoke: number[] = [];

  await worker.runUntil(async () => {
    // One warm-up of each, so bundling and first connections are not counted.
    await client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
    await rotateDirectly(spec);
    for (let i = 0; i < RUNS; i++) {
      const start = performance.now();
      const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
      const report: RotationReport = await handle.result();
      through.push(performance.now() - start);
      if (report.outcome !== 'rotated') throw new Error(`bench rotation ${i} rolled back: ${report.failure?.message}`);
      events.push((await handle.fetchHistory()).events!.length);

      const t = performance.now();
      await rotateDirectly(spec);
      direct.push(performance.now() - t);

      if (rx) {
        const r0 = performance.now();
        const redisReport: RotationReport = await client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(rx.id), args: [trusted.input(rx.id)] });
        redisThrough.push(performance.now() - r0);
        if (redisReport.outcome !== 'rotated') throw new Error(`bench redis rotation ${i} rolled back: ${redisReport.failure?.message}`);
        const r1 = performance.now();
        await rotateDirectly(trusted.set.secrets.get(rx.id)!.spec);
        redisDirect.push(performance.now() - r1);
      }
      if (mq) {
        const r0 = performance.now();
        const mqReport: RotationReport = await client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(mq.id), args: [trusted.input(mq.id)] });
        rabbitThrough.push(performance.now() - r0);
        if (mqReport.outcome !== 'rotated') throw new Error(`bench rabbitmq rotation ${i} rolled back: ${mqReport.failure?.message}`);
        const r1 = performance.now();
        await rotateDirectly(trusted.set.secrets.get(mq.id)!.spec);
        rabbitDirect.push(performance.now() - r1);
      }
    }
    for (const { id } of leaked) {
      // Signing is the on-call person's step before the command; the clock starts at the command.
      const doc: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: id, revokeFirst: false, reason: 'bench', issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 600_000).toISOString() };
      const authorization = await sign(oncall, doc);
      const start = Date.now();
      const report: RotationReport = await client.workflow.execute(emergencyRevoke, {
        taskQueue,
        workflowId: emergencyWorkflowId(id),
        args: [{ secret: id, requestedBy: 'bench', reason: 'bench', authorization }],
      });
      timeToRevoke.push(Date.parse(report.revokedAt!) - start);
    }
  });
  clearInterval(sampler);

  const figures = {
    runs: RUNS,
    temporalMedianMs: quantile(through, 0.5),
    temporalP95Ms: quantile(through, 0.95),
    directMedianMs: quantile(direct, 0.5),
    directP95Ms: quantile(direct, 0.95),
    durabilityRatio: quantile(through, 0.5) / quantile(direct, 0.5),
    overheadMs: quantile(through, 0.5) - quantile(direct, 0.5),
    historyEventsPerRotation: quantile(events, 0.5),
    workerPeakRssMiB: peakRss / 2 ** 20,
    timeToRevokeMedianMs: quantile(timeToRevoke, 0.5),
    timeToRevokeRuns: REVOKE_RUNS,
    ...(rx ? { redisTemporalMedianMs: quantile(redisThrough, 0.5), redisDirectMedianMs: quantile(redisDirect, 0.5) } : {}),
    ...(mq ? { rabbitmqTemporalMedianMs: quantile(rabbitThrough, 0.5), rabbitmqDirectMedianMs: quantile(rabbitDirect, 0.5) } : {}),
  };
  await dropCreatedUsers();
  await dropCreatedRabbit();
  const rows: [string, string][] = [
    [`rotation through Temporal (median / p95 of ${RUNS})`, `${ms(figures.temporalMedianMs)} / ${ms(figures.temporalP95Ms)}`],
    ['same providers called directly (median / p95)', `${ms(figures.directMedianMs)} / ${ms(figures.directP95Ms)}`],
    ['cost of durability (ratio, overhead)', `${figures.durabilityRatio.toFixed(2)}x, +${ms(figures.overheadMs)}`],
    ['history events per rotation', String(figures.historyEventsPerRotation)],
    ['worker process peak RSS (bench + worker in one process)', `${figures.workerPeakRssMiB.toFixed(0)} MiB`],
    [`time to revoke, emergency (median of ${REVOKE_RUNS})`, ms(figures.timeToRevokeMedianMs)],
    ...(rx ? [['redis dual-password: through Temporal / direct (medians)', `${ms(quantile(redisThrough, 0.5))} / ${ms(quantile(redisDirect, 0.5))}`] as [string, string]] : []),
    ...(mq ? [['rabbitmq alternating-users: Temporal / direct (medians)', `${ms(quantile(rabbitThrough, 0.5))} / ${ms(quantile(rabbitDirect, 0.5))}`] as [string, string]] : []),
  ];
  console.log('\nrekey benchmark: alternating-users Postgres secret, two command consumers, overlap 0s\n');
  for (const [k, v] of rows) console.log(`  ${k.padEnd(58)} ${v}`);
  console.log(`\nBENCH_JSON ${JSON.stringify(figures)}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
