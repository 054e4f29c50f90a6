import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { inventory } from '../lib/inventory';
import { loadManifests } from '../lib/manifest';
import { apply, plan, scheduleId } from '../schedules/plan';
import { fleetWorkflowId, progressQuery, rotationWorkflowId, type FleetItem, type FleetSummary } from '../workflows/messages';
import { decisionFor, newKey, sign } from './keys';
import { rotateFleet } from '../workflows/rotateFleet';
import { rotateSecret } from '../workflows/rotateSecret';
import { cheapSecrets, scheduleManifest, type CheapSecret } from './fleet-fixtures';
import { storeVersions, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

const ROOT = join(__dirname, '..');

async function versionCounts(secrets: CheapSecret[]): Promise<number[]> {
  return Promise.all(secrets.map(async (s) => (await storeVersions(s.secretId)).length));
}

async function fleetInput(dir: string, fleet: string, maxParallel: number) {
  const set = await loadManifests(dir);
  return { fleet, maxParallel, items: [...set.secrets.values()].map((m): FleetItem => [m.metadata.name, m.specHash]) };
}

describe('fleets', () => {
  it('triggering a schedule rotates all 50 selected secrets, 5 at a time, each exactly once', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const team = uniqueId('team-');
    const secrets = await cheapSecrets(dir, 50, { team });
    const name = uniqueId('fifty-');
    await scheduleManifest(dir, 's.yaml', name, { every: '7d', select: { labels: { team } }, maxParallel: 5, paused: true });
    await withWorker(async (taskQueue) => {
      await apply(client, await plan(client, await loadManifests(dir), { set: uniqueId('set-'), taskQueue }));
      const schedule = client.schedule.getHandle(scheduleId(name));
      try {
        await schedule.trigger();
        let fleetId: string | undefined;
        for (let i = 0; i < 100 && !fleetId; i++) {
          fleetId = (await schedule.describe()).info.recentActions[0]?.action.workflow.workflowId;
          if (!fleetId) await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(fleetId?.startsWith(fleetWorkflowId(name)), fleetId);
        const summary: FleetSummary = await client.workflow.getHandle(fleetId!).result();
        assert.equal(summary.rotated.length, 50, JSON.stringify(summary));
        assert.deepEqual([summary.skipped, summary.failed, summary.rolledBack], [[], [], []]);
      } finally {
        await schedule.delete();
      }
    }, { manifestDirs: [dir] });
    assert.deepEqual(await versionCounts(secrets), secrets.map(() => 2));
    for (const s of secrets.slice(0, 3)) {
      const versions = await storeVersions(s.secretId);
      assert.equal(versions.filter((v) => v.stages.includes('AWSCURRENT')).length, 1);
      assert.equal(versions.filter((v) => v.stages.includes('AWSPREVIOUS')).length, 1);
    }
  });

  it('a secret already rotating ad hoc is reported as skipped by the fleet, and rotated once', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const bob = await newKey('bob');
    // The busy one needs bob's approval: its ad-hoc rotation waits while the fleet passes by.
    const [first] = await cheapSecrets(dir, 1, { team: 'x' });
    const [busy] = await cheapSecrets(dir, 1, { team: 'x' }, { approval: { required: true, approvers: [{ name: 'bob', keys: [bob.publicKey] }] } });
    const [last] = await cheapSecrets(dir, 1, { team: 'x' });
    const secrets = [first, busy, last];
    const set = await loadManifests(dir);
    await withWorker(
      async (taskQueue) => {
        const adhoc = await client.workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(busy.name), args: [{ secret: busy.name, specHash: set.secrets.get(busy.name)!.specHash, requestedBy: 'alice' }] });
        const summary: FleetSummary = await client.workflow.execute(rotateFleet, {
          taskQueue,
          workflowId: fleetWorkflowId(uniqueId('adhoc-')),
          args: [await fleetInput(dir, 'adhoc', 2)],
        });
        assert.deepEqual(summary.skipped, [busy.name]);
        assert.deepEqual(summary.rotated.sort(), [first.name, last.name].sort());
        let progress = await adhoc.query(progressQuery);
        for (let i = 0; i < 100 && progress.stage !== 'approve'; i++) progress = await new Promise((r) => setTimeout(r, 100)).then(() => adhoc.query(progressQuery));
        await adhoc.executeUpdate('decide', { args: [await sign(bob, decisionFor(adhoc, progress))] });
        assert.equal(((await adhoc.result()) as { outcome: string }).outcome, 'rotated');
      },
      { manifestDirs: [dir] },
    );
    assert.deepEqual(await versionCounts(secrets), [2, 2, 2], 'one rotation each, the busy one included');
  });

  it('a worker killed mid-fleet, across continue-as-new runs, is replaced and every secret ends rotated exactly once', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const secrets = await cheapSecrets(dir, 12, { team: 'y' });
    const taskQueue = uniqueId('rekey-fleet-crash-');
    const spawnWorker = (): ChildProcess =>
      spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'workers/main.ts')], { cwd: ROOT, env: { ...process.env, REKEY_TASK_QUEUE: taskQueue, REKEY_MANIFESTS: dir }, stdio: 'ignore' });
    const first = spawnWorker();
    // Five children per run: the twelve secrets take three runs chained by continue-as-new.
    const input = { ...(await fleetInput(dir, 'crash', 2)), childrenPerRun: 5 };
    const handle = await client.workflow.start(rotateFleet, { taskQueue, workflowId: fleetWorkflowId(uniqueId('crash-')), args: [input] });
    // Kill it once some, but not all, secrets have rotated.
    for (let i = 0; i < 300; i++) {
      const counts = await versionCounts(secrets);
      if (counts.filter((c) => c === 2).length >= 3) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    assert.ok((await versionCounts(secrets)).some((c) => c === 1), 'the kill happened mid-fleet');
    const second = spawnWorker();
    try {
      const summary: FleetSummary = await handle.result();
      assert.equal(summary.rotated.length, 12, JSON.stringify(summary));
    } finally {
      second.kill('SIGTERM');
    }
    assert.deepEqual(await versionCounts(secrets), secrets.map(() => 2));
    // Visibility catches up with the last run shortly after it closes.
    let runs: string[] = [];
    for (let i = 0; i < 50; i++) {
      runs = [];
      for await (const run of client.workflow.list({ query: `WorkflowId = "${handle.workflowId}"` })) runs.push(run.status.name);
      if (runs.length >= 3 && !runs.includes('RUNNING')) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(runs.sort(), ['COMPLETED', 'CONTINUED_AS_NEW', 'CONTINUED_AS_NEW']);
  });

  it('inventory marks a secret older than its maxAge as overdue, and a fresh one not', async () => {
    const dir = await tempDir();
    const old = await cheapSecrets(dir, 1, { team: 'payments', class: 'token' }, { maxAge: '1s' });
    const fresh = await cheapSecrets(dir, 1, { team: 'payments' }, { maxAge: '30d' });
    await new Promise((r) => setTimeout(r, 1500));
    const rows = await inventory(await temporalClient(), await loadManifests(dir));
    const byName = new Map(rows.map((r) => [r.secret, r]));
    assert.equal(byName.get(old[0].name)!.overdue, true);
    assert.equal(byName.get(fresh[0].name)!.overdue, false);
    assert.equal(byName.get(old[0].name)!.owner, 'payments');
    assert.equal(byName.get(old[0].name)!.class, 'token');
    assert.ok(byName.get(old[0].name)!.lastRotated);
    assert.equal(byName.get(old[0].name)!.lastOutcome, undefined, 'never rotated');
  });

  it('overdueOnly rotates just the secrets older than their maxAge', async () => {
    const dir = await tempDir();
    const [old] = await cheapSecrets(dir, 1, { team: 'z' }, { maxAge: '1s' });
    const [fresh] = await cheapSecrets(dir, 1, { team: 'z' }, { maxAge: '30d' });
    await new Promise((r) => setTimeout(r, 1500));
    const summary: FleetSummary = await withWorker(
      async (taskQueue) =>
        (await temporalClient()).workflow.execute(rotateFleet, {
          taskQueue,
          workflowId: fleetWorkflowId(uniqueId('overdue-')),
          args: [{ ...(await fleetInput(dir, 'overdue', 2)), overdueOnly: true }],
        }),
      { manifestDirs: [dir] },
    );
    assert.deepEqual([summary.rotated, summary.notDue], [[old.name], [fresh.name]]);
    assert.deepEqual(await versionCounts([old, fresh]), [2, 1]);
  });

  it('rekey rotate --selector rotates the matching secrets with one summary; rekey inventory shows their last outcome', async () => {
    const dir = await tempDir();
    const team = uniqueId('team-');
    const chosen = await cheapSecrets(dir, 2, { team });
    const other = await cheapSecrets(dir, 1, { team: 'someone-else' }, { maxAge: '1s' });
    await new Promise((r) => setTimeout(r, 1100));
    const cli = (taskQueue: string, ...args: string[]) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, REKEY_TASK_QUEUE: taskQueue } });
    const [rotated, listed] = await withWorker(
      async (taskQueue) => [await cli(taskQueue, 'rotate', '--selector', `team=${team}`, '-f', dir, '--max-parallel', '2'), await cli(taskQueue, 'inventory', '-f', dir)],
      { manifestDirs: [dir] },
    );
    assert.match(rotated.stdout, /rotated 2, rolled back 0, skipped \(already rotating\) 0, not due 0, failed 0/);
    assert.deepEqual(await versionCounts([...chosen, ...other]), [2, 2, 1]);
    const line = (name: string) => listed.stdout.split('\n').find((l) => l.startsWith(name)) ?? '';
    assert.match(line(chosen[0].name), /rotated/);
    assert.match(line(other[0].name), /OVERDUE/);
    assert.match(line(other[0].name), /never$/);
  });
});
