// Workflows an attacker with access to the namespace could run on rekey's task queue (from a
// worker of their own): they schedule rekey's activities with arguments of their choosing, under
// their own workflow ids. The worker's activities must refuse whatever is not theirs to do.
import { proxyActivities } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';

const { abortConsumer, resolveRotation, createPendingVersion } = proxyActivities<RotationActivities>({ startToCloseTimeout: '1m', retry: { maximumAttempts: 1 } });

/** Switch a producer back to `versionId`, as a rollback would, without being the rotation. */
export async function forgedAbort(step: Parameters<RotationActivities['abortConsumer']>[0]): Promise<void> {
  await abortConsumer(step);
}

/** Write a pending version of its own, as a rotation would: any rekey version already pending would look abandoned. */
export async function forgedPendingVersion(ref: { secret: string; specHash: string }): Promise<void> {
  await resolveRotation(ref).catch(() => undefined);
  await createPendingVersion(ref);
}
