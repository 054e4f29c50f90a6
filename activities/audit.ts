import { log } from '@temporalio/activity';
import { AuditLog } from '../lib/audit';
import type { AuditEvent } from '../workflows/messages';

export function createAuditActivities(options: { auditLogPath?: string } = {}) {
  return {
    /** Idempotent per rotation, event and actor: a retry after a crash never duplicates a record. */
    async recordAuditEvent(event: AuditEvent): Promise<void> {
      const auditLog = new AuditLog(options.auditLogPath);
      const { record, written } = await auditLog.append(event);
      log.info('audit record', { secret: event.secret, event: event.event, seq: record.seq, written });
    },
  };
}
