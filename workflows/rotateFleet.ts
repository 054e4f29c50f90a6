// Rotate many secrets: each as a child rotateSecret under its usual id rotation/<name>, so a
// scheduled rotation and an ad-hoc one of the same secret never run at once (the later is reported
// as skipped). A sliding window keeps maxParallel children in flight; continue-as-new keeps the
// history short however many secrets there are.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ActivityFailure,
  ChildWorkflowFailure,
  ParentClosePolicy,
  continueAsNew,
  executeChild,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { fleetProgressQuery, rotationWorkflowId, type FleetInput, type FleetItem, type FleetProgress, type RotationReport } from './messages';
import { checkFleetInput } from './input';
import { rotateSecret } from './rotateSecret';

/** Children per run before continuing as new: a few events each, well under history limits. */
const DEFAULT_CHILDREN_PER_RUN = 200;

const { filterOverdue } = proxyActivities<RotationActivities>({ startToCloseTimeout: '5m', heartbeatTimeout: '30s', retry: { maximumInterval: '30s' } });

function causeOf(err: unknown): string {
  let e = err as Error & { cause?: unknown };
  while ((e instanceof ActivityFailure || e instanceof ChildWorkflowFailure) && e.cause) e = e.cause as Error & { cause?: unknown };
  return e?.message ?? String(err);
}

export async function rotateFleet(untrusted: FleetInput): Promise<FleetProgress['summary']> {
  const input = checkFleetInput(untrusted);
  const summary = input.summary ?? { rotated: [], rolledBack: [], skipped: [], notDue: [], failed: [] };
  let items = input.items;
  // Overdue secrets are chosen once, by the first run (later runs carry a summary).
  if (input.overdueOnly && input.summary === undefined) {
    const due = new Set(await filterOverdue(items));
    summary.notDue.push(...items.filter(([secret]) => !due.has(secret)).map(([secret]) => secret));
    items = items.filter(([secret]) => due.has(secret));
  }
  const countDone = () => summary.rotated.length + summary.rolledBack.length + summary.skipped.length + summary.failed.length;
  const total = countDone() + items.length;
  const end = Math.min(items.length, Math.max(1, Math.floor(input.childrenPerRun ?? DEFAULT_CHILDREN_PER_RUN)));
  const running = new Set<string>();
  let next = 0;
  const progress = (): FleetProgress => ({ fleet: input.fleet, total, done: countDone(), running: [...running], summary });
  setHandler(fleetProgressQuery, progress);

  async function rotateOne([secret, specHash]: FleetItem): Promise<void> {
    running.add(secret);
    try {
      const report: RotationReport = await executeChild(rotateSecret, {
        workflowId: rotationWorkflowId(secret),
        args: [{ secret, specHash, requestedBy: input.requestedBy ?? `fleet ${input.fleet}`, reason: input.reason }],
        // If the fleet is cancelled or terminated, its children roll back cleanly instead of dying.
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      });
      if (report.outcome === 'rotated') summary.rotated.push(secret);
      else summary.rolledBack.push({ secret, reason: report.failure?.message ?? 'rolled back' });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) summary.skipped.push(secret);
      else summary.failed.push({ secret, reason: causeOf(err) });
    } finally {
      running.delete(secret);
      setCurrentDetails(describe(progress()));
    }
  }

  // The sliding window: a lane takes the next secret as soon as its previous one finishes.
  const lane = async () => {
    while (next < end) await rotateOne(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(input.maxParallel, end) }, lane));

  // The next run carries only the secrets still to rotate, so its input shrinks as the fleet goes.
  if (end < items.length) {
    await continueAsNew<typeof rotateFleet>({ ...input, items: items.slice(end), summary });
  }
  setCurrentDetails(describe(progress()));
  return summary;
}

function describe(p: FleetProgress): string {
  const s = p.summary;
  return [
    `### Fleet \`${p.fleet}\` (${workflowInfo().runId.slice(0, 8)})`,
    `${s.rotated.length} rotated, ${s.rolledBack.length} rolled back, ${s.skipped.length} skipped, ${s.failed.length} failed of ${p.total}`,
    p.running.length ? `Rotating now: ${p.running.join(', ')}` : '',
  ].join('\n\n');
}
