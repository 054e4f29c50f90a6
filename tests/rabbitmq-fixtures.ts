// RabbitMQ fixtures for tests and the benchmark: the test's own root access to the management API
// (guest, loopback only; never rekey's), a vhost, an admin user with the administrator tag and an
// application user pair with unique names, removed by `dropCreated`, their credentials stored in moto.
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { connect, type ChannelModel } from 'amqplib';
import { sm, testPassword, uniqueId } from './helpers';

export const HOST = process.env.REKEY_RABBITMQ_HOST ?? '127.0.0.1';
export const PORT = Number(process.env.REKEY_RABBITMQ_PORT ?? 5672);
export const API = process.env.REKEY_RABBITMQ_API ?? 'http://127.0.0.1:15672';
const ROOT_AUTH = `Basic ${Buffer.from(process.env.REKEY_RABBITMQ_ROOT ?? 'guest:guest').toString('base64')}`;

/** A management API call as the test's root user; fails loudly, saying how to enable the API, when it does not answer. */
export async function root(method: string, path: string, body?: unknown): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${API}/api/${path}`, { method, headers: { authorization: ROOT_AUTH, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new Error(
      `the RabbitMQ management API is not reachable at ${API} (${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}): enable it with \`rabbitmq-plugins enable rabbitmq_management\` (bash scripts/stack.sh up does) or set REKEY_RABBITMQ_API`,
    );
  }
  const text = await res.text();
  if (res.status === 404 && method === 'GET') return undefined;
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : undefined;
}

const users: string[] = [];
const vhosts: string[] = [];
/** Delete every user and vhost the fixtures made. */
export async function dropCreated(): Promise<void> {
  for (const u of users.splice(0)) await root('DELETE', `users/${encodeURIComponent(u)}`).catch(() => undefined);
  for (const v of vhosts.splice(0)) await root('DELETE', `vhosts/${encodeURIComponent(v)}`).catch(() => undefined);
}

export async function createUser(name: string, password: string | undefined, tags: string[] = []): Promise<void> {
  users.push(name);
  await root('PUT', `users/${encodeURIComponent(name)}`, password === undefined ? { password_hash: '', tags: tags.join(',') } : { password, tags: tags.join(',') });
}
export async function permit(user: string, vhost: string, configure = '.*', write = '.*', read = '.*'): Promise<void> {
  await root('PUT', `permissions/${encodeURIComponent(vhost)}/${encodeURIComponent(user)}`, { configure, write, read });
}

/** A user's tags, permissions and topic permissions, comparable between twins. */
export async function rightsOf(name: string): Promise<unknown> {
  const user = (await root('GET', `users/${encodeURIComponent(name)}`)) as { tags: unknown } | undefined;
  if (!user) return undefined;
  const perms = ((await root('GET', `users/${encodeURIComponent(name)}/permissions`)) as Record<string, unknown>[]).map(({ user: _, ...p }) => p);
  const topics = ((await root('GET', `users/${encodeURIComponent(name)}/topic-permissions`)) as Record<string, unknown>[]).map(({ user: _, ...p }) => p);
  return { tags: user.tags, perms, topics };
}
export async function userRecord(name: string): Promise<unknown> {
  return root('GET', `users/${encodeURIComponent(name)}`);
}

/** An AMQP connection, or the refusal's text. */
export async function amqp(vhost: string, username: string, password: string): Promise<ChannelModel | string> {
  try {
    return await connect({ protocol: 'amqp', hostname: HOST, port: PORT, vhost, username, password, heartbeat: 0 }, { timeout: 5000 });
  } catch (err) {
    return (err as Error).message;
  }
}
export async function canLogin(vhost: string, username: string, password: string): Promise<boolean> {
  const conn = await amqp(vhost, username, password);
  if (typeof conn === 'string') {
    if (!/ACCESS.REFUSED|403/.test(conn)) throw new Error(`AMQP failed otherwise: ${conn}`);
    return false;
  }
  await conn.close().catch(() => undefined);
  return true;
}

export interface RabbitFixture {
  id: string;
  vhost: string;
  users: [string, string];
  admin: string;
  initialPassword: string;
  adminPassword: string;
  secretId: string;
  adminSecretId: string;
}

/** A vhost, users a (current, with a password) and b (idle, no password) with equal rights there, an administrator admin; stored in moto. */
export async function rabbitFixture(options: { adminTags?: string[]; idlePermissions?: boolean; createIdle?: boolean } = {}): Promise<RabbitFixture> {
  const id = uniqueId();
  const vhost = `rekey_${id}`;
  vhosts.push(vhost);
  await root('PUT', `vhosts/${encodeURIComponent(vhost)}`, {});
  const [a, b, admin] = [`rekey_${id}_a`, `rekey_${id}_b`, `rekey_${id}_admin`];
  const [initialPassword, adminPassword] = [testPassword(), testPassword()];
  // The twins carry a tag of their own, so a rotation that dropped or changed tags would show.
  await createUser(a, initialPassword, ['billing-app']);
  await permit(a, vhost, '^app\\.', '^app\\.', '.*');
  if (options.createIdle !== false) {
    await createUser(b, undefined, ['billing-app']);
    if (options.idlePermissions !== false) await permit(b, vhost, '^app\\.', '^app\\.', '.*');
  } else users.push(b);
  await createUser(admin, adminPassword, options.adminTags ?? ['administrator']);
  const adminSecretId = `rekey-test/${id}/rabbitmq-admin`;
  await sm.send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify({ username: admin, password: adminPassword }) }));
  const secretId = `rekey-test/${id}/rabbitmq`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ engine: 'rabbitmq', host: HOST, port: String(PORT), vhost, username: a, password: initialPassword }) }));
  return { id, vhost, users: [a, b], admin, initialPassword, adminPassword, secretId, adminSecretId };
}

export function rabbitSpec(fx: RabbitFixture, extra: Record<string, unknown> = {}, target: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    store: { type: 'aws-secrets-manager', secretId: fx.secretId },
    generator: { type: 'password', length: 24 },
    target: { type: 'rabbitmq', host: HOST, port: PORT, vhost: fx.vhost, users: fx.users, managementUrl: API, admin: { store: { type: 'aws-secrets-manager', secretId: fx.adminSecretId } }, ...target },
    policy: { overlap: '0s' },
    ...extra,
  };
}
