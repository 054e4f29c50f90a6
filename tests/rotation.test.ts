import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { PooledService } from '../demo/service';
import { SCHEMAS } from '../scripts/gen-schema';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import {
  canLogin,
  databaseFixture,
  labelled,
  manifests,
  postgresSpec,
  storeVersions,
  tempDir,
  temporalClient,
  withWorker,
} from './helpers';

/** Rotate `secret` with a worker that trusts exactly this spec, as its reviewed manifests. */
async function rotate(secret: string, spec: object): Promise<RotationReport> {
  const trusted = await manifests({ [secret]: spec });
  return withWorker(
    async (taskQueue) =>
      (await temporalClient()).workflow.execute(rotateSecret, {
        taskQueue,
        workflowId: rotationWorkflowId(secret),
        args: [trusted.input(secret, { requestedBy: 'test', reason: 'spec' })],
      }),
    { manifestDirs: [trusted.dir] },
  );
}

describe('rotateSecret against Postgres and AWS Secrets Manager', () => {
  for (const strategy of ['single-user', 'alternating-users'] as const) {
    it(`${strategy}: the new credential works, the old is rejected, the store holds current and previous only`, async () => {
      const fx = await databaseFixture(strategy);
      const dir = await tempDir();
      const file = join(dir, 'db.json');
      const spec = postgresSpec(fx, strategy, {
        consumers: [{ type: 'command', name: 'api', file, health: 'grep -q "$REKEY_VERSION_ID" "$REKEY_FILE"' }],
      });

      const report = await rotate(fx.id, spec);

      assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
      const versions = await storeVersions(fx.secretId);
      const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!;
      const previous = versions.find((v) => v.stages.includes('AWSPREVIOUS'))!;
      assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0, 'no AWSPENDING left');
      assert.equal(versions.length, 2, 'exactly one new version');
      assert.equal(current.versionId, report.versions.after);
      assert.equal(previous.versionId, report.versions.before);
      assert.equal(previous.value.password, fx.initialPassword);
      assert.equal(current.value.username, strategy === 'single-user' ? fx.users[0] : fx.users[1]);

      assert.equal(await canLogin(current.value.username, current.value.password), true, 'new credential accepted');
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'old credential rejected');
      assert.deepEqual(report.postVerify && [report.postVerify.oldRejected, report.postVerify.newAccepted], [true, true]);

      const deployed = JSON.parse(await readFile(file, 'utf8'));
      assert.equal(deployed.rekey_version_id, current.versionId);
      assert.equal(deployed.password, current.value.password);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.deepEqual(report.consumers.map((c) => [c.name, c.state]), [['api', 'verified']]);
    });
  }

  it('http consumer: the service is told the version, loads it from the store and reports it healthy', async () => {
    const fx = await databaseFixture('alternating-users');
    const service = new PooledService(fx.secretId);
    const port = await service.start(0);
    try {
      const spec = postgresSpec(fx, 'alternating-users', {
        consumers: [{ type: 'http', name: 'pooled', reloadUrl: `http://127.0.0.1:${port}/reload`, healthUrl: `http://127.0.0.1:${port}/health` }],
      });
      const report = await rotate(fx.id, spec);
      assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
      const stats = (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as { version: string; failed: number; lastError?: string };
      assert.equal(stats.version, report.versions.after);
      assert.equal(stats.failed, 0, stats.lastError);
    } finally {
      await service.stop();
    }
  });

  it('started by name only (as from `temporal workflow start`), the worker uses the spec of its own manifests', async () => {
    const fx = await databaseFixture('single-user');
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'single-user') });
    const client = await temporalClient();
    const report = await withWorker(
      (taskQueue) => client.workflow.execute('rotateSecret', { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [{ secret: fx.id }] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal((report as RotationReport).outcome, 'rotated');
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, (report as RotationReport).versions.after);
  });

  it('rolls back when a consumer never becomes healthy: old credential works, no pending version, report names the consumer', async () => {
    const fx = await databaseFixture('alternating-users');
    const dir = await tempDir();
    const spec = postgresSpec(fx, 'alternating-users', {
      consumers: [
        { type: 'command', name: 'good', file: join(dir, 'good.json') },
        { type: 'command', name: 'broken', file: join(dir, 'broken.json'), health: 'echo "cannot connect" >&2; exit 3' },
      ],
      policy: { overlap: '1s', timeouts: { verify: '3s' } },
    });

    const report = await rotate(fx.id, spec);

    assert.equal(report.outcome, 'rolled-back');
    assert.equal(report.failure?.consumer, 'broken');
    assert.equal(report.failure?.stage, 'verify');
    assert.match(report.failure!.message, /health command exited with status 3/);
    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, report.versions.before);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true, 'old credential still works');
    const pending = versions.find((v) => v.versionId === report.versions.pending)!;
    assert.equal(await canLogin(pending.value.username, pending.value.password), false, 'prepared user undone');
    // Both consumers are back on the version they had.
    for (const name of ['good', 'broken']) {
      const deployed = JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8'));
      assert.equal(deployed.rekey_version_id, report.versions.before, `${name} rolled back`);
    }
    assert.deepEqual(report.consumers.map((c) => c.state), ['rolled-back', 'rolled-back']);
    // Per-consumer activities carry a summary for the UI's timeline (encrypted like every payload).
    const history = await (await temporalClient()).workflow.getHandle(rotationWorkflowId(fx.id)).fetchHistory();
    const summarized = history.events!.filter((e) => e.activityTaskScheduledEventAttributes && e.userMetadata?.summary);
    assert.equal(summarized.length, 6, 'deploy, verify and roll back, for each of two consumers');
  });
});

describe('JSON Schema for editors', () => {
  it('schemas/*.schema.json are what the zod schemas generate (run npm run schema after changing them)', () => {
    for (const { path, text } of SCHEMAS) assert.equal(readFileSync(path, 'utf8'), text(), path);
  });
});
