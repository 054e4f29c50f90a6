// Loaded once before every test file: the worker's log is captured in memory so tests can scan
// it for secret values, and a missing service fails loudly instead of skipping.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';

// The tests' audit records go to a file of their own, not the demo's trail.
process.env.REKEY_AUDIT_LOG ??= join(tmpdir(), `rekey-test-audit-${process.pid}.jsonl`);

export const workerLog: LogEntry[] = [];

Runtime.install({
  logger: new DefaultLogger('INFO', (entry) => {
    workerLog.push(entry);
    if (process.env.REKEY_TEST_VERBOSE) console.error(`[worker ${entry.level}] ${entry.message}`, entry.meta ?? '');
  }),
});

const REQUIRED = ['TEMPORAL_ADDRESS', 'AWS_ENDPOINT_URL', 'REKEY_PG_PORT', 'REKEY_PG_ADMIN_PASSWORD_FILE', 'REKEY_CODEC_KEYRING'];
const missing = REQUIRED.filter((name) => !process.env[name]);
if (missing.length) {
  throw new Error(
    `the tests need the local stack; ${missing.join(', ')} not set.\n` +
      'Run them with `npm test` (which starts it), or `eval "$(npm run -s stack:up)"` first.',
  );
}
