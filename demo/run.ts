// `npm run demo`: rotate the demo database credential end to end on the local stack while two
// services keep using it, then print what happened. Safe to run again and again.
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  PutSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client as PgClient, escapeIdentifier } from 'pg';
import { scramVerifier } from '../activities/targets/postgres';
import { loadManifests, type SecretSpec } from '../lib/manifest';
import { formatProgress, formatReport } from '../lib/report';
import { connectClient } from '../lib/temporal';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { createRekeyWorker } from '../workers/worker';
import { TASK_QUEUE, progressQuery, rotationWorkflowId, SECRET_ATTRIBUTE, REQUESTED_BY_ATTRIBUTE, type RotationReport } from '../workflows/messages';
import type { rotateSecret } from '../workflows/rotateSecret';
import { PooledService, StoreFollowingClient } from './service';

const SECRET = 'orders-db';
const say = (line: string) => process.stdout.write(`${line}\n`);

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the demo with \`npm run demo\` (it starts the local stack)`);
  return value;
}

/**
 * First run (or after moto restarted and forgot everything): give the active role a fresh password
 * and store it as the initial version. Later runs keep what the last rotation left.
 */
async function seed(sm: SecretsManagerClient, secretId: string, adminSecretId: string, users: [string, string]): Promise<string> {
  const admin = { username: env('REKEY_PG_ADMIN_USER'), password: readFileSync(env('REKEY_PG_ADMIN_PASSWORD_FILE'), 'utf8').trim() };
  await sm
    .send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify(admin) }))
    .catch(async (err) => {
      if (err.name !== 'ResourceExistsException') throw err;
      await sm.send(new PutSecretValueCommand({ SecretId: adminSecretId, SecretString: JSON.stringify(admin) }));
    });
  try {
    await sm.send(new DescribeSecretCommand({ SecretId: secretId }));
    return 'reusing the credential the last demo run left in the store';
  } catch (err) {
    if (!(err instanceof ResourceNotFoundException)) throw err;
  }
  const password = randomBytes(18).toString('base64url');
  const db = new PgClient({ host: env('REKEY_PG_HOST'), port: Number(env('REKEY_PG_PORT')), user: admin.username, password: admin.password, database: 'postgres' });
  await db.connect();
  try {
    await db.query(`DO $$ BEGIN CREATE ROLE orders_app NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    for (const user of users) {
      await db.query(`DO $$ BEGIN CREATE ROLE ${escapeIdentifier(user)} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    }
    await db.query(`ALTER ROLE ${escapeIdentifier(users[0])} WITH LOGIN PASSWORD '${scramVerifier(password)}'`);
    await db.query(`ALTER ROLE ${escapeIdentifier(users[1])} WITH NOLOGIN PASSWORD NULL`);
    await db.query(`GRANT orders_app TO ${escapeIdentifier(users[0])}`);
  } finally {
    await db.end();
  }
  const credential = { engine: 'postgres', host: env('REKEY_PG_HOST'), port: env('REKEY_PG_PORT'), dbname: 'postgres', username: users[0], password };
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify(credential) }));
  return `seeded ${secretId} with a fresh credential for ${users[0]}`;
}

/** The consumers-only example needs an initial version too, so `rekey rotate webhook-signing` works after the demo. */
async function seedSigningKey(sm: SecretsManagerClient, spec: SecretSpec | undefined): Promise<void> {
  if (spec?.store.type !== 'aws-secrets-manager') return;
  await sm
    .send(new CreateSecretCommand({ Name: spec.store.secretId, SecretString: JSON.stringify({ value: randomBytes(32).toString('base64url') }) }))
    .catch((err) => {
      if (err.name !== 'ResourceExistsException') throw err;
    });
}

