// Shared fixtures: real Temporal, real moto, real Postgres. Every test gets its own task queue,
// its own secret ids and its own Postgres roles, so tests never see each other's state.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateSecretCommand,
  ListSecretVersionIdsCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { Client as PgClient, escapeIdentifier } from 'pg';
import { createActivities, type ActivityOptions } from '../activities/rotation';
import { rekeyDataConverter } from '../lib/codec';
import { secretSpecSchema, type SecretSpec } from '../lib/manifest';

export const stack = {
  temporalAddress: process.env.TEMPORAL_ADDRESS!,
  pgHost: process.env.REKEY_PG_HOST ?? '127.0.0.1',
  pgPort: Number(process.env.REKEY_PG_PORT),
  pgAdminUser: process.env.REKEY_PG_ADMIN_USER ?? 'rekey_admin',
  pgAdminPassword: () => readFileSync(process.env.REKEY_PG_ADMIN_PASSWORD_FILE!, 'utf8').trim(),
};

export const sm = new SecretsManagerClient({ region: process.env.AWS_REGION ?? 'us-east-1' });

export function uniqueId(prefix = 't'): string {
  return `${prefix}${randomBytes(4).toString('hex')}`;
}

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** One workflow bundle per test process: bundling is the slow part of starting a worker. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('../workflows'), logger: quietLogger });
  return bundle;
}
const quietLogger = { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never;

let client: Promise<Client> | undefined;
export function temporalClient(): Promise<Client> {
  client ??= Connection.connect({ address: stack.temporalAddress }).then((connection) => new Client({ connection, dataConverter: rekeyDataConverter() }));
  return client;
}

let nativeConnection: Promise<NativeConnection> | undefined;
export async function startWorker(taskQueue: string, options: ActivityOptions = {}): Promise<Worker> {
  nativeConnection ??= NativeConnection.connect({ address: stack.temporalAddress });
  return Worker.create({
    connection: await nativeConnection,
    taskQueue,
    dataConverter: rekeyDataConverter(),
    workflowBundle: await workflowBundle(),
    activities: createActivities({ healthPollMs: 200, ...options }),
  });
}

/** Run `fn` while a fresh worker polls a fresh task queue. */
export async function withWorker<T>(fn: (taskQueue: string) => Promise<T>, options: ActivityOptions = {}): Promise<T> {
  const taskQueue = uniqueId('rekey-test-');
  const worker = await startWorker(taskQueue, options);
  return worker.runUntil(fn(taskQueue));
}

export async function adminDb<T>(work: (db: PgClient) => Promise<T>, database = 'postgres'): Promise<T> {
  const db = new PgClient({ host: stack.pgHost, port: stack.pgPort, user: stack.pgAdminUser, password: stack.pgAdminPassword(), database });
  await db.connect();
  try {
    return await work(db);
  } finally {
    await db.end();
  }
}

/** Does Postgres let this user in with this password? (false only for an authentication failure) */
export async function canLogin(username: string, password: string, database = 'postgres'): Promise<boolean> {
  const db = new PgClient({ host: stack.pgHost, port: stack.pgPort, user: username, password, database, connectionTimeoutMillis: 5000 });
  try {
    await db.connect();
    await db.query('SELECT 1');
    return true;
  } catch (err) {
    if (['28P01', '28000'].includes((err as { code?: string }).code ?? '')) return false;
    throw err;
  } finally {
    await db.end().catch(() => undefined);
  }
}

/** A recognisable generated value: tests scan logs and history for it. */
export function testPassword(): string {
  return `rkytest${randomBytes(12).toString('hex')}`;
}

export interface DatabaseFixture {
  id: string;
  users: [string, string];
  adminSecretId: string;
  secretId: string;
  initialPassword: string;
}

/**
 * A login role with a known password, its credential stored as AWSCURRENT, and the admin
 * credential stored as its own secret (the target refers to it; it is never inline).
 */
export async function databaseFixture(strategy: 'single-user' | 'alternating-users'): Promise<DatabaseFixture> {
  const id = uniqueId();
  const users: [string, string] = [`${id}_a`, `${id}_b`];
  const initialPassword = testPassword();
  await adminDb(async (db) => {
    await db.query(`CREATE ROLE ${escapeIdentifier(`${id}_app`)} NOLOGIN`);
    await db.query(`CREATE ROLE ${escapeIdentifier(users[0])} LOGIN PASSWORD '${initialPassword}' IN ROLE ${escapeIdentifier(`${id}_app`)}`);
  });
  const adminSecretId = `rekey-test/${id}/pg-admin`;
  await sm.send(
    new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify({ username: stack.pgAdminUser, password: stack.pgAdminPassword() }) }),
  );
  const secretId = `rekey-test/${id}/${strategy}`;
  await sm.send(
    new CreateSecretCommand({
      Name: secretId,
      SecretString: JSON.stringify({
        engine: 'postgres',
        host: stack.pgHost,
        port: String(stack.pgPort),
        dbname: 'postgres',
        username: users[0],
        password: initialPassword,
      }),
    }),
  );
  return { id, users, adminSecretId, secretId, initialPassword };
}

export function postgresSpec(fx: DatabaseFixture, strategy: 'single-user' | 'alternating-users', extra: Record<string, unknown> = {}): SecretSpec {
  return secretSpecSchema.parse({
    store: { type: 'aws-secrets-manager', secretId: fx.secretId },
    generator: { type: 'password', length: 24 },
    target: {
      type: 'postgres',
      host: stack.pgHost,
      port: stack.pgPort,
      database: 'postgres',
      strategy,
      ...(strategy === 'single-user' ? { user: fx.users[0] } : { users: fx.users }),
      admin: { store: { type: 'aws-secrets-manager', secretId: fx.adminSecretId } },
    },
    policy: { overlap: '1s' },
    ...extra,
  });
}

/** Every version of a secret with its labels and value, for assertions and leak scans. */
export async function storeVersions(secretId: string) {
  const listed = await sm.send(new ListSecretVersionIdsCommand({ SecretId: secretId, IncludeDeprecated: true }));
  return Promise.all(
    (listed.Versions ?? []).map(async (v) => {
      const value = await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionId: v.VersionId }));
      return { versionId: v.VersionId!, stages: v.VersionStages ?? [], value: JSON.parse(value.SecretString!) as Record<string, string> };
    }),
  );
}

export async function labelled(secretId: string, stage: string) {
  return (await storeVersions(secretId)).find((v) => v.stages.includes(stage));
}

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'rekey-test-'));
}
