// What every rekey subcommand shares: argument parsing, output, exit codes, UI links.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { plain } from '../lib/report';
import { temporalSettings } from '../lib/temporal';

export { plain };

export const EXIT = { ok: 0, rolledBack: 1, usage: 2, conflict: 3, unavailable: 4 } as const;

/** Bad arguments: printed with a pointer to `rekey help`, exit status 2, nothing changed. */
export class UsageError extends Error {}

export type Values = Record<string, string | boolean | string[] | undefined>;

export function parse(args: string[], options: ParseArgsConfig['options'], positionals: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.positionals.length !== positionals.length) {
    throw new UsageError(positionals.length ? `expected ${positionals.join(' ')}` : `unexpected argument ${parsed.positionals[0]}`);
  }
  return { values: parsed.values as Values, positionals: parsed.positionals };
}

/** Results go to stdout; progress and diagnostics to stderr, so output can be piped. */
export const out = (line = '') => process.stdout.write(`${line}\n`);
export const err = (line: string) => process.stderr.write(`${line}\n`);

export function uiLink(workflowId: string, runId?: string): string {
  const { namespace } = temporalSettings();
  const base = process.env.REKEY_TEMPORAL_UI ?? 'http://127.0.0.1:8233';
  return `${base}/namespaces/${namespace}/workflows/${encodeURIComponent(workflowId)}${runId ? `/${runId}` : ''}`;
}

/** A query that gives up: a rotation whose workers are all down must not hang the CLI. */
export function withDeadline<T>(promise: Promise<T>, ms = 5000): Promise<T | undefined> {
  return Promise.race([promise.catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), ms).unref())]);
}

/**
 * Print a progress line whenever it changes until `result` settles: a long wait is never silent.
 * `probe` answers undefined when it has nothing new to say (e.g. no worker answered in time).
 */
export async function follow(result: Promise<unknown>, probe: () => Promise<string | undefined>, everyMs = 1000): Promise<void> {
  let done = false;
  void result.finally(() => (done = true)).catch(() => undefined);
  let last = '';
  while (!done) {
    const line = await probe().catch(() => undefined);
    if (line && line !== last) err(`  ${line}`);
    last = line || last;
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, everyMs))]);
  }
}

/** The innermost message of a failure: an activity's or a validator's own words, not Temporal's wrapping. */
export function rootCause(e: Error): string {
  let cause: Error = e;
  while ((cause as { cause?: Error }).cause) cause = (cause as { cause?: Error }).cause!;
  return plain(cause.message, 'indent');
}

