// The Postgres target against a real PostgreSQL 15 (the stack's scram cluster, which also serves
// TLS from a throwaway CA): each test is named for what it stops.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { Client as PgClient, escapeIdentifier } from 'pg';
import { postgres, postgresSchema } from '../activities/targets/postgres';
import type { BreakGlassDocument } from '../lib/signed';
import { newKey, people, sign, validFor } from './keys';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import {
  adminDb,
  canLogin,
  databaseFixture,
  labelled,
  manifests,
  postgresSpec,
  settled,
  sm,
  stack,
  tempDir,
  temporalClient,
  testPassword,
  uniqueId,
  withWorker,
  type DatabaseFixture,
} from './helpers';

const ROOT = join(__dirname, '..');

async function rotate(secret: string, spec: object): Promise<{ report?: RotationReport; failure?: string }> {
  const trusted = await manifests({ [secret]: spec });
  return withWorker(
    async (taskQueue) => {
      return settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] }));
    },
    { manifestDirs: [trusted.dir] },
  );
}

/** `rekey validate --check-targets` on a folder of manifests: its exit code and everything it printed. */
function checkTargets(dir: string): Promise<{ code: number; out: string }> {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'validate', '-f', dir, '--check-targets'], { cwd: ROOT }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
  );
}

async function memberships(role: string): Promise<string[]> {
  return adminDb(async (db) =>
    (
      await db.query<{ rolname: string }>(
        'SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1 ORDER BY 1',
        [role],
      )
    ).rows.map((r) => r.rolname),
  );
}

/** Store `value` as the secret's current version (as someone with write access to the store could). */
async function storeCurrent(fx: DatabaseFixture, value: Record<string, string>): Promise<void> {
  await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify(value), VersionStages: ['AWSCURRENT'] }));
}

