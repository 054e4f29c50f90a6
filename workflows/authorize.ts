// Before anything changes: whose rotation is this, and may it run? The spec is the worker's own
// (the requester only names the hash they reviewed); a signed request says who asked; an emergency
// needs a break-glass signature. Anything that does not hold is refused here, audited, and no
// side effect has happened.
import { ActivityFailure, log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { checkBreakGlass, checkRequest } from '../lib/authority';
import type { BreakGlassDocument, SignedDocument, Signer } from '../lib/signed';
import type { Evidence } from './evidence';
import { refuse } from './input';
import type { RotationInput, RotationPlan } from './messages';

const { resolveRotation } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '2m',
  retry: { initialInterval: '1s', maximumInterval: '10s' },
});

export interface Authority {
  plan: RotationPlan;
  /** The person whose key signed the request, if it was signed. */
  requester?: Signer;
  emergency?: { doc: BreakGlassDocument; signer: Signer; signed: SignedDocument };
}

/** The innermost message of a failure, without Temporal's wrapping ("Activity task failed"). */
export function causeOf(err: unknown): string {
  let e = err as Error & { cause?: unknown };
  while (e instanceof ActivityFailure && e.cause) e = e.cause as Error & { cause?: unknown };
  return e?.message ?? String(err);
}

export async function authorize(input: RotationInput, evidence: Evidence): Promise<Authority> {
  const { namespace, workflowId } = workflowInfo();
  const refused = async (message: string): Promise<never> => {
    evidence.record('refused', input.requestedBy ?? 'unknown', { reason: input.reason, detail: message });
    await evidence.settle();
    return refuse(message);
  };

  let plan: RotationPlan;
  try {
    plan = await resolveRotation({ secret: input.secret, specHash: input.specHash });
  } catch (err) {
    return refused(causeOf(err));
  }
  const now = Date.now();
  let requester: Signer | undefined;
  if (input.request) {
    const verdict = checkRequest(input.request, plan.people, { namespace, workflowId, secret: input.secret, specHash: plan.specHash }, { now });
    if (!verdict.ok) return refused(`input.request: ${verdict.reason}`);
    requester = verdict.signer;
  }
  let emergency: Authority['emergency'];
  if (input.emergency) {
    const verdict = checkBreakGlass(input.emergency, plan.breakGlass, { namespace, secret: input.secret, specHash: plan.specHash }, { now });
    if (!verdict.ok) return refused(`input.emergency: ${verdict.reason}`);
    emergency = { doc: verdict.doc, signer: verdict.signer, signed: input.emergency };
    const { signer, doc } = verdict;
    evidence.record('break-glass', signer.name, {
      reason: doc.reason,
      detail: `emergency rotation${doc.revokeFirst ? ', revoke first' : ''} authorised with break-glass key ${signer.fingerprint}`,
      signed: { ...input.emergency, signer: signer.name, fingerprint: signer.fingerprint, key: signer.key },
    });
    log.error('BREAK-GLASS: emergency rotation authorised', { secret: input.secret, by: signer.name, key: signer.fingerprint, revokeFirst: doc.revokeFirst });
  }
  return { plan, requester, emergency };
}
