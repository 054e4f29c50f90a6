// Failure, cancellation and the edges a hostile reviewer found: each test is named for what it stops.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFile, symlink, mkdir, chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { auditSettingsFromEnv, openAuditTrail } from '../lib/audit-trails';
import type { AuditRecord } from '../lib/audit';
import type { BreakGlassDocument } from '../lib/signed';
import { emergencyWorkflowId, progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { rotateSecret } from '../workflows/rotateSecret';
import { plain } from '../lib/report';
import { decisionFor, newKey, people, sign, validFor } from './keys';
import { labelled, manifests, settled, sm, storeVersions, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...env } }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
  );

/** A store-only secret (no target) holding `value`, with a file consumer in a private folder. */
async function storeOnly(value: Record<string, unknown>, consumer: Record<string, unknown> = {}, policy: Record<string, unknown> = {}) {
  const name = uniqueId('h-');
  const secretId = `rekey-test/${name}`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify(value) }));
  const dir = join(await tempDir(), 'consumer');
  const file = join(dir, 'app.json');
  const spec = {
    store: { type: 'aws-secrets-manager', secretId },
    generator: { type: 'random-bytes', size: 16 },
    consumers: [{ type: 'command', name: 'app', file, ...consumer }] as Record<string, unknown>[],
    policy: { overlap: '0s', ...policy },
  };
  return { name, secretId, dir, file, spec };
}

async function until(predicate: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`never happened: ${what}`);
}

