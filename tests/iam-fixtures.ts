// IAM fixtures for tests and the benchmark: users and access keys in moto's IAM (the same server
// as the store), their keys stored as secrets.
import { join } from 'node:path';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { CreateAccessKeyCommand, CreateUserCommand, IAMClient, ListAccessKeysCommand, ListUserTagsCommand } from '@aws-sdk/client-iam';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { sm, tempDir, uniqueId } from './helpers';

export const iam = new IAMClient({ region: process.env.AWS_REGION ?? 'us-east-1' });

export interface Key {
  accessKeyId: string;
  secretAccessKey: string;
}

export async function newUser(name: string): Promise<string> {
  await iam.send(new CreateUserCommand({ UserName: name }));
  return name;
}

export async function newKey(user: string): Promise<Key> {
  const { AccessKey } = await iam.send(new CreateAccessKeyCommand({ UserName: user }));
  return { accessKeyId: AccessKey!.AccessKeyId!, secretAccessKey: AccessKey!.SecretAccessKey! };
}

export async function keysOf(user: string): Promise<{ id: string; status: string }[]> {
  const { AccessKeyMetadata } = await iam.send(new ListAccessKeysCommand({ UserName: user }));
  return (AccessKeyMetadata ?? []).map((k) => ({ id: k.AccessKeyId!, status: k.Status! })).sort((a, b) => a.id.localeCompare(b.id));
}

export async function tagsOf(user: string): Promise<Record<string, string>> {
  const { Tags } = await iam.send(new ListUserTagsCommand({ UserName: user }));
  return Object.fromEntries((Tags ?? []).map((t) => [t.Key!, t.Value!]));
}

/** Who STS says this key is. */
export async function callerOf(key: Key): Promise<string | undefined> {
  const sts = new STSClient({ region: process.env.AWS_REGION ?? 'us-east-1', credentials: key });
  return (await sts.send(new GetCallerIdentityCommand({}))).Arn;
}

export interface Fixture {
  id: string;
  user: string;
  admin: string;
  initial: Key;
  adminKey: Key;
  secretId: string;
  adminSecretId: string;
  file: string;
}

/** A user with one key, stored as the current version; a separate admin user whose key is stored as the admin credential. */
export async function fixture(): Promise<Fixture> {
  const id = uniqueId();
  const user = await newUser(`rekey-test-${id}`);
  const admin = await newUser(`rekey-admin-${id}`);
  const [initial, adminKey] = [await newKey(user), await newKey(admin)];
  const secretId = `rekey-test/${id}/iam-key`;
  const adminSecretId = `rekey-test/${id}/iam-admin`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify(initial) }));
  await sm.send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify(adminKey) }));
  return { id, user, admin, initial, adminKey, secretId, adminSecretId, file: join(await tempDir(), 'aws.json') };
}

export function iamSpec(fx: Fixture, target: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    store: { type: 'aws-secrets-manager', secretId: fx.secretId },
    target: { type: 'aws-iam-access-key', userName: fx.user, admin: { store: { type: 'aws-secrets-manager', secretId: fx.adminSecretId } }, deleteAfter: '1h', ...target },
    consumers: [{ type: 'command', name: 'app', file: fx.file }],
    policy: { overlap: '0s' },
    ...extra,
  };
}

