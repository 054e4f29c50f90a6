// The worker's audit key and trail, opened once per worker and shared by the activities that
// write evidence, claim signed documents and sign verification receipts.
import { createHash, verify } from 'node:crypto';
import { ApplicationFailure, Context, heartbeat, log } from '@temporalio/activity';
import { headOf, type AuditEvent, type AuditHead, type AuditSigner, type AuditTrail } from '../lib/audit';
import { auditSettingsFromEnv, loadAuditSigner, openAuditTrail, type AuditSettings } from '../lib/audit-trails';

export interface AuditContext {
  signer(): Promise<AuditSigner>;
  trail(): Promise<AuditTrail>;
}

export function auditContext(settings: AuditSettings = auditSettingsFromEnv()): AuditContext {
  let signer: Promise<AuditSigner> | undefined;
  let trail: AuditTrail | undefined;
  const ctx: AuditContext = {
    // A missing or unreadable key is configuration, not a passing fault: fail at once, loudly.
    signer: () =>
      (signer ??= loadAuditSigner(settings.key).catch((err) => {
        signer = undefined;
        throw ApplicationFailure.nonRetryable(`audit: ${(err as Error).message}`, 'AuditUnavailable');
      })),
    trail: async () => (trail ??= openAuditTrail(settings, await ctx.signer(), (message, meta) => log.warn(message, meta))),
  };
  return ctx;
}

/** Heartbeat while `work` runs: appends may wait for other writers. */
export async function beating<T>(work: () => Promise<T>): Promise<T> {
  // A local activity (an audit record) has no heartbeat: the workflow task it runs in is its lease.
  const local = Context.current().info.isLocal;
  const beat = setInterval(() => local || heartbeat(), 3_000);
  try {
    return await work();
  } finally {
    clearInterval(beat);
  }
}

/** The audit record id under which a signed document is claimed: each one is used once. */
export function claimId(document: string): string {
  return `claim/${createHash('sha256').update(document).digest('hex')}`;
}

/**
 * A receipt: the worker's signature that it verified `what` (a consumer, the target) on `versionId`
 * for this rotation. Promote asks for one per consumer and target of the worker's own spec, so a
 * verification result forged by completing an activity from outside cannot promote anything.
 */
export async function receiptFor(audit: AuditContext, rotationId: string, what: string, versionId: string): Promise<string> {
  return (await audit.signer()).sign(`rekey-receipt/v1|${rotationId}|${what}|${versionId}`);
}

export async function receiptHolds(audit: AuditContext, receipt: unknown, rotationId: string, what: string, versionId: string): Promise<boolean> {
  if (typeof receipt !== 'string' || receipt.length > 200) return false;
  const { publicKey } = await audit.signer();
  return verify(null, Buffer.from(`rekey-receipt/v1|${rotationId}|${what}|${versionId}`), publicKey, Buffer.from(receipt, 'base64'));
}

/** A trail that cannot exist where it is configured (a file for a folder, no permission) is configuration: fail at once. */
export const UNUSABLE_PATH = ['ENOTDIR', 'EEXIST', 'EACCES', 'EPERM', 'EROFS', 'EISDIR'];

export function unusable(err: unknown): never {
  const code = (err as NodeJS.ErrnoException).code;
  if (code && UNUSABLE_PATH.includes(code)) {
    throw ApplicationFailure.nonRetryable(`audit: the trail cannot be written (${code}): ${(err as Error).message}`, 'AuditUnavailable');
  }
  throw err;
}

export function createAuditActivities(audit: AuditContext) {
  return {
    /** Idempotent per event id: a retry after a crash never duplicates a record. Returns the head it reached. */
    async recordAuditEvent(event: AuditEvent): Promise<AuditHead> {
      return beating(async () => {
        const { record, written } = await (await audit.trail()).append(event).catch(unusable);
        log.info('audit record', { secret: event.secret, event: event.event, seq: record.seq, written });
        return headOf(record, await audit.signer());
      });
    },
  };
}
