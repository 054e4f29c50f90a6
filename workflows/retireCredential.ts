// What a revoke only disabled is removed later: an IAM access key is deactivated at revoke (so
// reactivating it is the way back for a while) and deleted after the target's `deleteAfter`. The
// timer is this workflow, one per revoked version (retire/<secret>/<version>), so it survives
// workers and servers and shows in the UI beside the rotation that started it. It holds no time
// of its own: the worker says when the credential is due (from its audit record of the revoke and
// the manifest as it is then), so a run started early, or by anyone, only waits and asks again.
import { ParentClosePolicy, WorkflowIdReusePolicy, log, proxyActivities, sleep, startChild, workflowInfo } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { RotationActivities } from '../activities/rotation';
import { checkRetireInput, refuse } from './input';
import { retireWorkflowId, type RetireInput } from './messages';

/** Asks at most this often, and waits at most this long between asks (a changed manifest is seen then). */
const MIN_WAIT_MS = 1_000;
const MAX_WAIT_MS = 7 * 24 * 3_600_000;
/** deleteAfter is at most 365 days: this many asks always reach it. */
const MAX_ASKS = 100;

const { retireOldCredential } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '15s',
  // A target that cannot be reached is asked again, less and less often; a refusal is final.
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '1h', nonRetryableErrorTypes: ['NotAuthorized', 'TargetRefused', 'SpecChanged', 'UnknownSecret', 'NoManifests', 'AuditUnavailable'] },
});

export async function retireCredential(untrusted: RetireInput): Promise<string> {
  const input = checkRetireInput(untrusted);
  const id = retireWorkflowId(input.secret, input.versionId);
  if (workflowInfo().workflowId !== id) refuse(`retiring version ${input.versionId} of ${input.secret} must run as workflow ${id}`);
  for (let ask = 1; ask <= MAX_ASKS; ask++) {
    const outcome = await retireOldCredential(input);
    if (outcome && 'done' in outcome && typeof outcome.done === 'string') return outcome.done;
    const dueAt = outcome && 'dueAt' in outcome ? Date.parse(String(outcome.dueAt)) : NaN;
    await sleep(Math.min(MAX_WAIT_MS, Math.max(MIN_WAIT_MS, (Number.isFinite(dueAt) ? dueAt : Date.now() + MAX_WAIT_MS) - Date.now())));
  }
  return refuse(`retiring version ${input.versionId} of ${input.secret}: still not due after ${MAX_ASKS} asks`);
}

/**
 * Leave the timer behind a rotation that is about to finish: abandoned, so it outlives it. A run
 * of the same id that failed (started by someone else, early) does not stand in its way; one that
 * is running is the same code and asks the worker the same question, so it is left to finish.
 */
export async function retireLater(input: RetireInput): Promise<void> {
  try {
    await startChild(retireCredential, {
      workflowId: retireWorkflowId(input.secret, input.versionId),
      args: [input],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    log.info('the retire timer of this version is already running', { secret: input.secret, versionId: input.versionId });
  }
}
