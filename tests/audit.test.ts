import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { escapeIdentifier } from 'pg';
import { auditSignerFrom, hashOf, headOf, verifyTrail, type AuditEvent, type AuditHead, type AuditRecord, type AuditSigner } from '../lib/audit';
import { FileAuditTrail, PostgresAuditTrail, initAuditTable, loadAuditSigner, type AuditSettings } from '../lib/audit-trails';
import type { DecisionDocument } from '../lib/signed';
import { fleetWorkflowId, progressQuery, rotationWorkflowId, type FleetItem, type FleetSummary, type RotationReport } from '../workflows/messages';
import { rotateFleet } from '../workflows/rotateFleet';
import { rotateSecret } from '../workflows/rotateSecret';
import { cheapSecrets } from './fleet-fixtures';
import { newKey, people, sign, validFor } from './keys';
import { adminDb, databaseFixture, manifests, postgresSpec, stack, storeVersions, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

function newSigner(): { signer: AuditSigner; publicKeyFile: (dir: string) => Promise<string> } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const signer = auditSignerFrom(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'test key');
  return {
    signer,
    publicKeyFile: async (dir) => {
      const path = join(dir, `audit-${uniqueId()}.pub`);
      await writeFile(path, publicKey.export({ type: 'spki', format: 'pem' }) as string);
      return path;
    },
  };
}

function event(n: number, extra: Partial<AuditEvent> = {}): AuditEvent {
  return { id: `rotation/s${n}/run#1`, rotationId: `rotation/s${n}/run`, secret: `s${n}`, event: 'requested', actor: 'alice', at: new Date(0).toISOString(), ...extra };
}

const pidNamespace = readlinkSync('/proc/self/ns/pid').replace(/\D/g, '');
const lines = async (path: string) => (await readFile(path, 'utf8')).split('\n').filter(Boolean);

async function fileTrailWith(n: number, signer = newSigner().signer): Promise<FileAuditTrail> {
  const trail = new FileAuditTrail(join(await tempDir(), 'audit.jsonl'), signer);
  for (let i = 1; i <= n; i++) await trail.append(event(i));
  return trail;
}

/** Re-hash every record from `from` on, as someone without the key would after an edit. */
function rechain(records: AuditRecord[], from: number, resign?: AuditSigner): AuditRecord[] {
  const out = records.map((r) => ({ ...r }));
  for (let i = from; i < out.length; i++) {
    const { hash: _h, sig: _s, ...unsigned } = out[i];
    if (i > 0) unsigned.prev = out[i - 1].hash;
    if (resign) unsigned.keyId = resign.keyId;
    const hash = hashOf(unsigned);
    out[i] = { ...unsigned, hash, sig: resign ? resign.sign(hash) : out[i].sig };
  }
  return out;
}

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...env } }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
  );

/** A database of its own with the audit table, written by a role that may only INSERT and SELECT. */
async function auditDatabase() {
  const name = uniqueId('audit_');
  const writer = `${name}_writer`;
  const password = uniqueId('pw');
  await adminDb((db) => db.query(`CREATE DATABASE ${escapeIdentifier(name)}`));
  await adminDb((db) => db.query(`CREATE ROLE ${escapeIdentifier(writer)} LOGIN PASSWORD '${password}'`));
  await adminDb((db) => initAuditTable(db, writer), name);
  const passwordFile = join(await tempDir(), 'writer-password');
  await writeFile(passwordFile, password);
  const url = `postgres://${writer}@${stack.pgHost}:${stack.pgPort}/${name}`;
  const settings: AuditSettings = { databaseUrl: url, databasePasswordFile: passwordFile, key: process.env.REKEY_AUDIT_KEY };
  return {
    name,
    url,
    settings,
    env: { REKEY_AUDIT_DATABASE_URL: url, REKEY_AUDIT_DATABASE_PASSWORD_FILE: passwordFile },
    asAdmin: <T>(sql: string, params: unknown[] = []) => adminDb((db) => db.query(sql, params), name) as Promise<T>,
    asWriter: async (sql: string) => {
      const trail = new PostgresAuditTrail(url, passwordFile);
      const pool = (trail as unknown as { pool(): import('pg').Pool }).pool();
      try {
        return await pool.query(sql);
      } finally {
        await trail.close();
      }
    },
  };
}

