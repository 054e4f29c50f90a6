// Shared fixtures: real Temporal, real moto, real Postgres. Every test gets its own task queue,
// its own secret ids and its own Postgres roles, so tests never see each other's state.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  CreateSecretCommand,
  ListSecretVersionIdsCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { Client, Connection, WorkflowUpdateFailedError } from '@temporalio/client';
import assert from 'node:assert/strict';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { Client as PgClient, escapeIdentifier } from 'pg';
import { stringify } from 'yaml';
import { createActivities, type ActivityOptions } from '../activities/rotation';
import type { Payload } from '@temporalio/common';
import { AesGcmCodec, loadKeyring, rekeyDataConverter } from '../lib/codec';
import { loadManifests, type ManifestSet } from '../lib/manifest';
import { progressQuery, rotationWorkflowId, type Progress, type RotationInput, type RotationReport } from '../workflows/messages';

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

export interface WorkerOptions extends ActivityOptions {
  /** Change the activities the worker registers (a test that forges an activity's result). */
  activities?: (real: ReturnType<typeof createActivities>) => object;
  /** Run an attacker's workflows (tests/forged-workflows.ts) instead of rekey's. */
  forgedWorkflows?: boolean;
}

let forgedBundle: Promise<WorkflowBundleWithSourceMap> | undefined;

let nativeConnection: Promise<NativeConnection> | undefined;
export async function startWorker(taskQueue: string, options: WorkerOptions = {}): Promise<Worker> {
  nativeConnection ??= NativeConnection.connect({ address: stack.temporalAddress });
  const real = createActivities({ healthPollMs: 200, ...options });
  return Worker.create({
    connection: await nativeConnection,
    taskQueue,
    dataConverter: rekeyDataConverter(),
    workflowBundle: options.forgedWorkflows
      ? await (forgedBundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('./forged-workflows'), logger: quietLogger }))
      : await workflowBundle(),
    activities: options.activities ? options.activities(real) : real,
  });
}

/** Run `fn` while a fresh worker polls a fresh task queue; it trusts the manifests in `options.manifestDirs`. */
export async function withWorker<T>(fn: (taskQueue: string) => Promise<T>, options: WorkerOptions = {}): Promise<T> {
  const taskQueue = uniqueId('rekey-test-');
  const worker = await startWorker(taskQueue, options);
  return worker.runUntil(fn(taskQueue));
}

/** A reviewed manifest folder, as the worker and the requester both have it. */
export interface Manifests {
  dir: string;
  set: ManifestSet;
  /** The input that starts a rotation of `secret`: its name and the hash of its spec. */
  input(secret: string, extra?: Partial<RotationInput>): RotationInput;
}

/** Write Secret manifests (name -> spec, as a person would write it), Settings specs and other whole documents to a folder. */
export async function manifests(secrets: Record<string, object>, ...settings: object[]): Promise<Manifests> {
  const dir = await tempDir();
  const docs = [
    ...Object.entries(secrets).map(([name, spec]) => ({ apiVersion: 'rekey.dev/v1', kind: 'Secret', metadata: { name }, spec })),
    // A whole document (it has a kind: a RotationGroup, a Schedule) is written as it is.
    ...settings.map((spec, i) => ('kind' in spec ? spec : { apiVersion: 'rekey.dev/v1', kind: 'Settings', metadata: { name: `settings-${i}` }, spec })),
  ];
  await writeFile(join(dir, 'manifests.yaml'), docs.map((d) => stringify(d)).join('---\n'));
  const set = await loadManifests(dir);
  return {
    dir,
    set,
    input: (secret, extra = {}) => ({ secret, specHash: set.secrets.get(secret)!.specHash, ...extra }),
  };
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

/** A Secret spec as written in a manifest (defaults left to the schema). */
export function postgresSpec(fx: DatabaseFixture, strategy: 'single-user' | 'alternating-users', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
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
  };
}

/** Every version of a secret with its labels and value, for assertions and leak scans. */
export async function storeVersions(secretId: string) {
  const listed = await sm.send(new ListSecretVersionIdsCommand({ SecretId: secretId, IncludeDeprecated: true }));
  return Promise.all(
    (listed.Versions ?? []).map(async (v) => {
      // A version without a value (moto's half-started AWS rotation) reads as empty.
      const value = await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionId: v.VersionId })).catch(() => ({ SecretString: '{}' }));
      return { versionId: v.VersionId!, stages: v.VersionStages ?? [], value: JSON.parse(value.SecretString ?? '{}') as Record<string, string> };
    }),
  );
}

export async function labelled(secretId: string, stage: string) {
  return (await storeVersions(secretId)).find((v) => v.stages.includes(stage));
}

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'rekey-test-'));
}

