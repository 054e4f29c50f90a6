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
    /** Run after the file is written; sees REKEY_FILE, REKEY_SECRET and REKEY_VERSION_ID. */
    reload: z.string().min(1).optional(),
    /** Exit status 0 means healthy; same environment as reload. */
    health: z.string().min(1).optional(),
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
  const envFor = (ref: VersionRef) => ({
    ...process.env,
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
