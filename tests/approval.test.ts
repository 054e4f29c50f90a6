import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import type { RequestDocument, SignedDocument } from '../lib/signed';
import {
  approveSignal,
  decideUpdate,
  progressQuery,
  rejectSignal,
  rotationWorkflowId,
  type RotationReport,
} from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { decisionFor, newKey, people, sign, validFor, type TestKey } from './keys';
import { canLogin, databaseFixture, refusal, labelled, manifests, postgresSpec, tempDir, temporalClient, withWorker, type DatabaseFixture, type Manifests, untilProgress } from './helpers';

const ROOT = join(__dirname, '..');
let alice: TestKey, bob: TestKey, carol: TestKey, mallory: TestKey;

/** A secret whose policy asks alice, bob and carol (declared with their keys) to approve. */
async function approvalSecret(fx: DatabaseFixture, approval: Record<string, unknown> = {}): Promise<Manifests> {
  return manifests(
    { [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', approval: { required: true, approvers: ['alice', 'bob', 'carol'], ...approval } } }) },
    people([alice, bob, carol]),
  );
}

/** alice asks for the rotation, signing her request: she cannot approve it. */
async function startAwaitingApproval(taskQueue: string, trusted: Manifests, secret: string) {
  const workflowId = rotationWorkflowId(secret);
  const specHash = trusted.set.secrets.get(secret)!.specHash;
  const request: RequestDocument = { kind: 'rekey.dev/request', namespace: 'default', workflowId, secret, specHash, reason: 'approval spec', ...validFor(600_000) };
  const handle = await (await temporalClient()).workflow.start(rotateSecret, {
    taskQueue,
    workflowId,
    args: [trusted.input(secret, { requestedBy: 'alice', reason: 'approval spec', request: await sign(alice, request) })],
  });
  const progress = await until(handle, (p) => p.stage === 'approve');
  return { handle, progress };
}

const until = untilProgress;

const decision = decisionFor;

const decide = (handle: WorkflowHandle, signed: unknown) => handle.executeUpdate(decideUpdate, { args: [signed as SignedDocument] });

describe('signed approvals', () => {
  before(async () => {
    [alice, bob, carol, mallory] = await Promise.all(['alice', 'bob', 'carol', 'mallory'].map(newKey));
  });

  it('refuses every forgery before it reaches history: a name, an unknown key, the requester\'s key, another run, an expired or re-bound decision, a repeat', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await approvalSecret(fx, { minApprovals: 2 });
    await withWorker(
      async (tq) => {
        const { handle, progress } = await startAwaitingApproval(tq, trusted, fx.id);
        const valid = decision(handle, progress);
        // A name proves nothing: the old way of approving, and a name inside a document mallory signed.
        assert.match(await refusal(decide(handle, { approver: 'bob', approve: true })), /document must be a string/);
        assert.match(await refusal(decide(handle, { document: JSON.stringify(valid), signature: '' })), /unsigned: signature is missing/);
        assert.match(await refusal(decide(handle, await sign(mallory, { ...valid, approver: 'bob' }))), /signed by a key that is not allowed here/);
        // alice's request was signed: her key cannot also approve (two-person rule by key).
        assert.match(await refusal(decide(handle, await sign(alice, valid))), /alice requested this rotation .* and cannot approve it/);
        assert.match(await refusal(decide(handle, await sign(bob, decision(handle, progress, true, { runId: 'another-run' })))), /signed for runId "another-run"/);
        assert.match(await refusal(decide(handle, await sign(bob, decision(handle, progress, true, { pendingVersionId: 'v-other' })))), /signed for pendingVersionId/);
        assert.match(await refusal(decide(handle, await sign(bob, decision(handle, progress, true, { specHash: `sha256:${'0'.repeat(64)}` })))), /signed for specHash/);
        assert.match(await refusal(decide(handle, await sign(bob, decision(handle, progress, true, validFor(60_000, Date.now() - 3_600_000))))), /expired at/);
        // A valid signature over a document edited afterwards.
        const signed = await sign(bob, valid);
        assert.match(await refusal(decide(handle, { ...signed, document: signed.document.replace('"approve"', '"reject"') })), /the signature does not match the document/);

        assert.deepEqual(await decide(handle, signed), { approvals: 1, needed: 2, outcome: 'waiting', approver: 'bob' });
        assert.match(await refusal(decide(handle, await sign(bob, valid))), /bob has already approved/);
        const waiting = await handle.query(progressQuery);
        assert.equal(waiting.stage, 'approve', 'one approval of two is not enough');
        assert.deepEqual(waiting.approval.waitingFor, ['carol']);
        const history = await handle.fetchHistory();
        assert.equal(history.events!.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length, 1, 'only the valid decision is in history');

        assert.equal((await decide(handle, await sign(carol, { ...valid, comment: 'dashboards look fine' }))).outcome, 'approved');
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rotated');
        assert.deepEqual(
          report.approval.approvedBy.map((a) => [a.approver, a.fingerprint, a.comment]),
          [['bob', bob.fingerprint, undefined], ['carol', carol.fingerprint, 'dashboards look fine']],
        );
        assert.deepEqual([report.requestedBy, report.requester?.fingerprint], ['alice', alice.fingerprint]);
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('one signed rejection rolls the rotation back and the old credential keeps working', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await approvalSecret(fx);
    await withWorker(
      async (tq) => {
        const { handle, progress } = await startAwaitingApproval(tq, trusted, fx.id);
        assert.equal((await decide(handle, await sign(bob, decision(handle, progress, false, { comment: 'not during the freeze' })))).outcome, 'rejected');
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rolled-back');
        assert.equal(report.failure?.stage, 'approve');
        assert.equal(report.failure?.message, 'rejected by bob: not during the freeze');
        assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, report.versions.before);
        assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
        assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('no decision within the timeout aborts (onTimeout: abort)', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await approvalSecret(fx, { timeout: '2s', onTimeout: 'abort' });
    await withWorker(
      async (tq) => {
        const { handle } = await startAwaitingApproval(tq, trusted, fx.id);
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rolled-back');
        assert.match(report.failure!.message, /no approval within 2s \(0 of 1\)/);
        assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('escalate keeps waiting past the timeout, marked escalated, and a signed approval then still counts', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await approvalSecret(fx, { timeout: '1s', onTimeout: 'escalate', escalationLimit: '1m' });
    await withWorker(
      async (tq) => {
        const { handle, progress } = await startAwaitingApproval(tq, trusted, fx.id);
        await until(handle, (p) => p.approval.escalated);
        await decide(handle, await sign(carol, decision(handle, progress)));
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rotated');
        assert.equal(report.approval.escalated, true);
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('signals from the UI: a flood of invalid (or hostile) ones is counted but kept bounded, a signed reject sent as approve is ignored, a valid signed approve approves', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await approvalSecret(fx);
    await withWorker(
      async (tq) => {
        const { handle, progress } = await startAwaitingApproval(tq, trusted, fx.id);
        for (let i = 0; i < 25; i++) await handle.signal(approveSignal, { approver: `bob ${'x'.repeat(1000)}` } as never);
        // JSON built to make a careless check throw (and so wedge the workflow task) is just ignored.
        await handle.signal(approveSignal, { document: '{"kind":{"toString":1},"decision":{"valueOf":2}}', signature: { toString: 1 } } as never);
        await handle.signal(approveSignal, await sign(bob, decision(handle, progress, false)));
        await handle.signal(rejectSignal, await sign(carol, decision(handle, progress)));
        const flooded = await until(handle, (p) => p.approval.ignoredCount === 28);
        assert.equal(flooded.stage, 'approve');
        assert.equal(flooded.approval.ignored.length, 20, 'only the last 20 are kept');
        assert.ok(flooded.approval.ignored.every((i) => i.reason.length <= 200));
        assert.match(flooded.approval.ignored[18].reason, /signed "reject" but sent as the approve signal/);
        assert.match(flooded.approval.ignored[19].reason, /signed "approve" but sent as the reject signal/);
        await handle.signal(approveSignal, await sign(bob, { ...decision(handle, progress), comment: 'via the UI' }));
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rotated');
        assert.deepEqual(report.approval.approvedBy.map((a) => [a.approver, a.comment]), [['bob', 'via the UI']]);
        assert.equal(report.approval.ignoredCount, 28);
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('rekey pending lists the waiting rotation; rekey approve signs with ssh-keygen, refuses the requester\'s key and a spec other than the reviewed one, and accepts an approver signing through ssh-agent', async () => {
    const fx = await databaseFixture('alternating-users');
    const trusted = await approvalSecret(fx);
    const run = (args: string[], taskQueue: string, env: NodeJS.ProcessEnv = {}) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], {
        cwd: ROOT,
        env: { ...process.env, REKEY_TASK_QUEUE: taskQueue, ...env },
      }).then(
        (r) => ({ code: 0, out: r.stdout, errOut: r.stderr }),
        (e) => ({ code: e.code as number, out: e.stdout as string, errOut: e.stderr as string }),
      );
    const other = await approvalSecret(fx, { minApprovals: 1, timeout: '2h' });
    await withWorker(
      async (tq) => {
        const { handle } = await startAwaitingApproval(tq, trusted, fx.id);
        const listed = await run(['pending', '--json'], tq);
        const row = listed.out.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.secret === fx.id);
        assert.ok(row, listed.out + listed.errOut);
        assert.deepEqual([row.requestedBy, row.needed, row.waitingFor], ['alice', 1, ['bob', 'carol']]);

        const named = await run(['approve', fx.id, '--as', 'bob'], tq);
        assert.equal(named.code, 2);
        assert.match(named.errOut, /--as is gone: a decision counts only when signed/);

        const own = await run(['approve', fx.id, '--key', alice.path], tq);
        assert.equal(own.code, 2, own.errOut);
        assert.match(own.errOut, /refused: alice requested this rotation/);

        const unreviewed = await run(['approve', fx.id, '--key', bob.path, '-f', other.dir], tq);
        assert.equal(unreviewed.code, 2);
        assert.match(unreviewed.errOut, /refusing to sign: the rotation runs spec sha256:\w+, but .* says sha256:\w+/);

        // bob's key lives in ssh-agent: rekey names its public half and the agent signs.
        const agentDir = await tempDir();
        const sock = join(agentDir, 'agent.sock');
        const agent = await promisify(execFile)('ssh-agent', ['-a', sock]);
        const agentPid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)![1];
        try {
          await promisify(execFile)('ssh-add', ['-q', bob.path], { env: { ...process.env, SSH_AUTH_SOCK: sock } });
          const ok = await run(['approve', fx.id, '--agent', '--key', `${bob.path}.pub`, '--comment', 'ok', '-f', trusted.dir], tq, { SSH_AUTH_SOCK: sock });
          assert.equal(ok.code, 0, ok.errOut);
          assert.match(ok.out, /approved by bob: 1 of 1 approvals/);
        } finally {
          process.kill(Number(agentPid));
        }
        assert.equal(((await handle.result()) as RotationReport).outcome, 'rotated');
      },
      { manifestDirs: [trusted.dir] },
    );
  });
});
