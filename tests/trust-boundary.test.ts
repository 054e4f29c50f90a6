// The worker acts only on its own reviewed manifests. Whoever may start a workflow, edit a
// schedule or answer an activity in the namespace cannot choose a command, a host, a policy or
// an approver, and a store another tool rotates is left alone.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateSecretCommand, PutSecretValueCommand, RotateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { sleep } from '@temporalio/activity';
import type { WorkflowHandle } from '@temporalio/client';
import { auditSettingsFromEnv, openAuditTrail } from '../lib/audit-trails';
import type { AuditRecord } from '../lib/audit';
import { fleetWorkflowId, progressQuery, rotationWorkflowId, type FleetItem, type FleetSummary, type RotationPlan, type RotationReport } from '../workflows/messages';
import { rotateFleet } from '../workflows/rotateFleet';
import { rotateSecret } from '../workflows/rotateSecret';
import type { RequestDocument } from '../lib/signed';
import { decisionFor, newKey, people, sign, validFor } from './keys';
import { canLogin, databaseFixture, failureOf, labelled, manifests, settled, postgresSpec, sm, storeVersions, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

/** Activity types the run scheduled, in order. */
/** Every activity the run asked for, local ones (their markers name the type in the clear) included. */
async function activitiesOf(handle: WorkflowHandle): Promise<string[]> {
  const history = await handle.fetchHistory();
  return history.events!.flatMap((e) => {
    if (e.activityTaskScheduledEventAttributes) return [e.activityTaskScheduledEventAttributes.activityType!.name!];
    const data = e.markerRecordedEventAttributes?.details?.data?.payloads?.[0]?.data;
    return data ? [JSON.parse(Buffer.from(data).toString('utf8')).activity_type as string] : [];
  });
}

/** A store-only secret with a file consumer: cheap, and the file shows whether anything was deployed. */
async function cheapSecret(extraConsumer: Record<string, unknown> = {}) {
  const name = uniqueId('tb-');
  const secretId = `rekey-test/${name}`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ value: uniqueId('v') }) }));
  const dir = await tempDir();
  const file = join(dir, 'app.json');
  const spec = {
    store: { type: 'aws-secrets-manager', secretId },
    generator: { type: 'random-bytes', size: 16 },
    consumers: [{ type: 'command', name: 'app', file, ...extraConsumer }],
    policy: { overlap: '0s' },
  };
  return { name, secretId, dir, file, spec };
}

/** What an attacker would answer resolveRotation with: the real hash, the policy of their choosing. */
function forgedPlan(specHash: string, approval: Partial<RotationPlan['approval']>): RotationPlan {
  return {
    specHash,
    consumers: [],
    hasTarget: true,
    targetAcceptsBoth: true,
    overlapMs: 0,
    maxParallelConsumers: 4,
    timeoutsMs: { generate: 60_000, prepare: 60_000, deploy: 60_000, verify: 60_000, revoke: 60_000, rollback: 60_000 },
    approval: { required: false, minApprovals: 1, requireSignedRequest: false, timeoutMs: 60_000, onTimeout: 'abort', escalationLimitMs: 60_000, approvers: [], ...approval },
    breakGlass: [],
    people: [],
  };
}

/** The stack's audit records of one secret. */
async function trailOf(secret: string): Promise<AuditRecord[]> {
  return (await openAuditTrail(auditSettingsFromEnv()).read()).filter((r): r is AuditRecord => typeof r !== 'string' && r.secret === secret);
}