describe('hardening', () => {
  it('a consumers-only secret keeps every other field of its stored value, numbers and nested values included', async () => {
    const s = await storeOnly({ value: 'old', region: 'eu-west-1', port: 5432, tls: { verify: true, ciphers: ['a', 'b'] } });
    const trusted = await manifests({ [s.name]: s.spec });
    const report: RotationReport = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report.outcome, 'rotated');
    assert.equal(report.postVerify?.detail, 'not applicable: no target checks this credential');
    const current = (await labelled(s.secretId, 'AWSCURRENT'))!.value as Record<string, unknown>;
    assert.notEqual(current.value, 'old');
    assert.deepEqual({ ...current, value: undefined }, { value: undefined, region: 'eu-west-1', port: 5432, tls: { verify: true, ciphers: ['a', 'b'] } });
  });

  it('a cancelled rotation rolls back only after the step it cancelled has stopped: a late reload never lands after the rollback', async () => {
    // The reload records the version it deployed: the new one after a long pause, the old one (the
    // rollback's) at once. Rolled back while the first still ran, the old one would be overtaken.
    const s = await storeOnly({ value: 'old' });
    const before = (await labelled(s.secretId, 'AWSCURRENT'))!.versionId;
    s.spec.consumers[0] = { ...s.spec.consumers[0], reload: `[ "$REKEY_VERSION_ID" = "${before}" ] || sleep 4; echo "$REKEY_VERSION_ID" >> "$REKEY_FILE.reloads"` };
    const trusted = await manifests({ [s.name]: s.spec });
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        await until(async () => (await handle.query(progressQuery)).consumers[0]?.state === 'deploying', 'deploying');
        await new Promise((r) => setTimeout(r, 500));
        await handle.cancel();
        await assert.rejects(handle.result());
      },
      { manifestDirs: [trusted.dir] },
    );
    await new Promise((r) => setTimeout(r, 5000)); // longer than the cancelled reload's pause
    const reloads = (await readFile(`${s.file}.reloads`, 'utf8')).trim().split('\n');
    assert.equal(reloads[reloads.length - 1], before, `the rollback's reload is the last word (${reloads.join(', ')})`);
    assert.equal(JSON.parse(await readFile(s.file, 'utf8')).rekey_version_id, before);
  });

  it('a rollback step that cannot be done is reported and audited as rollback-incomplete, and the pending version is left for a person', async () => {
    // Deploying the new version works; the consumer refuses the old one back (its folder turned unsafe).
    const s = await storeOnly({ value: 'old' }, { health: 'exit 1' }, { timeouts: { verify: '1s', rollback: '3s' } });
    const trusted = await manifests({ [s.name]: s.spec });
    const { report: settledReport, failure } = await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        await until(async () => (await handle.query(progressQuery)).stage === 'verify', 'verifying');
        await chmod(s.dir, 0o777);
        return settled(handle.result());
      },
      { manifestDirs: [trusted.dir] },
    );
    // The run fails (schedules pause, fleets count it), with the report in the failure's details.
    assert.match(failure ?? '', /^rollback incomplete: could not roll back consumer\(s\) app/);
    const report = settledReport!;
    assert.equal(report.outcome, 'rollback-incomplete');
    assert.match(report.warnings?.join(' ') ?? '', /ROLLBACK INCOMPLETE: could not roll back consumer\(s\) app .*writable by group or others.*pending version .* left/);
    assert.equal((await labelled(s.secretId, 'AWSPENDING'))?.versionId, report.versions.pending, 'the pending version is still there');
    const trail = (await openAuditTrail(auditSettingsFromEnv()).read()).filter((r): r is AuditRecord => typeof r !== 'string' && r.secret === s.name);
    assert.ok(trail.some((r) => r.event === 'rollback-incomplete'), trail.map((r) => r.event).join(' '));
  });

  it('an emergency rotation is not terminated with the workflow that started it', async () => {
    const oncall = await newKey('oncall');
    const s = await storeOnly({ value: 'old' }, { reload: 'sleep 2' });
    const trusted = await manifests({ [s.name]: s.spec }, people([oncall], ['oncall']));
    const doc: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: s.name, revokeFirst: false, reason: 'leak', ...validFor(600_000) };
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const parent = await client.workflow.start(emergencyRevoke, { taskQueue, workflowId: emergencyWorkflowId(s.name), args: [{ secret: s.name, reason: 'leak', authorization: await sign(oncall, doc) }] });
        const child = client.workflow.getHandle(rotationWorkflowId(s.name));
        await until(async () => (await child.describe().catch(() => undefined))?.status.name === 'RUNNING', 'the emergency rotation runs');
        await parent.terminate('an operator pressed the wrong button');
        return child.result();
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report.outcome, 'rotated');
  });

  it('control characters in a comment are printed escaped by rekey audit, never raw', async () => {
    const bob = await newKey('bob');
    const s = await storeOnly({ value: 'old' });
    const trusted = await manifests({ [s.name]: { ...s.spec, policy: { overlap: '0s', approval: { required: true, approvers: ['bob'] } } } }, people([bob]));
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] });
        let progress = await handle.query(progressQuery);
        await until(async () => (progress = await handle.query(progressQuery)).stage === 'approve', 'waiting for approval');
        await handle.executeUpdate('decide', { args: [await sign(bob, decisionFor(handle, progress, true, { comment: 'ok\u001b[2J\u001b[31m approved by everyone' }))] });
        await handle.result();
      },
      { manifestDirs: [trusted.dir] },
    );
    const listed = await cli(['audit', s.name]);
    assert.equal(listed.code, 0, listed.out);
    assert.ok(!listed.out.includes('\u001b'), 'no raw escape reaches the terminal');
    assert.match(listed.out, /ok\\u001b\[2J\\u001b\[31m approved by everyone/);
  });

  it('printed text from outside never breaks a line or reorders one: newlines, U+2028/2029 and direction marks are escaped', () => {
    assert.equal(plain('a\nb\rc\u2028d\u2029e\u061cf\u202eg'), 'a\\u000ab\\u000dc\\u2028d\\u2029e\\u061cf\\u202eg');
    assert.equal(plain('failed:\ndetail', 'indent'), 'failed:\n      detail');
  });

  it('rekey inventory says MISSING for a secret whose store entry does not exist', async () => {
    const name = uniqueId('missing-');
    const trusted = await manifests({ [name]: { store: { type: 'aws-secrets-manager', secretId: `rekey-test/${name}` }, generator: { type: 'random-bytes' } } });
    const listed = await cli(['inventory', '-f', trusted.dir]);
    assert.equal(listed.code, 0, listed.out);
    assert.match(listed.out.split('\n').find((l) => l.startsWith(name)) ?? '', /MISSING in the store/);
  });

  it('a health probe slower than the heartbeat timeout still passes: the activity heartbeats while it runs', async () => {
    const s = await storeOnly({ value: 'old' }, { health: 'sleep 17; exit 0', commandTimeout: '1m' }, { timeouts: { verify: '2m' } });
    const trusted = await manifests({ [s.name]: s.spec });
    const report: RotationReport = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(s.name), args: [trusted.input(s.name)] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    assert.equal((await storeVersions(s.secretId)).length, 2);
  });

  it('the worker started before Temporal waits for it and says so, instead of exiting', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as { port: number };
        probe.close(() => resolve(free));
      });
    });
    const trusted = await manifests({});
    const worker = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'workers/main.ts')], {
      cwd: ROOT,
      env: { ...process.env, TEMPORAL_ADDRESS: `127.0.0.1:${port}`, REKEY_MANIFESTS: trusted.dir },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let errOut = '';
    worker.stderr!.on('data', (d) => (errOut += d));
    try {
      await until(async () => /waiting for Temporal at 127\.0\.0\.1:\d+/.test(errOut), 'the worker says it waits');
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(worker.exitCode, null, `the worker is still there, waiting:\n${errOut}`);
    } finally {
      worker.kill('SIGKILL');
    }
  });

  it('stack.sh run as root never follows a symlink planted at its predictable /var/tmp path', async () => {
    assert.equal(process.getuid?.(), 0, 'this check is about running as root (as CI does)');
    const base = await tempDir(); // mode 700: the postgres user cannot reach it, so stack.sh looks elsewhere
    const victim = await tempDir();
    const planted = join(base, 'planted');
    await symlink(victim, planted);
    await mkdir(join(base, 'data'));
    const run = await promisify(execFile)('bash', [join(ROOT, 'scripts/stack.sh'), 'status'], { env: { ...process.env, REKEY_DATA_DIR: join(base, 'data'), REKEY_PG_HOME: planted } }).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
    );
    assert.notEqual(run.code, 0);
    assert.match(run.out, /is a symbolic link; refusing to use it/);
  });
});
