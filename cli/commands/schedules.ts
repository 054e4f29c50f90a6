import { ScheduleNotFoundError } from '@temporalio/client';
import { loadManifests } from '../../lib/manifest';
import { connectClient } from '../../lib/temporal';
import { apply, formatPlan, plan, scheduleId } from '../../schedules/plan';
import { EXIT, UsageError, err, out, parse } from '../common';

const planOptions = { file: { type: 'string', short: 'f' }, set: { type: 'string' } } as const;

async function planFor(args: string[]) {
  const { values } = parse(args, planOptions, []);
  if (!values.file) throw new UsageError('needs -f DIR (the folder with the Secret and Schedule manifests)');
  const manifests = await loadManifests(values.file as string);
  const client = await connectClient();
  const options = { set: (values.set as string | undefined) ?? 'default', taskQueue: process.env.REKEY_TASK_QUEUE };
  return { client, manifests, planned: await plan(client, manifests, options) };
}

/**
 * `rekey plan -f DIR [--set NAME]`: what apply would change in Temporal (changes nothing), and the
 * spec hash of every secret: the workers rotate a secret only if their manifest has that hash.
 */
export async function planCommand(args: string[]): Promise<number> {
  const { planned, manifests } = await planFor(args);
  for (const line of formatPlan(planned)) out(line);
  out('spec hashes (the workers must run the same manifests):');
  for (const [name, m] of [...manifests.secrets].sort(([a], [b]) => a.localeCompare(b))) out(`  ${m.specHash}  ${name}`);
  for (const [name, g] of [...manifests.groups].sort(([a], [b]) => a.localeCompare(b))) out(`  ${g.specHash}  group ${name} (${g.spec.secrets.join(', ')}: all or nothing)`);
  return EXIT.ok;
}

/** `rekey apply -f DIR [--set NAME]`: create, update and prune this set's schedules. */
export async function applyCommand(args: string[]): Promise<number> {
  const { client, planned } = await planFor(args);
  for (const line of formatPlan(planned)) out(line);
  await apply(client, planned);
  err(`applied: ${planned.changes.filter((c) => c.kind !== 'unchanged').length} change(s)`);
  return EXIT.ok;
}

/** `rekey schedule pause|unpause|trigger|describe NAME [--note TEXT]` */
export async function scheduleCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (!['pause', 'unpause', 'trigger', 'describe'].includes(verb)) throw new UsageError('usage: rekey schedule pause|unpause|trigger|describe NAME [--note TEXT]');
  const { values, positionals } = parse(rest, { note: { type: 'string' } }, ['NAME']);
  const client = await connectClient();
  const handle = client.schedule.getHandle(scheduleId(positionals[0]));
  const note = values.note as string | undefined;
  try {
    if (verb === 'pause') await handle.pause(note ?? 'paused with rekey schedule pause');
    if (verb === 'unpause') await handle.unpause(note ?? 'unpaused with rekey schedule unpause');
    if (verb === 'trigger') await handle.trigger('SKIP');
    const d = await handle.describe();
    out(`${handle.scheduleId}  ${d.state.paused ? 'PAUSED' : 'active'}${d.state.note ? ` (${d.state.note})` : ''}`);
    out(`  next runs: ${d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()).join(', ') || 'none'}`);
    out(`  runs so far: ${d.info.numActionsTaken}, running now: ${d.info.runningActions.length}`);
    return EXIT.ok;
  } catch (e) {
    if (e instanceof ScheduleNotFoundError) {
      err(`no schedule ${handle.scheduleId} (apply the Schedule manifest first)`);
      return EXIT.usage;
    }
    throw e;
  }
}
