// What a rotation shows while it runs: the progress query, the stage search attribute, and the
// markdown "current details" panel of the Temporal UI. Bookkeeping only; it decides nothing.
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import { log, metricMeter, setCurrentDetails, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import {
  STAGE_ATTRIBUTE,
  progressQuery,
  type ApprovalProgress,
  type ConsumerProgress,
  type Progress,
  type RotationReport,
  type Stage,
} from './messages';

export class RotationProgress {
  readonly state: Progress;
  private readonly attributes = new Map<string, SearchAttributeUpdatePair>();

  constructor(secret: string, requestedBy: string | undefined, emergency: boolean) {
    const approval: ApprovalProgress = { required: false, needed: 0, approvedBy: [], ignored: [], ignoredCount: 0, waitingFor: [], escalated: false };
    this.state = { secret, stage: 'generate', requestedBy, emergency, versions: {}, consumers: [], stages: [], approval };
    setHandler(progressQuery, () => this.state);
  }

  get stage(): Stage {
    return this.state.stage;
  }

  get approval(): ApprovalProgress {
    return this.state.approval;
  }

  get subject(): string {
    return `the rotation of ${this.state.secret}`;
  }

  enter(stage: Stage): void {
    const now = Date.now();
    const open = this.state.stages[this.state.stages.length - 1];
    if (open && open.durationMs === undefined) {
      open.durationMs = now - Date.parse(open.startedAt);
      rotationMetrics.stageSeconds.record(open.durationMs / 1000, { stage: open.stage });
    }
    if (stage === 'generate') this.zeroMetrics();
    else if (this.state.stage === 'approve' && stage !== 'approve') this.setApprovalWaiting(0, 0);
    this.state.stage = stage;
    if (stage !== 'done') this.state.stages.push({ stage, startedAt: new Date(now).toISOString() });
    this.attribute({ key: STAGE_ATTRIBUTE, value: stage });
    this.show();
    log.info('rotation stage', { secret: this.state.secret, stage });
  }

  /**
   * Set a search attribute with the others set before the workflow next waits: each upsert is an
   * event in history, and stages often change several times between two activities.
   */
  attribute(attribute: SearchAttributeUpdatePair): void {
    // Already so (the CLI starts a rotation with its secret and requester set): no event at all.
    if (!this.attributes.has(attribute.key.name) && workflowInfo().typedSearchAttributes.get(attribute.key) === attribute.value) return;
    if (this.attributes.size === 0 && !this.holding) void Promise.resolve().then(() => this.flush());
    this.attributes.set(attribute.key.name, attribute);
  }

  /** Everything `work` sets, however many times it waits in between, goes out as one upsert at its end. */
  async batch<T>(work: () => Promise<T>): Promise<T> {
    this.holding = true;
    try {
      return await work();
    } finally {
      this.holding = false;
      this.flush();
    }
  }

  private holding = false;

  private flush(): void {
    if (this.holding) return;
    if (this.attributes.size) upsertSearchAttributes([...this.attributes.values()]);
    this.attributes.clear();
  }

  consumer(name: string): ConsumerProgress {
    return this.state.consumers.find((c) => c.name === name)!;
  }

  setConsumer(name: string, state: ConsumerProgress['state'], detail?: string): void {
    if (state === 'failed' && this.consumer(name).state !== 'failed') rotationMetrics.consumersFailed.add(1, { secret: this.state.secret, consumer: name });
    Object.assign(this.consumer(name), { state, detail });
    this.show();
  }

  show(report?: RotationReport): void {
    if (report) this.ended(report.outcome, report);
    else if (this.state.stage === 'approve') this.showApproval();
    setCurrentDetails(describe(this.state, report));
  }

  /**
   * The rotation's outcome, counted once. A run that ends without a report (it failed before it
   * had a pending version) is counted as `failed`; one refused at authorize is not a rotation of a
   * declared secret, and its name is untrusted input, so it is never a label.
   */
  ended(outcome: RotationReport['outcome'] | 'failed', report?: RotationReport): void {
    if (this.counted || this.state.specHash === undefined) return;
    this.counted = true;
    const secret = this.state.secret;
    rotationMetrics.rotations.add(1, { secret, outcome });
    if (report?.postVerify && !report.postVerify.oldRejected) rotationMetrics.oldStillAccepted.add(1, { secret });
    // From the run's start (the command, for an emergency) to the old credential's revoke.
    if (report?.revokedAt) {
      rotationMetrics.timeToRevoke.record((Date.parse(report.revokedAt) - workflowInfo().runStartTime.getTime()) / 1000, { emergency: report.emergency });
    }
  }

  private counted = false;

  private showApproval(): void {
    this.setApprovalWaiting(1, this.state.approval.escalated ? 1 : 0);
  }

  private setApprovalWaiting(waiting: 0 | 1, pastTimeout: 0 | 1): void {
    rotationMetrics.approvalsWaiting.set(waiting, { secret: this.state.secret });
    rotationMetrics.approvalsPastTimeout.set(pastTimeout, { secret: this.state.secret });
  }

  /**
   * Every series this rotation may move starts at zero: Prometheus' increase() cannot see a
   * counter's first step, and an alert rule on a series that does not exist yet never fires.
   */
  private zeroMetrics(): void {
    const secret = this.state.secret;
    for (const outcome of OUTCOMES) rotationMetrics.rotations.add(0, { secret, outcome });
    for (const { name } of this.state.consumers) rotationMetrics.consumersFailed.add(0, { secret, consumer: name });
    rotationMetrics.oldStillAccepted.add(0, { secret });
    this.setApprovalWaiting(0, 0);
  }
}

const OUTCOMES: (RotationReport['outcome'] | 'failed')[] = ['rotated', 'rolled-back', 'rollback-incomplete', 'failed'];

/**
 * rekey's metrics from a rotation, through the workflow's metric meter: the SDK drops them while a
 * workflow replays, so a replay never counts a rotation twice. Every label comes from the worker's
 * manifests (secret and consumer names) or a fixed set (stage, outcome). Each is made where it is
 * used: the workflow's meter refuses outside a running workflow, and module code may run outside one.
 */
const rotationMetrics = {
  get rotations() {
    return metricMeter.createCounter('rekey_rotations', undefined, 'Rotations that ended, by secret and outcome');
  },
  get stageSeconds() {
    return metricMeter.createHistogram('rekey_stage_duration_seconds', 'float', 's', 'How long each stage of a rotation took');
  },
  get timeToRevoke() {
    return metricMeter.createHistogram('rekey_time_to_revoke_seconds', 'float', 's', "From a rotation's start to the old credential's revoke");
  },
  get consumersFailed() {
    return metricMeter.createCounter('rekey_consumers_failed', undefined, 'Consumers that failed a step of a rotation');
  },
  get oldStillAccepted() {
    return metricMeter.createCounter('rekey_post_verify_old_accepted', undefined, 'Post-verify found the revoked credential still accepted');
  },
  get approvalsWaiting() {
    return metricMeter.createGauge('rekey_approvals_waiting', 'int', undefined, '1 while a rotation of the secret waits for approval');
  },
  get approvalsPastTimeout() {
    return metricMeter.createGauge('rekey_approvals_past_timeout', 'int', undefined, "1 while it waits past the approval's timeout (escalated)");
  },
};

/** Untrusted text (a requester's label) shown as code, so it cannot become a link or a heading. */
const literal = (text: string) => `\`${text.replaceAll('`', "'")}\``;

/** Markdown for the Temporal UI's "current details" panel. */
function describe(progress: Progress, report?: RotationReport): string {
  const a = progress.approval;
  const requester = progress.requester
    ? `${progress.requester.name} (signed with ${progress.requester.fingerprint})`
    : `${literal(progress.requestedBy ?? 'unknown')} (unverified label)`;
  const lines = [
    `### ${progress.emergency ? 'EMERGENCY rotation' : 'Rotation'} of \`${progress.secret}\``,
    report
      ? `**Outcome:** ${report.outcome}${report.failure ? ` at ${report.failure.stage}: ${report.failure.message}` : ''}`
      : `**Stage:** ${progress.stage}`,
    `Requested by ${requester}`,
    '',
    `Spec \`${progress.specHash ?? '?'}\``,
    `Versions: current \`${progress.versions.current ?? '?'}\`, pending \`${progress.versions.pending ?? '?'}\``,
  ];
  if (a.required) {
    lines.push(
      '',
      `**Approval:** ${a.approvedBy.length} of ${a.needed}` +
        (a.approvedBy.length ? ` (approved by ${a.approvedBy.map((x) => x.approver).join(', ')})` : '') +
        (a.rejectedBy ? `, rejected by ${a.rejectedBy.approver}` : '') +
        (progress.stage === 'approve' ? `; waiting for ${a.waitingFor.join(', ') || 'nobody eligible'}${a.escalated ? ' (escalated)' : ''}` : '') +
        (a.ignoredCount ? `; ${a.ignoredCount} invalid decision(s) ignored` : ''),
    );
    if (progress.stage === 'approve') {
      lines.push('', 'Approve: run `rekey approve ' + progress.secret + ' --key ~/.ssh/id_ed25519 --print` and send its output as the signal `approve` (or `reject`).');
    }
  }
  lines.push('', '| consumer | state | detail |', '|---|---|---|', ...progress.consumers.map((c) => `| ${c.name} | ${c.state} | ${c.detail ?? ''} |`));
  return lines.join('\n');
}
