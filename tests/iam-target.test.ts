// The IAM access key target against moto's IAM and STS (the same server as the store), the
// Temporal dev server and a worker. moto's STS answers GetCallerIdentity with the user the access
// key id belongs to (so a key of another user, or a deleted key, is told apart), but it does not
// check signatures or key status: the target therefore also asks IAM that the key is active.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { GetUserPolicyCommand, TagUserCommand, UpdateAccessKeyCommand } from '@aws-sdk/client-iam';
import { REVOKE_SESSIONS_POLICY } from '../activities/targets/aws-iam-access-key';
import type { AuditRecord } from '../lib/audit';
import { auditSettingsFromEnv, openAuditTrail } from '../lib/audit-trails';
import { versionTokenFor } from '../lib/version-token';
import { emergencyWorkflowId, retireWorkflowId, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { retireCredential } from '../workflows/retireCredential';
import { newKey as newSigningKey, people, sign, validFor } from './keys';
import { rotateSecret } from '../workflows/rotateSecret';
import { workerLog } from './setup';
import { callerOf, fixture, iam, iamSpec, keysOf, newKey, newUser, tagsOf, type Key } from './iam-fixtures';
import { allText, decodedPayloadText, failureOf, killAndFinish, manifests, settled, sm, spawnWorker, startWorker, storeVersions, temporalClient, uniqueId, untilProgress, withWorker } from './helpers';

const ROOT = join(__dirname, '..');
async function rotate(secret: string, spec: object): Promise<{ report?: RotationReport; failure?: string }> {
  const trusted = await manifests({ [secret]: spec });
  return withWorker(
    async (taskQueue) => settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] })),
    { manifestDirs: [trusted.dir] },
  );
}

function checkTargets(dir: string): Promise<{ code: number; out: string }> {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'validate', '-f', dir, '--check-targets'], { cwd: ROOT }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
  );
}

const labels = async (secretId: string, stage: string) => (await storeVersions(secretId)).filter((v) => v.stages.includes(stage));

/** The store holds one current and one previous version, nothing pending; returns the current value. */
async function settledStore(secretId: string): Promise<Key> {
  const [current, previous, pending] = [await labels(secretId, 'AWSCURRENT'), await labels(secretId, 'AWSPREVIOUS'), await labels(secretId, 'AWSPENDING')];
  assert.equal(current.length, 1);
  assert.equal(previous.length, 1);
  assert.equal(pending.length, 0);
  return current[0].value as unknown as Key;
}

/**
 * A gate in front of moto: IAM and STS requests pass through unchanged unless `decide` answers
 * for IAM (a status and an XML body), drops IAM's answer after IAM acted on the request, or holds
 * the request until `meanwhile` (someone else's change) is done.
 */
async function gateInFrontOfMoto<T>(
  decide: (request: { body: string; authorization: string }) => 'pass' | 'drop-answer' | 'hold-for' | { status: number; xml: string },
  work: (endpoint: string) => Promise<T>,
  meanwhile: () => Promise<void> = async () => undefined,
): Promise<T> {
  const upstream = new URL(process.env.AWS_ENDPOINT_URL!);
  const gate: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      const verdict = decide({ body: body.toString(), authorization: String(req.headers.authorization ?? '') });
      if (verdict === 'hold-for') await meanwhile();
      if (typeof verdict === 'object') {
        res.writeHead(verdict.status, { 'content-type': 'text/xml' });
        res.end(verdict.xml);
        return;
      }
      const forward = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        if (verdict === 'drop-answer') {
          up.resume();
          up.on('end', () => res.destroy());
          return;
        }
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      forward.on('error', () => res.destroy());
      forward.end(body);
    });
  });
  await new Promise<void>((r) => gate.listen(0, '127.0.0.1', r));
  try {
    return await work(`http://127.0.0.1:${(gate.address() as { port: number }).port}`);
  } finally {
    gate.close();
  }
}