async function main(): Promise<number> {
  // The demo prints its own progress; the worker only speaks up about problems.
  Runtime.install({ logger: new DefaultLogger('WARN') });
  process.env.REKEY_HOME ??= resolve(__dirname, '..');
  process.env.REKEY_DEMO_DIR ??= resolve(__dirname, '../.data/demo');
  const examples = resolve(__dirname, '../examples');
  const manifests = await loadManifests(examples);
  const manifest = manifests.secrets.get(SECRET)!;
  const { spec } = manifest;
  if (spec.store.type !== 'aws-secrets-manager' || spec.target?.type !== 'postgres' || spec.target.strategy !== 'alternating-users') {
    throw new Error(`examples/${SECRET} must stay an alternating-users Postgres secret in AWS Secrets Manager for the demo`);
  }
  await mkdir(process.env.REKEY_DEMO_DIR, { recursive: true });

  const sm = new SecretsManagerClient({ region: process.env.AWS_REGION ?? 'us-east-1' });
  say(`rekey demo: rotating ${SECRET} (${spec.store.secretId}) on the local stack`);
  say(`  ${await seed(sm, spec.store.secretId, spec.target.admin.store.secretId, spec.target.users!)}`);
  await seedSigningKey(sm, manifests.secrets.get('webhook-signing')?.spec);

  const api = new PooledService(spec.store.secretId);
  const port = Number(process.env.REKEY_DEMO_PORT ?? 18081);
  await api.start(port).catch((err) => {
    throw new Error(`the demo service cannot listen on 127.0.0.1:${port} (${err.message}); set REKEY_DEMO_PORT to a free port`);
  });
  const client = new StoreFollowingClient(spec.store.secretId);
  client.start();

  const taskQueue = process.env.REKEY_TASK_QUEUE ?? TASK_QUEUE;
  // The worker acts only on its own manifests; the start names the secret and the spec reviewed.
  const worker = await createRekeyWorker({ taskQueue, manifestDirs: [examples] });
  const temporal = await connectClient();
  const workflowId = rotationWorkflowId(SECRET);
  const ui = process.env.REKEY_TEMPORAL_UI ?? 'http://127.0.0.1:8233';

  const report = await worker.runUntil(async () => {
    const handle = await temporal.workflow.start<typeof rotateSecret>('rotateSecret', {
      taskQueue,
      workflowId,
      workflowIdConflictPolicy: 'FAIL',
      args: [{ secret: SECRET, specHash: manifest.specHash, requestedBy: 'demo', reason: 'npm run demo' }],
      typedSearchAttributes: [
        { key: SECRET_ATTRIBUTE, value: SECRET },
        { key: REQUESTED_BY_ATTRIBUTE, value: 'demo' },
      ],
      staticSummary: `demo rotation of ${SECRET}`,
    });
    say(`  started workflow ${workflowId} (run ${handle.firstExecutionRunId}) for spec ${manifest.specHash}`);
    let last = '';
    const result = handle.result() as Promise<RotationReport>;
    for (let done = false; !done; ) {
      done = await Promise.race([result.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500))]);
      const line = await handle.query(progressQuery).then(formatProgress, () => last);
      if (line !== last) say(`    ${line}`);
      last = line;
    }
    return { report: await result, runId: handle.firstExecutionRunId };
  });
  const [strict, pooled] = [await client.stop(), await api.stop()];
  await temporal.connection.close();

  say('');
  say(formatReport(report.report));
  say('  traffic during the rotation:');
  say(`    store-following client (new connection per request): ${strict.served} served, ${strict.failed} failed (${strict.authFailures} authentication)`);
  say(`    orders-api (pooled, reloads on request):             ${pooled.served} served, ${pooled.failed} failed (${pooled.authFailures} authentication)`);
  say(`  inspect the run in the Temporal UI: ${ui}/namespaces/default/workflows/${encodeURIComponent(workflowId)}/${report.runId}`);
  const failed = strict.failed + pooled.failed;
  if (report.report.outcome !== 'rotated' || failed > 0) {
    say(`demo FAILED: outcome ${report.report.outcome}, ${failed} failed requests`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
