// `npm run bench`: what durability costs and how fast a leaked credential dies. It measures and
// prints; it asserts nothing. Runs against the local stack, like the tests.
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { createConsumer } from '../activities/consumers';
import { bundleWorkflows } from '../scripts/bundle-workflows';
import { createGenerator } from '../activities/generators';
import { versionTokenFor } from '../activities/rotation';
import { openStore } from '../activities/stores';
import { createTarget } from '../activities/targets';
import type { SecretSpec } from '../lib/manifest';
import type { BreakGlassDocument } from '../lib/signed';
import { databaseFixture, manifests, postgresSpec, spawnWorker, temporalClient, uniqueId } from '../tests/helpers';
import { newKey, people, sign } from '../tests/keys';
import { dropCreated as dropMysqlAccounts, fixture as mysqlFixture, spec as mysqlSpec, type Fixture as MysqlFixture } from '../tests/mysql-fixtures';
import { dropCreatedUsers, redisFixture, redisSpec, type RedisFixture } from '../tests/redis-fixtures';
import { fixture as iamFixture, iamSpec } from '../tests/iam-fixtures';
import { dropCreated as dropCreatedRabbit, rabbitFixture, rabbitSpec, type RabbitFixture } from '../tests/rabbitmq-fixtures';
import { SECRET_ATTRIBUTE, emergencyWorkflowId, retireWorkflowId, rotationWorkflowId, type RotationReport } from '../workflows/messages';
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
async function rotateDirectly(secret: string, spec: SecretSpec): Promise<void> {
  const store = openStore(spec.store);
  const target = createTarget(spec.target!);
  const consumers = spec.consumers.map(createConsumer);
  const versions = await store.versions();
  const current = await store.read(versions.current!);
  const token = versionTokenFor(randomUUID());
  const issuing = { secret, currentVersionId: versions.current!, nextVersionId: token, storeVersionIds: versions.all, readVersion: (id: string) => store.read(id) };
  // A target that mints the credential (an IAM key) does so where a generator would run.
  const next = target.issue ? await target.issue(current, issuing) : target.nextCredential(current, createGenerator(spec.generator!).generate());
  const { versionId } = await store.putPending(token, next);
  const context = { secret, currentVersionId: versions.current!, nextVersionId: versionId };
  await target.prepare(next, current, context);
  const ref = (c: { name: string }) => ({ secret, storeRef: store.ref, versionId, consumer: c.name });
  await Promise.all(consumers.map((c) => c.deploy(ref(c), next)));
  await Promise.all(consumers.map((c) => c.health(ref(c))));
  if (!(await target.accepts(next)).accepted) throw new Error('direct rotation: new credential rejected');
  await store.promote(versionId);
  const revoked = await target.revoke(current, next, { context });
  // What the retire timer does once deleteAfter (0s here) has passed: delete the deactivated key.
  if (revoked?.retire && target.retire) await target.retire(current, { secret, versionId: versions.current!, revokedAt: new Date().toISOString() });
  if ((await target.accepts(current)).accepted) throw new Error('direct rotation: old credential still accepted');
}

/** A target measured beside the Postgres line: how to make one (throws when its server does not answer). */
interface TargetLine {
  label: string;
  /** Its revoke only disables; a retire timer removes the old credential (IAM keys). */
  retires?: boolean;
  fixture(): Promise<{ id: string; spec: Record<string, unknown>; cleanup?: () => Promise<void> }>;
}

