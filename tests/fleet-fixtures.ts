// Cheap secrets for fleet and schedule tests: a store entry and a file consumer, no database, so
// fifty of them rotate in seconds while still exercising the store for real.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { stringify } from 'yaml';
import { sm, uniqueId } from './helpers';

export interface CheapSecret {
  name: string;
  secretId: string;
}

export async function cheapSecrets(dir: string, count: number, labels: Record<string, string>, policy: Record<string, unknown> = {}): Promise<CheapSecret[]> {
  const prefix = uniqueId('f');
  const secrets = Array.from({ length: count }, (_, i) => ({ name: `${prefix}-${String(i).padStart(3, '0')}`, secretId: `rekey-test/${prefix}/${i}` }));
  await Promise.all(secrets.map((s) => sm.send(new CreateSecretCommand({ Name: s.secretId, SecretString: JSON.stringify({ value: uniqueId('v') }) }))));
  const docs = secrets.map((s) =>
    stringify({
      apiVersion: 'rekey.dev/v1',
      kind: 'Secret',
      metadata: { name: s.name, labels },
      spec: {
        store: { type: 'aws-secrets-manager', secretId: s.secretId },
        generator: { type: 'random-bytes', size: 16 },
        consumers: [{ type: 'command', name: 'file', file: join(dir, 'consumers', `${s.name}.json`) }],
        policy: { overlap: '0s', ...policy },
      },
    }),
  );
  await writeFile(join(dir, `${prefix}-secrets.yaml`), docs.join('---\n'));
  return secrets;
}

export async function scheduleManifest(dir: string, file: string, name: string, spec: Record<string, unknown>): Promise<void> {
  await writeFile(join(dir, file), stringify({ apiVersion: 'rekey.dev/v1', kind: 'Schedule', metadata: { name }, spec }));
}
