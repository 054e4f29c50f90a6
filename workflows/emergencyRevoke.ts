// A leaked credential: take over from any rotation in flight and rotate with no approval wait and
// no overlap, so the old credential is rejected as soon as consumers have the new one (or at once,
// with revokeFirst). Started as `emergency/<name>` with a break-glass signature, which is checked
// before anything is cancelled; the rotation itself keeps the id `rotation/<name>`, so every tool
// that follows rotations finds it.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { ParentClosePolicy, executeChild, getExternalWorkflowHandle, log, sleep, workflowInfo } from '@temporalio/workflow';
import { authorize } from './authorize';
import { Evidence } from './evidence';
import { checkEmergencyInput, refuse } from './input';
import { emergencyWorkflowId, rotationWorkflowId, type EmergencyInput, type RotationReport } from './messages';
import { rotateSecret } from './rotateSecret';

/** How long to wait for a superseded rotation to finish rolling back before giving up. */
const TAKEOVER_LIMIT_MS = 10 * 60_000;

export async function emergencyRevoke(untrusted: EmergencyInput): Promise<RotationReport> {
  const input = checkEmergencyInput(untrusted);
  if (workflowInfo().workflowId !== emergencyWorkflowId(input.secret)) refuse(`an emergency rotation of ${input.secret} must run as workflow ${emergencyWorkflowId(input.secret)}`);
  const rotation = { secret: input.secret, specHash: input.specHash, reason: input.reason, requestedBy: input.requestedBy, emergency: input.authorization };
  const rotationId = rotationWorkflowId(input.secret);
  const evidence = new Evidence(`${workflowInfo().workflowId}/${workflowInfo().runId}`, input.secret, () => ({}));
  // An unsigned or forged emergency must not even cancel the rotation in flight.
  const { emergency } = await authorize(rotation, evidence, 'check');
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
    evidence.record('superseded', emergency!.signer.name, {
      reason: input.reason,
      detail: `cancelled the rotation in flight (${rotationId}) for an emergency revoke`,
    });
  }
  await evidence.settle();
  const giveUpAt = Date.now() + TAKEOVER_LIMIT_MS;
  for (;;) {
    try {
      // Abandoned, not terminated, if this workflow ends first: a rotation past revoke must finish.
      return await executeChild(rotateSecret, { workflowId: rotationId, args: [rotation], parentClosePolicy: ParentClosePolicy.ABANDON });
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
