import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BreakGlassDocument } from '../lib/signed';
import { emergencyWorkflowId, progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { rotateSecret } from '../workflows/rotateSecret';
import { newKey, people, sign, validFor, type TestKey } from './keys';
import { canLogin, databaseFixture, failureOf, manifests, postgresSpec, storeVersions, tempDir, temporalClient, withWorker, type DatabaseFixture } from './helpers';

const ROOT = join(__dirname, '..');
let oncall: TestKey, bob: TestKey;

function breakGlass(secret: string, revokeFirst = false, change: Partial<BreakGlassDocument> = {}): BreakGlassDocument {
  return { kind: 'rekey.dev/break-glass', namespace: 'default', secret, revokeFirst, reason: 'key posted in a public repo', ...validFor(600_000), ...change };
}

/** A secret that normally needs bob's approval; oncall holds the break-glass key. */
async function guarded(fx: DatabaseFixture, spec: Record<string, unknown>) {
  return manifests({ [fx.id]: spec }, people([oncall, bob], ['oncall']));
}

describe('emergency revocation', () => {
  before(async () => {
    [oncall, bob] = await Promise.all([newKey('oncall'), newKey('bob')]);
  });

  it('rekey revoke --emergency --key: on a break-glass signature, skips approval and overlap; the old credential is rejected, time-to-revoke is reported', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await guarded(fx, postgresSpec(fx, 'alternating-users', { policy: { overlap: '1h', approval: { required: true, approvers: ['bob'] } } }));
    const result = await withWorker(
      (taskQueue) =>
        promisify(execFile)(
          process.execPath,
          ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'revoke', fx.id, '--emergency', '--reason', 'key posted in a public repo', '--key', oncall.path, '-f', trusted.dir],
          { cwd: ROOT, env: { ...process.env, REKEY_TASK_QUEUE: taskQueue } },
        ),
      { manifestDirs: [trusted.dir] },
    );
    assert.match(result.stdout, /EMERGENCY rotation of .*: ROTATED/);
    assert.match(result.stdout, /time to revoke: \d/);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'old credential rejected');
    const current = (await storeVersions(fx.secretId)).find((v) => v.stages.includes('AWSCURRENT'))!;
    assert.equal(await canLogin(current.value.username, current.value.password), true);
  });

  it('without a break-glass signature nothing happens: unsigned, signed by an approver, or for another secret; the rotation in flight is not cancelled', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await guarded(fx, postgresSpec(fx, 'alternating-users', { policy: { approval: { required: true, approvers: ['bob'] } } }));
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const normal = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        for (let i = 0; i < 200 && (await normal.query(progressQuery)).stage !== 'approve'; i++) await new Promise((r) => setTimeout(r, 100));
        const attempt = async (authorization: unknown, id = emergencyWorkflowId(fx.id)) =>
          failureOf(client.workflow.execute(emergencyRevoke, { taskQueue, workflowId: id, args: [{ secret: fx.id, reason: 'leak', authorization } as never] }));
        assert.match(await attempt(undefined), /input\.authorization: an emergency rotation needs a break-glass signature/);
        assert.match(await attempt({ document: JSON.stringify(breakGlass(fx.id)), signature: '' }), /unsigned: signature is missing/);
        assert.match(await attempt(await sign(bob, breakGlass(fx.id))), /input\.emergency: signed by a key that is not allowed here/);
        assert.match(await attempt(await sign(oncall, breakGlass('some-other-secret'))), /input\.emergency: signed for secret "some-other-secret"/);
        // Straight at rotateSecret: `emergency: {}` (what anyone could type) skips nothing.
        const direct = await client.workflow.start('rotateSecret', { taskQueue, workflowId: `direct-${fx.id}`, args: [{ secret: fx.id, emergency: {} }] });
        assert.match(await failureOf(direct.result()), /input\.emergency\.document: expected text/);

        assert.equal((await normal.describe()).status.name, 'RUNNING', 'the rotation in flight was not cancelled');
        assert.equal((await normal.query(progressQuery)).stage, 'approve');
        await normal.cancel();
        await assert.rejects(normal.result());
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
  });

  it('supersedes a normal rotation in flight: it is cancelled and rolled back cleanly, then the emergency rotation runs', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await guarded(fx, postgresSpec(fx, 'alternating-users', { policy: { approval: { required: true, approvers: ['bob'] } } }));
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const normal = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id, { requestedBy: 'alice' })] });
        for (let i = 0; i < 200 && (await normal.query(progressQuery)).stage !== 'approve'; i++) await new Promise((r) => setTimeout(r, 100));
        const supersededPending = (await normal.query(progressQuery)).versions.pending!;

        const authorization = await sign(oncall, breakGlass(fx.id));
        const report: RotationReport = await client.workflow.execute(emergencyRevoke, {
          taskQueue,
          workflowId: emergencyWorkflowId(fx.id),
          args: [{ secret: fx.id, requestedBy: 'oncall', reason: 'leak', authorization }],
        });
        assert.equal(report.outcome, 'rotated');
        assert.equal(report.emergency, true);
        assert.ok(report.revokedAt);

        // A break-glass authorisation is used once: replayed (it is in the audit trail and the input), it is refused.
        const replayed = client.workflow.execute(emergencyRevoke, { taskQueue, workflowId: emergencyWorkflowId(fx.id), args: [{ secret: fx.id, reason: 'again', authorization }] });
        assert.match(await failureOf(replayed), /input\.emergency: this break-glass authorisation was already used by rotation\//);
        const direct = client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id, { emergency: authorization })] });
        assert.match(await failureOf(direct), /input\.emergency: this signed break-glass authorisation was already used by rotation\//);

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
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('--revoke-first (in the signed document) kills the old credential before consumers get the new one, and still completes', async () => {
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    const trusted = await guarded(fx, postgresSpec(fx, 'single-user', { consumers: [{ type: 'command', name: 'app', file: join(dir, 'db.json') }] }));
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const report: RotationReport = await client.workflow.execute(emergencyRevoke, {
          taskQueue,
          workflowId: emergencyWorkflowId(fx.id),
          args: [{ secret: fx.id, requestedBy: 'oncall', reason: 'leak', authorization: await sign(oncall, breakGlass(fx.id, true)) }],
        });
        assert.equal(report.outcome, 'rotated');
        const order = report.stages.map((s) => s.stage);
        assert.ok(order.indexOf('revoke') < order.indexOf('deploy'), order.join(','));
        assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('cancelled after a revoke-first, the emergency rotation goes forward: the leaked credential is never restored', async () => {
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    // A slow consumer keeps the rotation in deploy, after the old credential was revoked.
    const trusted = await guarded(fx, postgresSpec(fx, 'single-user', { consumers: [{ type: 'command', name: 'app', file: join(dir, 'db.json'), reload: 'sleep 3' }] }));
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const authorization = await sign(oncall, breakGlass(fx.id, true));
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id, { emergency: authorization })] });
        for (let i = 0; i < 200 && (await handle.query(progressQuery)).stage !== 'deploy'; i++) await new Promise((r) => setTimeout(r, 100));
        await handle.cancel();
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rotated');
        assert.match(report.warnings?.join(' ') ?? '', /cancelled after the old credential was revoked; finishing/);
        assert.ok(!report.stages.some((st) => st.stage === 'rollback'));
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'the leaked credential stays dead');
  });
});
