import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ScheduleNotFoundError } from '@temporalio/client';
import { stringify } from 'yaml';
import { loadManifests } from '../lib/manifest';
import { apply, plan, scheduleId } from '../schedules/plan';
import { cheapSecrets, scheduleManifest } from './fleet-fixtures';
import { tempDir, temporalClient, uniqueId, withWorker } from './helpers';
import type { GroupReport } from '../workflows/messages';

const kinds = (p: Awaited<ReturnType<typeof plan>>) => p.changes.map((c) => `${c.kind} ${c.id}`).sort();

describe('schedules from manifests', () => {
  const created: string[] = [];
  after(async () => {
    const client = await temporalClient();
    for (const id of created) await client.schedule.getHandle(id).delete().catch(() => undefined);
  });

  it('apply creates, re-apply changes nothing, an edit updates, a removed manifest is deleted, a foreign schedule is untouched; plan matches apply', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const set = uniqueId('set-');
    const team = uniqueId('team-');
    await cheapSecrets(dir, 2, { team });
    const [weekly, daily] = [uniqueId('weekly-'), uniqueId('daily-')];
    created.push(scheduleId(weekly), scheduleId(daily));
    await scheduleManifest(dir, 'weekly.yaml', weekly, { cron: '0 2 * * SUN', timezone: 'Asia/Tokyo', jitter: '10m', select: { labels: { team } }, maxParallel: 2, paused: true });
    await scheduleManifest(dir, 'daily.yaml', daily, { every: '24h', select: { labels: { team } }, paused: true });
    const foreign = uniqueId('rekey/foreign-');
    created.push(foreign);
    await client.schedule.create({
      scheduleId: foreign,
      spec: { intervals: [{ every: '1h' }] },
      action: { type: 'startWorkflow', workflowType: 'rotateFleet', taskQueue: 'nowhere', args: [] },
      state: { paused: true },
    });

    const first = await plan(client, await loadManifests(dir), { set });
    assert.deepEqual(kinds(first), [`create ${scheduleId(daily)}`, `create ${scheduleId(weekly)}`].sort());
    await apply(client, first);
    const again = await plan(client, await loadManifests(dir), { set });
    assert.deepEqual(again.changes.map((c) => c.kind), ['unchanged', 'unchanged']);

    await scheduleManifest(dir, 'weekly.yaml', weekly, { cron: '30 3 * * SUN', timezone: 'Asia/Tokyo', select: { labels: { team } }, maxParallel: 2, paused: true });
    await rm(join(dir, 'daily.yaml'));
    // The listing that finds deletions is eventually consistent: wait until the new ones show.
    let edited = await plan(client, await loadManifests(dir), { set });
    for (let i = 0; i < 50 && !edited.changes.some((c) => c.kind === 'delete'); i++) {
      await new Promise((r) => setTimeout(r, 200));
      edited = await plan(client, await loadManifests(dir), { set });
    }
    assert.deepEqual(kinds(edited), [`delete ${scheduleId(daily)}`, `update ${scheduleId(weekly)}`].sort());
    await apply(client, edited);

    await assert.rejects(client.schedule.getHandle(scheduleId(daily)).describe(), ScheduleNotFoundError);
    const weeklyNow = await client.schedule.getHandle(scheduleId(weekly)).describe();
    assert.deepEqual(weeklyNow.spec.calendars?.[0].minute, [{ start: 30, end: 30, step: 1 }]);
    assert.equal((await client.schedule.getHandle(foreign).describe()).state.paused, true, 'the foreign schedule is still there');
    assert.deepEqual((await plan(client, await loadManifests(dir), { set })).changes.map((c) => c.kind), ['unchanged']);
  });

  it('a changed Secret manifest is drift: plan shows its schedule as an update', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const set = uniqueId('set-');
    const team = uniqueId('team-');
    await cheapSecrets(dir, 1, { team });
    const name = uniqueId('drift-');
    created.push(scheduleId(name));
    await scheduleManifest(dir, 's.yaml', name, { every: '7d', select: { labels: { team } }, paused: true });
    await apply(client, await plan(client, await loadManifests(dir), { set }));
    await cheapSecrets(dir, 1, { team }); // a new secret now matches the selector
    const drifted = await plan(client, await loadManifests(dir), { set });
    assert.deepEqual(drifted.changes.map((c) => c.kind), ['update']);
    assert.match(drifted.changes[0].summary, /2 secret\(s\)/);
  });

  it('next action times follow the calendar in the schedule time zone (Sunday 02:00 Asia/Tokyo is Saturday 17:00 UTC)', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const team = uniqueId('team-');
    await cheapSecrets(dir, 1, { team });
    const name = uniqueId('tokyo-');
    created.push(scheduleId(name));
    await scheduleManifest(dir, 's.yaml', name, { calendar: { dayOfWeek: 'SUNDAY', hour: 2, minute: 0 }, timezone: 'Asia/Tokyo', select: { labels: { team } } });
    await apply(client, await plan(client, await loadManifests(dir), { set: uniqueId('set-') }));
    const { info } = await client.schedule.getHandle(scheduleId(name)).describe();
    assert.ok(info.nextActionTimes.length >= 2);
    for (const t of info.nextActionTimes) {
      assert.equal(t.getUTCDay(), 6, t.toISOString());
      assert.equal(t.getUTCHours(), 17);
      assert.equal(t.getUTCMinutes(), 0);
    }
    await client.schedule.getHandle(scheduleId(name)).pause('test');
  });

  it('a schedule of a RotationGroup starts the group (all or nothing) when it fires, and plan says so', async () => {
    const client = await temporalClient();
    const dir = await tempDir();
    const members = await cheapSecrets(dir, 2, { team: 'payments' });
    const group = uniqueId('grp-');
    await writeFile(join(dir, 'group.yaml'), stringify({ apiVersion: 'rekey.dev/v1', kind: 'RotationGroup', metadata: { name: group }, spec: { secrets: members.map((m) => m.name) } }));
    const name = uniqueId('weekly-');
    created.push(scheduleId(name));
    await scheduleManifest(dir, 's.yaml', name, { cron: '0 2 * * SUN', group, paused: true });
    const set = await loadManifests(dir);

    const report = await withWorker(
      async (taskQueue) => {
        const planned = await plan(client, set, { set: uniqueId('set-'), taskQueue });
        const change = planned.changes.find((c) => c.kind === 'create');
        assert.ok(change?.kind === 'create');
        assert.match(change.summary, new RegExp(`group ${group} \\(2 secrets, all or nothing\\)`));
        await apply(client, planned);
        // Fired as Temporal fires it: the workflow id gets the scheduled time appended.
        const schedule = client.schedule.getHandle(scheduleId(name));
        await schedule.trigger();
        let started: string | undefined;
        for (let i = 0; i < 100 && !started; i++) {
          const action = (await schedule.describe()).info.recentActions[0]?.action;
          started = action?.type === 'startWorkflow' ? action.workflow.workflowId : undefined;
          if (!started) await new Promise((r) => setTimeout(r, 200));
        }
        assert.match(started ?? '', new RegExp(`^group/${group}-\\d{4}-`));
        return (await client.workflow.getHandle(started!).result()) as GroupReport;
      },
      { manifestDirs: [dir] },
    );
    assert.equal(report.outcome, 'rotated', JSON.stringify(report));
    assert.equal(report.requestedBy, `schedule ${name}`);
  });

  it('a selector that matches nothing is a warning in plan', async () => {
    const dir = await tempDir();
    await cheapSecrets(dir, 1, { team: 'a' });
    await scheduleManifest(dir, 's.yaml', uniqueId('empty-'), { every: '1d', select: { labels: { team: 'nobody' } } });
    const p = await plan(await temporalClient(), await loadManifests(dir), { set: uniqueId('set-') });
    assert.match(p.warnings.join('\n'), /selector matches no secret/);
  });

  it('a schedule carries secret names and spec hashes, never a spec: 5,000 secrets fit one schedule under Temporal\'s 512 KiB payload warning', async () => {
    // Manifests only (plan never reads the stores).
    const dir = await tempDir();
    const docs = Array.from({ length: 5000 }, (_, i) =>
      stringify({
        apiVersion: 'rekey.dev/v1',
        kind: 'Secret',
        metadata: { name: `payments-db-${String(i).padStart(4, '0')}`, labels: { team: 'big' } },
        spec: {
          store: { type: 'aws-secrets-manager', secretId: `prod/payments/${i}` },
          generator: { type: 'random-bytes', size: 16 },
          consumers: [{ type: 'command', name: 'file', file: join(dir, `${i}.json`), reload: `systemctl reload payments-${i}` }],
        },
      }),
    );
    await writeFile(join(dir, 'secrets.yaml'), docs.join('---\n'));
    const name = uniqueId('big-');
    await scheduleManifest(dir, 's.yaml', name, { every: '7d', select: { labels: { team: 'big' } } });
    const set = await loadManifests(dir);
    const planned = await plan(await temporalClient(), set, { set: uniqueId('set-') });
    assert.deepEqual(planned.warnings, []);
    const change = planned.changes.find((c) => c.kind === 'create')!;
    const args = JSON.stringify(change.kind === 'create' && change.options.action.args);
    assert.ok(Buffer.byteLength(args) < 512 * 1024, `${Buffer.byteLength(args)} bytes`);
    assert.ok(!args.includes('systemctl') && !args.includes('prod/payments'), 'no spec rides in the schedule');
    assert.ok(args.includes(`["payments-db-0042","${set.secrets.get('payments-db-0042')!.specHash}"]`));
  });
});