describe('audit trail', () => {
  describe('on one host (file)', () => {
    it('writes an event once however often it is retried, and concurrent writers keep one signed chain', async () => {
      const { signer } = newSigner();
      const trail = await fileTrailWith(0, signer);
      assert.equal((await trail.append(event(1))).written, true);
      assert.equal((await trail.append(event(1))).written, false);
      await Promise.all(Array.from({ length: 40 }, (_, i) => trail.append(event(i + 2))));
      await Promise.all(Array.from({ length: 40 }, (_, i) => trail.append(event(i + 2))));
      assert.equal((await trail.read()).length, 41);
      assert.deepEqual(verifyTrail(trail.trail, await trail.read(), { publicKeys: [signer.publicKey] }), { ok: true, records: 41, heads: 0 });
    });

    const attacker = newSigner().signer;
    const tamperings: [string, (r: AuditRecord[]) => (AuditRecord | string)[], number, RegExp][] = [
      ['a field edited', (r) => r.map((x, i) => (i === 2 ? { ...x, actor: 'mallory' } : x)), 3, /edited/],
      ['a field rewritten and the chain recomputed without the key', (r) => rechain(r.map((x, i) => (i === 2 ? { ...x, actor: 'mallory' } : x)), 2), 3, /signature does not verify: rewritten without the audit key/],
      ['the chain recomputed and re-signed with another key', (r) => rechain(r.map((x, i) => (i === 1 ? { ...x, actor: 'mallory' } : x)), 1, attacker), 2, /signed by an unknown audit key/],
      ['a record removed', (r) => r.filter((_, i) => i !== 1), 2, /removed|reordered/],
      ['two records swapped', (r) => [r[0], r[2], r[1], ...r.slice(3)], 2, /removed|reordered/],
      ['a line garbled', (r) => r.map((x, i) => (i === 3 ? JSON.stringify(x).slice(0, 40) : x)), 4, /not valid JSON/],
    ];
    for (const [kind, tamper, seq, problem] of tamperings) {
      it(`verify names the first bad record when ${kind}`, async () => {
        const { signer } = newSigner();
        const trail = await fileTrailWith(5, signer);
        const tampered = tamper((await trail.read()) as AuditRecord[]);
        await writeFile(trail.path, `${tampered.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n')}\n`);
        const verdict = verifyTrail(trail.trail, await trail.read(), { publicKeys: [signer.publicKey] });
        assert.equal(verdict.ok, false);
        assert.equal(!verdict.ok && verdict.seq, seq);
        assert.match(!verdict.ok ? verdict.problem : '', problem);
      });
    }

    it('a torn last line (a crash mid-append) is cut off under the lock: the next append works and the chain verifies', async () => {
      const { signer } = newSigner();
      const trail = await fileTrailWith(3, signer);
      const fourth = JSON.stringify(JSON.parse((await lines(trail.path))[2]));
      await appendFile(trail.path, fourth.slice(0, 57)); // no newline: the writer died mid-line
      // A new process (no cached tail) appends next, as after a worker restart.
      const restarted = new FileAuditTrail(trail.path, signer);
      const { record } = await restarted.append(event(4));
      assert.equal(record.seq, 4);
      assert.deepEqual(verifyTrail(trail.trail, await trail.read(), { publicKeys: [signer.publicKey] }), { ok: true, records: 4, heads: 0 });
    });

    it('a head counts only when the audit key signed it: invented heads are ignored, a signed one past the end is found missing', async () => {
      const { signer } = newSigner();
      const trail = await fileTrailWith(3, signer);
      const records = (await trail.read()) as AuditRecord[];
      const invented = { trail: trail.trail, seq: 9, hash: 'f'.repeat(64) };
      const options = (heads: AuditHead[]) => ({ publicKeys: [signer.publicKey], heads });
      assert.deepEqual(verifyTrail(trail.trail, records, options([invented, { ...invented, sig: newSigner().signer.sign('x') }])), { ok: true, records: 3, heads: 0 });
      const signedPastEnd = headOf({ ...records[2], seq: 4 }, signer);
      const verdict = verifyTrail(trail.trail, records, options([headOf(records[2], signer), signedPastEnd]));
      assert.equal(verdict.ok, false);
      assert.match(!verdict.ok ? verdict.problem : '', /missing: a rotation recorded the trail at record 4, but it ends at 3/);
    });

    it('the file lock: a lock left by a dead process is taken over; a live holder keeps it however long it takes', async () => {
      const { signer } = newSigner();
      const trail = await fileTrailWith(1, signer);
      await writeFile(`${trail.path}.lock`, `${hostname()}:${pidNamespace}:999999:crashed`); // no such process
      assert.equal((await trail.append(event(2))).record.seq, 2);

      const holder = spawn('sleep', ['30']);
      try {
        await writeFile(`${trail.path}.lock`, `${hostname()}:${pidNamespace}:${holder.pid}:slow-writer`);
        const waiting = trail.append(event(3));
        const early = await Promise.race([waiting.then(() => 'appended'), new Promise((r) => setTimeout(() => r('waiting'), 1500))]);
        assert.equal(early, 'waiting', 'a live holder is not robbed of its lock');
        holder.kill('SIGKILL');
        assert.equal((await waiting).record.seq, 3);
      } finally {
        holder.kill('SIGKILL');
      }
      assert.deepEqual(verifyTrail(trail.trail, await trail.read(), { publicKeys: [signer.publicKey] }), { ok: true, records: 3, heads: 0 });
    });

    it('rekey audit verify --log exits 0 on an intact trail and 5 naming the record on a tampered one; rekey audit NAME filters', async () => {
      const dir = await tempDir();
      const { signer, publicKeyFile } = newSigner();
      const trail = await fileTrailWith(3, signer);
      const pub = await publicKeyFile(dir);
      const intact = await cli(['audit', 'verify', '--log', trail.path, '--public-key', pub, '--offline']);
      assert.equal(intact.code, 0, intact.out);
      assert.match(intact.out, /audit trail intact: 3 records signed by SHA256:/);
      assert.match(intact.out, /rotation heads not checked \(--offline\)/);
      const filtered = await cli(['audit', 's2', '--log', trail.path, '--json']);
      assert.deepEqual(filtered.out.trim().split('\n').map((l) => JSON.parse(l).secret), ['s2']);
      await writeFile(trail.path, (await readFile(trail.path, 'utf8')).replace('"s2"', '"s9"'));
      const tampered = await cli(['audit', 'verify', '--log', trail.path, '--public-key', pub, '--offline']);
      assert.equal(tampered.code, 5);
      assert.match(tampered.out, /record 2: edited/);
    });
  });

  describe('shared by every worker (Postgres)', () => {
    it("the workers' role may only INSERT and SELECT: it cannot UPDATE, DELETE or TRUNCATE a record", async () => {
      const db = await auditDatabase();
      const trail = new PostgresAuditTrail(db.url, db.settings.databasePasswordFile, newSigner().signer);
      await trail.append(event(1));
      await trail.close();
      for (const sql of ["UPDATE rekey_audit SET secret = 'x'", 'DELETE FROM rekey_audit', 'TRUNCATE rekey_audit']) {
        await assert.rejects(db.asWriter(sql), /permission denied/, sql);
      }
      assert.equal((await db.asWriter('SELECT count(*)::int AS n FROM rekey_audit')).rows[0].n, 1);
    });

    it('a trail no rotation has anchored is intact as far as it goes, but verify will not vouch for its end (exit 6)', async () => {
      const db = await auditDatabase();
      const trail = new PostgresAuditTrail(db.url, db.settings.databasePasswordFile, await loadAuditSigner(process.env.REKEY_AUDIT_KEY));
      await trail.append(event(1));
      await trail.close();
      const unanchored = await cli(['audit', 'verify', '--database', db.url], db.env);
      assert.equal(unanchored.code, 6, unanchored.out);
      assert.match(unanchored.out, /audit trail intact: 1 records/);
      assert.match(unanchored.out, /its end cannot be vouched for/);
      const offline = await cli(['audit', 'verify', '--database', db.url, '--offline'], db.env);
      assert.equal(offline.code, 0, offline.out);
    });

    it('a rotation records its head; deleting the last record, rewriting one without the key, or truncating the table is each found; the signed approval verifies with ssh-keygen alone', async () => {
      const db = await auditDatabase();
      const fx = await databaseFixture('alternating-users');
      const bob = await newKey('bob');
      const trusted = await manifests(
        { [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', approval: { required: true, approvers: ['bob'] } } }) },
        people([bob]),
      );
      const report: RotationReport = await withWorker(
        async (taskQueue) => {
          const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id, { requestedBy: 'alice', reason: 'quarterly' })] });
          let progress = await handle.query(progressQuery);
          for (let i = 0; i < 200 && progress.stage !== 'approve'; i++) progress = await new Promise((r) => setTimeout(r, 100)).then(() => handle.query(progressQuery));
          const doc: DecisionDocument = {
            kind: 'rekey.dev/decision',
            namespace: 'default',
            workflowId: handle.workflowId,
            runId: handle.firstExecutionRunId,
            secret: fx.id,
            pendingVersionId: progress.versions.pending!,
            specHash: progress.specHash!,
            decision: 'approve',
            comment: 'ok',
            ...validFor(600_000),
          };
          await handle.executeUpdate('decide', { args: [await sign(bob, doc)] });
          return handle.result();
        },
        { manifestDirs: [trusted.dir], audit: db.settings },
      );
      assert.equal(report.outcome, 'rotated');
      assert.ok(report.auditHead && report.auditHead.trail === `postgres:${stack.pgHost}:${stack.pgPort}/${db.name}`, JSON.stringify(report.auditHead));

      const records = (await new PostgresAuditTrail(db.url, db.settings.databasePasswordFile).read()) as AuditRecord[];
      assert.deepEqual(records.map((r) => `${r.event}:${r.actor}`), ['requested:alice (unsigned)', 'approved:bob', 'promoted:rekey', 'revoked:rekey', 'post-verified:rekey']);
      assert.equal(report.auditHead!.seq, 5);
      // The promote record carries the approvals the worker checked, signatures included.
      assert.deepEqual(records[2].approvals?.map((a) => [a.signer, a.fingerprint]), [['bob', bob.fingerprint]]);
      const text = JSON.stringify(records);
      for (const v of await storeVersions(fx.secretId)) assert.ok(!text.includes(v.value.password), 'a value is in the audit trail');

      // An auditor needs bob's public key and nothing else (not rekey) to check his decision.
      const approved = records.find((r) => r.event === 'approved')!.signed!;
      const dir = await tempDir();
      await writeFile(join(dir, 'allowed_signers'), `bob ${bob.publicKey}\n`);
      await writeFile(join(dir, 'decision.sig'), approved.signature!);
      const checked = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn('ssh-keygen', ['-Y', 'verify', '-f', join(dir, 'allowed_signers'), '-I', 'bob', '-n', 'rekey', '-s', join(dir, 'decision.sig')]);
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (out += d));
        child.on('close', (code) => resolve({ code, out }));
        child.stdin.end(approved.document);
      });
      assert.equal(checked.code, 0, checked.out);
      assert.match(checked.out, /Good "rekey" signature for bob/);

      const verify = () => cli(['audit', 'verify', '--database', db.url, '-f', trusted.dir], db.env);
      const intact = await verify();
      assert.equal(intact.code, 0, intact.out);
      assert.match(intact.out, /audit trail intact: 5 records/);
      assert.match(intact.out, /reaches all 1 rotation head\(s\)/);
      assert.match(intact.out, /every signed decision is by a key the manifests list/);

      const snapshot = (await db.asAdmin<{ rows: Record<string, unknown>[] }>('SELECT * FROM rekey_audit ORDER BY seq')).rows;
      const restore = async (rows = snapshot) => {
        await db.asAdmin('DELETE FROM rekey_audit');
        for (const r of rows) {
          await db.asAdmin('INSERT INTO rekey_audit (seq, id, secret, event, at, hash, record) VALUES ($1, $2, $3, $4, $5, $6, $7)', [r.seq, r.id, r.secret, r.event, r.at, r.hash, r.record]);
        }
      };

      await db.asAdmin('DELETE FROM rekey_audit WHERE seq = 5');
      const cut = await verify();
      assert.equal(cut.code, 5, cut.out);
      assert.match(cut.out, /record 5: missing: a rotation recorded the trail at record 5, but it ends at 4/);

      // Someone with the database but without the audit key: "approved by carol", chain recomputed.
      const rewritten = rechain(records.map((r) => (r.event === 'approved' ? { ...r, actor: 'carol' } : r)), 1);
      await restore(snapshot.map((row, i) => ({ ...row, hash: rewritten[i].hash, record: JSON.stringify(rewritten[i]) })));
      const forged = await verify();
      assert.equal(forged.code, 5, forged.out);
      assert.match(forged.out, /record 2: its signature does not verify/);

      await restore();
      await db.asAdmin('TRUNCATE rekey_audit');
      const truncated = await verify();
      assert.equal(truncated.code, 5, truncated.out);
      assert.match(truncated.out, /record 5: missing/);
    });

    it('two workers in separate processes and folders write one verified chain; a retried record is written once', async () => {
      const db = await auditDatabase();
      const dir = await tempDir();
      const secrets = await cheapSecrets(dir, 6, { team: 'two-hosts' });
      const taskQueue = uniqueId('rekey-two-hosts-');
      const logs: string[] = ['', ''];
      const workers = await Promise.all(
        [0, 1].map(async (i) => {
          const home = await tempDir();
          // Started from a folder of its own, like a second host: tsx is named by path, not looked up from there.
          const tsx = pathToFileURL(join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href;
          const child = spawn(process.execPath, ['--import', tsx, join(ROOT, 'workers/main.ts')], {
            cwd: home,
            env: { ...process.env, ...db.env, REKEY_TASK_QUEUE: taskQueue, REKEY_MANIFESTS: dir, HOME: home },
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          child.stdout!.on('data', (d) => (logs[i] += d));
          child.stderr!.on('data', (d) => (logs[i] += d));
          return child;
        }),
      );
      try {
        const set = await (await import('../lib/manifest')).loadManifests(dir);
        const summary: FleetSummary = await (await temporalClient()).workflow.execute(rotateFleet, {
          taskQueue,
          workflowId: fleetWorkflowId(uniqueId('two-hosts-')),
          args: [{ fleet: 'two-hosts', maxParallel: 6, items: secrets.map((s): FleetItem => [s.name, set.secrets.get(s.name)!.specHash]) }],
        });
        assert.equal(summary.rotated.length, 6, JSON.stringify(summary));
      } finally {
        for (const w of workers) w.kill('SIGTERM');
      }
      const written = logs.map((l) => (l.match(/audit record/g) ?? []).length);
      assert.ok(written.every((n) => n > 0), `both workers wrote audit records (${written.join(' and ')})`);

      // The same event from two writers at once, as when a retry races the attempt it replaces.
      const signer = await loadAuditSigner(process.env.REKEY_AUDIT_KEY);
      const [a, b] = [new PostgresAuditTrail(db.url, db.settings.databasePasswordFile, signer), new PostgresAuditTrail(`${db.url}?x=1`, db.settings.databasePasswordFile, signer)];
      const twice = await Promise.all([a.append(event(99)), b.append(event(99))]);
      assert.deepEqual(twice.map((t) => t.written).sort(), [false, true]);
      await Promise.all([a.close(), b.close()]);

      const records = (await a.read()) as AuditRecord[];
      assert.deepEqual(records.map((r) => r.seq), records.map((_, i) => i + 1), 'one chain, no gaps');
      assert.equal(new Set(records.map((r) => r.id)).size, records.length, 'every event once');
      assert.equal(records.filter((r) => r.event === 'promoted').length, 6);
      const clean = await cli(['audit', 'verify', '--database', db.url, '--public-key', process.env.REKEY_AUDIT_PUBLIC_KEY!], db.env);
      assert.equal(clean.code, 0, clean.out);
      assert.match(clean.out, /reaches all 6 rotation head\(s\)/);
    });
  });
});
