// Atomic groups (seed 004): a database password and an API key, each referenced from its own git
// repository, change together or not at all, with one approval for the whole group.
import assert from 'node:assert/strict';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { groupBinding, membersLine } from '../lib/authority';
import type { DecisionDocument } from '../lib/signed';
import {
  decideUpdate,
  groupDecidedSignal,
  groupProgressQuery,
  groupWorkflowId,
  progressQuery,
  rotationWorkflowId,
  type GroupProgress,
  type GroupReport,
} from '../workflows/messages';
import { rotateGroup } from '../workflows/rotateGroup';
import { rotateSecret } from '../workflows/rotateSecret';
import { configConsumer, git, repository, storeSecret } from './git-fixtures';
import { newKey, people, sign, validFor, type TestKey } from './keys';
import { canLogin, databaseFixture, failureOf, killAndFinish, labelled, manifests, postgresSpec, rekeyCli, spawnWorker, temporalClient, uniqueId, withWorker } from './helpers';
import { forgedGroupRelease } from './forged-workflows';

/** The seed-004 estate: orders-config refers to the database password, billing-config to the API key. */
async function estate(options: { approval?: TestKey; billingVerify?: string } = {}) {
  const id = uniqueId('g');
  const fx = await databaseFixture('single-user');
  const [orders, billing] = [await repository(), await repository()];
  const api = await storeSecret(id);
  const [db, key] = [`${id}-db`, `${id}-key`];
  const approval = options.approval ? { approval: { required: true, approvers: [options.approval.name], timeout: '10m' } } : {};
  const trusted = await manifests(
    {
      // The database password asks for approval in its own right: the group's decision stands in for it.
      [db]: postgresSpec(fx, 'single-user', { consumers: [configConsumer(`file://${orders.bare}`, { name: 'orders-config' })], policy: { overlap: '0s', ...approval } }),
      [key]: {
        store: api.store,
        generator: { type: 'random-bytes', size: 32 },
        consumers: [configConsumer(`file://${billing.bare}`, { name: 'billing-config', ...(options.billingVerify ? { verify: options.billingVerify } : {}) })],
        policy: { overlap: '0s', timeouts: { verify: '3s' } },
      },
    },
    ...(options.approval ? [people([options.approval])] : []),
    { apiVersion: 'rekey.dev/v1', kind: 'RotationGroup', metadata: { name: id }, spec: { secrets: [db, key], ...approval } },
  );
  const before = { db: (await labelled(fx.secretId, 'AWSCURRENT'))!, key: (await labelled(api.store.secretId, 'AWSCURRENT'))! };
  const heads = [await git(orders.bare, 'rev-parse', 'main'), await git(billing.bare, 'rev-parse', 'main')];
  const input = { group: id, specHash: trusted.set.groups.get(id)!.specHash };
  /** Nothing changed anywhere: old versions current, nothing pending, mains untouched, no branch left. */
  const untouched = async () => {
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, before.db.versionId);
    assert.equal((await labelled(api.store.secretId, 'AWSCURRENT'))!.versionId, before.key.versionId);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assert.equal(await labelled(api.store.secretId, 'AWSPENDING'), undefined);
    assert.deepEqual([await git(orders.bare, 'rev-parse', 'main'), await git(billing.bare, 'rev-parse', 'main')], heads, 'a main moved');
    assert.deepEqual([await orders.branches(), await billing.branches()], [['main'], ['main']], 'a prepared branch was left');
    assert.ok(await canLogin(fx.users[0], fx.initialPassword), 'the old database password no longer works');
  };
  /** Both stores have a new current version. */
  const bothPromoted = async () => {
    assert.notEqual((await labelled(fx.secretId, 'AWSCURRENT'))!.versionId, before.db.versionId, 'the database password did not promote');
    assert.notEqual((await labelled(api.store.secretId, 'AWSCURRENT'))!.versionId, before.key.versionId, 'the API key did not promote');
  };
  return { id, fx, orders, billing, api, db, key, trusted, input, before, untouched, bothPromoted };
}

type Estate = Awaited<ReturnType<typeof estate>>;

