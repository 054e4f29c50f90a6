import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { versionTokenFor } from '../activities/rotation';
import { openStore } from '../activities/stores';
import { StoreFollowingClient } from '../demo/service';
import { progressQuery, rotationWorkflowId } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { UpdateSecretVersionStageCommand } from '@aws-sdk/client-secrets-manager';
import { canLogin, databaseFixture, killAndFinish, manifests, postgresSpec, sm, spawnWorker, storeVersions, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

async function waitForStage(workflowId: string, stage: string, timeoutMs = 60_000): Promise<void> {
  const handle = (await temporalClient()).workflow.getHandle(workflowId);
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const progress = await handle.query(progressQuery).catch(() => undefined);
    if (progress?.stage === stage) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`rotation never reached stage ${stage}`);
}

describe('durability and one-at-a-time', () => {
  it('a worker killed with SIGKILL mid-deploy is replaced and the rotation completes with exactly one new version', async () => {
    const fx = await databaseFixture('alternating-users');
    const dir = await tempDir();
    const spec = postgresSpec(fx, 'alternating-users', {
      // A slow reload keeps the deploy activity in flight when the worker dies.
      consumers: [{ type: 'command', name: 'slow', file: join(dir, 'db.json'), reload: 'sleep 3' }],
    });
    const trusted = await manifests({ [fx.id]: spec });
    const taskQueue = uniqueId('rekey-crash-');
    const client = await temporalClient();
    const workflowId = rotationWorkflowId(fx.id);

    const first = spawnWorker(taskQueue, trusted.dir);
    const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId, args: [trusted.input(fx.id)] });
    await waitForStage(workflowId, 'deploy');
    await new Promise((r) => setTimeout(r, 1000)); // the 3 s reload is now running on this worker
    const report = await killAndFinish(first, taskQueue, trusted.dir, handle.result());
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.length, 2, 'one initial and exactly one new version');
    const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!;
    assert.equal(await canLogin(current.value.username, current.value.password), true);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
    const history = await handle.fetchHistory();
    const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);
    assert.ok(attempts.some((a) => (a ?? 1) > 1), 'the interrupted activity was retried on the new worker');
  });

  it('a client that always connects with the current credential sees no authentication failure during an alternating-users rotation', async () => {
    const fx = await databaseFixture('alternating-users');
    const spec = postgresSpec(fx, 'alternating-users', { policy: { overlap: '2s' } });
    const trusted = await manifests({ [fx.id]: spec });
    const traffic = new StoreFollowingClient(fx.secretId, 20);
    traffic.start();
    const report = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }),
      { manifestDirs: [trusted.dir] },
    );
    // Keep going past revoke: connections made after it must use the new credential.
    await new Promise((r) => setTimeout(r, 500));
    const seen = await traffic.stop();
    assert.equal(report.outcome, 'rotated');
    assert.ok(seen.served > 20, `client made ${seen.served} requests`);
    assert.equal(seen.authFailures, 0, seen.lastError);
    assert.equal(seen.failed, 0, seen.lastError);
  });

  it('a pending version an abandoned rekey rotation left is cleared, and the new rotation proceeds', async () => {
    const fx = await databaseFixture('single-user');
    // What a rotation that was terminated after storing its pending version leaves behind.
    const stale = versionTokenFor(`rotation/${fx.id}/terminated-run`);
    await sm.send(
      new PutSecretValueCommand({ SecretId: fx.secretId, ClientRequestToken: stale, SecretString: '{"password":"abandoned"}', VersionStages: ['AWSPENDING'] }),
    );
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'single-user') });
    const report = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report.outcome, 'rotated');
    assert.equal(report.discardedStaleVersionId, stale);
    const versions = await storeVersions(fx.secretId);
    assert.deepEqual(versions.find((v) => v.versionId === stale)!.stages, []);
    assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
  });

  it('writing the pending version twice with the same rotation token creates one version', async () => {
    const fx = await databaseFixture('single-user');
    const store = openStore({ type: 'aws-secrets-manager', secretId: fx.secretId });
    const token = versionTokenFor(`rotation/${fx.id}/run-1`);
    const first = await store.putPending(token, { password: 'first-attempt' });
    const retry = await store.putPending(token, { password: 'second-attempt' });
    assert.deepEqual([first.created, retry.created], [true, false]);
    assert.equal((await storeVersions(fx.secretId)).length, 2);
    assert.equal((await store.read(token)).password, 'first-attempt');
    assert.notEqual(versionTokenFor(`rotation/${fx.id}/run-2`), token, 'another rotation gets another token');
  });

  it('a pending version that lost its label is relabelled by a retry, not rewritten', async () => {
    const fx = await databaseFixture('single-user');
    const store = openStore({ type: 'aws-secrets-manager', secretId: fx.secretId });
    const token = versionTokenFor(`rotation/${fx.id}/run-1`);
    await store.putPending(token, { password: 'first-attempt' });
    // Someone (or something) took AWSPENDING off the version between two attempts.
    await sm.send(new UpdateSecretVersionStageCommand({ SecretId: fx.secretId, VersionStage: 'AWSPENDING', RemoveFromVersionId: token }));
    assert.deepEqual((await storeVersions(fx.secretId)).find((v) => v.versionId === token)!.stages, []);
    assert.equal((await store.putPending(token, { password: 'second-attempt' })).created, false);
    const version = (await storeVersions(fx.secretId)).find((v) => v.versionId === token)!;
    assert.deepEqual([version.stages, version.value.password], [['AWSPENDING'], 'first-attempt']);
    assert.equal((await storeVersions(fx.secretId)).length, 2);
  });

  it('a second rotation of the same secret while one runs is refused with a clear message', async () => {
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    const spec = postgresSpec(fx, 'single-user', {
      consumers: [{ type: 'command', name: 'slow', file: join(dir, 'db.json'), reload: 'sleep 2' }],
    });
    const trusted = await manifests({ [fx.id]: spec });
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        const second = client.workflow.start(rotateSecret, {
          taskQueue,
          workflowId: rotationWorkflowId(fx.id),
          workflowIdConflictPolicy: 'FAIL',
          args: [trusted.input(fx.id)],
        });
        await assert.rejects(second, { name: 'WorkflowExecutionAlreadyStartedError' });
        assert.equal((await handle.result()).outcome, 'rotated');
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal((await storeVersions(fx.secretId)).length, 2);
  });
});
