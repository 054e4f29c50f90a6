// The consumer phases of a rotation, each an activity per consumer with its own summary in the
// UI's timeline: deploy and verify before promote, commit at promote (consumers that produce the
// secret, such as a webhook sender), finalize after revoke (consumers that held two versions), and
// abort and roll back when the rotation goes back. Which consumer has which phase comes from the
// worker's plan, so this file knows no provider.
import { isCancellation } from '@temporalio/workflow';
import type { PromoteStep, Receipts, RotationRef } from '../activities/rotation';
import { causeOf } from './authorize';
import type { RotationPlan } from './messages';
import type { RotationProgress } from './progress';
import { forEachLimited, type activitiesFor } from './stages';

/** A stage failed and a consumer is to blame; the report names it. */
export class ConsumerFailure extends Error {
  constructor(readonly consumer: string, message: string) {
    super(message);
  }
}

interface Versions {
  currentVersionId: string;
  pendingVersionId: string;
}

export class ConsumerPhases {
  /** Consumers that may hold the new version: a rollback deploys the current one to each. */
  private readonly touched = new Set<string>();
  /** Consumers whose commit may have started: a rollback aborts each. */
  private readonly committing = new Set<string>();

  constructor(
    private readonly plan: RotationPlan,
    private readonly act: ReturnType<typeof activitiesFor>,
    private readonly progress: RotationProgress,
    private readonly ref: RotationRef,
    private readonly versions: Versions,
    /** The worker's signed word for each step; commit and promote will not move without them. */
    private readonly receipts: Receipts,
  ) {}

  private get commits(): string[] {
    return this.plan.phases?.commit ?? [];
  }

  /** Every consumer gets the new version (and, where it holds two, keeps the current one). */
  async deploy(): Promise<void> {
    const { act, ref, progress, receipts } = this;
    const versionId = this.versions.pendingVersionId;
    await this.every(this.plan.consumers, async (name) => {
      progress.setConsumer(name, 'deploying');
      this.touched.add(name);
      const deployed = await act.deploy.deployToConsumer.executeWithOptions(act.withSummary('deploy', `deploy ${versionId} to ${name}`), [
        { ...ref, consumer: name, versionId, previousVersionId: this.versions.currentVersionId },
      ]);
      if (deployed?.receipt) receipts[`deployed:${name}`] = deployed.receipt;
      progress.setConsumer(name, 'deployed');
    });
  }

  /** Every consumer healthy on the new version before the plan's verify deadline. */
  async verify(): Promise<void> {
    const { act, ref, progress, receipts } = this;
    const versionId = this.versions.pendingVersionId;
    const deadline = Date.now() + this.plan.timeoutsMs.verify;
    await this.every(this.plan.consumers, async (name) => {
      progress.setConsumer(name, 'verifying');
      const verified = await act.verify.awaitConsumerHealthy.executeWithOptions(act.withSummary('verify', `wait until ${name} is healthy on the new version`), [
        { ...ref, consumer: name, versionId, deadline },
      ]);
      receipts[`consumer:${name}`] = verified?.receipt;
      progress.setConsumer(name, 'verified', String(verified?.detail ?? ''));
    });
  }

  /**
   * Producers back on the current version before anything else: a rotation that was terminated
   * after its commit may have left one signing with a version no longer pending, which the
   * receivers are about to stop accepting. Idempotent, and cheap: done at every rotation (which
   * attempt discarded the abandoned version is not something the workflow can be sure of).
   */
  async resetProducers(): Promise<void> {
    const { act, ref, progress } = this;
    const versionId = this.versions.currentVersionId;
    // Not marked as committing: a reset that fails changed nothing a rollback must undo (no
    // consumer holds the new version yet, so none is redeployed either).
    await this.every(this.commits, async (name) => {
      await act.prepare.abortConsumer.executeWithOptions(act.withSummary('prepare', `switch ${name} back to ${versionId}, which an abandoned rotation may have changed`), [{ ...ref, consumer: name, versionId }]);
      progress.setConsumer(name, 'waiting');
    });
  }

  /** Producers switch to the new version, with everything promote needs already in hand. */
  async commit(step: () => PromoteStep): Promise<void> {
    const { act, progress, receipts } = this;
    // Within the verify stage's time, which bounds the activity too (with a margin to report).
    const deadline = Date.now() + this.plan.timeoutsMs.verify;
    await this.every(this.commits, async (name) => {
      progress.setConsumer(name, 'committing');
      this.committing.add(name);
      const committed = await act.verify.commitConsumer.executeWithOptions(act.withSummary('verify', `commit ${this.versions.pendingVersionId} at ${name}`), [{ ...step(), consumer: name, deadline }]);
      receipts[`committed:${name}`] = committed?.receipt;
      progress.setConsumer(name, 'committed', String(committed?.detail ?? ''));
    });
  }

