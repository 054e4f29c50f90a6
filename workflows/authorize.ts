// Before anything changes: whose rotation is this, and may it run? The spec is the worker's own
// (the requester only names the hash they reviewed); a signed request says who asked; an emergency
// needs a break-glass signature. Anything that does not hold is refused here, audited, and no
// side effect has happened.
import { ActivityFailure, log, proxyActivities, proxyLocalActivities, workflowInfo, type ActivityOptions } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import { checkBreakGlass, checkRequest } from '../lib/authority';
import type { BreakGlassDocument, SignedDocument, Signer } from '../lib/signed';
import type { Evidence } from './evidence';
import { refuse } from './input';
import type { RotationInput, RotationPlan } from './messages';

const resolving: ActivityOptions = {
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '2m',
  retry: { initialInterval: '1s', maximumInterval: '10s', nonRetryableErrorTypes: ['UnknownSecret', 'SpecMismatch', 'NoManifests'] },
};
// Reading the worker's own manifests is quick and changes nothing: a local activity (one marker in
// history, no round trip through the task queue) on the worker that runs the rotation.
const { resolveRotation } = proxyLocalActivities<RotationActivities>(resolving);
const { signedDocumentUse } = proxyActivities<RotationActivities>(resolving);

export interface Authority {
  plan: RotationPlan;
  /** The person whose key signed the request, if it was signed. */
  requester?: Signer;
  emergency?: { doc: BreakGlassDocument; signer: Signer; signed: SignedDocument };
}

/** How a label nobody signed appears as an actor: never mistaken for a person who proved it. */
export function unverified(label: string | undefined): string {
  return label ? `${label} (unsigned)` : 'unknown (unsigned)';
}

/** The innermost message of a failure, without Temporal's wrapping ("Activity task failed"). */
export function causeOf(err: unknown): string {
  let e = err as Error & { cause?: unknown };
  while (e instanceof ActivityFailure && e.cause) e = e.cause as Error & { cause?: unknown };
  return e?.message ?? String(err);
}

/**
 * `rotation`: the rotation itself; a signed request or break-glass authorisation is claimed (used
 * once, recorded in the audit trail). `check`: emergencyRevoke, before it cancels anything; the
 * authorisation must hold and be unused, and the rotation it starts claims it.
 */
export async function authorize(input: RotationInput, evidence: Evidence, mode: 'rotation' | 'check' = 'rotation'): Promise<Authority> {
  const { namespace, workflowId } = workflowInfo();
  const refused = async (message: string): Promise<never> => {
    evidence.record('refused', unverified(input.requestedBy), { reason: input.reason, detail: message });
    return refuse(message, await evidence.settle());
  };

  let plan: RotationPlan;
  try {
    plan = await resolveRotation({ secret: input.secret, specHash: input.specHash, ...(input.group !== undefined ? { group: input.group } : {}) });
  } catch (err) {
    return refused(causeOf(err));
  }
  const now = Date.now();
  let requester: Signer | undefined;
  if (input.request && mode === 'rotation') {
    const verdict = checkRequest(input.request, plan.people, { namespace, workflowId, secret: input.secret, specHash: plan.specHash }, { now });
    if (!verdict.ok) return refused(`input.request: ${verdict.reason}`);
    requester = verdict.signer;
    try {
      await evidence.claim('requested', requester.name, { ...input.request, signer: requester.name, fingerprint: requester.fingerprint, key: requester.key }, {
        reason: input.reason,
        detail: `spec ${plan.specHash}, request signed with ${requester.fingerprint}`,
      });
    } catch (err) {
      return refused(`input.request: ${causeOf(err)}`);
    }
  }
  let emergency: Authority['emergency'];
  if (input.emergency) {
    const verdict = checkBreakGlass(input.emergency, plan.breakGlass, { namespace, secret: input.secret, specHash: plan.specHash }, { now });
    if (!verdict.ok) return refused(`input.emergency: ${verdict.reason}`);
    const { signer, doc } = verdict;
    emergency = { doc, signer, signed: input.emergency };
    if (mode === 'check') {
      const usedBy = await signedDocumentUse(input.emergency.document);
      if (usedBy) return refused(`input.emergency: this break-glass authorisation was already used by ${usedBy}; sign a new one`);
    } else {
      try {
        await evidence.claim('break-glass', signer.name, { ...input.emergency, signer: signer.name, fingerprint: signer.fingerprint, key: signer.key }, {
          reason: doc.reason,
          detail: `emergency rotation${doc.revokeFirst ? ', revoke first' : ''} authorised with break-glass key ${signer.fingerprint}`,
        });
      } catch (err) {
        return refused(`input.emergency: ${causeOf(err)}`);
      }
      log.error('BREAK-GLASS: emergency rotation authorised', { secret: input.secret, by: signer.name, key: signer.fingerprint, revokeFirst: doc.revokeFirst });
    }
  }
  if (mode === 'rotation' && plan.approval.required && plan.approval.requireSignedRequest && !requester && !emergency) {
    return refused(`${input.secret} requires a signed request: rekey rotate ${input.secret} --key ~/.ssh/id_ed25519`);
  }
  return { plan, requester, emergency };
}
