// MariaDB/MySQL fixtures for tests and the benchmark: the test's own root access (`mysql -uroot`
// over the unix socket, never rekey's), accounts and databases with unique names, dropped by
// `dropCreated`, and their credentials stored in moto.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { sm, testPassword, uniqueId } from './helpers';

export const HOST = process.env.REKEY_MYSQL_HOST ?? '127.0.0.1';
export const PORT = Number(process.env.REKEY_MYSQL_PORT ?? 3306);

/** SQL as the server's root (the test's own access, never rekey's). */
export async function root(sql: string): Promise<string> {
  try {
    return (await promisify(execFile)('mysql', ['-uroot', '-N', '-B', '-e', sql])).stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    if (/Can't connect/.test(e.stderr ?? '')) throw new Error(`MariaDB is not reachable (${e.stderr?.trim()}): start it with \`service mariadb start\``);
    throw new Error(`root SQL failed: ${e.stderr ?? e.message}`);
  }
}
export const q = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

const createdUsers: string[] = [];
const createdDbs: string[] = [];
export async function dropCreated(): Promise<void> {
  for (const u of createdUsers.splice(0)) await root(`DROP USER IF EXISTS ${q(u)}@'%'`).catch(() => undefined);
  for (const d of createdDbs.splice(0)) await root(`DROP DATABASE IF EXISTS \`${d}\``).catch(() => undefined);
}

export interface Fixture {
  id: string;
  users: [string, string];
  admin: string;
  db: string;
  initialPassword: string;
  adminPassword: string;
  secretId: string;
  adminSecretId: string;
}

export type Strategy = 'single-user' | 'alternating-users' | 'dual-password';

/** An application account a (and, for alternating-users, its locked twin b) with SELECT, INSERT on a database of their own; an admin with just what rekey needs. */
export async function fixture(options: { twin?: boolean; adminGrants?: string[] } = {}): Promise<Fixture> {
  const id = uniqueId('rk');
  const users: [string, string] = [`${id}_a`, `${id}_b`];
  const [admin, db] = [`${id}_adm`, `${id}_db`];
  const [initialPassword, adminPassword] = [testPassword(), testPassword()];
  createdUsers.push(...users, admin);
  createdDbs.push(db);
  const adminGrants = options.adminGrants ?? ['GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO', 'GRANT SELECT ON mysql.* TO'];
  await root(
    [
      `CREATE DATABASE \`${db}\``,
      `CREATE TABLE \`${db}\`.t (id int)`,
      `CREATE USER ${q(users[0])}@'%' IDENTIFIED BY ${q(initialPassword)}`,
      `GRANT SELECT, INSERT ON \`${db}\`.* TO ${q(users[0])}@'%'`,
      ...(options.twin !== false ? [`CREATE USER ${q(users[1])}@'%' IDENTIFIED BY ${q(testPassword())} ACCOUNT LOCK`, `GRANT SELECT, INSERT ON \`${db}\`.* TO ${q(users[1])}@'%'`] : []),
      `CREATE USER ${q(admin)}@'%' IDENTIFIED BY ${q(adminPassword)}`,
      ...adminGrants.map((g) => `${g} ${q(admin)}@'%'`),
    ].join(';\n'),
  );
  const [secretId, adminSecretId] = [`rekey-test/${id}/mysql`, `rekey-test/${id}/mysql-admin`];
  await sm.send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify({ username: admin, password: adminPassword }) }));
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ engine: 'mysql', host: HOST, port: String(PORT), dbname: db, username: users[0], password: initialPassword }) }));
  return { id, users, admin, db, initialPassword, adminPassword, secretId, adminSecretId };
}

export function spec(fx: Fixture, strategy: Strategy, extra: Record<string, unknown> = {}, target: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    store: { type: 'aws-secrets-manager', secretId: fx.secretId },
    generator: { type: 'password', length: 24 },
    target: {
      type: 'mysql',
      host: HOST,
      port: PORT,
      database: fx.db,
      strategy,
      ...(strategy === 'alternating-users' ? { users: fx.users.map((name) => ({ name, host: '%' })) } : { user: { name: fx.users[0], host: '%' } }),
      admin: { store: { type: 'aws-secrets-manager', secretId: fx.adminSecretId } },
      ...target,
    },
    policy: { overlap: '1s' },
    ...extra,
  };
}