  /**
   * After revoke: consumers that held two versions keep the new one alone. The rotation cannot go
   * back any more, so a failure is a warning for a person, not a rollback.
   */
  async finalize(): Promise<string[]> {
    const { act, ref, progress } = this;
    const names = this.plan.phases?.finalize ?? [];
    const versionId = this.versions.pendingVersionId;
    const deadline = Date.now() + this.plan.timeoutsMs.verify;
    const results = await forEachLimited(names, this.plan.maxParallelConsumers, async (name) => {
      progress.setConsumer(name, 'finalizing');
      const done = await act.verify.finalizeConsumer.executeWithOptions(act.withSummary('verify', `leave ${name} with ${versionId} alone`), [
        { ...ref, consumer: name, versionId, deadline, receipts: this.receipts },
      ]);
      if (done?.receipt) this.receipts[`finalized:${name}`] = done.receipt;
      progress.setConsumer(name, 'finalized', String(done?.detail ?? ''));
    });
    return names.flatMap((name, i) => {
      const result = results[i];
      if (result.status === 'fulfilled') return [];
      const why = causeOf(result.reason);
      progress.setConsumer(name, 'failed', `finalize: ${why}`);
      return [`finalize ${name}: ${why}; it still accepts the previous version ${this.versions.currentVersionId}`];
    });
  }

  /**
   * Going back: producers that may have switched switch back first (while every receiver still
   * holds both versions), then every consumer that may hold the new version gets the current one
   * alone. Says which consumers could not be rolled back, and why.
   */
  async rollback(): Promise<{ stuck: string[]; why?: string; leftAsTheyAre?: boolean }> {
    const { act, ref, progress } = this;
    const versionId = this.versions.currentVersionId;
    const failedDetail = (name: string) => (progress.consumer(name).state === 'failed' ? progress.consumer(name).detail : undefined);
    const aborting = [...this.committing];
    const aborted = await forEachLimited(aborting, this.plan.maxParallelConsumers, async (name) => {
      progress.setConsumer(name, 'aborting', failedDetail(name));
      await act.rollback.abortConsumer.executeWithOptions(act.withSummary('rollback', `switch ${name} back to ${versionId}`), [{ ...ref, consumer: name, versionId }]);
    });
    const unswitched = aborted.findIndex((r) => r.status === 'rejected');
    if (unswitched >= 0) {
      // A producer may still be on the new version: taking it away from any consumer would break
      // what works now (receivers holding both keys). Everything stays as it is, for a person.
      const why = `${aborting[unswitched]} could not be switched back (${causeOf((aborted[unswitched] as PromiseRejectedResult).reason)}); every consumer was left as it is`;
      const stuck = [...new Set([...aborting, ...this.touched])];
      stuck.forEach((name) => progress.setConsumer(name, 'failed', `rollback: ${why}`));
      return { stuck, why, leftAsTheyAre: true };
    }
    const touched = [...this.touched];
    const results = await forEachLimited(touched, this.plan.maxParallelConsumers, async (name) => {
      const detail = failedDetail(name);
      progress.setConsumer(name, 'rolling-back', detail);
      await act.rollback.deployToConsumer.executeWithOptions(act.withSummary('rollback', `roll ${name} back to ${versionId}`), [{ ...ref, consumer: name, versionId, rollback: true }]);
      progress.setConsumer(name, 'rolled-back', detail);
    });
    const stuck = touched.filter((_, i) => results[i].status === 'rejected');
    if (!stuck.length) return { stuck };
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const why = causeOf(failure?.reason);
    stuck.forEach((name) => progress.setConsumer(name, 'failed', `rollback failed: ${why}`));
    return { stuck, why };
  }

  /** Run `work` for each consumer (bounded by the plan); the first failure, if any, is thrown naming its consumer. */
  private async every(names: string[], work: (name: string) => Promise<void>): Promise<void> {
    const results = await forEachLimited(names, this.plan.maxParallelConsumers, async (name) => {
      try {
        await work(name);
      } catch (err) {
        this.progress.setConsumer(name, 'failed', causeOf(err));
        throw err;
      }
    });
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed >= 0) {
      const reason = (results[failed] as PromiseRejectedResult).reason;
      if (isCancellation(reason)) throw reason;
      throw new ConsumerFailure(names[failed], `consumer ${names[failed]}: ${causeOf(reason)}`);
    }
  }
}
