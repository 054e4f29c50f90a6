// The rotation's side of the audit trail: each event becomes a record written by an activity. An
// event's id is its place in the rotation (rotation id + "#" + n), the same on every replay and
// retry, so each is written exactly once. Writes start at once and are awaited before the
// rotation ends; a failing write is loud but never blocks the rotation.
// The events people must hear of also go to the secret's notification channels, the same way:
// started at once, awaited before the rotation ends, a failure logged and audited, never fatal.
import type { RetryPolicy, SearchAttributeUpdatePair } from '@temporalio/common';
import { CancellationScope, log, patched, proxyActivities, proxyLocalActivities, upsertSearchAttributes } from '@temporalio/workflow';
import { AUDIT_TRAIL_ATTRIBUTE } from './messages';
import type { NotifyEvent } from '../activities/notify';
import type { RotationActivities } from '../activities/rotation';
import type { AuditEvent, AuditHead } from '../lib/audit';

const retry: RetryPolicy = { initialInterval: '1s', maximumInterval: '1m', nonRetryableErrorTypes: ['NotAuthorized'] };
const { claimSignedDocument } = proxyActivities<RotationActivities>({ startToCloseTimeout: '30s', scheduleToCloseTimeout: '1h', heartbeatTimeout: '15s', retry });
// One append to the trail: a local activity (one marker in history, no trip through the task
// queue). The worker checks it exactly as it would a remote one.
const { recordAuditEvent } = proxyLocalActivities<RotationActivities>({ startToCloseTimeout: '30s', scheduleToCloseTimeout: '1h', retry });

// Each channel retries inside the activity (bounded, see NotifySettings) and audits its outcome; a
// retry here is for a worker lost mid-send. The whole is bounded, so settle() cannot hang on it.
const { sendNotifications } = proxyActivities<RotationActivities>({
  startToCloseTimeout: '10m',
  scheduleToCloseTimeout: '25m',
  heartbeatTimeout: '1m',
  retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: ['NotAuthorized'] },
});

/** Audit events that people are told of, under the name notifications use. */
const NOTIFIED: Partial<Record<AuditEvent['event'], NotifyEvent>> = {
  'rolled-back': 'rolled-back',
  'rollback-incomplete': 'failed',
  failed: 'failed',
  escalated: 'escalated',
  'break-glass': 'emergency',
};

function wellFormed(head: AuditHead | undefined): head is AuditHead {
  return (
    !!head &&
    typeof head === 'object' &&
    typeof head.trail === 'string' &&
    head.trail.length <= 300 &&
    /^(postgres|file):/.test(head.trail) &&
    Number.isSafeInteger(head.seq) &&
    typeof head.hash === 'string' &&
    /^[0-9a-f]{64}$/.test(head.hash)
  );
}

export class Evidence {
  private count = 0;
  private notices = 0;
  private readonly writes: Promise<AuditHead | undefined>[] = [];
  private readonly sending: Promise<unknown>[] = [];

  constructor(
    private readonly rotationId: string,
    private readonly secret: string,
    private readonly versions: () => AuditEvent['versions'],
    /** The stage a notice names (for a rollback: the one that failed). */
    private readonly stage: () => string | undefined = () => undefined,
    /** How the trail's search attribute is set (a rotation batches it with its stage's). */
    private readonly setAttribute: (pair: SearchAttributeUpdatePair) => void = (pair) => upsertSearchAttributes([pair]),
  ) {}

  /**
   * Tell the secret's notification channels (policy `notify`), without waiting: the rotation goes
   * on, and settle() waits for the sending before the rotation ends, so it is not cancelled with it.
   */
  notify(event: NotifyEvent, document?: string): void {
    // Rotations already running when this was deployed replay without it.
    if (!patched('rekey-notify')) return;
    const request = { id: `${this.rotationId}#notice-${++this.notices}`, secret: this.secret, event, stage: this.stage(), versions: { ...this.versions() }, ...(document ? { document } : {}) };
    this.sending.push(
      CancellationScope.nonCancellable(() => sendNotifications(request)).catch((err) => {
        log.error('could not send notifications', { secret: this.secret, event, error: (err as Error).message });
      }),
    );
  }

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
    // Evidence is written even when the rotation is being cancelled: a rollback needs its record too.
    this.writes.push(
      CancellationScope.nonCancellable(() => recordAuditEvent(record)).catch((err) => {
        log.error('could not write the audit record', { secret: this.secret, event, error: (err as Error).message });
        return undefined;
      }),
    );
    const notice = NOTIFIED[event];
    if (notice) this.notify(notice);
  }

  /**
   * Use a signed request or break-glass authorisation for this rotation, once: its record is the
   * evidence of the event. Rejects if another rotation already used the document.
   */
  async claim(event: 'requested' | 'break-glass', actor: string, signed: NonNullable<AuditEvent['signed']>, extra: { reason?: string; detail?: string }): Promise<void> {
    const head = CancellationScope.nonCancellable(() =>
      claimSignedDocument({ secret: this.secret, event, actor, at: new Date().toISOString(), versions: { ...this.versions() }, signed, ...extra }),
    );
    this.writes.push(head.catch(() => undefined));
    await head;
    const notice = NOTIFIED[event];
    // The worker sends an emergency notice only on its own record of this claim: the document names it.
    if (notice) this.notify(notice, signed.document);
  }

  /** A record a stage activity wrote itself (promote, revoke, post-verify): its head counts too. */
  note(head: AuditHead | undefined): void {
    if (wellFormed(head)) this.writes.push(Promise.resolve(head));
  }

  /**
   * Every write so far, awaited: true if all were written. Before promote the rotation needs its
   * evidence in the trail; a trail that cannot be written stops it rather than letting it go on
   * unaudited.
   */
  async written(): Promise<boolean> {
    return (await Promise.all(this.writes)).every(wellFormed);
  }

  /**
   * Wait for every write; the head of the last one written, for the rotation's result (or its
   * failure's details), and the trail in the RekeyAuditTrail search attribute so that
   * `rekey audit verify` finds it.
   */
  async settle(): Promise<AuditHead | undefined> {
    // Heads come from activity results, which anyone with write access could forge: only the
    // shape is checked here (a wrong head cannot pass `audit verify`, which checks signatures).
    const heads = (await Promise.all(this.writes)).filter(wellFormed);
    // Failures were logged where they happened and audited by the activity.
    await Promise.all(this.sending);
    const head = heads.sort((a, b) => b.seq - a.seq)[0];
    if (head) this.setAttribute({ key: AUDIT_TRAIL_ATTRIBUTE, value: head.trail });
    return head;
  }
}
