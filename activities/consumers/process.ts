import { spawn } from 'node:child_process';

export interface Exited {
  code: number;
  /** The last 4,000 characters of stdout and stderr, when asked for; callers never repeat them in errors or logs. */
  out: string;
}

/**
 * Run `file` in its own process group, so a timeout or a cancelled step kills it and whatever it
 * started. A cancelled run rejects ("cancelled") once the process has gone.
 */
export function runBounded(
  file: string,
  args: string[],
  options: { env: NodeJS.ProcessEnv; timeoutMs: number; signal?: AbortSignal; cwd?: string; keepOutput?: boolean },
): Promise<Exited> {
  const { env, timeoutMs, signal, cwd, keepOutput } = options;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { cwd, env, detached: true, stdio: keepOutput ? ['ignore', 'pipe', 'pipe'] : 'ignore' });
    let out = '';
    const keep = (chunk: Buffer) => (out = (out + chunk.toString()).slice(-4000));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const kill = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(kill, timeoutMs);
    signal?.addEventListener('abort', kill, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', kill);
      if (signal?.aborted) reject(new Error('cancelled'));
      else resolvePromise({ code: code ?? 1, out });
    });
    if (signal?.aborted) kill();
  });
}
