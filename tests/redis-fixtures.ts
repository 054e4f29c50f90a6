// Redis fixtures for tests and the benchmark: the test's own root access to the server (its default
// user, never rekey's), ACL users with unique names, removed by `dropCreatedUsers`, and their
// credentials stored in moto.
import assert from 'node:assert/strict';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { ReplyError, RespConnection, type Reply } from '../activities/targets/redis';
import { sm, testPassword, uniqueId } from './helpers';

export const HOST = process.env.REKEY_REDIS_HOST ?? '127.0.0.1';
export const PORT = Number(process.env.REKEY_REDIS_PORT ?? 6379);

/** A command as the server's default user (the test's own root access, never rekey's). */
export async function root(args: string[]): Promise<Reply> {
  let conn: RespConnection;
  try {
    conn = await RespConnection.open({ host: HOST, port: PORT, tls: false, timeoutMs: 3000 });
  } catch (err) {
    throw new Error(`Redis is not reachable at ${HOST}:${PORT} (${(err as Error).message}): start it with \`redis-server --daemonize yes\` (or set REKEY_REDIS_HOST / REKEY_REDIS_PORT)`);
  }
  try {
    const reply = await conn.call(args);
    if (reply instanceof ReplyError) throw new Error(`${args.slice(0, 2).join(' ')}: ${reply.message}`);
    return reply;
  } finally {
    conn.close();
  }
}

const created: string[] = [];
/** ACL DELUSER every user the fixtures made. */
export async function dropCreatedUsers(): Promise<void> {
  if (created.length) await root(['ACL', 'DELUSER', ...created.splice(0)]).catch(() => undefined);
}
export async function aclUser(name: string, ...rules: string[]): Promise<void> {
  created.push(name);
  await root(['ACL', 'SETUSER', name, 'reset', ...rules]);
}

/** ACL GETUSER as a plain object (null: no such user). */
export async function getUser(name: string): Promise<Record<string, unknown> | null> {
  const reply = (await root(['ACL', 'GETUSER', name])) as Reply[] | null;
  if (!reply) return null;
  const out: Record<string, unknown> = {};
  for (let i = 0; i < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
  return out;
}
export const rulesOf = async (name: string) => {
  const { passwords: _, ...rules } = (await getUser(name))!;
  return rules;
};

/** Does Redis let this user in with this password? (false only for WRONGPASS) */
export async function canAuth(user: string, password: string): Promise<boolean> {
  const conn = await RespConnection.open({ host: HOST, port: PORT, tls: false, timeoutMs: 3000 });
  try {
    const reply = await conn.call(['AUTH', user, password], { secrets: [password] });
    if (reply instanceof ReplyError) {
      assert.equal(reply.code, 'WRONGPASS');
      return false;
    }
    return true;
  } finally {
    conn.close();
  }
}

export interface RedisFixture {
  id: string;
  user: string;
  admin: string;
  initialPassword: string;
  adminPassword: string;
  secretId: string;
  adminSecretId: string;
}

/** An application user with rules of its own and a known password, an admin with +acl +client|kill; both stored in moto. */
export async function redisFixture(options: { adminRules?: string[]; userRules?: string[]; createUser?: boolean } = {}): Promise<RedisFixture> {
  const id = uniqueId();
  const [user, admin] = [`rekey_${id}_app`, `rekey_${id}_admin`];
  const [initialPassword, adminPassword] = [testPassword(), testPassword()];
  if (options.createUser !== false) await aclUser(user, 'on', `>${initialPassword}`, ...(options.userRules ?? ['~app:*', '&orders', '+get', '+set', '+ping', '-flushall']));
  else created.push(user);
  await aclUser(admin, 'on', `>${adminPassword}`, ...(options.adminRules ?? ['+acl', '+client|kill']));
  const adminSecretId = `rekey-test/${id}/redis-admin`;
  await sm.send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify({ username: admin, password: adminPassword }) }));
  const secretId = `rekey-test/${id}/redis`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ engine: 'redis', host: HOST, port: String(PORT), username: user, password: initialPassword }) }));
  return { id, user, admin, initialPassword, adminPassword, secretId, adminSecretId };
}

export function redisSpec(fx: RedisFixture, extra: Record<string, unknown> = {}, target: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    store: { type: 'aws-secrets-manager', secretId: fx.secretId },
    generator: { type: 'password', length: 24 },
    target: { type: 'redis', host: HOST, port: PORT, user: fx.user, admin: { store: { type: 'aws-secrets-manager', secretId: fx.adminSecretId } }, ...target },
    policy: { overlap: '0s' },
    ...extra,
  };
}