async function untilGroup(handle: WorkflowHandle, ok: (p: GroupProgress) => boolean): Promise<GroupProgress> {
  for (let i = 0; i < 1200; i++) {
    const p = await handle.query(groupProgressQuery).catch(() => undefined);
    if (p && ok(p)) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the group never got there');
}

/** Run `work` on a fresh worker once the group of `e` waits for its approval, every member held. */
async function whileHeld<T>(e: Estate, work: (handle: WorkflowHandle, waiting: GroupProgress) => Promise<T>, options: Parameters<typeof withWorker>[1] = {}): Promise<T> {
  return withWorker(
    async (taskQueue) => {
      const handle = await startGroup(taskQueue, e.input);
      return work(handle, await untilGroup(handle, (p) => p.stage === 'approve'));
    },
    { manifestDirs: [e.trusted.dir], ...options },
  );
}

/** The decision `rekey approve --group` signs for the group waiting now, with `change` applied. */
function groupDecision(handle: WorkflowHandle, p: GroupProgress, change: Partial<DecisionDocument> = {}): DecisionDocument {
  const line = membersLine(p.members.map((m) => ({ secret: m.secret, pendingVersionId: m.pendingVersionId! })));
  const binding = groupBinding('default', handle.workflowId, (handle as { firstExecutionRunId?: string }).firstExecutionRunId!, p.group, p.specHash!, line);
  return { kind: 'rekey.dev/decision', ...binding, decision: 'approve', ...validFor(3_600_000), ...change };
}

const startGroup = async (taskQueue: string, input: { group: string; specHash: string }) =>
  (await temporalClient()).workflow.start(rotateGroup, { taskQueue, workflowId: groupWorkflowId(input.group), args: [input] });

describe('atomic groups (RotationGroup)', () => {
  it('prepares every member, takes one signed approval for the group, then every member promotes; members cannot be decided for alone', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    const report = await whileHeld(
      e,
      async (handle, waiting) => {
        assert.deepEqual(waiting.members.map((m) => m.state), ['prepared', 'prepared']);
        const member = client.workflow.getHandle(rotationWorkflowId(e.db));
        assert.equal((await member.query(progressQuery)).stage, 'held');

        // A held member takes no decision of its own, even from an approver of the group.
        const own = await member.query(progressQuery);
        const alone = await sign(alice, { ...groupDecision(handle, waiting), workflowId: member.workflowId, runId: (await member.describe()).runId, secret: e.db, pendingVersionId: own.versions.pending!, specHash: own.specHash! });
        await refusedWith(member.executeUpdate(decideUpdate, { args: [alone] }), /not waiting for approval \(stage: held\)/);
        // A decision for other versions than the members hold is refused.
        const other = await sign(alice, groupDecision(handle, waiting, { pendingVersionId: `${e.db}@x,${e.key}@y` }));
        await refusedWith(handle.executeUpdate(decideUpdate, { args: [other] }), /signed for pendingVersionId/);
        // A doorbell rung from outside is not a decision: the member asks the worker and stays held.
        await member.signal(groupDecidedSignal);
        await untilHistory(member, 'groupVerdict');
        assert.equal((await member.query(progressQuery)).stage, 'held');

        const result = await handle.executeUpdate(decideUpdate, { args: [await sign(alice, groupDecision(handle, waiting))] });
        assert.equal(result.outcome, 'approved');
        return (await handle.result()) as GroupReport;
      },
      { manifestDirs: [e.trusted.dir] },
    );

    assert.equal(report.outcome, 'rotated', JSON.stringify(report));
    assert.deepEqual(report.members.map((m) => [m.secret, m.state]), [[e.db, 'rotated'], [e.key, 'rotated']]);
    assert.deepEqual(report.approval.approvedBy.map((a) => a.approver), ['alice']);
    const [db, key] = [(await labelled(e.fx.secretId, 'AWSCURRENT'))!, (await labelled(e.api.store.secretId, 'AWSCURRENT'))!];
    assert.notEqual(db.versionId, e.before.db.versionId);
    assert.notEqual(key.versionId, e.before.key.versionId);
    assert.match(await e.orders.show('main'), new RegExp(`#${db.versionId}"`));
    assert.match(await e.billing.show('main'), new RegExp(`#${key.versionId}"`));
    assert.deepEqual([await e.orders.branches(), await e.billing.branches()], [['main'], ['main']]);
    assert.ok(await canLogin(e.fx.users[0], db.value.password as string), 'the new database password works');
    assert.ok(!(await canLogin(e.fx.users[0], e.fx.initialPassword)), 'the old database password still works');
  });

  it("one repository's verify fails: every member rolls back, every branch is deleted, every store keeps its AWSCURRENT", async () => {
    const e = await estate({ billingVerify: 'exit 1' });
    const report = await withWorker(async (taskQueue) => (await startGroup(taskQueue, e.input)).result(), { manifestDirs: [e.trusted.dir] });

    assert.equal(report.outcome, 'rolled-back');
    assert.match(report.failure!, new RegExp(`${e.key} rolled-back at verify: .*verify exited with status 1`));
    assert.deepEqual(report.members.map((m) => [m.secret, m.state]), [[e.db, 'rolled-back'], [e.key, 'rolled-back']]);
    await e.untouched();
  });

  it('the worker is killed with SIGKILL while the members are held: the next worker completes the group', async function () {
    // Two worker processes start (each bundles the workflows) and heartbeats must time out: slow on a busy machine.
    this.timeout(240_000);
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const taskQueue = uniqueId('rekey-group-crash-');
    const first = spawnWorker(taskQueue, e.trusted.dir);
    const handle = await startGroup(taskQueue, e.input);
    const waiting = await untilGroup(handle, (p) => p.stage === 'approve');

    const finished = killAndFinish(first, taskQueue, e.trusted.dir, handle.result() as never);
    const decided = await handle.executeUpdate(decideUpdate, { args: [await sign(alice, groupDecision(handle, waiting))] });
    const report = (await finished) as unknown as GroupReport;

    assert.equal(decided.outcome, 'approved');
    assert.equal(report.outcome, 'rotated', JSON.stringify(report));
    await e.bothPromoted();
  });

  it('the group is cancelled while its members are held: every member aborts and rolls back', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    await whileHeld(
      e,
      async (handle) => {
        await handle.cancel();
        await assert.rejects(handle.result(), (err: Error) => err instanceof WorkflowFailedError);
        for (const secret of [e.db, e.key]) {
          const member = (await client.workflow.getHandle(rotationWorkflowId(secret)).result()) as { outcome: string; failure?: { message: string } };
          assert.equal(member.outcome, 'rolled-back');
          assert.match(member.failure!.message, /aborted/);
        }
      },
      { manifestDirs: [e.trusted.dir] },
    );
    await e.untouched();
  });

  it('the worker is killed with SIGKILL while members are still preparing: the next worker completes the group', async function () {
    // Two worker processes start (each bundles the workflows) and heartbeats must time out: slow on a busy machine.
    this.timeout(240_000);
    const e = await estate();
    const taskQueue = uniqueId('rekey-group-crash-');
    const first = spawnWorker(taskQueue, e.trusted.dir);
    const handle = await startGroup(taskQueue, e.input);
    await untilGroup(handle, (p) => p.members.some((m) => m.state === 'preparing'));

    const report = (await killAndFinish(first, taskQueue, e.trusted.dir, handle.result() as never)) as unknown as GroupReport;

    assert.equal(report.outcome, 'rotated', JSON.stringify(report));
    assert.deepEqual([await e.orders.branches(), await e.billing.branches()], [['main'], ['main']]);
  });

  it('the group is terminated while its members are held, before any decision: each member writes the abort itself and rolls back', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    await whileHeld(
      e,
      async (handle) => {
        await handle.terminate('the coordinator is lost');
        for (const secret of [e.db, e.key]) {
          const member = (await client.workflow.getHandle(rotationWorkflowId(secret)).result()) as { outcome: string; failure?: { message: string } };
          assert.equal(member.outcome, 'rolled-back');
          assert.match(member.failure!.message, /aborted/);
        }
      },
      { manifestDirs: [e.trusted.dir] },
    );
    await e.untouched();
  });

  it('the group is terminated after its release was written but before any member was told: every member still promotes (the written decision stands)', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    let written!: () => void;
    const releaseWritten = new Promise<void>((r) => (written = r));
    let terminated!: () => void;
    const groupGone = new Promise<void>((r) => (terminated = r));
    await whileHeld(
      e,
      async (handle, waiting) => {
        await handle.executeUpdate(decideUpdate, { args: [await sign(alice, groupDecision(handle, waiting))] });
        await releaseWritten;
        await handle.terminate('the coordinator is lost right after deciding');
        terminated();
        for (const secret of [e.db, e.key]) {
          const member = (await client.workflow.getHandle(rotationWorkflowId(secret)).result()) as { outcome: string };
          assert.equal(member.outcome, 'rotated', `${secret} did not promote`);
        }
      },
      {
        manifestDirs: [e.trusted.dir],
        // The coordinator's decision reaches the trail, and the coordinator is lost before it can tell anyone.
        activities: (real) => ({
          ...real,
          decideGroup: async (request: Parameters<typeof real.decideGroup>[0]) => {
            const decided = await real.decideGroup(request);
            if (decided.decision === 'release') {
              written();
              await groupGone;
            }
            return decided;
          },
        }),
      },
    );
    await e.bothPromoted();
  });

  it('a member already rotating on its own: the group refuses to start, naming it, and changes nothing', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    await withWorker(
      async (taskQueue) => {
        // The database password is being rotated on its own, waiting for an approval.
        const solo = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(e.db), args: [e.trusted.input(e.db)] });
        for (let i = 0; i < 600 && (await solo.query(progressQuery).catch(() => undefined))?.stage !== 'approve'; i++) await new Promise((r) => setTimeout(r, 100));
        const pending = await labelled(e.fx.secretId, 'AWSPENDING');

        const report = (await (await startGroup(taskQueue, e.input)).result()) as GroupReport;

        assert.equal(report.outcome, 'rolled-back');
        assert.match(report.failure!, new RegExp(`${e.db} is already rotating on its own \\(workflow rotation/${e.db}\\)`));
        assert.deepEqual(report.members.map((m) => m.state), ['failed', 'waiting'], 'the API key was never started');
        assert.equal(await labelled(e.api.store.secretId, 'AWSPENDING'), undefined);
        assert.equal((await labelled(e.fx.secretId, 'AWSPENDING'))?.versionId, pending?.versionId, "the solo rotation's pending version is its own");
        await solo.cancel();
        await assert.rejects(solo.result(), /cancelled/);
      },
      { manifestDirs: [e.trusted.dir] },
    );
    await e.untouched();
  });

  it('rekey rotate --group refuses while a member rotates on its own (naming it); rekey pending lists the group; rekey approve --group signs for every member and the group rotates', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    await withWorker(
      async (taskQueue) => {
        const env = { REKEY_TASK_QUEUE: taskQueue };
        const solo = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(e.db), args: [e.trusted.input(e.db)] });
        const refused = await rekeyCli(['rotate', '--group', e.id, '-f', e.trusted.dir], env);
        assert.equal(refused.code, 3, refused.errOut);
        assert.match(refused.errOut, new RegExp(`${e.db} is already rotating on its own \\(workflow rotation/${e.db}\\)`));
        await solo.cancel();
        await assert.rejects(solo.result(), /cancelled/);

        const started = await rekeyCli(['rotate', '--group', e.id, '-f', e.trusted.dir, '--reason', 'quarterly'], env);
        assert.equal(started.code, 0, started.errOut);
        assert.match(started.errOut, new RegExp(`started rotation of group ${e.id}: workflow group/${e.id}`));
        const handle = client.workflow.getHandle(groupWorkflowId(e.id));
        await untilGroup(handle, (p) => p.stage === 'approve');
        const listed = await rekeyCli(['pending', '--json'], env);
        const row = listed.out.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.group === e.id);
        assert.deepEqual([row?.members, row?.waitingFor], [[e.db, e.key], ['alice']], listed.out + listed.errOut);

        const approved = await rekeyCli(['approve', '--group', e.id, '--key', alice.path, '-f', e.trusted.dir], env);
        assert.equal(approved.code, 0, approved.errOut);
        assert.match(approved.out, new RegExp(`approved by alice: 1 of 1 approvals, group ${e.id} proceeds to promote`));
        const report = (await handle.result()) as GroupReport;
        assert.equal(report.outcome, 'rotated', JSON.stringify(report));
        assert.equal(report.reason, 'quarterly');
      },
      { manifestDirs: [e.trusted.dir] },
    );
  });

  it('no workflow can write a group\'s decision through the audit activity: a planted release is refused and the group still waits for its approvers', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const client = await temporalClient();
    // The real group waits for alice on one worker; the attacker's workflow runs on another queue of the same worker code.
    await whileHeld(
      e,
      async (handle, waiting) => {
        const groupRotationId = `${handle.workflowId}/${(handle as { firstExecutionRunId?: string }).firstExecutionRunId}`;
        const members = membersLine(waiting.members.map((m) => ({ secret: m.secret, pendingVersionId: m.pendingVersionId! })));
        const planted = await withWorker(
          (forgedQueue) => failureOf(client.workflow.execute(forgedGroupRelease, { taskQueue: forgedQueue, workflowId: uniqueId('forged-'), args: [{ groupRotationId, group: e.id, members }] })),
          { manifestDirs: [e.trusted.dir], forgedWorkflows: true },
        );
        assert.match(planted, /a workflow records its own events only/);
        // Rung now, a member asks the worker: nothing was decided, so it stays held.
        const member = client.workflow.getHandle(rotationWorkflowId(e.db));
        await member.signal(groupDecidedSignal);
        await untilHistory(member, 'groupVerdict');
        assert.equal((await member.query(progressQuery)).stage, 'held');
        await handle.cancel();
        await assert.rejects(handle.result());
      },
      { manifestDirs: [e.trusted.dir] },
    );
    await e.untouched();
  });

  it('a released member told to roll back (a forged verdict) is refused by the worker: it undoes nothing, the release stands', async () => {
    const alice = await newKey('alice');
    const e = await estate({ approval: alice });
    const report = await whileHeld(
      e,
      async (handle, waiting) => {
        await handle.executeUpdate(decideUpdate, { args: [await sign(alice, groupDecision(handle, waiting))] });
        return (await handle.result()) as GroupReport;
      },
      {
        manifestDirs: [e.trusted.dir],
        // Whoever can complete activities answers the API key's question with "abort" after the release.
        activities: (real) => ({
          ...real,
          groupVerdict: async (request: Parameters<typeof real.groupVerdict>[0]) => {
            const verdict = await real.groupVerdict(request);
            return request.secret === e.key && verdict.decision === 'release' ? { decision: 'abort', detail: 'forged' } : verdict;
          },
        }),
      },
    );

    assert.equal(report.outcome, 'incomplete');
    const key = report.members.find((m) => m.secret === e.key)!;
    assert.equal(key.state, 'failed');
    assert.match(key.detail ?? '', /rollback incomplete: .*a released member goes forward, never back/);
    // Nothing of the API key's rotation was undone: its version is still pending and its branch still there for a person to finish.
    assert.equal((await labelled(e.api.store.secretId, 'AWSPENDING'))?.versionId, key.pendingVersionId);
    assert.equal((await e.billing.branches()).length, 2);
    assert.notEqual((await labelled(e.fx.secretId, 'AWSCURRENT'))!.versionId, e.before.db.versionId, 'the database password promoted');
  });

  it('a rotation that claims a group it was not started by is refused before anything changes', async () => {
    const e = await estate();
    const client = await temporalClient();
    await withWorker(
      async (taskQueue) => {
        const run = client.workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(e.key), args: [e.trusted.input(e.key, { group: e.id })] });
        await assert.rejects(run, (err: Error) => err instanceof WorkflowFailedError && /this rotation was not started by the workflow group\//.test(String(err.cause?.message)));
      },
      { manifestDirs: [e.trusted.dir] },
    );
    await e.untouched();
  });
});

/** The update was refused by its validator, for this reason. */
async function refusedWith(update: Promise<unknown>, reason: RegExp): Promise<void> {
  await assert.rejects(update, (err: Error & { cause?: Error }) => reason.test(String(err.cause?.message)));
}

/** Wait until `handle`'s history shows a completed activity of this type. */
async function untilHistory(handle: WorkflowHandle, activityType: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const history = await handle.fetchHistory();
    const scheduled = new Set<string>();
    for (const event of history.events ?? []) {
      if (event.activityTaskScheduledEventAttributes?.activityType?.name === activityType) scheduled.add(String(event.eventId));
      const done = event.activityTaskCompletedEventAttributes;
      if (done && scheduled.has(String(done.scheduledEventId))) return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no completed ${activityType} in ${handle.workflowId}`);
}
