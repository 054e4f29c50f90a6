import { heartbeat, log } from '@temporalio/activity';
import { headOf, type AuditEvent, type AuditHead, type AuditSigner, type AuditTrail } from '../lib/audit';
import { auditSettingsFromEnv, loadAuditSigner, openAuditTrail, type AuditSettings } from '../lib/audit-trails';

export function createAuditActivities(settings: AuditSettings = auditSettingsFromEnv()) {
  let signer: Promise<AuditSigner> | undefined;
  let trail: AuditTrail | undefined;
  const opened = async () => {
    signer ??= loadAuditSigner(settings.key).catch((err) => {
      signer = undefined;
      throw err;
    });
    trail ??= openAuditTrail(settings, await signer, (message, meta) => log.warn(message, meta));
    return trail;
  };
  return {
    /** Idempotent per event id: a retry after a crash never duplicates a record. Returns the head it reached. */
    async recordAuditEvent(event: AuditEvent): Promise<AuditHead> {
      const beat = setInterval(() => heartbeat(), 3_000);
      try {
        const { record, written } = await (await opened()).append(event);
        log.info('audit record', { secret: event.secret, event: event.event, seq: record.seq, written });
        return headOf(record);
      } finally {
        clearInterval(beat);
      }
    },
  };
}