function otherTargets(consumers: object[]): TargetLine[] {
  const policy = { overlap: '0s' };
  return [
    {
      label: 'redis dual-password',
      fixture: async () => {
        const rx: RedisFixture = await redisFixture();
        return { id: rx.id, spec: redisSpec(rx, { consumers, policy }), cleanup: dropCreatedUsers };
      },
    },
    {
      label: 'mysql alternating-users',
      fixture: async () => {
        const mx: MysqlFixture = await mysqlFixture();
        return { id: mx.id, spec: mysqlSpec(mx, 'alternating-users', { consumers, policy }), cleanup: dropMysqlAccounts };
      },
    },
    {
      label: 'rabbitmq alternating-users',
      fixture: async () => {
        const mq: RabbitFixture = await rabbitFixture();
        return { id: mq.id, spec: rabbitSpec(mq, { consumers, policy }), cleanup: dropCreatedRabbit };
      },
    },
    {
      label: 'aws-iam-access-key',
      retires: true,
      fixture: async () => {
        const fx = await iamFixture();
        // deleteAfter 0s: the retire timer deletes the deactivated key at once (IAM allows two keys);
        // the bench waits for it, untimed, before the next rotation.
        return { id: fx.id, spec: iamSpec(fx, { deleteAfter: '0s' }, { consumers, policy }) };
      },
    },
  ];
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
  // Other targets beside it, each when its server answers (the bench asserts nothing; it says when it skipped).
  const others = (
    await Promise.all(
      otherTargets(consumers).map(async (line) => {
        try {
          return { ...line, ...(await line.fixture()), through: [] as number[], direct: [] as number[] };
        } catch (err) {
          console.error(`bench: no ${line.label} line: ${(err as Error).message}`);
          return undefined;
        }
      }),
    )
  ).filter((line) => line !== undefined);
  const trusted = await manifests(
    {
      [fx.id]: postgresSpec(fx, 'alternating-users', { consumers, policy: { overlap: '0s' } }),
      ...Object.fromEntries(others.map((line) => [line.id, line.spec])),
      ...Object.fromEntries(leaked.map((l) => [l.id, postgresSpec(l, 'alternating-users', { consumers, policy: { overlap: '1h' } })])),
    },
    people([oncall], ['oncall']),
  );
  const spec = trusted.set.secrets.get(fx.id)!.spec;
  // The worker in its own process, as it runs in production, on a bundle built beforehand (as a
  // deployment would): its peak RSS (VmHWM) is its own work, not webpack's or the bench's.
  process.env.REKEY_WORKFLOW_BUNDLE = await bundleWorkflows(join(dir, 'workflow-bundle.js'));
  const worker = spawnWorker(taskQueue, trusted.dir);
  const workerPeakRss = async () => Number(/VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${worker.pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;
  // Started as the CLI starts it: the secret's search attribute set at start.
  const startRotation = (id: string, workflowId: string) =>
    client.workflow.start(rotateSecret, { taskQueue, workflowId, args: [trusted.input(id)], typedSearchAttributes: [{ key: SECRET_ATTRIBUTE, value: id }] });

  const through: number[] = [];
  const events: number[] = [];
  const direct: number[] = [];
  const timeToRevoke: number[] = [];

  let peakRss = NaN;
  try {
    // One warm-up of each, so bundling and first connections are not counted.
    await (await startRotation(fx.id, rotationWorkflowId(fx.id))).result();
    await rotateDirectly(fx.id, spec);
    for (let i = 0; i < RUNS; i++) {
      const start = performance.now();
      const handle = await startRotation(fx.id, rotationWorkflowId(fx.id));
      const report: RotationReport = await handle.result();
      through.push(performance.now() - start);
      if (report.outcome !== 'rotated') throw new Error(`bench rotation ${i} rolled back: ${report.failure?.message}`);
      events.push((await handle.fetchHistory()).events!.length);

      const t = performance.now();
      await rotateDirectly(fx.id, spec);
      direct.push(performance.now() - t);

      for (const line of others) {
        const t0 = performance.now();
        const other: RotationReport = await (await startRotation(line.id, rotationWorkflowId(line.id))).result();
        line.through.push(performance.now() - t0);
        // A target whose revoke only disables left a retire timer (started before the rotation ended).
        if (line.retires) await client.workflow.getHandle(retireWorkflowId(line.id, other.versions.before)).result();
        if (other.outcome !== 'rotated') throw new Error(`bench ${line.label} rotation ${i} rolled back: ${other.failure?.message}`);
        const t1 = performance.now();
        await rotateDirectly(line.id, trusted.set.secrets.get(line.id)!.spec);
        line.direct.push(performance.now() - t1);
      }
    }
    for (const { id } of leaked) {
      // Signing is the on-call person's step before the command; the clock starts at the command.
      const doc: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: id, revokeFirst: false, reason: 'bench', issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 600_000).toISOString() };
      const authorization = await sign(oncall, doc);
      const started = Date.now();
      const report: RotationReport = await client.workflow.execute(emergencyRevoke, {
        taskQueue,
        workflowId: emergencyWorkflowId(id),
        args: [{ secret: id, requestedBy: 'bench', reason: 'bench', authorization }],
      });
      timeToRevoke.push(Date.parse(report.revokedAt!) - started);
    }
    peakRss = await workerPeakRss();
  } catch (err) {
    console.error(`bench: the worker's last words:\n${worker.stderrTail().slice(-4_000)}`);
    throw err;
  } finally {
    worker.kill('SIGTERM');
  }

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
    targets: Object.fromEntries(others.map((line) => [line.label, { temporalMedianMs: quantile(line.through, 0.5), directMedianMs: quantile(line.direct, 0.5) }])),
  };
  for (const line of others) await line.cleanup?.();
  const rows: [string, string][] = [
    [`rotation through Temporal (median / p95 of ${RUNS})`, `${ms(figures.temporalMedianMs)} / ${ms(figures.temporalP95Ms)}`],
    ['same providers called directly (median / p95)', `${ms(figures.directMedianMs)} / ${ms(figures.directP95Ms)}`],
    ['cost of durability (ratio, overhead)', `${figures.durabilityRatio.toFixed(2)}x, +${ms(figures.overheadMs)}`],
    ['history events per rotation', String(figures.historyEventsPerRotation)],
    ['worker process peak RSS (the worker process alone, VmHWM)', `${figures.workerPeakRssMiB.toFixed(0)} MiB`],
    [`time to revoke, emergency (median of ${REVOKE_RUNS})`, ms(figures.timeToRevokeMedianMs)],
    ...others.map((line): [string, string] => [`${line.label}: through Temporal / direct (medians)`, `${ms(quantile(line.through, 0.5))} / ${ms(quantile(line.direct, 0.5))}`]),
  ];
  console.log('\nrekey benchmark: alternating-users Postgres secret, two command consumers, overlap 0s\n');
  for (const [k, v] of rows) console.log(`  ${k.padEnd(66)} ${v}`);
  console.log(`\nBENCH_JSON ${JSON.stringify(figures)}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
