// Schedule manifests -> Temporal Schedules, declaratively: plan says what would change, apply
// makes it so, and only schedules rekey created for the same manifest set are ever touched.
//
// A schedule carries the names of the secrets it rotates and the hash of each one's spec, never a
// spec: the workers rotate what their own reviewed manifests say, and refuse a secret whose spec
// differs from the hash that was applied (re-plan after a manifest change). `plan` shows drift the
// same way: a changed Secret manifest changes its hash, so the schedule is listed as an update.
import { createHash } from 'node:crypto';
import { ScheduleNotFoundError, type Client, type ScheduleOptions, type ScheduleOverlapPolicy } from '@temporalio/client';
import { parseDuration } from '../lib/duration';
import { canonicalJson } from '../lib/canonical';
import { scheduledSecrets, type ManifestSet, type ScheduleManifest } from '../lib/manifest';
import { TASK_QUEUE, fleetWorkflowId, groupWorkflowId, type FleetInput, type GroupInput } from '../workflows/messages';

export const SCHEDULE_PREFIX = 'rekey/';
const MEMO_KEY = 'rekey';

export function scheduleId(name: string): string {
  return `${SCHEDULE_PREFIX}${name}`;
}

export interface PlanOptions {
  /** Which manifest set this is: apply prunes only schedules of the same set. */
  set: string;
  taskQueue?: string;
}

export type Change =
  | { kind: 'create'; id: string; name: string; options: ScheduleOptions; summary: string }
  | { kind: 'update'; id: string; name: string; options: ScheduleOptions; summary: string }
  | { kind: 'delete'; id: string; summary: string }
  | { kind: 'unchanged'; id: string; name: string; summary: string };

export interface Plan {
  changes: Change[];
  warnings: string[];
}

const OVERLAP: Record<ScheduleManifest['spec']['overlap'], ScheduleOverlapPolicy> = {
  skip: 'SKIP',
  'buffer-one': 'BUFFER_ONE',
  'buffer-all': 'BUFFER_ALL',
  'cancel-other': 'CANCEL_OTHER',
  'terminate-other': 'TERMINATE_OTHER',
  'allow-all': 'ALLOW_ALL',
};

function when(spec: ScheduleManifest['spec']): string {
  const at = spec.cron ? `cron "${spec.cron}"` : spec.every ? `every ${spec.every}` : `calendar ${canonicalJson(spec.calendar)}`;
  return `${at} ${spec.timezone}`;
}

/** The Temporal schedule a manifest stands for, and the hash of everything that defines it. */
export function desiredSchedule(set: ManifestSet, manifest: ScheduleManifest & { source?: string }, options: PlanOptions) {
  const { spec } = manifest;
  const selected = scheduledSecrets(set, manifest);
  const requestedBy = `schedule ${manifest.metadata.name}`;
  const reason = spec.description ?? `scheduled rotation (${when(spec)})`;
  // A group rotates all or nothing under its own workflow; a selection rotates as a fleet.
  const group = spec.group !== undefined ? set.groups.get(spec.group) : undefined;
  const start = group
    ? { workflowType: 'rotateGroup', workflowId: groupWorkflowId(group.metadata.name), input: { group: group.metadata.name, specHash: group.specHash, requestedBy, reason } satisfies GroupInput }
    : {
        workflowType: 'rotateFleet',
        workflowId: fleetWorkflowId(manifest.metadata.name),
        input: {
          fleet: manifest.metadata.name,
          items: selected.map((secret) => [secret, set.secrets.get(secret)!.specHash]),
          maxParallel: spec.maxParallel,
          overdueOnly: spec.select?.overdueOnly,
          requestedBy,
          reason,
        } satisfies FleetInput,
      };
  const input = start.input;
  const taskQueue = options.taskQueue ?? TASK_QUEUE;
  const hash = createHash('sha256').update(canonicalJson({ spec, input, taskQueue })).digest('hex').slice(0, 16);
  const scheduleOptions: ScheduleOptions = {
    scheduleId: scheduleId(manifest.metadata.name),
    spec: {
      ...(spec.cron ? { cronExpressions: [spec.cron] } : {}),
      ...(spec.every ? { intervals: [{ every: parseDuration(spec.every) }] } : {}),
      ...(spec.calendar
        ? {
            calendars: [
              {
                hour: spec.calendar.hour,
                minute: spec.calendar.minute,
                ...(spec.calendar.dayOfWeek ? { dayOfWeek: spec.calendar.dayOfWeek } : {}),
                ...(spec.calendar.dayOfMonth ? { dayOfMonth: spec.calendar.dayOfMonth } : {}),
              },
            ],
          }
        : {}),
      timezone: spec.timezone,
      ...(spec.jitter ? { jitter: parseDuration(spec.jitter) } : {}),
    },
    action: {
      type: 'startWorkflow',
      workflowType: start.workflowType,
      workflowId: start.workflowId,
      taskQueue,
      args: [input],
      // The content hash rides on the action (schedule memos cannot be updated).
      memo: { [MEMO_KEY]: { hash } },
    },
    policies: { overlap: OVERLAP[spec.overlap], catchupWindow: parseDuration(spec.catchupWindow), pauseOnFailure: spec.pauseOnFailure },
    state: { paused: spec.paused, note: `managed by rekey apply (set ${options.set}, ${manifest.source})` },
    memo: { [MEMO_KEY]: { set: options.set } },
  };
  const what = group ? `group ${group.metadata.name} (${selected.length} secrets, all or nothing)` : `${selected.length} secret(s), ${spec.maxParallel} at a time`;
  return { options: scheduleOptions, hash, selected, summary: `${when(spec)}, ${what}` };
}

