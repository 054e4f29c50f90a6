import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AuditLog } from '../lib/audit';
import { rotationWorkflowId, type AuditEvent, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { databaseFixture, postgresSpec, storeVersions, tempDir, temporalClient, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

function event(n: number, extra: Partial<AuditEvent> = {}): AuditEvent {
  return { rotationId: `rotation/s${n}/run`, secret: `s${n}`, event: 'requested', actor: 'alice', at: new Date(0).toISOString(), ...extra };
}

async function logWith(n: number): Promise<AuditLog> {
  const log = new AuditLog(join(await tempDir(), 'audit.jsonl'));
  for (let i = 1; i <= n; i++) await log.append(event(i));
  return log;
}

async function editLines(log: AuditLog, edit: (lines: string[]) => string[]): Promise<void> {
  const lines = (await readFile(log.path, 'utf8')).split('\n').filter(Boolean);
  await writeFile(log.path, `${edit(lines).join('\n')}\n`);
}

const cli = (args: string[]) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
  );

describe('audit trail', () => {
  it('writes an event once however often it is retried, and concurrent writers keep one intact chain', async () => {
    const log = await logWith(0);
    assert.equal((await log.append(event(1))).written, true);
    assert.equal((await log.append(event(1))).written, false);
    await Promise.all(Array.from({ length: 40 }, (_, i) => log.append(event(i + 2))));
    await Promise.all(Array.from({ length: 40 }, (_, i) => log.append(event(i + 2))));
    assert.equal((await log.read()).length, 41);
    assert.deepEqual(await log.verify(), { ok: true, records: 41 });
  });

  const tamperings: [string, (lines: string[]) => string[], number, RegExp][] = [
    ['a field edited', (l) => l.map((x, i) => (i === 2 ? x.replace('"alice"', '"mallory"') : x)), 3, /edited/],
    ['a record removed', (l) => l.filter((_, i) => i !== 1), 2, /removed|reordered/],
    ['two records swapped', (l) => [l[0], l[2], l[1], ...l.slice(3)], 2, /removed|reordered/],
    ['a line garbled', (l) => l.map((x, i) => (i === 3 ? x.slice(0, 40) : x)), 4, /not valid JSON/],
    ['a forged record appended', (l) => [...l, JSON.stringify({ ...JSON.parse(l[0]), seq: l.length + 1 })], 6, /edited|does not follow/],
  ];
  for (const [kind, tamper, line, problem] of tamperings) {
    it(`verify names the first bad record when ${kind}`, async () => {
      const log = await logWith(5);
      await editLines(log, tamper);
      const verdict = await log.verify();
      assert.equal(verdict.ok, false);
      assert.equal(!verdict.ok && verdict.line, line);
      assert.match(!verdict.ok ? verdict.problem : '', problem);
    });
  }

  it('rekey audit verify exits 0 on an intact log and 5 naming the record on a tampered one; rekey audit NAME filters', async () => {
    const log = await logWith(3);
    const intact = await cli(['audit', 'verify', '--log', log.path]);
    assert.equal(intact.code, 0);
    assert.match(intact.out, /audit log intact: 3 records/);
    const filtered = await cli(['audit', 's2', '--log', log.path, '--json']);
    assert.deepEqual(filtered.out.trim().split('\n').map((l) => JSON.parse(l).secret), ['s2']);
    await editLines(log, (l) => l.map((x, i) => (i === 1 ? x.replace('requested', 'approved') : x)));
    const tampered = await cli(['audit', 'verify', '--log', log.path]);
    assert.equal(tampered.code, 5);
    assert.match(tampered.out, /record 2: edited/);
  });

  it('a rotation with an approval leaves requested, approved, promoted and revoked records, with versions and no values', async () => {
    const fx = await databaseFixture('alternating-users');
    const path = join(await tempDir(), 'audit.jsonl');
    const spec = postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', approval: { required: true, approvers: ['bob'] } } });
    const report: RotationReport = await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, {
          taskQueue,
          workflowId: rotationWorkflowId(fx.id),
          args: [{ secret: fx.id, spec, requestedBy: 'alice', reason: 'quarterly' }],
        });
        for (let i = 0; i < 100; i++) {
          const accepted = await handle.signal('approve', { approver: 'bob', comment: 'ok' }).then(async () => (await handle.query<{ approval: { approvedBy: unknown[] } }>('progress')).approval.approvedBy.length);
          if (accepted) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        return handle.result();
      },
      { auditLogPath: path },
    );
    assert.equal(report.outcome, 'rotated');
    const records = await new AuditLog(path).read(fx.id);
    const events = records.map((r) => `${r.event}:${r.actor}`);
    for (const expected of ['requested:alice', 'approved:bob', 'promoted:rekey', 'revoked:rekey']) assert.ok(events.includes(expected), events.join(' '));
    assert.equal(records.find((r) => r.event === 'requested')!.reason, 'quarterly');
    assert.equal(records.find((r) => r.event === 'promoted')!.versions!.pending, report.versions.after);
    const text = await readFile(path, 'utf8');
    for (const v of await storeVersions(fx.secretId)) assert.ok(!text.includes(v.value.password), 'a value is in the audit log');
    assert.deepEqual(await new AuditLog(path).verify(), { ok: true, records: records.length });
  });
});
