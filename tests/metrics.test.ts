// The worker's Prometheus metrics, read the way an operator reads them: a worker process serves
// them, Debian's real prometheus scrapes it, and the test asks prometheus' HTTP API. The example
// alert rules and dashboard are checked against what the worker really exported.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { randomUUID } from 'node:crypto';
import { PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import type { WorkflowHandle } from '@temporalio/client';
import { rotationWorkflowId } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { databaseFixture, failureOf, manifests, postgresSpec, sm, spawnWorker, storeVersions, tempDir, temporalClient, uniqueId, untilProgress, type DatabaseFixture } from './helpers';
import { newKey, people } from './keys';

const MONITORING = join(__dirname, '..', 'examples', 'monitoring');

function need(command: string): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      accessSync(join(dir, command), constants.X_OK);
      return join(dir, command);
    } catch {
      // not in this folder
    }
  }
  throw new Error(`${command} is not installed: apt-get install prometheus (.ci/run does)`);
}

/** A loopback port nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${what} never happened${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

/** Metric names in a PromQL expression: every rekey_ or temporal_ identifier. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(?:rekey|temporal)_[a-zA-Z0-9_]+/g)].map((m) => m[0]);
}

describe('Prometheus metrics', function () {
  this.timeout(240_000);
  /** `fx` is rotated; `broken` rolls back at a consumer's health check; `approved` waits for approval past its timeout; `stale` (maxAge 1 s) is never rotated; `foreign` fails at generate (someone else's pending version). */
  let fx: DatabaseFixture, broken: DatabaseFixture, approved: DatabaseFixture, stale: DatabaseFixture, foreign: DatabaseFixture;
  let waiting: WorkflowHandle<typeof rotateSecret>;
  let worker: ChildProcess | undefined;
  let prometheus: ChildProcess | undefined;
  let promUrl: string;
  let metricsUrl: string;
  const workerLog: string[] = [];
  /** Every sample name the worker served during the test. */
  const exported = new Set<string>();
  const scrapes: string[] = [];

  async function scrape(): Promise<string> {
    const text = await (await fetch(metricsUrl)).text();
    scrapes.push(text);
    for (const line of text.split('\n')) if (line && !line.startsWith('#')) exported.add(line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)![0]);
    return text;
  }

  /** The vector prometheus answers for `query` (an instant query). */
  async function query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] }; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus refused ${promql}: ${body.error}`);
    return body.data.result;
  }

  /** The first sample of `promql` whose value satisfies `ok`, once prometheus has scraped it. */
  const sample = (promql: string, ok: (v: number) => boolean) =>
    until(`${promql} in prometheus`, async () => (await query(promql)).find((s) => ok(Number(s.value[1]))));

  before(async () => {
    need('prometheus');
    [fx, broken, approved, stale, foreign] = await Promise.all([1, 2, 3, 4, 5].map(() => databaseFixture('alternating-users')));
    await sm.send(new PutSecretValueCommand({ SecretId: foreign.secretId, ClientRequestToken: randomUUID(), SecretString: '{}', VersionStages: ['AWSPENDING'] }));
    const dir = await tempDir();
    const [alice, bob] = await Promise.all([newKey('alice'), newKey('bob')]);
    const trusted = await manifests(
      {
        [fx.id]: postgresSpec(fx, 'alternating-users', {
          consumers: [{ type: 'command', name: 'app', file: join(dir, 'db.json'), reload: 'true' }],
          policy: { overlap: '1s', maxAge: '30d' },
        }),
        [broken.id]: postgresSpec(broken, 'alternating-users', {
          consumers: [{ type: 'command', name: 'app', file: join(dir, 'broken.json'), health: 'exit 1' }],
          policy: { overlap: '0s', timeouts: { verify: '3s' } },
        }),
        [approved.id]: postgresSpec(approved, 'alternating-users', {
          policy: { overlap: '0s', approval: { required: true, approvers: ['alice', 'bob'], timeout: '1s', onTimeout: 'escalate', escalationLimit: '10m' } },
        }),
        [stale.id]: postgresSpec(stale, 'alternating-users', { policy: { maxAge: '1s' } }),
        [foreign.id]: postgresSpec(foreign, 'alternating-users'),
      },
      people([alice, bob]),
    );
    const taskQueue = uniqueId('rekey-metrics-');
    const metricsAddress = `127.0.0.1:${await freePort()}`;
    metricsUrl = `http://${metricsAddress}/metrics`;
    worker = spawnWorker(taskQueue, trusted.dir, { REKEY_METRICS_ADDRESS: metricsAddress });
    worker.stderr!.on('data', (chunk: Buffer) => workerLog.push(chunk.toString()));
    // A worker that dies (its metrics port taken, say) fails the test with its log instead of hanging it.
    const exited = new Promise<never>((_, reject) => worker!.once('exit', (code) => reject(new Error(`the worker exited (${code}):\n${workerLog.join('')}`))));
    exited.catch(() => undefined);
    const alive = <T>(p: Promise<T>) => Promise.race([p, exited]);

    const promDir = await tempDir();
    const promAddress = `127.0.0.1:${await freePort()}`;
    promUrl = `http://${promAddress}`;
    await writeFile(
      join(promDir, 'prometheus.yml'),
      `global: { scrape_interval: 1s, evaluation_interval: 1s }\n` +
        `rule_files: [${readdirSync(MONITORING).filter((f) => f.endsWith('.rules')).map((f) => JSON.stringify(join(MONITORING, f))).join(', ')}]\n` +
        `scrape_configs:\n  - job_name: rekey-worker\n    static_configs: [{ targets: ['${metricsAddress}'] }]\n`,
    );
    prometheus = spawn(need('prometheus'), [`--config.file=${join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir, 'data')}`, `--web.listen-address=${promAddress}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const promLog: string[] = [];
    prometheus.stderr!.on('data', (chunk: Buffer) => promLog.push(chunk.toString()));
    await until('prometheus ready', async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined)).catch((err) => {
      throw new Error(`${(err as Error).message}\n${promLog.join('')}`);
    });

    const client = await temporalClient();
    const rotate = (secret: string) => client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] });
    const [done, failed, refused] = await Promise.all([rotate(fx.id), rotate(broken.id), rotate(foreign.id)]);
    waiting = await rotate(approved.id);
    const report = await alive(done.result());
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    assert.equal((await alive(failed.result())).outcome, 'rolled-back');
    assert.match(await alive(failureOf(refused.result())), /did not write/);
    await alive(untilProgress(waiting, (p) => p.approval.escalated));
  });

  after(async () => {
    await waiting?.cancel().catch(() => undefined);
    worker?.kill('SIGTERM');
    prometheus?.kill('SIGTERM');
  });

  it('counts the rotation, its stages and its revoke, and reports the secret age, through prometheus', async () => {
    const secret = fx.id;
    const rotated = await sample(`rekey_rotations_total{secret="${secret}",outcome="rotated"}`, (v) => v === 1);
    assert.equal(rotated.metric.job, 'rekey-worker');
    // Series that did not move are there at zero, so increase() and alerts see their first step.
    await sample(`rekey_rotations_total{secret="${secret}",outcome="rolled-back"}`, (v) => v === 0);
    await sample(`rekey_consumers_failed_total{secret="${secret}",consumer="app"}`, (v) => v === 0);
    await sample(`rekey_post_verify_old_accepted_total{secret="${secret}"}`, (v) => v === 0);
    await sample('rekey_stage_duration_seconds_count{stage="deploy"}', (v) => v >= 1);
    await sample('rekey_stage_duration_seconds_count{stage="revoke"}', (v) => v >= 1);
    await sample('rekey_time_to_revoke_seconds_count{emergency="false"}', (v) => v >= 1);
    // The age of the version the rotation just made, read from the store by the worker's loop.
    await sample(`rekey_secret_age_seconds{secret="${secret}"}`, (v) => v >= 0 && v < 30 * 86400);
    await sample(`rekey_secret_max_age_seconds{secret="${secret}"}`, (v) => v === 30 * 86400);
    // The SDK's own worker metrics come through the same exporter.
    await sample('temporal_workflow_completed_total', (v) => v >= 1);
  });

  it('counts a rollback and the consumer that caused it', async () => {
    await sample(`rekey_rotations_total{secret="${broken.id}",outcome="rolled-back"}`, (v) => v === 1);
    await sample(`rekey_rotations_total{secret="${broken.id}",outcome="rotated"}`, (v) => v === 0);
    await sample(`rekey_consumers_failed_total{secret="${broken.id}",consumer="app"}`, (v) => v === 1);
    await sample('rekey_stage_duration_seconds_count{stage="rollback"}', (v) => v >= 1);
    await sample(`ALERTS{alertname="RekeyRotationRolledBack",secret="${broken.id}",outcome="rolled-back"}`, (v) => v === 1);
    await sample(`ALERTS{alertname="RekeyConsumerFailed",secret="${broken.id}",consumer="app"}`, (v) => v === 1);
  });

  it('counts a rotation that failed before it had a pending version, and alerts on it', async () => {
    await sample(`rekey_rotations_total{secret="${foreign.id}",outcome="failed"}`, (v) => v === 1);
    await sample(`ALERTS{alertname="RekeyRotationRolledBack",secret="${foreign.id}",outcome="failed"}`, (v) => v === 1);
  });

  it('alerts on a secret older than its maxAge, and only on that one', async () => {
    // Pending (the rule waits 10 minutes before it fires), which is enough to show the rule matches.
    await sample(`ALERTS{alertname="RekeySecretOverdue",secret="${stale.id}"}`, (v) => v === 1);
    assert.deepEqual((await query('ALERTS{alertname="RekeySecretOverdue"}')).map((s) => s.metric.secret), [stale.id]);
  });

  it('shows an approval waiting past its timeout until the rotation stops waiting', async () => {
    await sample(`rekey_approvals_waiting{secret="${approved.id}"}`, (v) => v === 1);
    await sample(`rekey_approvals_past_timeout{secret="${approved.id}"}`, (v) => v === 1);
    // The alert rule fires on it (prometheus evaluates the example rules every second).
    await sample(`ALERTS{alertname="RekeyApprovalPastTimeout",secret="${approved.id}"}`, (v) => v === 1);
    await waiting.cancel();
    // A cancelled rotation rolls back, then ends cancelled.
    await assert.rejects(waiting.result(), /cancel/i);
    await sample(`rekey_approvals_waiting{secret="${approved.id}"}`, (v) => v === 0);
    await sample(`rekey_approvals_past_timeout{secret="${approved.id}"}`, (v) => v === 0);
    await sample(`rekey_rotations_total{secret="${approved.id}",outcome="rolled-back"}`, (v) => v === 1);
  });

  it('serves no secret value, only names from the manifests', async () => {
    const text = await scrape();
    assert.match(text, /rekey_rotations_total/);
    // The old and the new password (both in the store now) and the admin password the target used.
    const stored = [readFileSync(process.env.REKEY_PG_ADMIN_PASSWORD_FILE!, 'utf8').trim()];
    for (const f of [fx, broken, approved, stale, foreign]) stored.push(...(await storeVersions(f.secretId)).map((v) => v.value.password));
    assert.ok(stored.length >= 5 && stored.includes(fx.initialPassword));
    for (const value of stored) assert.ok(!scrapes.join('\n').includes(value), 'a secret value appears in the metrics');
    // Every secret label is a secret this worker declares, never a run id or a version.
    const secrets = new Set([...text.matchAll(/secret="([^"]*)"/g)].map((m) => m[1]));
    assert.deepEqual([...secrets].sort(), [fx.id, broken.id, approved.id, stale.id, foreign.id].sort());
  });

  it('example alert rules pass promtool and, with the dashboard, use only metrics the worker exports', async () => {
    const rules = readdirSync(MONITORING).filter((f) => f.endsWith('.rules'));
    assert.ok(rules.length > 0, 'no alert rules in examples/monitoring');
    const { stdout } = await promisify(execFile)(need('promtool'), ['check', 'rules', ...rules.map((f) => join(MONITORING, f))]);
    assert.match(stdout, /SUCCESS/);
    await until('the worker exporting every metric', async () => ((await scrape()) && exported.has('rekey_secret_age_seconds') ? true : undefined));

    // Prometheus loaded the same files (the config names them) and evaluates every rule cleanly.
    const loaded = await until('prometheus evaluating the rules', async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
      const all = body.data.groups.flatMap((g) => g.rules);
      return all.length && all.every((r) => r.health !== 'unknown') ? all : undefined;
    });
    assert.deepEqual(loaded.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`), []);

    const used = new Set<string>();
    for (const f of rules) {
      const doc = parse(readFileSync(join(MONITORING, f), 'utf8')) as { groups: { rules: { expr: string }[] }[] };
      for (const rule of doc.groups.flatMap((g) => g.rules)) metricNames(rule.expr).forEach((n) => used.add(n));
    }
    const dashboard = JSON.parse(readFileSync(join(MONITORING, 'rekey-dashboard.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
    for (const panel of dashboard.panels) for (const target of panel.targets ?? []) metricNames(target.expr).forEach((n) => used.add(n));
    assert.ok(used.size >= 8, `only ${[...used].join(', ')} found in the rules and dashboard`);
    const unknown = [...used].filter((n) => !exported.has(n));
    assert.deepEqual(unknown, [], `used in examples/monitoring but never exported: ${unknown.join(', ')}`);
  });
});