describe('the IAM access key target', () => {
  it('rotates: the new key signs in as the user, the old one is deactivated and, after deleteAfter, deleted by its retire timer; no secret key in history or logs', async () => {
    const fx = await fixture();
    const logStart = workerLog.length;
    const trusted = await manifests({ [fx.id]: iamSpec(fx, { deleteAfter: '2s' }) });
    const client = await temporalClient();
    const { first, retired } = await withWorker(
      async (taskQueue) => {
        const first = await settled(client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }));
        assert.equal(first.report?.outcome, 'rotated', JSON.stringify(first.report?.failure ?? first.failure));
        // Right after the rotation the old key is only inactive: reactivating it is the way back.
        assert.deepEqual((await keysOf(fx.user)).find((k) => k.id === fx.initial.accessKeyId)?.status, 'Inactive');
        assert.match((await tagsOf(fx.user))[fx.initial.accessKeyId], /^rekey \S+ \S+ inactive since \d{4}-/);
        const [previous] = await labels(fx.secretId, 'AWSPREVIOUS');
        const retired = await client.workflow.getHandle(retireWorkflowId(fx.id, previous.versionId)).result();
        return { first, retired };
      },
      { manifestDirs: [trusted.dir] },
    );
    const next = await settledStore(fx.secretId);
    assert.notEqual(next.accessKeyId, fx.initial.accessKeyId);
    assert.match(await callerOf(next) ?? '', new RegExp(`:user/${fx.user}$`), 'the new key is the user');
    assert.match(retired, new RegExp(`deleted access key ${fx.initial.accessKeyId}`));
    assert.deepEqual(await keysOf(fx.user), [{ id: next.accessKeyId, status: 'Active' }], 'the retire timer deleted the old key');
    assert.equal((await tagsOf(fx.user))[fx.initial.accessKeyId], undefined, 'the deleted key lost its label');
    assert.equal(JSON.parse(await readFile(fx.file, 'utf8')).accessKeyId, next.accessKeyId, 'the consumer got the new key');
    assert.match(first.report!.postVerify!.detail, /old credential rejected; new credential accepted/);
    const trail = (await openAuditTrail(auditSettingsFromEnv()).read()).filter((r): r is AuditRecord => typeof r !== 'string' && r.secret === fx.id);
    assert.ok(trail.some((r) => r.event === 'retired' && r.detail?.includes(fx.initial.accessKeyId)), 'the deletion is in the audit trail');

    // No secret access key (the user's, old or new, or the admin's) anywhere Temporal or the log keeps things.
    const secrets = [fx.initial, next, fx.adminKey].map((k) => k.secretAccessKey);
    let history = '';
    let runs = 0;
    for await (const run of client.workflow.list({ query: `WorkflowId = '${rotationWorkflowId(fx.id)}' OR WorkflowId = '${retireWorkflowId(fx.id, trail.find((r) => r.event === 'retired')!.versions!.previous!)}'` })) {
      const raw = await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory();
      history += `${allText(raw)}\n${await decodedPayloadText(raw)}\n`;
      runs++;
    }
    assert.equal(runs, 2, 'the rotation and its retire run are scanned');
    assert.ok(history.includes(`deleted access key ${fx.initial.accessKeyId}`), 'the scan sees decoded history (the retire result)');
    const log = allText(workerLog.slice(logStart));
    const reports = JSON.stringify([first, retired]);
    for (const secret of secrets) {
      assert.ok(!history.includes(secret), 'a secret access key is in the workflow history');
      assert.ok(!log.includes(secret), 'a secret access key is in the worker log');
      assert.ok(!reports.includes(secret), 'a secret access key is in a report or failure');
    }
  });

  it('the retire timer: a run started early only waits; one that failed before does not block the real one; another id, another version or a forged revoke is refused; a reactivated key is left', async () => {
    const fx = await fixture();
    const trusted = await manifests({ [fx.id]: iamSpec(fx, { deleteAfter: '3s' }) });
    const client = await temporalClient();
    const specHash = trusted.input(fx.id).specHash!;
    await withWorker(
      async (taskQueue) => {
        const [initial] = await labels(fx.secretId, 'AWSCURRENT');
        // Started by someone before the rotation, for the version that is current: refused, and the run failed.
        const early = { secret: fx.id, specHash, versionId: initial.versionId, revokedBy: `rotation/${fx.id}/forged` };
        assert.match(await failureOf(client.workflow.execute(retireCredential, { taskQueue, workflowId: retireWorkflowId(fx.id, initial.versionId), args: [early] })), /no record of rotation\/\S+\/forged revoking it/);
        const rotated = await settled(client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }));
        assert.equal(rotated.report?.outcome, 'rotated', JSON.stringify(rotated));
        const timer = client.workflow.getHandle(retireWorkflowId(fx.id, initial.versionId));
        const { runId } = await timer.describe();
        // A label saying the key was deactivated long ago changes nothing: the worker's record of the revoke decides.
        await iam.send(new TagUserCommand({ UserName: fx.user, Tags: [{ Key: fx.initial.accessKeyId, Value: `rekey ${fx.id} ${initial.versionId} inactive since 2000-01-01T00:00:00.000Z` }] }));
        assert.equal((await keysOf(fx.user)).length, 2, 'not deleted before deleteAfter');
        // A person reactivates the old key (a rollback) before the timer fires: it is theirs now.
        await iam.send(new UpdateAccessKeyCommand({ UserName: fx.user, AccessKeyId: fx.initial.accessKeyId, Status: 'Active' }));
        assert.match(await failureOf(client.workflow.getHandle(retireWorkflowId(fx.id, initial.versionId), runId).result()), new RegExp(`the access key ${fx.initial.accessKeyId} of ${fx.user} is active again`));
        // Under another id, for the current version, or naming a rotation that did not revoke it: refused.
        const [current] = await labels(fx.secretId, 'AWSCURRENT');
        const input = { ...early, revokedBy: `${rotationWorkflowId(fx.id)}/${(await client.workflow.getHandle(rotationWorkflowId(fx.id)).describe()).runId}` };
        assert.match(await failureOf(client.workflow.execute(retireCredential, { taskQueue, workflowId: `retire/${fx.id}/x`, args: [input] })), new RegExp(`must run as workflow retire/${fx.id}/${initial.versionId}`));
        const onCurrent = { ...input, versionId: current.versionId };
        assert.match(await failureOf(client.workflow.execute(retireCredential, { taskQueue, workflowId: retireWorkflowId(fx.id, current.versionId), args: [onCurrent] })), /no record of .* revoking it|current or pending/);
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.deepEqual((await keysOf(fx.user)).map((k) => k.status), ['Active', 'Active'], 'nothing was deleted');

    // deleteAfter 7d: a run started again at once, with a label claiming the key was revoked long
    // ago, asks the worker, is told when the key is due, and waits; the key stays.
    const slow = await fixture();
    const slowTrusted = await manifests({ [slow.id]: iamSpec(slow, { deleteAfter: '7d' }) });
    await withWorker(
      async (taskQueue) => {
        const [initial] = await labels(slow.secretId, 'AWSCURRENT');
        assert.equal((await settled(client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(slow.id), args: [slowTrusted.input(slow.id)] }))).report?.outcome, 'rotated');
        const revokedBy = `${rotationWorkflowId(slow.id)}/${(await client.workflow.getHandle(rotationWorkflowId(slow.id)).describe()).runId}`;
        const id = retireWorkflowId(slow.id, initial.versionId);
        await client.workflow.getHandle(id).terminate('replaced by an early start');
        await iam.send(new TagUserCommand({ UserName: slow.user, Tags: [{ Key: slow.initial.accessKeyId, Value: `rekey ${slow.id} ${initial.versionId} inactive since 2000-01-01T00:00:00.000Z` }] }));
        const again = await client.workflow.start(retireCredential, { taskQueue, workflowId: id, args: [{ secret: slow.id, specHash: slowTrusted.input(slow.id).specHash!, versionId: initial.versionId, revokedBy }] });
        const waiting = async () => (await again.fetchHistory()).events!.some((e) => e.timerStartedEventAttributes);
        for (let i = 0; i < 100 && !(await waiting()); i++) await new Promise((r) => setTimeout(r, 100));
        assert.ok(await waiting(), 'the early run waits on a timer');
        assert.equal((await again.describe()).status.name, 'RUNNING');
        assert.ok((await keysOf(slow.user)).some((k) => k.id === slow.initial.accessKeyId), 'the key is not deleted early');
        await again.terminate('test over');
      },
      { manifestDirs: [slowTrusted.dir] },
    );
  });

  it('a lost CreateAccessKey answer: IAM is asked once per attempt, and the retry deletes the key it never saw before minting one', async () => {
    // A gate in front of moto passes the first CreateAccessKey through and then drops the answer,
    // as a reset connection would: the key exists, and nobody but IAM saw its secret.
    const fx = await fixture();
    let creates = 0;
    const isCreate = (body: string) => /(^|&)Action=CreateAccessKey(&|$)/.test(body);
    await gateInFrontOfMoto(
      ({ body }) => (isCreate(body) && ++creates === 1 ? 'drop-answer' : 'pass'),
      async (endpoint) => {
        const logStart = workerLog.length;
        const { report, failure } = await rotate(fx.id, iamSpec(fx, { endpoint }));
        assert.equal(report?.outcome, 'rotated', JSON.stringify(report?.failure ?? failure));
        assert.equal(creates, 2, 'the SDK did not ask IAM again by itself; the activity retry asked once more');
        const next = await settledStore(fx.secretId);
        assert.deepEqual((await keysOf(fx.user)).map((k) => `${k.id}:${k.status}`).sort(), [`${fx.initial.accessKeyId}:Inactive`, `${next.accessKeyId}:Active`].sort(), 'exactly one new key; the lost one is gone');
        assert.match(allText(workerLog.slice(logStart)), /made for an earlier attempt of this issue whose answer was lost/);
      },
    );
  });

  it("a person's key that took the slot while rekey asked (IAM: LimitExceeded) is never taken for a lost answer", async () => {
    const fx = await fixture();
    let person: { accessKeyId: string } | undefined;
    await gateInFrontOfMoto(
      ({ body }) => {
        // Just before rekey's request reaches IAM, a person creates a key on the same user.
        if (/(^|&)Action=CreateAccessKey(&|$)/.test(body) && !person) return 'hold-for';
        return 'pass';
      },
      async (endpoint) => {
        const { failure } = await rotate(fx.id, iamSpec(fx, { endpoint }));
        assert.match(failure ?? '', new RegExp(`already has two access keys: the stored ${fx.initial.accessKeyId} and ${person!.accessKeyId} .*nothing was changed`));
        assert.deepEqual((await keysOf(fx.user)).map((k) => k.id).sort(), [fx.initial.accessKeyId, person!.accessKeyId].sort(), "the person's key is still there");
      },
      async () => {
        person = await newKey(fx.user);
      },
    );
  });

  it('within deleteAfter a rotation is refused (the previous key is the rollback); an emergency deletes it first and, if asked, denies the sessions the old key opened', async () => {
    const oncall = await newSigningKey('oncall');
    const fx = await fixture();
    const spec = iamSpec(fx, { deleteAfter: '7d', denySessionsOnEmergency: true });
    const trusted = await manifests({ [fx.id]: spec }, people([oncall], ['oncall']));
    const client = await temporalClient();
    const logStart = workerLog.length;
    const before = new Date();
    const second = await withWorker(
      async (taskQueue) => {
        const rotated = await settled(client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }));
        assert.equal(rotated.report?.outcome, 'rotated', JSON.stringify(rotated));
        const second = await settledStore(fx.secretId);
        // The next rotation would need the previous key's slot: refused before any change, naming why.
        const refused = await settled(client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }));
        assert.match(refused.failure ?? '', new RegExp(`the stored ${second.accessKeyId} and ${fx.initial.accessKeyId} .*kept for rollback until its retire timer deletes it \\(deleteAfter 7d\\); an emergency rotation deletes it first; nothing was changed`));
        assert.equal((await keysOf(fx.user)).length, 2);
        const authorization = await sign(oncall, { kind: 'rekey.dev/break-glass', namespace: 'default', secret: fx.id, revokeFirst: false, reason: 'key in a public repo', ...validFor(600_000) });
        const report = await client.workflow.execute(emergencyRevoke, { taskQueue, workflowId: emergencyWorkflowId(fx.id), args: [{ secret: fx.id, reason: 'key in a public repo', authorization }] });
        assert.equal(report.outcome, 'rotated', JSON.stringify(report));
        return second;
      },
      { manifestDirs: [trusted.dir] },
    );
    const third = await settledStore(fx.secretId);
    assert.deepEqual((await keysOf(fx.user)).map((k) => `${k.id}:${k.status}`).sort(), [`${second.accessKeyId}:Inactive`, `${third.accessKeyId}:Active`].sort(), 'the emergency deleted the first key to make room');
    assert.match(allText(workerLog.slice(logStart)), new RegExp(`${fx.initial.accessKeyId}[\\s\\S]*deleted before deleteAfter for an emergency`));
    const { PolicyDocument } = await iam.send(new GetUserPolicyCommand({ UserName: fx.user, PolicyName: REVOKE_SESSIONS_POLICY }));
    const statement = JSON.parse(decodeURIComponent(PolicyDocument!)).Statement[0];
    assert.equal(statement.Effect, 'Deny');
    assert.equal(statement.Action, '*');
    const cutoff = Date.parse(statement.Condition.DateLessThan['aws:TokenIssueTime']);
    assert.ok(cutoff >= before.getTime() && cutoff <= Date.now(), 'sessions issued before the revoke are denied, later ones are not');
    for await (const run of client.workflow.list({ query: `WorkflowId STARTS_WITH 'retire/${fx.id}/' AND ExecutionStatus = 'Running'` })) await client.workflow.getHandle(run.workflowId, run.runId).terminate('test over');

    // Without denySessionsOnEmergency no policy is written, and the report says what is left.
    const quiet = await fixture();
    const quietTrusted = await manifests({ [quiet.id]: iamSpec(quiet) }, people([oncall], ['oncall']));
    const authorization = await sign(oncall, { kind: 'rekey.dev/break-glass', namespace: 'default', secret: quiet.id, revokeFirst: false, reason: 'drill', ...validFor(600_000) });
    const quietReport = await withWorker(
      async (taskQueue) => client.workflow.execute(emergencyRevoke, { taskQueue, workflowId: emergencyWorkflowId(quiet.id), args: [{ secret: quiet.id, reason: 'drill', authorization }] }),
      { manifestDirs: [quietTrusted.dir] },
    );
    assert.match(JSON.stringify(quietReport.warnings), /sessions opened with the old key \(sts:GetSessionToken\) stay valid until they expire; set denySessionsOnEmergency/);
    await assert.rejects(iam.send(new GetUserPolicyCommand({ UserName: quiet.user, PolicyName: REVOKE_SESSIONS_POLICY })), /NoSuchEntity|cannot be found/);
  });

  it('a consumer that fails verify rolls back: the new key is deleted, the old one is still active and current (admin: the worker\'s own identity)', async () => {
    const fx = await fixture();
    const spec = iamSpec(fx, { admin: { workerIdentity: true } }, { consumers: [{ type: 'command', name: 'broken', file: fx.file, health: 'exit 1' }], policy: { overlap: '0s', timeouts: { verify: '1s' } } });
    const { report } = await rotate(fx.id, spec);
    assert.equal(report?.outcome, 'rolled-back', JSON.stringify(report));
    assert.deepEqual(await keysOf(fx.user), [{ id: fx.initial.accessKeyId, status: 'Active' }]);
    assert.deepEqual(Object.keys(await tagsOf(fx.user)), [], 'no label left behind');
    const current = await labels(fx.secretId, 'AWSCURRENT');
    assert.equal(current[0].value.accessKeyId, fx.initial.accessKeyId);
    assert.equal((await labels(fx.secretId, 'AWSPENDING')).length, 0);
    assert.equal(JSON.parse(await readFile(fx.file, 'utf8')).accessKeyId, fx.initial.accessKeyId, 'the consumer is back on the old key');
  });

  it('a worker killed with SIGKILL mid-deploy: the rotation completes with exactly one new key', async () => {
    const fx = await fixture();
    const spec = iamSpec(fx, {}, { consumers: [{ type: 'command', name: 'slow', file: fx.file, reload: 'sleep 3' }] });
    const trusted = await manifests({ [fx.id]: spec });
    const taskQueue = uniqueId('rekey-iam-crash-');
    const first = spawnWorker(taskQueue, trusted.dir);
    const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
    await untilProgress(handle, (p) => p.stage === 'deploy');
    await new Promise((r) => setTimeout(r, 1000)); // the 3 s reload runs on the first worker
    const report = await killAndFinish(first, taskQueue, trusted.dir, handle.result());
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const next = await settledStore(fx.secretId);
    assert.equal((await storeVersions(fx.secretId)).length, 2, 'one initial and exactly one new version');
    const keys = await keysOf(fx.user);
    assert.equal(keys.length, 2, JSON.stringify(keys));
    assert.deepEqual(keys.map((k) => `${k.id}:${k.status}`).sort(), [`${fx.initial.accessKeyId}:Inactive`, `${next.accessKeyId}:Active`].sort());
    const history = await handle.fetchHistory();
    assert.ok(history.events!.some((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1), 'the interrupted activity was retried');
  });

  it('a stored key of another user, or a user whose two keys are neither the stored one, is refused before any change, naming it; --check-targets says so', async () => {
    const fx = await fixture();
    const other = await newUser(`rekey-other-${fx.id}`);
    const foreign = await newKey(other);
    await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify(foreign), VersionStages: ['AWSCURRENT'] }));
    const spec = iamSpec(fx);
    const { failure } = await rotate(fx.id, spec);
    assert.match(failure ?? '', new RegExp(`the stored access key ${foreign.accessKeyId} is not a key of IAM user ${fx.user} .*; nothing was changed`));
    assert.deepEqual(await keysOf(other), [{ id: foreign.accessKeyId, status: 'Active' }], "the other user's key is untouched");
    assert.deepEqual(await keysOf(fx.user), [{ id: fx.initial.accessKeyId, status: 'Active' }]);
    assert.equal((await labels(fx.secretId, 'AWSPENDING')).length, 0);
    const checked = await checkTargets((await manifests({ [fx.id]: spec })).dir);
    assert.equal(checked.code, 1, checked.out);
    assert.match(checked.out, new RegExp(`the stored access key ${foreign.accessKeyId} is not a key of IAM user ${fx.user}`));

    // The user has two keys now, neither of them the stored one.
    const second = await newKey(fx.user);
    const again = await rotate(fx.id, spec);
    assert.match(again.failure ?? '', new RegExp(`the stored access key ${foreign.accessKeyId} is not a key of IAM user ${fx.user} \\(the user has .*${second.accessKeyId}`));
    assert.equal((await keysOf(fx.user)).length, 2);

    // The stored key is the user's, but the other slot holds a key rekey did not make: refused, named, left alone.
    await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify(fx.initial), VersionStages: ['AWSCURRENT'] }));
    const third = await rotate(fx.id, spec);
    assert.match(third.failure ?? '', new RegExp(`already has two access keys: the stored ${fx.initial.accessKeyId} and ${second.accessKeyId} \\(active, .*not labelled by rekey\\).*nothing was changed`));
    assert.deepEqual((await keysOf(fx.user)).map((k) => k.status), ['Active', 'Active']);
    const ready = await checkTargets((await manifests({ [fx.id]: spec })).dir);
    assert.match(ready.out, new RegExp(`has a second key ${second.accessKeyId}`));
  });

  it("a label someone else wrote on the user (iam:TagUser) does not make rekey delete a key the store never held", async () => {
    const fx = await fixture();
    const human = await newKey(fx.user);
    const spec = iamSpec(fx);
    // A person's active key, labelled as if an interrupted rekey rotation had minted it.
    await iam.send(new TagUserCommand({ UserName: fx.user, Tags: [{ Key: human.accessKeyId, Value: `rekey ${fx.id} ${versionTokenFor(`rotation/${fx.id}/forged`)}` }] }));
    const first = await rotate(fx.id, spec);
    assert.match(first.failure ?? '', new RegExp(`already has two access keys: the stored ${fx.initial.accessKeyId} and ${human.accessKeyId} .*nothing was changed`));
    assert.deepEqual((await keysOf(fx.user)).map((k) => k.status), ['Active', 'Active'], "the person's key is still there and active");

    // Inactive, and labelled with a real version of the secret and a long-past deactivation: still not rekey's to delete.
    const [stored] = await labels(fx.secretId, 'AWSCURRENT');
    await iam.send(new UpdateAccessKeyCommand({ UserName: fx.user, AccessKeyId: human.accessKeyId, Status: 'Inactive' }));
    await iam.send(new TagUserCommand({ UserName: fx.user, Tags: [{ Key: human.accessKeyId, Value: `rekey ${fx.id} ${stored.versionId} inactive since 2000-01-01T00:00:00.000Z` }] }));
    const second = await rotate(fx.id, spec);
    assert.match(second.failure ?? '', new RegExp(`the stored ${fx.initial.accessKeyId} and ${human.accessKeyId} \\(inactive`));
    assert.ok((await keysOf(fx.user)).some((k) => k.id === human.accessKeyId), "the person's inactive key was not deleted");
  });

  it("a label naming this very run's version (its id derives from the run id, which is public) does not make rekey delete a person's key", async () => {
    const fx = await fixture();
    const human = await newKey(fx.user);
    const trusted = await manifests({ [fx.id]: iamSpec(fx) });
    const taskQueue = uniqueId('rekey-iam-');
    // Started with no worker yet: the attacker reads the run id and labels the person's key before generate runs.
    const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
    const token = versionTokenFor(`${handle.workflowId}/${handle.firstExecutionRunId}`);
    await iam.send(new TagUserCommand({ UserName: fx.user, Tags: [{ Key: human.accessKeyId, Value: `rekey ${fx.id} ${token}` }] }));
    const worker = await startWorker(taskQueue, { manifestDirs: [trusted.dir] });
    const failure = await worker.runUntil(failureOf(handle.result()));
    assert.match(failure, new RegExp(`already has two access keys: the stored ${fx.initial.accessKeyId} and ${human.accessKeyId}`));
    assert.deepEqual((await keysOf(fx.user)).map((k) => k.id).sort(), [fx.initial.accessKeyId, human.accessKeyId].sort(), "the person's key is still there");
  });

  it('an admin that is the rotated user itself is refused before any change', async () => {
    const fx = await fixture();
    const own = await newKey(fx.user);
    await sm.send(new PutSecretValueCommand({ SecretId: fx.adminSecretId, SecretString: JSON.stringify(own) }));
    const { failure } = await rotate(fx.id, iamSpec(fx));
    assert.match(failure ?? '', new RegExp(`the admin credential is IAM user ${fx.user} itself`));
    assert.equal((await keysOf(fx.user)).length, 2);
  });

  it('an admin without iam:CreateAccessKey is refused before any change, naming the permission', async () => {
    // moto enforces IAM policies only for the whole server at once (it would deny every other test
    // running against it), so the admin's lack of one permission is played by a gate in front of
    // moto that answers CreateAccessKey signed with the admin's key as IAM does (403 AccessDenied)
    // and passes every other request through unchanged.
    const fx = await fixture();
    const denied = `<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/${fx.admin} is not authorized to perform: iam:CreateAccessKey on resource: user ${fx.user}</Message></Error><RequestId>gate</RequestId></ErrorResponse>`;
    await gateInFrontOfMoto(
      ({ body, authorization }) => (authorization.includes(`Credential=${fx.adminKey.accessKeyId}/`) && /(^|&)Action=CreateAccessKey(&|$)/.test(body) ? { status: 403, xml: denied } : 'pass'),
      async (endpoint) => {
        const { failure } = await rotate(fx.id, iamSpec(fx, { endpoint }));
        assert.match(failure ?? '', new RegExp(`the admin credential may not iam:CreateAccessKey for IAM user ${fx.user} \\(AWS said AccessDenied\\)`));
        assert.deepEqual(await keysOf(fx.user), [{ id: fx.initial.accessKeyId, status: 'Active' }]);
        assert.deepEqual(await tagsOf(fx.user), {});
        assert.equal((await labels(fx.secretId, 'AWSPENDING')).length, 0);
      },
    );
  });

  it('manifests: no generator (IAM mints the key), an admin that is the secret itself is refused', async () => {
    const fx = await fixture();
    await assert.rejects(manifests({ [fx.id]: { ...iamSpec(fx), generator: { type: 'password' } } }), /spec\.generator: target aws-iam-access-key mints the credential itself: remove generator/);
    await assert.rejects(manifests({ [fx.id]: iamSpec(fx, { admin: { store: { type: 'aws-secrets-manager', secretId: fx.secretId } } }) }), /spec\.target\.admin\.store: is the secret's own store/);
    await assert.rejects(manifests({ [fx.id]: { store: { type: 'aws-secrets-manager', secretId: fx.secretId } } }), /spec\.generator: is required/);
    await manifests({ [fx.id]: iamSpec(fx, { admin: { workerIdentity: true } }) });
  });
});
