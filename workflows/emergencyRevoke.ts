// A leaked credential: take over from any rotation in flight and rotate with no approval wait and
// no overlap, so the old credential is rejected as soon as consumers have the new one (or at once,
// with revokeFirst). Started as `emergency/<name>`; the rotation itself keeps the id
// `rotation/<name>`, so every tool that follows rotations finds it.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  executeChild,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { rotationWorkflowId, type EmergencyInput, type RotationReport } from './messages';
import { rotateSecret } from './rotateSecret';

const { recordAuditEvent } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '1h',
  retry: { maximumInterval: '1m' },
});

/** How long to wait for a superseded rotation to finish rolling back before giving up. */
const TAKEOVER_LIMIT_MS = 10 * 60_000;

export async function emergencyRevoke(input: EmergencyInput): Promise<RotationReport> {
  const { revokeFirst, ...rotation } = input;
  const rotationId = rotationWorkflowId(input.secret);
  let superseded = false;
  try {
    // Cancelling makes a rotation before promote roll back cleanly; one past promote finishes.
    await getExternalWorkflowHandle(rotationId).cancel();
    superseded = true;
  } catch {
    // Nothing in flight.
  }
  if (superseded) {
    log.warn('cancelled the rotation in flight for an emergency revoke', { secret: input.secret });
    await recordAuditEvent({
      rotationId: `${workflowInfo().workflowId}/${workflowInfo().runId}`,
      secret: input.secret,
      event: 'superseded',
      actor: input.requestedBy ?? 'unknown',
      at: new Date().toISOString(),
      reason: input.reason,
      detail: `cancelled the rotation in flight (${rotationId}) for an emergency revoke`,
    });
  }
  const giveUpAt = Date.now() + TAKEOVER_LIMIT_MS;
  for (;;) {
    try {
      return await executeChild(rotateSecret, {
        workflowId: rotationId,
        args: [{ ...rotation, emergency: { revokeFirst: revokeFirst === true } }],
      });
    } catch (err) {
      // The superseded rotation is still rolling back; the id frees up when it closes.
      if (err instanceof WorkflowExecutionAlreadyStartedError && Date.now() < giveUpAt) {
        await sleep('500ms');
        continue;
      }
      throw err;
    }
  }
}
