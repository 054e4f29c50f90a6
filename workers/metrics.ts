// Prometheus metrics of the worker process: the Temporal SDK's own worker metrics and rekey's,
// served by the SDK runtime's exporter on REKEY_METRICS_ADDRESS. Rotations emit theirs from the
// workflow (workflows/progress.ts); this file adds what no rotation can see: how old every
// declared secret is, read from its store, so "overdue" is an alert rule rather than a cron job.
import type { MetricMeter } from '@temporalio/common';
import { Runtime } from '@temporalio/worker';
import { currentAge } from '../activities/rotation';
import { parseDuration } from '../lib/duration';
import { loadManifests } from '../lib/manifest';

/** Stages last from milliseconds (generate) to days (an approval): one bucket set spans both. */
const SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400];

/**
 * Install the SDK runtime with its Prometheus exporter. Must run before any connection or worker
 * exists: the first of those installs a runtime without it, and a runtime is installed once.
 */
export function installMetrics(bindAddress: string): MetricMeter {
  Runtime.install({
    telemetryOptions: {
      metrics: {
        prometheus: {
          bindAddress,
          // Prometheus' own conventions: counters end in _total, durations are in seconds.
          countersTotalSuffix: true,
          useSecondsForDurations: true,
          histogramBucketOverrides: {
            rekey_stage_duration_seconds: SECONDS_BUCKETS,
            rekey_time_to_revoke_seconds: SECONDS_BUCKETS,
          },
        },
      },
    },
  });
  return Runtime.instance().metricMeter;
}

export interface AgeWatch {
  /** Resolves when the first pass over every secret has finished (tests, and a log line). */
  readonly firstPass: Promise<void>;
  stop(): void;
}

/**
 * Every `intervalMs`, read the manifests again and set each secret's age and max age. At most
 * `concurrency` stores are asked at once, and a pass never overlaps the next: a slow store delays
 * the gauges, it does not pile up requests. A secret that cannot be read is logged and counted;
 * its age gauge keeps its last value, and the loop goes on.
 */
export function watchSecretAges(meter: MetricMeter, manifestDirs: string[], { intervalMs = 60_000, concurrency = 8 } = {}): AgeWatch {
  const age = meter.createGauge('rekey_secret_age_seconds', 'float', 's', "Age of the secret's current version in its store");
  const maxAge = meter.createGauge('rekey_secret_max_age_seconds', 'float', 's', "The secret's policy maxAge");
  const failures = meter.createCounter('rekey_secret_age_check_failures', undefined, "Reads of a secret's current version that failed");
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  async function pass(): Promise<void> {
    const set = await loadManifests(...manifestDirs);
    const queue = [...set.secrets.entries()];
    const worker = async () => {
      for (let next = queue.shift(); next && !stopped; next = queue.shift()) {
        const [secret, { spec }] = next;
        if (spec.policy.maxAge !== undefined) maxAge.set(parseDuration(spec.policy.maxAge) / 1000, { secret });
        // At zero from the first pass, so an alert on its increase sees the first failure too.
        failures.add(0, { secret });
        try {
          const { ageMs } = await currentAge(spec);
          if (ageMs !== undefined) age.set(ageMs / 1000, { secret });
        } catch (err) {
          failures.add(1, { secret });
          console.error(`rekey worker: could not read the age of ${secret}: ${(err as Error).message.split('\n')[0]}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker));
  }

  const run = (): Promise<void> =>
    pass()
      .catch((err) => console.error(`rekey worker: secret ages not updated: ${(err as Error).message.split('\n')[0]}`))
      .finally(() => {
        if (!stopped) timer = setTimeout(run, intervalMs).unref();
      });
  const firstPass = run();
  return {
    firstPass,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
