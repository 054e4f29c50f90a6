// The inventory: every declared secret, how old its current version is against its policy, when
// it rotates next and how its last rotation ended. Ages come from the store, not from rekey's own
// memory, so a secret changed by hand shows up too.
import { ScheduleNotFoundError, type Client } from '@temporalio/client';
import { currentAge } from '../activities/rotation';
import { isMissingSecret, openStore } from '../activities/stores';
import { scheduleId } from '../schedules/plan';
import { OUTCOME_ATTRIBUTE, rotationWorkflowId } from '../workflows/messages';
import { scheduledSecrets, type ManifestSet } from './manifest';

export interface InventoryRow {
  secret: string;
  owner?: string;
  class?: string;
  store: string;
  consumers: string[];
  lastRotated?: string;
  ageMs?: number;
  maxAge?: string;
  overdue: boolean;
  nextRotation?: string;
  nextRotationBy?: string;
  lastOutcome?: string;
  /** The store has no such secret. */
  missing: boolean;
}

export async function inventory(client: Client, set: ManifestSet, now = Date.now()): Promise<InventoryRow[]> {
  // When each schedule runs next, read back from Temporal (manifests alone can't know pauses).
  const nextBySchedule = new Map<string, Date | undefined>();
  for (const name of set.schedules.keys()) {
    try {
      const d = await client.schedule.getHandle(scheduleId(name)).describe();
      nextBySchedule.set(name, d.state.paused ? undefined : d.info.nextActionTimes[0]);
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError)) throw err;
    }
  }
  const rows: InventoryRow[] = [];
  for (const [name, manifest] of [...set.secrets].sort(([a], [b]) => a.localeCompare(b))) {
    const { spec, metadata } = manifest;
    // A store entry that does not exist is worth saying so: the secret was never stored, or was deleted.
    let missing = false;
    const age = await currentAge(spec, now).catch((err) => {
      missing = isMissingSecret(err);
      return { overdue: false } as Awaited<ReturnType<typeof currentAge>>;
    });
    let next: { at: Date; by: string } | undefined;
    for (const [scheduleName, schedule] of set.schedules) {
      const at = nextBySchedule.get(scheduleName);
      if (at && scheduledSecrets(set, schedule).includes(name) && (!next || at < next.at)) next = { at, by: scheduleName };
    }
    let lastOutcome: string | undefined;
    for await (const wf of client.workflow.list({ query: `WorkflowId = '${rotationWorkflowId(name)}'`, pageSize: 1 })) {
      lastOutcome = wf.status.name === 'RUNNING' ? 'rotating now' : (wf.typedSearchAttributes.get(OUTCOME_ATTRIBUTE) ?? wf.status.name.toLowerCase());
      break;
    }
    rows.push({
      secret: name,
      owner: metadata.labels.team ?? metadata.labels.owner,
      class: metadata.labels.class,
      store: openStore(spec.store).ref,
      consumers: spec.consumers.map((c) => c.name),
      lastRotated: age.createdAt,
      ageMs: age.ageMs,
      maxAge: spec.policy.maxAge,
      overdue: age.overdue,
      nextRotation: next?.at.toISOString(),
      nextRotationBy: next?.by,
      lastOutcome,
      missing,
    });
  }
  return rows;
}

function days(ms: number): string {
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)}m`;
  if (ms < 86_400_000) return `${(ms / 3_600_000).toFixed(1)}h`;
  return `${(ms / 86_400_000).toFixed(1)}d`;
}

export function formatInventory(rows: InventoryRow[]): string[] {
  const table = [['SECRET', 'OWNER', 'CLASS', 'STORE', 'CONSUMERS', 'AGE / MAX', 'NEXT ROTATION', 'LAST OUTCOME']];
  for (const r of rows) {
    const age = r.missing ? 'MISSING in the store' : r.ageMs === undefined ? 'unknown' : `${days(r.ageMs)} / ${r.maxAge ?? '-'}${r.overdue ? ' OVERDUE' : ''}`;
    table.push([
      r.secret,
      r.owner ?? '-',
      r.class ?? '-',
      r.store,
      String(r.consumers.length),
      age,
      r.nextRotation ? `${r.nextRotation.slice(0, 16).replace('T', ' ')}Z (${r.nextRotationBy})` : 'not scheduled',
      r.lastOutcome ?? 'never',
    ]);
  }
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  return table.map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd());
}