async function untilPending(handle: WorkflowHandle, activityType: string): Promise<string> {
  for (let i = 0; i < 300; i++) {
    const pending = (await handle.describe()).raw.pendingActivities ?? [];
    const found = pending.find((a) => a.activityType?.name === activityType);
    if (found) return found.activityId!;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${activityType} was never scheduled`);
}

describe('the trust boundary', () => {
  it('a start whose input carries a spec is refused before any side effect (its command never runs, its host never hears from us)', async () => {
    const fx = await databaseFixture('single-user');
    const marker = join(await tempDir(), 'pwned');
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'single-user') });
    const before = await storeVersions(fx.secretId);
    const evil = {
      ...postgresSpec(fx, 'single-user'),
      consumers: [{ type: 'command', name: 'x', file: join(await tempDir(), 'x.json'), reload: `touch ${marker}` }],
    };
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start('rotateSecret', {
          taskQueue,
          workflowId: rotationWorkflowId(fx.id),
          args: [{ secret: fx.id, spec: evil }],
        });
        assert.match(await failureOf(handle.result()), /input\.spec: a rotation input never carries a spec/);
        assert.deepEqual(await activitiesOf(handle), [], 'nothing ran, not even a read');
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(existsSync(marker), false, 'the command in the input never ran');
    assert.deepEqual(await storeVersions(fx.secretId), before);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
  });

  it('a start naming a spec hash the worker does not have is refused before any side effect, and the refusal is audited', async () => {
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    const reviewed = await manifests({ [fx.id]: postgresSpec(fx, 'single-user', { consumers: [{ type: 'command', name: 'app', file: join(dir, 'app.json') }] }) });
    // The worker was deployed from other manifests than the ones the requester reviewed.
    const deployed = await manifests({ [fx.id]: postgresSpec(fx, 'single-user', { consumers: [{ type: 'command', name: 'app', file: join(dir, 'app.json'), reload: 'true' }] }) });
    const before = await storeVersions(fx.secretId);
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, {
          taskQueue,
          workflowId: rotationWorkflowId(fx.id),
          args: [reviewed.input(fx.id, { requestedBy: 'mallory' })],
        });
        const message = await failureOf(handle.result());
        assert.match(message, new RegExp(`${fx.id}: the manifest the worker has \\(sha256:[0-9a-f]{12}\\.\\.\\.\\) differs from the one you reviewed \\(sha256:[0-9a-f]{12}\\.\\.\\.\\); deploy the reviewed manifests to the workers or re-plan`));
        assert.ok(message.includes(deployed.set.secrets.get(fx.id)!.specHash.slice(0, 19)));
        assert.deepEqual((await activitiesOf(handle)).filter((a) => a !== 'recordAuditEvent'), ['resolveRotation']);
      },
      { manifestDirs: [deployed.dir] },
    );
    assert.deepEqual(await storeVersions(fx.secretId), before);
    assert.equal(existsSync(join(dir, 'app.json')), false);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
    const trail = openAuditTrail(auditSettingsFromEnv());
    const refused = (await trail.read()).filter((r): r is AuditRecord => typeof r !== 'string' && r.secret === fx.id);
    assert.deepEqual(refused.map((r) => [r.event, r.actor]), [['refused', 'mallory (unsigned)']]);
    assert.match(refused[0].detail ?? '', /differs from the one you reviewed/);
  });

  it('a schedule applied from other manifests than the workers have: that secret is refused (re-plan), the others rotate', async () => {
    const [changed, unchanged] = [await cheapSecret(), await cheapSecret()];
    const trusted = await manifests({ [changed.name]: changed.spec, [unchanged.name]: unchanged.spec });
    const applied: FleetItem[] = [
      [changed.name, `sha256:${'a'.repeat(64)}`], // the hash `rekey apply` saw before the manifest changed
      [unchanged.name, trusted.set.secrets.get(unchanged.name)!.specHash],
    ];
    const summary: FleetSummary = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateFleet, { taskQueue, workflowId: fleetWorkflowId(uniqueId('stale-')), args: [{ fleet: 'stale', items: applied, maxParallel: 2 }] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.deepEqual(summary.rotated, [unchanged.name]);
    assert.deepEqual(summary.failed.map((f) => f.secret), [changed.name]);
    assert.match(summary.failed[0].reason, /differs from the one you reviewed .*re-plan/);
    assert.equal((await storeVersions(changed.secretId)).length, 1, 'the refused secret was not touched');
  });

  it('the requester cannot drop the approval policy: a start by name waits for the approval the worker\'s manifest requires', async () => {
    const fx = await databaseFixture('alternating-users');
    const bob = await newKey('bob');
    const trusted = await manifests({
      [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', approval: { required: true, approvers: [{ name: 'bob', keys: [bob.publicKey] }] } } }),
    });
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start('rotateSecret', { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [{ secret: fx.id }] });
        let stage = '';
        for (let i = 0; i < 200 && stage !== 'approve'; i++) {
          stage = (await handle.query(progressQuery).catch(() => undefined))?.stage ?? '';
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(stage, 'approve');
        await handle.cancel();
        await assert.rejects(handle.result());
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal((await labelled(fx.secretId, 'AWSPENDING')), undefined, 'the cancelled rotation rolled back');
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
    // A cancelled run still leaves its closing record.
    assert.deepEqual((await trailOf(fx.id)).map((r) => r.event), ['requested', 'rolled-back']);
  });

  it("consumer commands run without the worker's environment: no AWS keys, no canary; only PATH, HOME, REKEY_* of the step and what env names", async () => {
    const canary = `canary-${uniqueId()}`;
    process.env.WORKER_ONLY_CANARY = canary;
    process.env.REKEY_TEST_PASSED = 'passed-through';
    try {
      const s = await cheapSecret({ health: 'env > "$REKEY_FILE.env"', env: ['REKEY_TEST_PASSED'] });
      const trusted = await manifests({ [s.name]: s.spec }, { env: ['REKEY_TEST_PASSED'] });
      const report: RotationReport = await withWorker(
        async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] }),
        { manifestDirs: [trusted.dir] },
      );
      assert.equal(report.outcome, 'rotated');
      const seen = new Map(
        (await readFile(`${s.file}.env`, 'utf8'))
          .split('\n')
          .filter(Boolean)
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]),
      );
      assert.equal(seen.get('REKEY_TEST_PASSED'), 'passed-through');
      assert.equal(seen.get('REKEY_VERSION_ID'), report.versions.after);
      assert.ok(seen.get('PATH'));
      for (const hidden of ['AWS_SECRET_ACCESS_KEY', 'AWS_ACCESS_KEY_ID', 'WORKER_ONLY_CANARY', 'REKEY_AUDIT_KEY', 'REKEY_CODEC_KEYRING', 'REKEY_AUDIT_DATABASE_PASSWORD_FILE']) {
        assert.equal(seen.has(hidden), false, `${hidden} leaked into a consumer command`);
      }
      assert.ok(![...seen.values()].includes(canary));
    } finally {
      delete process.env.WORKER_ONLY_CANARY;
      delete process.env.REKEY_TEST_PASSED;
    }
  });

  it('an AWSPENDING another tool wrote stops the rotation, and the store is left exactly as it was', async () => {
    const s = await cheapSecret();
    const foreign = randomUUID();
    await sm.send(new PutSecretValueCommand({ SecretId: s.secretId, ClientRequestToken: foreign, SecretString: '{"value":"theirs"}', VersionStages: ['AWSPENDING'] }));
    const before = await storeVersions(s.secretId);
    const trusted = await manifests({ [s.name]: s.spec });
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        assert.match(await failureOf(handle.result()), new RegExp(`has a pending version ${foreign} that rekey did not write; nothing was changed`));
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.deepEqual(await storeVersions(s.secretId), before);
    assert.equal(existsSync(s.file), false);
  });

  it('a secret AWS rotates itself (RotationEnabled) is refused, and the store is left as it was', async () => {
    const s = await cheapSecret();
    // moto records the rotation configuration (and starts it) even though the Lambda does not exist.
    await sm.send(new RotateSecretCommand({ SecretId: s.secretId, RotationLambdaARN: 'arn:aws:lambda:us-east-1:123456789012:function:rotate', RotationRules: { AutomaticallyAfterDays: 30 } })).catch(() => undefined);
    const before = await storeVersions(s.secretId);
    const trusted = await manifests({ [s.name]: s.spec });
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        assert.match(await failureOf(handle.result()), /AWS rotation is enabled on it .*rekey will not rotate a secret another mechanism rotates/);
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.deepEqual(await storeVersions(s.secretId), before);
  });

  it('a forged plan (approval dropped) cannot promote: the worker checks the approvals against its own manifests', async () => {
    const fx = await databaseFixture('alternating-users');
    const bob = await newKey('bob');
    const trusted = await manifests({
      [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', approval: { required: true, approvers: [{ name: 'bob', keys: [bob.publicKey] }] } } }),
    });
    const specHash = trusted.set.secrets.get(fx.id)!.specHash;
    const forged = forgedPlan(specHash, { required: false });
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        // resolveRotation is a local activity: nobody can complete it from outside the worker
        // (it is never pending on the server). The plan is still not trusted at promote.
        assert.equal((await handle.describe()).raw.pendingActivities?.some((a) => a.activityType?.name === 'resolveRotation') ?? false, false);
        return handle.result();
      },
      {
        manifestDirs: [trusted.dir],
        // The plan the workflow gets says no approval is needed: as if its answer had been forged.
        activities: (real) => ({ ...real, resolveRotation: async () => forged }),
      },
    );
    assert.equal(report.outcome, 'rolled-back');
    assert.equal(report.failure?.stage, 'promote');
    assert.match(report.failure!.message, /promote refused: 0 valid signed approval\(s\) of 1 needed/);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, report.versions.before);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
  });

  it('a forged completion of promote cannot revoke the credential everyone still uses', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s' } }) });
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        const activityId = await untilPending(handle, 'promoteVersion');
        await client.activity.complete({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, activityId }, undefined);
        assert.match(await failureOf(handle.result()), /refusing to revoke version .*: the new version .* is not current/);
      },
      { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, promoteVersion: () => sleep(120_000) }) },
    );
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    assert.equal(current.value.password, fx.initialPassword, 'the old version is still current');
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true, 'and still works');
  });

  it('a rotation runs only as rotation/<secret>: a second one under another id (which would discard the first one\'s pending version) is refused', async () => {
    const s = await cheapSecret();
    const trusted = await manifests({ [s.name]: s.spec });
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: `sideways-${s.name}`, args: [trusted.input(s.name)] });
        assert.match(await failureOf(handle.result()), new RegExp(`a rotation of ${s.name} must run as workflow rotation/${s.name}, not sideways-${s.name}`));
        assert.deepEqual(await activitiesOf(handle), []);
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal((await storeVersions(s.secretId)).length, 1);
  });

  it('a forged answer to createPendingVersion (naming an older version) is refused: nothing is prepared, promoted or rolled back to it', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s' } }) });
    // One real rotation first, so there is an AWSPREVIOUS: the leaked, revoked credential an attacker wants back.
    const first: RotationReport = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(first.outcome, 'rotated');
    const before = await storeVersions(fx.secretId);
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        const activityId = await untilPending(handle, 'createPendingVersion');
        await client.activity.complete(
          { workflowId: handle.workflowId, runId: handle.firstExecutionRunId, activityId },
          { currentVersionId: first.versions.after, pendingVersionId: first.versions.before, created: false },
        );
        // Prepare refuses the version; so does every rollback step, so nothing moves either way.
        const { report } = await settled(handle.result());
        assert.equal(report?.outcome, 'rollback-incomplete');
        assert.match(report!.failure!.message, /version .* is not the one this rotation wrote/);
      },
      { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, createPendingVersion: () => sleep(120_000) }) },
    );
    assert.deepEqual(await storeVersions(fx.secretId), before, 'no label moved');
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'the revoked credential stays revoked');
  });

  it('a forged answer to a consumer\'s verification cannot promote: promote wants the worker\'s own signed receipt for every consumer', async () => {
    const s = await cheapSecret({ health: 'exit 1' });
    const trusted = await manifests({ [s.name]: s.spec });
    const before = await storeVersions(s.secretId);
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        const activityId = await untilPending(handle, 'awaitConsumerHealthy');
        await client.activity.complete({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, activityId }, { detail: 'healthy, honest', receipt: 'Zm9yZ2Vk' });
        return handle.result();
      },
      { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, awaitConsumerHealthy: () => sleep(120_000) }) },
    );
    assert.equal(report.outcome, 'rolled-back');
    assert.equal(report.failure?.stage, 'promote');
    assert.match(report.failure!.message, /promote refused: consumer:app was not verified on .* by a rekey worker/);
    const after = await storeVersions(s.secretId);
    assert.equal(after.find((v) => v.stages.includes('AWSCURRENT'))!.versionId, before[0].versionId);
  });

  it('a signed request is used once: the same signed request presented to a second run is refused', async () => {
    const s = await cheapSecret();
    const alice = await newKey('alice');
    const trusted = await manifests({ [s.name]: s.spec }, people([alice]));
    const request = await sign(alice, {
      kind: 'rekey.dev/request',
      namespace: 'default',
      workflowId: rotationWorkflowId(s.name),
      secret: s.name,
      specHash: trusted.set.secrets.get(s.name)!.specHash,
      ...validFor(600_000),
    } satisfies RequestDocument);
    await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const first: RotationReport = await client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name, { request })] });
        assert.deepEqual([first.outcome, first.requester?.name], ['rotated', 'alice']);
        const again = client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name, { request })] });
        assert.match(await failureOf(again), /input\.request: this signed request was already used by rotation\//);
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal((await storeVersions(s.secretId)).length, 2, 'one rotation, not two');
  });

  it('requireSignedRequest: an unsigned request for such a secret is refused, so the two-person rule always knows who asked', async () => {
    const s = await cheapSecret();
    const bob = await newKey('bob');
    const trusted = await manifests({ [s.name]: { ...s.spec, policy: { overlap: '0s', approval: { required: true, approvers: ['bob'], requireSignedRequest: true } } } }, people([bob]));
    await withWorker(
      async (taskQueue) => {
        const refused = (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name, { requestedBy: 'bob' })] });
        assert.match(await failureOf(refused), new RegExp(`${s.name} requires a signed request: rekey rotate ${s.name} --key`));
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal((await storeVersions(s.secretId)).length, 1);
  });

  it('no promote without evidence: if the audit trail cannot be written, the rotation rolls back instead of going on unaudited', async () => {
    const s = await cheapSecret();
    const trusted = await manifests({ [s.name]: s.spec });
    const before = await storeVersions(s.secretId);
    // The trail's folder is a file: nothing can be recorded (the key still signs receipts).
    await writeFile(join(s.dir, 'not-a-folder'), '');
    const report: RotationReport = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] }),
      { manifestDirs: [trusted.dir], audit: { key: process.env.REKEY_AUDIT_KEY, logPath: join(s.dir, 'not-a-folder', 'audit.jsonl') } },
    );
    assert.equal(report.outcome, 'rolled-back');
    assert.match(report.failure!.message, /the audit trail could not be written; refusing to promote without evidence/);
    const after = await storeVersions(s.secretId);
    assert.equal(after.find((v) => v.stages.includes('AWSCURRENT'))!.versionId, before[0].versionId);
    assert.equal(after.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
  });

  it('the trail\'s word on promote, revoke and post-verify is the worker\'s own: forged audit results change nothing it records (and a forged head cannot kill the run)', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s' } }) });
    const rotate = (head: object) =>
      withWorker(
        async (taskQueue) => {
          const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
          return { report: (await handle.result()) as RotationReport, status: (await handle.describe()).status.name };
        },
        // Every audit write the workflow asks for "succeeds" without writing anything.
        { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, recordAuditEvent: async () => head }) },
      );
    const { report } = await rotate({ trail: 'postgres:fake', seq: 1, hash: 'f'.repeat(64) });
    assert.equal(report.outcome, 'rotated');
    const records = await trailOf(fx.id);
    assert.deepEqual(records.map((r) => `${r.event}:${r.actor}`), ['promoted:rekey', 'revoked:rekey', 'post-verified:rekey']);
    assert.equal(records[0].versions?.pending, report.versions.after);
    assert.match(records[2].detail ?? '', /old credential rejected; new credential accepted/);
    assert.equal(report.auditHead?.trail, records[2].trail, 'the forged head was not taken');

    // A head built to break the search attribute (5,000 characters) is not believed: the rotation
    // rolls back for want of evidence, and is not terminated by the server.
    const second = await rotate({ trail: `postgres:${'x'.repeat(5000)}`, seq: 1, hash: 'f'.repeat(64) });
    assert.deepEqual([second.report.outcome, second.status], ['rolled-back', 'COMPLETED']);
    assert.match(second.report.failure!.message, /the audit trail could not be written/);
  });

  it('a forged answer to revoke changes nothing: the worker never recorded a revoke, and its post-verify record says the old credential still works', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s' } }) });
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        const activityId = await untilPending(handle, 'revokeOldCredential');
        await client.activity.complete({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, activityId }, undefined);
        return handle.result();
      },
      { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, revokeOldCredential: () => sleep(120_000) }) },
    );
    assert.match(report.warnings?.join(' ') ?? '', /OLD CREDENTIAL STILL ACCEPTED/);
    const events = (await trailOf(fx.id)).map((r) => `${r.event}:${r.detail ?? ''}`);
    assert.ok(!events.some((e) => e.startsWith('revoked:')), events.join('\n'));
    assert.ok(events.some((e) => /^post-verified:OLD CREDENTIAL STILL ACCEPTED/.test(e)), events.join('\n'));
  });

  it('a forged answer to a deploy cannot promote: promote wants the worker\'s receipt that each consumer got the version', async () => {
    const s = await cheapSecret(); // no health command: "healthy" at once, so only the deploy receipt proves delivery
    const trusted = await manifests({ [s.name]: s.spec });
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        const activityId = await untilPending(handle, 'deployToConsumer');
        await client.activity.complete({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, activityId }, {});
        return handle.result();
      },
      { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, deployToConsumer: (step: { rollback?: boolean }) => (step.rollback ? real.deployToConsumer(step as never) : sleep(120_000)) }) },
    );
    assert.equal(report.outcome, 'rolled-back');
    assert.match(report.failure!.message, /promote refused: deployed:app was not verified/);
  });

  it('a forged plan naming the attacker as an approver: the attacker\'s decision is never recorded as an approval, and nothing is promoted', async () => {
    const fx = await databaseFixture('alternating-users');
    const [bob, mallory] = await Promise.all([newKey('bob'), newKey('mallory')]);
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', approval: { required: true, approvers: ['bob'] } } }) }, people([bob]));
    const specHash = trusted.set.secrets.get(fx.id)!.specHash;
    const forged = forgedPlan(specHash, { required: true, approvers: [{ name: 'bob', keys: [mallory.publicKey] }] });
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const handle = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        let progress = await handle.query(progressQuery);
        for (let i = 0; i < 200 && progress.stage !== 'approve'; i++) progress = await new Promise((r) => setTimeout(r, 100)).then(() => handle.query(progressQuery));
        // The workflow, believing the forged plan, accepts mallory's signature as "bob".
        await handle.executeUpdate('decide', { args: [await sign(mallory, decisionFor(handle, progress))] });
        return handle.result();
      },
      { manifestDirs: [trusted.dir], activities: (real) => ({ ...real, resolveRotation: async () => forged }) },
    );
    assert.equal(report.outcome, 'rolled-back');
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
    assert.deepEqual((await trailOf(fx.id)).filter((r) => r.event === 'approved' || r.event === 'promoted'), [], 'no approval by "bob" was written, nothing promoted');
  });
});
