import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { auditSettingsFromEnv, openAuditTrail } from '../lib/audit-trails';
import { rotationWorkflowId } from '../workflows/messages';
import { newKey, people } from './keys';
import { workerLog } from './setup';
import { allText, databaseFixture, decodedPayloadText, manifests, postgresSpec, stack, storeVersions, tempDir, temporalClient, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

describe('secret values never leave the store', () => {
  it('no generated or admin password appears in history, the worker log, the audit log or any CLI output of an approved rotation', async () => {
    const fx = await databaseFixture('alternating-users');
    const [alice, bob] = await Promise.all([newKey('alice'), newKey('bob')]);
    const dir = await tempDir();
    const trusted = await manifests(
      {
        [fx.id]: postgresSpec(fx, 'alternating-users', {
          consumers: [{ type: 'command', name: 'app', file: join(dir, 'app.json'), health: 'cat "$REKEY_FILE"; exit 0' }], // prints the value: must not reach any log
          policy: { overlap: '0s', approval: { required: true, approvers: ['bob'] } },
        }),
      },
      people([alice, bob]),
    );

    const logStart = workerLog.length;
    const cli = (taskQueue: string, ...args: string[]) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], {
        cwd: ROOT,
        env: { ...process.env, REKEY_TASK_QUEUE: taskQueue },
      }).then(
        (r) => ({ code: 0, out: r.stdout + r.stderr }),
        (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
      );
    const { cliOutput, code } = await withWorker(
      async (taskQueue) => {
        // The whole path a person takes: rotate (signed), see it pending, approve (signed), follow, audit.
        const rotating = cli(taskQueue, 'rotate', fx.id, '-f', trusted.dir, '--wait', '--reason', 'leak scan', '--key', alice.path);
        let pending = { code: 0, out: '' };
        for (let i = 0; i < 30 && !pending.out.includes(fx.id); i++) pending = await cli(taskQueue, 'pending');
        const approved = await cli(taskQueue, 'approve', fx.id, '--key', bob.path, '--comment', 'checked', '-f', trusted.dir);
        const rotated = await rotating;
        const outputs = [rotated, pending, approved, await cli(taskQueue, 'status', fx.id), await cli(taskQueue, 'audit', fx.id), await cli(taskQueue, 'audit', 'verify')];
        return { cliOutput: outputs.map((o) => o.out).join('\n'), code: Math.max(...outputs.map((o) => o.code)) };
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(code, 0, cliOutput);
    assert.match(cliOutput, /ROTATED/);
    assert.match(cliOutput, /approved by bob/);
    assert.match(cliOutput, /requested by alice \(signed, SHA256:/);
    assert.match(cliOutput, /audit trail intact/);
    const trail = openAuditTrail(auditSettingsFromEnv());
    const audit = JSON.stringify((await trail.read()).filter((r) => typeof r === 'string' || r.secret === fx.id));
    assert.match(audit, /"event":"approved"/);

    const raw = await (await temporalClient()).workflow.getHandle(rotationWorkflowId(fx.id)).fetchHistory();
    // Searched both as stored and decrypted: encryption is the second layer, not the first.
    const history = `${allText(raw)}\n${await decodedPayloadText(raw)}`;
    const log = allText(workerLog.slice(logStart));
    const versions = await storeVersions(fx.secretId);
    // The scan sees real content: version ids travel through history, the log and the CLI.
    for (const v of versions) assert.ok(history.includes(v.versionId), 'history payloads were decoded');
    assert.ok(log.includes(fx.id) || log.includes('rotation stage'), 'worker log was captured');
    assert.ok(cliOutput.includes(versions[0].versionId));

    const values = [...versions.map((v) => v.value.password), stack.pgAdminPassword()];
    assert.equal(values.length, 3);
    for (const value of values) {
      assert.ok(!history.includes(value), 'a secret value is in the workflow history');
      assert.ok(!log.includes(value), 'a secret value is in the worker log');
      assert.ok(!cliOutput.includes(value), 'a secret value is in the CLI output');
      assert.ok(!audit.includes(value), 'a secret value is in the audit log');
    }
  });
});
