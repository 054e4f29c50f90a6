// The bench worker's workflows: rekey's own, plus a no-op load that measures how many activities
// per second the Temporal server on this machine completes at most.
import { proxyActivities } from '@temporalio/workflow';

export * from '../workflows';

const { noop } = proxyActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1m' });

export async function noopCeiling(total: number, parallel: number): Promise<void> {
  let started = 0;
  const lane = async () => {
    while (started < total) {
      started++;
      await noop();
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
}
