import { execFile } from 'node:child_process';
import { chmod, mkdir, open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationSchema } from '../../lib/schema';
import type { Consumer, Credential, Health, VersionRef } from '../provider';

export const commandConsumerSchema = z
  .object({
    type: z.literal('command'),
    name: z.string().min(1),
    /** Where the credential is written (mode 0600, replaced atomically). */
    file: z.string().min(1),
    format: z.enum(['json', 'env']).default('json'),
    /**
     * Run after the file is written, with a minimal environment: PATH, HOME, REKEY_FILE,
     * REKEY_SECRET, REKEY_VERSION_ID and the variables `env` names; never the worker's credentials.
     */
    reload: z.string().min(1).optional(),
    /** Exit status 0 means healthy; same environment as reload. */
    health: z.string().min(1).optional(),
    /** Variables of the worker's environment the commands may see (e.g. KUBECONFIG); each must be in a Settings env list. */
    env: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')).default([]),
    commandTimeout: durationSchema.default('30s'),
  })
  .strict();
export type CommandConsumerSpec = z.infer<typeof commandConsumerSchema>;

function render(format: CommandConsumerSpec['format'], ref: VersionRef, credential: Credential): string {
  const withVersion = { ...credential, rekey_version_id: ref.versionId };
  if (format === 'json') return `${JSON.stringify(withVersion, null, 2)}\n`;
  return Object.entries(withVersion)
    .map(([k, v]) => `${k.toUpperCase()}='${v.replaceAll("'", `'\\''`)}'\n`)
    .join('');
}

function run(command: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], { env, timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}`.trim() });
    });
  });
}

export function commandConsumer(spec: CommandConsumerSpec): Consumer {
  const timeoutMs = parseDuration(spec.commandTimeout);
  // Commands never inherit the worker's environment: its AWS keys, Temporal API key and codec
  // token stay with the worker. Only what a command needs to run, and what the manifest names.
  const passed = ['PATH', 'HOME', ...spec.env];
  const envFor = (ref: VersionRef): NodeJS.ProcessEnv => ({
    ...Object.fromEntries(passed.filter((name) => process.env[name] !== undefined).map((name) => [name, process.env[name]])),
    REKEY_FILE: spec.file,
    REKEY_SECRET: ref.secret,
    REKEY_VERSION_ID: ref.versionId,
  });

  return {
    name: spec.name,

    async deploy(ref, credential) {
      await mkdir(dirname(spec.file), { recursive: true });
      // Write a private temp file and rename it, so a reader never sees half a credential.
      const temp = `${spec.file}.rekey-${process.pid}.tmp`;
      const handle = await open(temp, 'w', 0o600);
      try {
        await handle.writeFile(render(spec.format, ref, credential));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await chmod(temp, 0o600);
      await rename(temp, spec.file);
      if (spec.reload) {
        const { code } = await run(spec.reload, envFor(ref), timeoutMs);
        // Command output may echo the file, so only the exit status is reported.
        if (code !== 0) throw new Error(`reload command of consumer ${spec.name} exited with status ${code}`);
      }
    },

    async health(ref): Promise<Health> {
      if (!spec.health) return { healthy: true, detail: 'no health command configured' };
      const { code } = await run(spec.health, envFor(ref), timeoutMs);
      return code === 0
        ? { healthy: true, detail: 'health command exited 0' }
        : { healthy: false, detail: `health command exited with status ${code}` };
    },
  };
}
