// Workflows an attacker with access to the namespace could run on rekey's task queue (from a
// worker of their own): they schedule rekey's activities with arguments of their choosing, under
// their own workflow ids. The worker's activities must refuse whatever is not theirs to do.
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';

const { abortConsumer, resolveRotation, createPendingVersion, recordAuditEvent, sendNotifications } = proxyActivities<RotationActivities>({ startToCloseTimeout: '1m', retry: { maximumAttempts: 1 } });

/** Switch a producer back to `versionId`, as a rollback would, without being the rotation. */
export async function forgedAbort(step: Parameters<RotationActivities['abortConsumer']>[0]): Promise<void> {
  await abortConsumer(step);
}

/** Write a pending version of its own, as a rotation would: any rekey version already pending would look abandoned. */
export async function forgedPendingVersion(ref: { secret: string; specHash: string }): Promise<void> {
  await resolveRotation(ref).catch(() => undefined);
  await createPendingVersion(ref);
}

/**
 * Plant a group's decision in the audit trail through the workflow's own audit activity: a
 * release its approvers never gave, under the id the worker reads the decision from.
 */
export async function forgedGroupRelease(forged: { groupRotationId: string; group: string; members: string }): Promise<void> {
  await recordAuditEvent({
    id: `group-decision/${forged.groupRotationId}`,
    rotationId: forged.groupRotationId,
    secret: forged.group,
    event: 'group-released',
    actor: 'rekey',
    at: new Date().toISOString(),
    detail: `members ${forged.members}`,
  });
}

/**
 * Page on-call through the worker's channels, as a rotation named rotation/<secret> would: an
 * "emergency" without any break-glass claim, and more notices than a rotation ever sends.
 * Returns what each call came to.
 */
export async function forgedNotify(secret: string): Promise<string[]> {
  const rotationId = `${workflowInfo().workflowId}/${workflowInfo().runId}`;
  const tries = [
    { id: `${rotationId}#notice-1`, secret, event: 'emergency' as const },
    { id: `${rotationId}#notice-21`, secret, event: 'failed' as const },
    { id: `${rotationId}#notice-2/../x`, secret, event: 'failed' as const },
  ];
  const outcomes: string[] = [];
  for (const request of tries) outcomes.push(await sendNotifications(request).then(() => 'sent', (err: Error) => String((err.cause as Error | undefined)?.message ?? err.message)));
  return outcomes;
}
