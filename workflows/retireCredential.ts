// What a revoke only disabled is removed later: an IAM access key is deactivated at revoke (so
// reactivating it is the way back for a while) and deleted after the target's `deleteAfter`. The
// timer is this workflow, one per revoked version (retire/<secret>/<version>), so it survives
// workers and servers and shows in the UI beside the rotation that started it.
import { ParentClosePolicy, WorkflowIdReusePolicy, log, proxyActivities, sleep, startChild, workflowInfo } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { RotationActivities } from '../activities/rotation';
import { checkRetireInput, refuse } from './input';
import { retireWorkflowId, type RetireInput } from './messages';

const { retireOldCredential } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '15s',
  // A target that cannot be reached is asked again, less and less often; a refusal is final.
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '1h', nonRetryableErrorTypes: ['NotAuthorized', 'TargetRefused', 'SpecChanged', 'UnknownSecret', 'NoManifests'] },
});

export async function retireCredential(untrusted: RetireInput): Promise<string> {
  const input = checkRetireInput(untrusted);
  const id = retireWorkflowId(input.secret, input.versionId);
  if (workflowInfo().workflowId !== id) refuse(`retiring version ${input.versionId} of ${input.secret} must run as workflow ${id}`);
  await sleep(input.afterMs);
  return await retireOldCredential({ secret: input.secret, specHash: input.specHash, versionId: input.versionId });
}

/**
 * Leave the timer behind a rotation that is about to finish: abandoned, so it outlives it. Started
 * once per revoked version; a second start (a replayed or retried revoke) finds it running.
 */
export async function retireLater(input: RetireInput): Promise<void> {
  try {
    await startChild(retireCredential, {
      workflowId: retireWorkflowId(input.secret, input.versionId),
      args: [input],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    log.info('the retire timer of this version is already running', { secret: input.secret, versionId: input.versionId });
  }
}