describe('the Postgres target', () => {
  it('a role name read from the store is acted on only if the manifest names it: a stored dba role gets no grants and keeps its login', async () => {
    const fx = await databaseFixture('alternating-users');
    const dba = `${fx.id}_dba`;
    const password = testPassword();
    await adminDb(async (db) => {
      await db.query(`CREATE ROLE ${escapeIdentifier(dba)} LOGIN PASSWORD '${password}'`);
      await db.query(`GRANT pg_read_all_data TO ${escapeIdentifier(dba)}`);
    });
    await storeCurrent(fx, { username: dba, password });
    const { failure } = await rotate(fx.id, postgresSpec(fx, 'alternating-users'));
    assert.match(failure ?? '', new RegExp(`the current credential names role "${dba}", which is not one this manifest rotates .* nothing was changed`));
    assert.equal(await canLogin(dba, password), true, "the DBA's login still works");
    assert.deepEqual(await memberships(fx.users[1]).catch(() => []), [], 'the idle app role inherited nothing');
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
  });

  it('an admin credential that is one of the rotated roles is refused (a failed rotation would lock rekey out)', async () => {
    const fx = await databaseFixture('single-user');
    await sm.send(new PutSecretValueCommand({ SecretId: fx.adminSecretId, SecretString: JSON.stringify({ username: fx.users[0], password: fx.initialPassword }) }));
    const { report } = await rotate(fx.id, postgresSpec(fx, 'single-user'));
    // Prepare changed nothing; undo is refused for the same reason, so the rotation says what is left.
    assert.equal(report?.outcome, 'rollback-incomplete');
    assert.match(report!.failure!.message, /the admin credential is role .*, one of the roles this manifest rotates/);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
  });

  it('alternating users that are not twins are refused at prepare with a readable diff, and the app keeps working on the old one', async () => {
    const fx = await databaseFixture('alternating-users');
    const table = `${fx.id}_orders`;
    await adminDb(async (db) => {
      // The idle role exists already, with a different connection limit, search_path, and no table grant.
      await db.query(`CREATE ROLE ${escapeIdentifier(fx.users[1])} NOLOGIN CONNECTION LIMIT 3`);
      await db.query(`ALTER ROLE ${escapeIdentifier(fx.users[1])} SET search_path = elsewhere`);
      await db.query(`CREATE TABLE ${escapeIdentifier(table)} (id int)`);
      await db.query(`GRANT SELECT ON ${escapeIdentifier(table)} TO ${escapeIdentifier(fx.users[0])}`);
    });
    const spec = postgresSpec(fx, 'alternating-users');
    const { report } = await rotate(fx.id, spec);
    assert.equal(report?.outcome, 'rolled-back');
    const message = report!.failure!.message;
    assert.match(message, new RegExp(`roles ${fx.users[0]} and ${fx.users[1]} are not twins`));
    assert.match(message, /\+ only .*: attribute connection limit=3/);
    assert.match(message, /\+ only .*: setting search_path=elsewhere/);
    assert.match(message, new RegExp(`- only ${fx.users[0]}: privilege relation ${table}: SELECT`));
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);

    // rekey validate --check-targets says the same before anyone rotates.
    const trusted = await manifests({ [fx.id]: spec });
    const checked = await checkTargets(trusted.dir);
    assert.equal(checked.code, 1, checked.out);
    assert.match(checked.out, /connection limit=3/);
  });

  it('the twin check also compares ownership, default privileges, row security policies, expiry, per-database settings and grant options', async () => {
    const fx = await databaseFixture('alternating-users');
    const [current, idle] = fx.users.map(escapeIdentifier);
    const [owned, shared] = [`${fx.id}_owned`, `${fx.id}_shared`].map(escapeIdentifier);
    await adminDb(async (db) => {
      await db.query(`CREATE ROLE ${idle} NOLOGIN IN ROLE ${escapeIdentifier(`${fx.id}_app`)}`);
      await db.query(`CREATE TABLE ${owned} (id int)`);
      await db.query(`ALTER TABLE ${owned} OWNER TO ${current}`);
      await db.query(`CREATE TABLE ${shared} (id int)`);
      await db.query(`GRANT SELECT ON ${shared} TO ${current}`);
      await db.query(`GRANT SELECT ON ${shared} TO ${idle} WITH GRANT OPTION`);
      await db.query(`CREATE POLICY only_current ON ${shared} TO ${current} USING (true)`);
      await db.query(`ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ${current}`);
      await db.query(`ALTER ROLE ${current} VALID UNTIL 'infinity'`);
      await db.query(`ALTER ROLE ${current} IN DATABASE postgres SET work_mem = '8MB'`);
    });
    const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users') });
    const checked = await checkTargets(trusted.dir);
    assert.equal(checked.code, 1, checked.out);
    const a = fx.users[0];
    for (const line of [
      `- only ${a}: owner of relation ${fx.id}_owned`,
      `- only ${a}: default privileges granted to it: r SELECT`,
      `- only ${a}: row security policy only_current on ${fx.id}_shared`,
      `- only ${a}: attribute valid until=infinity`,
      `- only ${a}: setting postgres: work_mem=8MB`,
      `+ only ${fx.users[1]}: privilege relation ${fx.id}_shared: SELECT with grant option`,
    ]) {
      assert.ok(checked.out.includes(line), `${line}\n${checked.out}`);
    }
    await adminDb((db) => db.query(`DROP POLICY only_current ON ${shared}; DROP TABLE ${owned}, ${shared}; ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM ${current}`));
  });

  it('verifyQuery runs with the new credential at verify: a rotation the application could not use rolls back', async () => {
    const fx = await databaseFixture('alternating-users');
    const table = `${fx.id}_private`;
    await adminDb((db) => db.query(`CREATE TABLE ${escapeIdentifier(table)} (id int)`));
    const { report } = await rotate(fx.id, postgresSpec(fx, 'alternating-users', { target: { ...(postgresSpec(fx, 'alternating-users').target as object), verifyQuery: `SELECT count(*) FROM ${table}` } }));
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /verifyQuery failed as .*: permission denied for table .* \(SQLSTATE 42501\)/);
  });

  it('revoke ends the sessions opened with the old credential (and says how many); with terminateSessions: false they stay', async () => {
    for (const terminateSessions of [true, false]) {
      const fx = await databaseFixture('alternating-users');
      const session = new PgClient({ host: stack.pgHost, port: stack.pgPort, user: fx.users[0], password: fx.initialPassword, database: 'postgres' });
      await session.connect();
      session.on('error', () => undefined);
      try {
        const base = postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s' } });
        const { report } = await rotate(fx.id, { ...base, target: { ...(base.target as object), terminateSessions } });
        assert.equal(report?.outcome, 'rotated');
        if (terminateSessions) {
          assert.equal(report!.sessionsEnded, 1);
          await assert.rejects(session.query('SELECT 1'), 'the old session was ended');
        } else {
          assert.equal(report!.sessionsEnded, 0);
          assert.equal((await session.query('SELECT 1 AS one')).rows[0].one, 1);
        }
      } finally {
        await session.end().catch(() => undefined);
      }
    }
  });

  it('an admin that may not end sessions (CREATEROLE, no pg_signal_backend) still revokes, and the report says the sessions were not ended', async () => {
    const fx = await databaseFixture('alternating-users');
    const admin = `${fx.id}_admin`;
    const password = testPassword();
    await adminDb((db) => db.query(`CREATE ROLE ${escapeIdentifier(admin)} LOGIN CREATEROLE PASSWORD '${password}'`));
    await sm.send(new PutSecretValueCommand({ SecretId: fx.adminSecretId, SecretString: JSON.stringify({ username: admin, password }) }));
    const session = new PgClient({ host: stack.pgHost, port: stack.pgPort, user: fx.users[0], password: fx.initialPassword, database: 'postgres' });
    await session.connect();
    session.on('error', () => undefined);
    try {
      const { report } = await rotate(fx.id, postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s' } }));
      assert.equal(report?.outcome, 'rotated', JSON.stringify(report?.failure));
      assert.match(report!.warnings?.join(' ') ?? '', /sessions of .* were not ended: the admin role needs pg_signal_backend/);
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'the old credential is revoked all the same');
    } finally {
      await session.end().catch(() => undefined);
    }
  });

  it('in an emergency, revoke ends the old sessions even where terminateSessions is false', async () => {
    const fx = await databaseFixture('alternating-users');
    const oncall = await newKey('oncall');
    const base = postgresSpec(fx, 'alternating-users');
    const trusted = await manifests({ [fx.id]: { ...base, target: { ...(base.target as object), terminateSessions: false } } }, people([oncall], ['oncall']));
    const session = new PgClient({ host: stack.pgHost, port: stack.pgPort, user: fx.users[0], password: fx.initialPassword, database: 'postgres' });
    await session.connect();
    session.on('error', () => undefined);
    try {
      const doc: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: fx.id, revokeFirst: false, reason: 'leak', ...validFor(600_000) };
      const report: RotationReport = await withWorker(
        async (taskQueue) =>
          (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id, { emergency: await sign(oncall, doc) })] }),
        { manifestDirs: [trusted.dir] },
      );
      assert.equal(report.outcome, 'rotated');
      assert.equal(report.sessionsEnded, 1);
      await assert.rejects(session.query('SELECT 1'));
    } finally {
      await session.end().catch(() => undefined);
    }
  });

  it('single user, a consumer that cannot be rolled back: the target is undone anyway, so the consumers that were rolled back keep working', async () => {
    const fx = await databaseFixture('single-user');
    const [good, stuck] = [await tempDir(), join(await tempDir(), 'stuck')];
    const spec = postgresSpec(fx, 'single-user', {
      consumers: [
        { type: 'command', name: 'good', file: join(good, 'db.json') },
        { type: 'command', name: 'stuck', file: join(stuck, 'db.json'), health: 'exit 1' },
      ],
      policy: { timeouts: { verify: '2s', rollback: '3s' } },
    });
    const trusted = await manifests({ [fx.id]: spec });
    const { report } = await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
        for (let i = 0; i < 200 && (await handle.query('progress').catch(() => undefined) as { stage?: string } | undefined)?.stage !== 'verify'; i++) await new Promise((r) => setTimeout(r, 100));
        await chmod(stuck, 0o777); // the stuck consumer's folder turns unsafe: it cannot be given the old version back
        return settled(handle.result());
      },
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report?.outcome, 'rollback-incomplete');
    assert.match(report!.warnings!.join(' '), /the target was undone for the others/);
    assert.equal(JSON.parse(await readFile(join(good, 'db.json'), 'utf8')).rekey_version_id, report!.versions.before);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true, 'the rolled-back consumer\'s password works again');
  });

  it('TLS: verify-full against the cluster\'s CA rotates; another CA is refused before the admin password is sent', async () => {
    const fx = await databaseFixture('alternating-users');
    const base = postgresSpec(fx, 'alternating-users', { policy: { overlap: '0s', timeouts: { prepare: '5s' } } });
    const tls = (ca: string) => ({ ...base, target: { ...(base.target as object), ssl: { mode: 'verify-full', ca } } });
    const { report } = await rotate(fx.id, tls(process.env.REKEY_PG_CA_FILE!));
    assert.equal(report?.outcome, 'rotated', JSON.stringify(report?.failure));

    const dir = await tempDir();
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=not the cluster CA', '-keyout', join(dir, 'k'), '-out', join(dir, 'ca.crt')]);
    const other = await rotate(fx.id, tls(join(dir, 'ca.crt')));
    // Neither prepare nor undo can reach the server safely: nothing changed there, and the report says what is left.
    assert.equal(other.report?.outcome, 'rollback-incomplete');
    assert.match(other.report!.failure!.message, /self[- ]signed|unable to verify|certificate/i);
  });

  it('TLS require with a CA checks the chain: the cluster\'s CA is accepted, another is refused before the password is sent', async () => {
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=not the cluster CA', '-keyout', join(dir, 'k'), '-out', join(dir, 'ca.crt')]);
    const target = (ca: string) =>
      postgres(postgresSchema.parse({ type: 'postgres', port: stack.pgPort, database: 'postgres', strategy: 'single-user', user: fx.users[0], ssl: { mode: 'require', ca }, admin: { store: { type: 'aws-secrets-manager', secretId: 'unused' } } }));
    const credential = { username: fx.users[0], password: fx.initialPassword };
    assert.deepEqual(await target(process.env.REKEY_PG_CA_FILE!).accepts(credential), { accepted: true });
    await assert.rejects(target(join(dir, 'ca.crt')).accepts(credential), /self[- ]signed|unable to verify|certificate/i);
  });

  it('verifyQuery runs read only: one that would delete rows fails the check and deletes nothing', async () => {
    const fx = await databaseFixture('single-user');
    const table = escapeIdentifier(`${fx.id}_orders`);
    await adminDb(async (db) => {
      await db.query(`CREATE TABLE ${table} (id int)`);
      await db.query(`INSERT INTO ${table} VALUES (1), (2)`);
      await db.query(`GRANT SELECT, DELETE ON ${table} TO ${escapeIdentifier(fx.users[0])}`);
    });
    const target = postgres(
      postgresSchema.parse({ type: 'postgres', port: stack.pgPort, database: 'postgres', strategy: 'single-user', user: fx.users[0], verifyQuery: `DELETE FROM ${table}`, admin: { store: { type: 'aws-secrets-manager', secretId: 'unused' } } }),
    );
    const verdict = await target.accepts({ username: fx.users[0], password: fx.initialPassword }, { thorough: true });
    assert.equal(verdict.accepted, false);
    assert.match(verdict.reason ?? '', /read-only transaction \(SQLSTATE 25006\)/);
    assert.equal(await adminDb(async (db) => (await db.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n), 2);
    await adminDb((db) => db.query(`DROP TABLE ${table}`));
  });

  it('a server asking for the password in clear text or as md5 never gets it, and one that asks for none (trust) is not believed', async () => {
    const target = (role: string) => postgres(postgresSchema.parse({ type: 'postgres', port: stack.pgPort, database: 'postgres', strategy: 'single-user', user: role, admin: { store: { type: 'aws-secrets-manager', secretId: 'unused' } } }));
    await adminDb((db) => db.query(`DO $$ BEGIN CREATE ROLE rekey_trust_probe LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`));
    await assert.rejects(target('rekey_trust_probe').accepts({ username: 'rekey_trust_probe', password: 'definitely-wrong' }), /let rekey in without a SCRAM password exchange/);
    for (const [role, encryption] of [['rekey_cleartext_probe', 'scram-sha-256'], ['rekey_md5_probe', 'md5']] as const) {
      const password = testPassword();
      await adminDb(async (db) => {
        await db.query(`SET password_encryption = '${encryption}'`);
        await db.query(`DO $$ BEGIN CREATE ROLE ${role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
        await db.query(`ALTER ROLE ${role} WITH LOGIN PASSWORD '${password}'`);
      });
      await assert.rejects(target(role).accepts({ username: role, password }), new RegExp(`asked for the password ${encryption === 'md5' ? 'as md5' : 'in clear text'}; rekey only authenticates with SCRAM`));
    }
  });

  it('a password that SASLprep changes (a soft hyphen) still works after a rollback restores it', async () => {
    const fx = await databaseFixture('single-user');
    const password = `${testPassword()}\u00ADx`;
    // Set as Postgres itself would: the server applies SASLprep to the cleartext.
    await adminDb((db) => db.query(`ALTER ROLE ${escapeIdentifier(fx.users[0])} PASSWORD '${password}'`));
    await storeCurrent(fx, { engine: 'postgres', host: stack.pgHost, port: String(stack.pgPort), dbname: 'postgres', username: fx.users[0], password });
    assert.equal(await canLogin(fx.users[0], password), true);
    const dir = await tempDir();
    const { report } = await rotate(fx.id, postgresSpec(fx, 'single-user', { consumers: [{ type: 'command', name: 'broken', file: join(dir, 'f.json'), health: 'exit 1' }], policy: { timeouts: { verify: '1s' } } }));
    assert.equal(report?.outcome, 'rolled-back');
    assert.equal(await canLogin(fx.users[0], password), true, 'the restored password logs in');
  });

  it('manifests: reserved roles, an admin that is the secret itself, and TLS disabled to a remote host are refused', async () => {
    const fx = { id: uniqueId(), users: ['a_x', 'b_x'] as [string, string], adminSecretId: 'adm', secretId: 'own', initialPassword: '' };
    const bad = [
      [postgresSpec(fx, 'alternating-users', { target: { ...(postgresSpec(fx, 'alternating-users').target as object), users: ['postgres', 'b_x'] } }), /spec\.target\.users\[0\]: is a reserved role/],
      [postgresSpec({ ...fx, adminSecretId: 'own' }, 'single-user'), /spec\.target\.admin\.store: is the secret's own store/],
      [postgresSpec(fx, 'single-user', { target: { ...(postgresSpec(fx, 'single-user').target as object), host: 'db.example.com', ssl: { mode: 'disable' } } }), /spec\.target\.ssl\.mode: disable sends the admin credential in the open to db\.example\.com/],
    ] as const;
    for (const [spec, problem] of bad) await assert.rejects(manifests({ [fx.id]: spec }), problem);
  });
});