/** The innermost message a failed workflow ended with: an activity's own words, not Temporal's wrapping. */
export async function failureOf(result: Promise<unknown>): Promise<string> {
  const err = await result.then(
    () => {
      throw new Error('the workflow did not fail');
    },
    (e) => e as Error,
  );
  if (err.name !== 'WorkflowFailedError') throw err;
  let cause: Error | undefined = (err as { cause?: Error }).cause;
  while (cause && (cause as { cause?: Error }).cause) cause = (cause as { cause?: Error }).cause;
  return cause?.message ?? '';
}

/** Query a rotation's progress until `ok` holds (or fail after 30 s). */
export async function untilProgress(handle: { query: (q: typeof progressQuery) => Promise<Progress> }, ok: (p: Progress) => boolean): Promise<Progress> {
  for (let i = 0; i < 300; i++) {
    const p = await handle.query(progressQuery).catch(() => undefined);
    if (p && ok(p)) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the rotation never reached the expected state');
}

/**
 * How a rotation ended: its report (from its result, or from its failure's details when its
 * rollback was incomplete) and, when it failed, the innermost message.
 */
export async function settled(result: Promise<unknown>): Promise<{ report?: RotationReport; failure?: string }> {
  try {
    return { report: (await result) as RotationReport };
  } catch (err) {
    const details = ((err as { cause?: { details?: unknown[] } }).cause?.details ?? []) as RotationReport[];
    return { report: details[0], failure: await failureOf(Promise.reject(err)) };
  }
}

/**
 * Every string and byte array inside `value`, bytes decoded as UTF-8, so a value hidden in a payload
 * would be found. (JSON.stringify would not do: Temporal's protos encode bytes as base64.)
 */
export function allText(value: unknown, out: string[] = [], seen = new Set<unknown>()): string {
  if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('utf8'));
  else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') out.push(String(value));
  else if (value && typeof value === 'object' && !seen.has(value)) {
    seen.add(value);
    for (const item of Object.values(value)) allText(item, out, seen);
  }
  return out.join('\n');
}

/** Every payload anywhere in `value`, decrypted with the worker's codec, as text. */
export async function decodedPayloadText(value: unknown): Promise<string> {
  const payloads: Payload[] = [];
  const walk = (v: unknown, seen: Set<unknown>) => {
    if (!v || typeof v !== 'object' || v instanceof Uint8Array || seen.has(v)) return;
    seen.add(v);
    const o = v as Record<string, unknown>;
    if (o.metadata && typeof o.metadata === 'object' && 'data' in o) payloads.push(o as Payload);
    Object.values(o).forEach((child) => walk(child, seen));
  };
  walk(value, new Set());
  const keyring = loadKeyring();
  const decoded = keyring ? await new AesGcmCodec(keyring).decode(payloads) : payloads;
  return allText(decoded);
}

const ROOT = join(__dirname, '..');

/** A worker process (workers/main.ts) on `taskQueue` trusting `manifestDir`, with `env` added. */
export function spawnWorker(taskQueue: string, manifestDir: string, env: NodeJS.ProcessEnv = {}): ChildProcess & { stderrTail(): string } {
  // node itself, not the tsx launcher: SIGKILL must hit the process that runs the worker.
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'workers/main.ts')], {
    cwd: ROOT,
    env: { ...process.env, REKEY_TASK_QUEUE: taskQueue, REKEY_MANIFESTS: manifestDir, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Always drained: a worker whose stderr pipe fills up blocks mid-task (its workflow tasks time out).
  let tail = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    tail = (tail + chunk.toString()).slice(-16_384);
  });
  return Object.assign(child, { stderrTail: () => tail });
}

/**
 * SIGKILL `first` mid-rotation, start a second worker on the same queue and manifests, and return
 * the rotation's report once that one has finished it. `afterKill` runs once the first is gone.
 */
export async function killAndFinish(first: ChildProcess, taskQueue: string, manifestDir: string, result: Promise<RotationReport>, afterKill?: () => void): Promise<RotationReport> {
  first.kill('SIGKILL');
  await new Promise((r) => first.once('exit', r));
  afterKill?.();
  const second = spawnWorker(taskQueue, manifestDir);
  try {
    return await result;
  } finally {
    second.kill('SIGTERM');
  }
}

/** `rekey ARGS` as a person runs it, with `env` added: exit code, stdout and stderr. */
export function rekeyCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; errOut: string }> {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...env } }).then(
    (r) => ({ code: 0, out: r.stdout, errOut: r.stderr }),
    (e) => ({ code: e.code as number, out: e.stdout as string, errOut: e.stderr as string }),
  );
}

/** The validator's reason for refusing an update (fails if it was accepted). */
export async function refusal(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => assert.fail('the decision was accepted'),
    (e) => e,
  );
  assert.ok(err instanceof WorkflowUpdateFailedError, String(err));
  return err.cause?.message ?? '';
}
