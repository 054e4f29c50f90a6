import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { stringify } from 'yaml';
import {
  approveSignal,
  decideUpdate,
  progressQuery,
  rotationWorkflowId,
  type Progress,
  type RotationReport,
} from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { canLogin, databaseFixture, labelled, postgresSpec, tempDir, temporalClient, withWorker, type DatabaseFixture } from './helpers';

const ROOT = join(__dirname, '..');
type Approval = Record<string, unknown>;

async function startAwaitingApproval(taskQueue: string, fx: DatabaseFixture, approval: Approval, requestedBy = 'alice') {
  const spec = postgresSpec(fx, 'alternating-users', {
    policy: { overlap: '0s', approval: { required: true, approvers: ['alice', 'bob', 'carol'], ...approval } },
  });
  const client = await temporalClient();
  const handle = await client.workflow.start(rotateSecret, {
    taskQueue,
    workflowId: rotationWorkflowId(fx.id),
    args: [{ secret: fx.id, spec, requestedBy, reason: 'approval spec' }],
  });
  await until(handle, (p) => p.stage === 'approve');
  return { handle, spec };
}

async function until(handle: WorkflowHandle, ok: (p: Progress) => boolean): Promise<Progress> {
  for (let i = 0; i < 300; i++) {
    const p = await handle.query(progressQuery).catch(() => undefined);
    if (p && ok(p)) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the rotation never reached the expected state');
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => assert.fail('the decision was accepted'),
    (e) => e,
  );
  assert.ok(err instanceof WorkflowUpdateFailedError, String(err));
  return err.cause?.message ?? '';
}

const decide = (handle: WorkflowHandle, approver: string, approve = true, comment?: string) =>
  handle.executeUpdate(decideUpdate, { args: [{ approver, approve, comment }] });

describe('approvals', () => {
  it('refuses an approver outside the policy, the requester, and a repeat; refused updates leave no trace in history', async () => {
    const fx = await databaseFixture('alternating-users');
    await withWorker(async (tq) => {
      const { handle } = await startAwaitingApproval(tq, fx, { minApprovals: 2 });
      assert.match(await refusal(decide(handle, 'mallory')), /mallory is not an approver/);
      assert.match(await refusal(decide(handle, 'alice')), /requested this rotation and cannot approve it/);
      assert.deepEqual(await decide(handle, 'bob', true, 'looks good'), { approvals: 1, needed: 2, outcome: 'waiting' });
      assert.match(await refusal(decide(handle, 'bob')), /bob has already approved/);

      const progress = await handle.query(progressQuery);
      assert.equal(progress.stage, 'approve', 'one approval of two is not enough');
      assert.deepEqual(progress.approval.waitingFor, ['carol']);
      const history = await handle.fetchHistory();
      const accepted = history.events!.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes);
      assert.equal(accepted.length, 1, 'only the valid decision is in history');

      assert.equal((await decide(handle, 'carol')).outcome, 'approved');
      const report: RotationReport = await handle.result();
      assert.equal(report.outcome, 'rotated');
      assert.deepEqual(report.approval.approvedBy.map((a) => [a.approver, a.comment]), [['bob', 'looks good'], ['carol', undefined]]);
      assert.equal(report.requestedBy, 'alice');
    });
  });

  it('one rejection rolls the rotation back and the old credential keeps working', async () => {
    const fx = await databaseFixture('alternating-users');
    await withWorker(async (tq) => {
      const { handle } = await startAwaitingApproval(tq, fx, {});
      assert.equal((await decide(handle, 'bob', false, 'not during the freeze')).outcome, 'rejected');
      const report: RotationReport = await handle.result();
      assert.equal(report.outcome, 'rolled-back');
      assert.equal(report.failure?.stage, 'approve');
      assert.equal(report.failure?.message, 'rejected by bob: not during the freeze');
      assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, report.versions.before);
      assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
    });
  });

  it('no decision within the timeout aborts (onTimeout: abort)', async () => {
    const fx = await databaseFixture('alternating-users');
    await withWorker(async (tq) => {
      const { handle } = await startAwaitingApproval(tq, fx, { timeout: '2s', onTimeout: 'abort' });
      const report: RotationReport = await handle.result();
      assert.equal(report.outcome, 'rolled-back');
      assert.match(report.failure!.message, /no approval within 2s \(0 of 1\)/);
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
    });
  });

  it('escalate keeps waiting past the timeout, marked escalated, and an approval then still counts', async () => {
    const fx = await databaseFixture('alternating-users');
    await withWorker(async (tq) => {
      const { handle } = await startAwaitingApproval(tq, fx, { timeout: '1s', onTimeout: 'escalate', escalationLimit: '1m' });
      await until(handle, (p) => p.approval.escalated);
      await decide(handle, 'carol');
      const report: RotationReport = await handle.result();
      assert.equal(report.outcome, 'rotated');
      assert.equal(report.approval.escalated, true);
    });
  });

  it('signals from the UI count the same way: an invalid one is recorded as ignored, a valid one approves', async () => {
    const fx = await databaseFixture('alternating-users');
    await withWorker(async (tq) => {
      const { handle } = await startAwaitingApproval(tq, fx, {});
      await handle.signal(approveSignal, { approver: 'alice' });
      await handle.signal(approveSignal, { approver: 'mallory' });
      const progress = await until(handle, (p) => p.approval.ignored.length === 2);
      assert.equal(progress.stage, 'approve');
      assert.deepEqual(progress.approval.ignored.map((i) => i.approver), ['alice', 'mallory']);
      await handle.signal(approveSignal, { approver: 'bob', comment: 'via the UI' });
      const report: RotationReport = await handle.result();
      assert.equal(report.outcome, 'rotated');
      assert.deepEqual(report.approval.approvedBy.map((a) => a.approver), ['bob']);
    });
  });

  it('rekey pending lists the waiting rotation; rekey approve refuses the requester and accepts an approver', async () => {
    const fx = await databaseFixture('alternating-users');
    const run = (args: string[], taskQueue: string) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], {
        cwd: ROOT,
        env: { ...process.env, REKEY_TASK_QUEUE: taskQueue },
      }).then(
        (r) => ({ code: 0, out: r.stdout, errOut: r.stderr }),
        (e) => ({ code: e.code as number, out: e.stdout as string, errOut: e.stderr as string }),
      );
    await withWorker(async (tq) => {
      const { handle, spec } = await startAwaitingApproval(tq, fx, {});
      const dir = await tempDir();
      await writeFile(join(dir, 's.yaml'), stringify({ apiVersion: 'rekey.dev/v1', kind: 'Secret', metadata: { name: fx.id }, spec }));

      const listed = await run(['pending', '--json'], tq);
      const row = listed.out.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.secret === fx.id);
      assert.ok(row, listed.out + listed.errOut);
      assert.deepEqual([row.requestedBy, row.needed, row.waitingFor], ['alice', 1, ['bob', 'carol']]);

      const own = await run(['approve', fx.id, '--as', 'alice'], tq);
      assert.equal(own.code, 2);
      assert.match(own.errOut, /refused: alice requested this rotation/);

      const ok = await run(['approve', fx.id, '--as', 'bob', '--comment', 'ok'], tq);
      assert.equal(ok.code, 0, ok.errOut);
      assert.match(ok.out, /approved by bob: 1 of 1 approvals/);
      assert.equal(((await handle.result()) as RotationReport).outcome, 'rotated');
    });
  });
});
