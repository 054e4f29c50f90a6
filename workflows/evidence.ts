// The rotation's side of the audit trail: each event becomes a record written by an activity. An
// event's id is its place in the rotation (rotation id + "#" + n), the same on every replay and
// retry, so each is written exactly once. Writes start at once and are awaited before the
// rotation ends; a failing write is loud but never blocks the rotation.
import { log, proxyActivities } from '@temporalio/workflow';
import type { RotationActivities } from '../activities/rotation';
import type { AuditEvent, AuditHead } from '../lib/audit';

const { recordAuditEvent } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '1h',
  heartbeatTimeout: '15s',
  retry: { initialInterval: '1s', maximumInterval: '1m' },
});

export class Evidence {
  private count = 0;
  private readonly writes: Promise<AuditHead | undefined>[] = [];

  constructor(
    private readonly rotationId: string,
    private readonly secret: string,
    private readonly versions: () => AuditEvent['versions'],
  ) {}

  record(event: AuditEvent['event'], actor: string, extra: Partial<Omit<AuditEvent, 'id' | 'rotationId' | 'secret' | 'event' | 'actor' | 'at'>> = {}): void {
    const record: AuditEvent = {
      id: `${this.rotationId}#${++this.count}`,
      rotationId: this.rotationId,
      secret: this.secret,
      event,
      actor,
      at: new Date().toISOString(),
      versions: { ...this.versions() },
      ...extra,
    };
    this.writes.push(
      recordAuditEvent(record).catch((err) => {
        log.error('could not write the audit record', { secret: this.secret, event, error: (err as Error).message });
        return undefined;
      }),
    );
  }

  /** Wait for every write; the head of the last one written, for the rotation's result. */
  async settle(): Promise<AuditHead | undefined> {
    const heads = (await Promise.all(this.writes)).filter((h): h is AuditHead => h !== undefined);
    return heads.sort((a, b) => b.seq - a.seq)[0];
  }
}
