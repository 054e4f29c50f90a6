// Loaded once before every test file: the worker's log is captured in memory so tests can scan
// it for secret values, and a missing service fails loudly instead of skipping.
import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';

export const workerLog: LogEntry[] = [];

Runtime.install({
  logger: new DefaultLogger('INFO', (entry) => {
    workerLog.push(entry);
    if (process.env.REKEY_TEST_VERBOSE) console.error(`[worker ${entry.level}] ${entry.message}`, entry.meta ?? '');
  }),
});

// The stack's audit trail (a Postgres table) is shared by the tests; tests that tamper with a trail make their own.
const REQUIRED = ['TEMPORAL_ADDRESS', 'AWS_ENDPOINT_URL', 'REKEY_PG_PORT', 'REKEY_PG_ADMIN_PASSWORD_FILE', 'REKEY_CODEC_KEYRING', 'REKEY_AUDIT_DATABASE_URL', 'REKEY_AUDIT_KEY'];
const missing = REQUIRED.filter((name) => !process.env[name]);
if (missing.length) {
  throw new Error(
    `the tests need the local stack; ${missing.join(', ')} not set.\n` +
      'Run them with `npm test` (which starts it), or `eval "$(npm run -s stack:up)"` first.',
  );
}