function memoOf(memo: Record<string, unknown> | undefined): { set?: string; hash?: string } {
  return (memo?.[MEMO_KEY] as { set?: string; hash?: string } | undefined) ?? {};
}

const PAYLOAD_WARNED = 512 * 1024;
const PAYLOAD_REFUSED = 2 * 1024 * 1024;

export async function plan(client: Client, set: ManifestSet, options: PlanOptions): Promise<Plan> {
  const changes: Change[] = [];
  const warnings: string[] = [];
  const desiredIds = new Set<string>();
  for (const manifest of set.schedules.values()) {
    const desired = desiredSchedule(set, manifest, options);
    const id = desired.options.scheduleId;
    desiredIds.add(id);
    if (desired.selected.length === 0) warnings.push(`schedule ${manifest.metadata.name}: its selector matches no secret`);
    // Names and hashes ride in the schedule's action (about 100 bytes a secret): Temporal warns
    // about a payload over 512 KiB and refuses one over 2 MiB, so say so here, not at the first run.
    const bytes = Buffer.byteLength(JSON.stringify(desired.options.action.args));
    const sized = `schedule ${manifest.metadata.name}: its ${desired.selected.length} secrets take ${Math.round(bytes / 1024)} KiB`;
    if (bytes > PAYLOAD_REFUSED) throw new Error(`${sized}, over Temporal's 2 MiB payload limit; split it into several schedules (by label)`);
    if (bytes > PAYLOAD_WARNED) warnings.push(`${sized}, over Temporal's 512 KiB payload warning; consider splitting it (by label)`);
    let current;
    try {
      current = await client.schedule.getHandle(id).describe();
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError)) throw err;
    }
    if (!current) {
      changes.push({ kind: 'create', id, name: manifest.metadata.name, options: desired.options, summary: desired.summary });
      continue;
    }
    const owner = memoOf(current.memo).set;
    if (owner !== options.set) {
      throw new Error(`schedule ${id} exists but ${owner ? `belongs to manifest set "${owner}"` : 'was not created by rekey'}; rename the Schedule manifest`);
    }
    const action = current.action as { memo?: Record<string, unknown> };
    const paused = current.state.paused !== manifest.spec.paused;
    if (memoOf(action.memo).hash === desired.hash && !paused) {
      changes.push({ kind: 'unchanged', id, name: manifest.metadata.name, summary: desired.summary });
    } else {
      changes.push({ kind: 'update', id, name: manifest.metadata.name, options: desired.options, summary: desired.summary });
    }
  }
  // Prune: schedules of this set whose manifest is gone. Others' schedules are never touched.
  for await (const summary of client.schedule.list()) {
    if (!summary.scheduleId.startsWith(SCHEDULE_PREFIX) || desiredIds.has(summary.scheduleId)) continue;
    if (memoOf(summary.memo).set !== options.set) continue;
    changes.push({ kind: 'delete', id: summary.scheduleId, summary: 'its manifest was removed' });
  }
  return { changes, warnings };
}

export async function apply(client: Client, planned: Plan): Promise<void> {
  for (const change of planned.changes) {
    if (change.kind === 'create') {
      await client.schedule.create(change.options);
    } else if (change.kind === 'update') {
      const { options } = change;
      await client.schedule.getHandle(change.id).update(() => ({
        spec: options.spec,
        action: options.action,
        policies: options.policies,
        state: { paused: options.state?.paused, note: options.state?.note },
      }));
    } else if (change.kind === 'delete') {
      await client.schedule.getHandle(change.id).delete();
    }
  }
}

export function formatPlan(planned: Plan): string[] {
  const sign = { create: '+', update: '~', delete: '-', unchanged: '=' } as const;
  const lines = planned.changes.map((c) => `${sign[c.kind]} ${c.kind.padEnd(9)} ${c.id}  ${c.summary}`);
  for (const w of planned.warnings) lines.push(`! warning   ${w}`);
  const counts = (['create', 'update', 'delete', 'unchanged'] as const).map((k) => `${planned.changes.filter((c) => c.kind === k).length} to ${k}`);
  lines.push(counts.join(', ').replace('to unchanged', 'unchanged'));
  return lines;
}
