import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { emergencyWorkflowId, progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { rotateSecret } from '../workflows/rotateSecret';
import { stringify } from 'yaml';
import { canLogin, databaseFixture, postgresSpec, storeVersions, tempDir, temporalClient, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

describe('emergency revocation', () => {
  it('skips approval and overlap: the old credential is rejected at the end, time-to-revoke is reported', async () => {
    const fx = await databaseFixture('alternating-users');
    const spec = postgresSpec(fx, 'alternating-users', {
      policy: { overlap: '1h', approval: { required: true, approvers: ['bob'] } },
    });
    const dir = await tempDir();
    await writeFile(join(dir, 's.yaml'), stringify({ apiVersion: 'rekey.dev/v1', kind: 'Secret', metadata: { name: fx.id }, spec }));
    const result = await withWorker((taskQueue) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'revoke', fx.id, '--emergency', '--reason', 'key posted in a public repo', '-f', dir], {
        cwd: ROOT,
        env: { ...process.env, REKEY_TASK_QUEUE: taskQueue },
      }),
    );
    assert.match(result.stdout, /EMERGENCY rotation of .*: ROTATED/);
    assert.match(result.stdout, /time to revoke: \d/);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'old credential rejected');
    const current = (await storeVersions(fx.secretId)).find((v) => v.stages.includes('AWSCURRENT'))!;
    assert.equal(await canLogin(current.value.username, current.value.password), true);
  });

  it('supersedes a normal rotation in flight: it is cancelled and rolled back cleanly, then the emergency rotation runs', async () => {
    const fx = await databaseFixture('alternating-users');
    const spec = postgresSpec(fx, 'alternating-users', { policy: { approval: { required: true, approvers: ['bob'] } } });
    await withWorker(async (taskQueue) => {
      const client = await temporalClient();
      const normal = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [{ secret: fx.id, spec, requestedBy: 'alice' }] });
      for (let i = 0; i < 200 && (await normal.query(progressQuery)).stage !== 'approve'; i++) await new Promise((r) => setTimeout(r, 100));
      const supersededPending = (await normal.query(progressQuery)).versions.pending!;

      const report: RotationReport = await client.workflow.execute(emergencyRevoke, {
        taskQueue,
        workflowId: emergencyWorkflowId(fx.id),
        args: [{ secret: fx.id, spec, requestedBy: 'oncall', reason: 'leak' }],
      });
      assert.equal(report.outcome, 'rotated');
      assert.equal(report.emergency, true);
      assert.ok(report.revokedAt);

      const superseded = client.workflow.getHandle(normal.workflowId, normal.firstExecutionRunId);
      await assert.rejects(superseded.result(), { name: 'WorkflowFailedError' });
      assert.equal((await superseded.describe()).status.name, 'CANCELLED');
      const cancelledReport = await superseded.query(progressQuery);
      assert.equal(cancelledReport.stage, 'done');
      assert.ok(cancelledReport.stages.some((s) => s.stage === 'rollback'), 'the superseded rotation rolled back');
      const versions = await storeVersions(fx.secretId);
      assert.deepEqual(versions.find((v) => v.versionId === supersededPending)!.stages, [], 'superseded pending discarded');
      assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
      assert.equal(versions.find((v) => v.stages.includes('AWSCURRENT'))!.versionId, report.versions.after);
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
    });
  });

  it('--revoke-first kills the old credential before consumers get the new one, and still completes', async () => {
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    const spec = postgresSpec(fx, 'single-user', { consumers: [{ type: 'command', name: 'app', file: join(dir, 'db.json') }] });
    await withWorker(async (taskQueue) => {
      const client = await temporalClient();
      const report: RotationReport = await client.workflow.execute(emergencyRevoke, {
        taskQueue,
        workflowId: emergencyWorkflowId(fx.id),
        args: [{ secret: fx.id, spec, requestedBy: 'oncall', reason: 'leak', revokeFirst: true }],
      });
      assert.equal(report.outcome, 'rotated');
      const order = report.stages.map((s) => s.stage);
      assert.ok(order.indexOf('revoke') < order.indexOf('deploy'), order.join(','));
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
    });
  });
});
