// The mysql target against a real MariaDB 10.11 (127.0.0.1:3306 unless REKEY_MYSQL_HOST /
// REKEY_MYSQL_PORT say otherwise; the test's own root access is `mysql -uroot` over the unix
// socket). Each test makes its own accounts and database with unique names (an admin with a
// password and only the privileges it needs, stored in moto) and drops them afterwards.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { createConnection, type Connection } from 'mysql2/promise';
import { mysql, mysqlSchema, nativePasswordHash, serverKind } from '../activities/targets/mysql';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { workerLog } from './setup';
import { dropCreated, fixture, HOST, PORT, q, root, spec, type Fixture } from './mysql-fixtures';
import { allText, killAndFinish, labelled, manifests, rekeyCli, sm, spawnWorker, storeVersions, tempDir, temporalClient, testPassword, uniqueId, untilProgress } from './helpers';
import { clientDuringRotation, rotateWithHistory } from './target-harness';

const rotate = rotateWithHistory;
const checkTargets = async (dir: string) => {
  const r = await rekeyCli(['validate', '-f', dir, '--check-targets']);
  return { code: r.code, out: r.out + r.errOut };
};

function session(user: string, password: string): Promise<Connection> {
  return createConnection({ host: HOST, port: PORT, user, password, connectTimeout: 5000 }).then((c) => (c.on('error', () => undefined), c));
}

/** Does the server let this user in with this password? (false only for an authentication failure or a locked account) */
async function canLogin(user: string, password: string): Promise<boolean> {
  try {
    const c = await session(user, password);
    await c.query('SELECT 1');
    await c.end();
    return true;
  } catch (err) {
    if ([1045, 4151].includes((err as { errno?: number }).errno ?? 0)) return false;
    throw err;
  }
}

/** What root sees of an account: its grants and its mysql.global_priv row (password hash, lock), but not when the password was last set. */
const accountState = async (user: string) =>
  (await root(`SHOW GRANTS FOR ${q(user)}@'%'; SELECT JSON_REMOVE(Priv, '$.password_last_changed') FROM mysql.global_priv WHERE User = ${q(user)}`));

async function storeCurrent(fx: Fixture, value: Record<string, string>): Promise<void> {
  await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify(value), VersionStages: ['AWSCURRENT'] }));
}

function assertNoValues(values: string[], ...texts: string[]): void {
  for (const value of values) for (const text of texts) assert.ok(!text.includes(value), 'a secret value (or its hash) is in history, a log or a message');
}

async function assertRotatedStore(fx: Fixture): Promise<Record<string, string>> {
  const versions = await storeVersions(fx.secretId);
  assert.equal(versions.filter((v) => v.stages.includes('AWSCURRENT')).length, 1);
  assert.equal(versions.filter((v) => v.stages.includes('AWSPREVIOUS')).length, 1);
  assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
  return versions.find((v) => v.stages.includes('AWSCURRENT'))!.value;
}

describe('the mysql target (MariaDB)', () => {
  before(async () => {
    await root('SELECT 1');
  });
  after(dropCreated);

  it('single-user: the new password works, the old is rejected, the store holds current and previous, no value in history or logs', async () => {
    const fx = await fixture({ twin: false });
    const logStart = workerLog.length;
    const { report, failure, history } = await rotate(fx.id, spec(fx, 'single-user'));
    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = await assertRotatedStore(fx);
    assert.equal(current.username, fx.users[0]);
    assert.equal(await canLogin(fx.users[0], current.password), true);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
    const values = [fx.initialPassword, current.password, fx.adminPassword];
    assertNoValues([...values, ...values.map(nativePasswordHash)], history, allText(workerLog.slice(logStart)), JSON.stringify(report));
  });

  it('alternating-users: the idle twin gets the new password, the old account is locked and its connections killed; a client using whatever the store calls current never fails to log in', async () => {
    const fx = await fixture();
    const old = await session(fx.users[0], fx.initialPassword);
    const logStart = workerLog.length;
    const { result, logins, failures } = await clientDuringRotation(
      fx.secretId,
      (current) => canLogin(current.username, current.password),
      () => rotate(fx.id, spec(fx, 'alternating-users', { policy: { overlap: '1s' } })),
    );
    const { report, failure, history } = result;
    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.ok(logins > 10, `the client kept logging in (${logins})`);
    assert.equal(failures, 0, 'authentication failures during the rotation');
    assert.ok((report!.sessionsEnded ?? 0) >= 1, 'revoke says it ended the old connection');
    await assert.rejects(old.query('SELECT 1'), 'the old account\'s connection was killed');
    old.destroy();
    const current = await assertRotatedStore(fx);
    assert.equal(current.username, fx.users[1]);
    assert.equal(await canLogin(fx.users[1], current.password), true);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false, 'the old account is locked');
    assert.match(await root(`SHOW CREATE USER ${q(fx.users[0])}@'%'`), /ACCOUNT LOCK/);
    const values = [fx.initialPassword, current.password, fx.adminPassword];
    assertNoValues([...values, ...values.map(nativePasswordHash)], history, allText(workerLog.slice(logStart)), JSON.stringify(report));
  });

  it('a failed consumer rolls back (both strategies): the old credential still works and nothing else changed', async () => {
    for (const strategy of ['single-user', 'alternating-users'] as const) {
      const fx = await fixture();
      const before = [await accountState(fx.users[0]), await accountState(fx.users[1])];
      const dir = await tempDir();
      const { report } = await rotate(fx.id, spec(fx, strategy, { consumers: [{ type: 'command', name: 'broken', file: join(dir, 'f.json'), health: 'exit 1' }], policy: { overlap: '0s', timeouts: { verify: '1s' } } }));
      assert.equal(report?.outcome, 'rolled-back', strategy);
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), true, strategy);
      const after = [await accountState(fx.users[0]), await accountState(fx.users[1])];
      if (strategy === 'single-user') assert.deepEqual(after, before, 'the password is the old one again (same hash), grants as before');
      else {
        assert.equal(after[0], before[0], 'the current account is untouched');
        assert.match(await root(`SHOW CREATE USER ${q(fx.users[1])}@'%'`), /ACCOUNT LOCK/, 'the idle twin is locked again');
      }
      assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
      assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))?.value.password, fx.initialPassword);
    }
  });

  it('a worker killed with SIGKILL mid-rotation is replaced and the rotation completes with exactly one new version', async () => {
    const fx = await fixture();
    const dir = await tempDir();
    const trusted = await manifests({ [fx.id]: spec(fx, 'alternating-users', { consumers: [{ type: 'command', name: 'slow', file: join(dir, 'r.json'), reload: 'sleep 3' }] }) });
    const taskQueue = uniqueId('rekey-crash-');
    const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
    const first = spawnWorker(taskQueue, trusted.dir);
    let stderr = '';
    first.stderr!.on('data', (d) => (stderr += d));
    await untilProgress(handle, (p) => p.stage === 'deploy');
    await new Promise((r) => setTimeout(r, 1000));
    const report = await killAndFinish(first, taskQueue, trusted.dir, handle.result());
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.length, 2, 'one initial and exactly one new version');
    const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!.value;
    assert.equal(await canLogin(fx.users[1], current.password), true);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
    assertNoValues([fx.initialPassword, current.password, fx.adminPassword], stderr);
  });

  it('a user name read from the store is acted on only if the manifest names it: the admin stored as current is untouched', async () => {
    const fx = await fixture();
    const before = await accountState(fx.admin);
    await storeCurrent(fx, { username: fx.admin, password: fx.adminPassword });
    const { failure, history } = await rotate(fx.id, spec(fx, 'alternating-users'));
    assert.match(failure ?? '', new RegExp(`the current credential names user "${fx.admin}", which is not one this manifest rotates .*; nothing was changed`));
    assert.equal(await accountState(fx.admin), before);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assertNoValues([fx.adminPassword], history, failure ?? '');
  });

  it('a stored credential that does not log in is refused before any change: rekey never changes the password of the account the application really uses', async () => {
    // Whoever can write the store says the idle twin is current: the next credential would then be
    // the account the application logs in with, and prepare would change its password under it.
    // Single user: the rollback's undo must not give the account the forged "current" password.
    for (const strategy of ['alternating-users', 'single-user'] as const) {
      const fx = await fixture();
      const before = [await accountState(fx.users[0]), await accountState(fx.users[1])];
      const forged = testPassword();
      const named = strategy === 'alternating-users' ? fx.users[1] : fx.users[0];
      await storeCurrent(fx, { username: named, password: forged });
      const { report, history } = await rotate(fx.id, spec(fx, strategy));
      assert.equal(report?.outcome, 'rolled-back', strategy);
      assert.match(report!.failure!.message, new RegExp(`the stored current credential \\('${named}'@'%'\\) does not log in .*; nothing was changed`));
      assert.equal(await canLogin(fx.users[0], fx.initialPassword), true, `${strategy}: the account in use keeps its password and stays unlocked`);
      assert.equal(await canLogin(fx.users[0], forged), false, `${strategy}: the forged password was never set`);
      assert.deepEqual([await accountState(fx.users[0]), await accountState(fx.users[1])], before);
      assertNoValues([forged, fx.initialPassword], history);
    }
  });

  it('a twin that lacks a grant is refused at prepare with a readable diff, before any change; --check-targets shows it and a missing user', async () => {
    const fx = await fixture();
    await root(`GRANT UPDATE ON \`${fx.db}\`.t TO ${q(fx.users[0])}@'%'`);
    const before = [await accountState(fx.users[0]), await accountState(fx.users[1])];
    const manifest = spec(fx, 'alternating-users');
    const { report } = await rotate(fx.id, manifest);
    assert.equal(report?.outcome, 'rolled-back');
    const message = report!.failure!.message;
    assert.match(message, new RegExp(`accounts '${fx.users[0]}'@'%' and '${fx.users[1]}'@'%' are not twins`));
    assert.ok(message.includes(`- only '${fx.users[0]}'@'%': GRANT UPDATE ON \`${fx.db}\`.\`t\` TO <account>`), message);
    assert.doesNotMatch(message, /\*[0-9A-F]{40}/, 'no password hash in the diff');
    assert.deepEqual([await accountState(fx.users[0]), await accountState(fx.users[1])], before);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);

    const missing = await fixture({ twin: false });
    const trusted = await manifests({ [fx.id]: manifest, [missing.id]: spec(missing, 'alternating-users') });
    const checked = await checkTargets(trusted.dir);
    assert.equal(checked.code, 1, checked.out);
    assert.ok(checked.out.includes(`GRANT UPDATE ON \`${fx.db}\`.\`t\` TO <account>`), checked.out);
    assert.match(checked.out, new RegExp(`the account '${missing.users[1]}'@'%' does not exist`));
    assert.equal(await root(`SELECT COUNT(*) FROM mysql.user WHERE User = ${q(missing.users[1])}`), '0\n', 'nothing was created');
    assertNoValues([fx.adminPassword, missing.adminPassword, fx.initialPassword], checked.out);
  });

  it('an admin without the privilege it needs (CONNECTION ADMIN) is refused before any change, naming it', async () => {
    const fx = await fixture({ adminGrants: ['GRANT CREATE USER, PROCESS ON *.* TO', 'GRANT SELECT ON mysql.* TO'] });
    const before = [await accountState(fx.users[0]), await accountState(fx.users[1])];
    const { report } = await rotate(fx.id, spec(fx, 'alternating-users'));
    assert.equal(report?.outcome, 'rolled-back', JSON.stringify(report?.failure));
    assert.match(report!.failure!.message, new RegExp(`the admin user ${fx.admin} lacks CONNECTION ADMIN`));
    assert.deepEqual([await accountState(fx.users[0]), await accountState(fx.users[1])], before);
  });

  it('another account with the same user name: --check-targets says revoke would end its connections too, and revoke\'s report warns that it did', async () => {
    const fx = await fixture();
    const namesake = `${q(fx.users[0])}@'localhost'`;
    await root(`CREATE USER ${namesake} IDENTIFIED BY ${q(testPassword())}`);
    try {
      const manifest = spec(fx, 'alternating-users', { policy: { overlap: '0s' } });
      const checked = await checkTargets((await manifests({ [fx.id]: manifest })).dir);
      assert.equal(checked.code, 1, checked.out);
      assert.ok(checked.out.includes(`'${fx.users[0]}'@'localhost' share the user name of '${fx.users[0]}'@'%': revoke KILLs their connections too`), checked.out);
      const { report } = await rotate(fx.id, manifest);
      assert.equal(report?.outcome, 'rotated', JSON.stringify(report?.failure));
      assert.match(report!.warnings?.join(' ') ?? '', new RegExp(`connections of '${fx.users[0]}'@'localhost' \\(the same user name as '${fx.users[0]}'@'%'\\) were ended too`));
    } finally {
      await root(`DROP USER IF EXISTS ${namesake}`);
    }
  });

  it('dual-password: refused at validation for flavor mariadb, and at prepare and --check-targets when the server is MariaDB', async () => {
    const fx = await fixture({ twin: false });
    await assert.rejects(manifests({ [fx.id]: spec(fx, 'dual-password', {}, { flavor: 'mariadb' }) }), /dual-password needs MySQL 8\.0\.14\+.*MariaDB has no dual passwords/);
    const before = await accountState(fx.users[0]);
    const manifest = spec(fx, 'dual-password');
    const { report } = await rotate(fx.id, manifest);
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /dual-password needs MySQL 8\.0\.14\+ .* is MariaDB 10\.\d+.*: use alternating-users/);
    assert.equal(await accountState(fx.users[0]), before);
    const checked = await checkTargets((await manifests({ [fx.id]: manifest })).dir);
    assert.equal(checked.code, 1);
    assert.match(checked.out, /is MariaDB 10\./);
  });

  it('revoke never locks the old account while the new credential does not log in; undo and prepare are idempotent', async () => {
    const fx = await fixture();
    const target = mysql(mysqlSchema.parse(spec(fx, 'alternating-users').target));
    const context = { secret: fx.id, currentVersionId: 'v1', nextVersionId: 'v2' };
    const current = { username: fx.users[0], password: fx.initialPassword };
    const next = { username: fx.users[1], password: testPassword() };
    await target.prepare(next, current, context);
    await target.prepare(next, current, context);
    assert.equal(await canLogin(fx.users[1], next.password), true);
    await target.undo(next, current, context);
    await target.undo(next, current, context);
    assert.equal(await canLogin(fx.users[1], next.password), false);
    await assert.rejects(target.revoke(current, next, { context }), /refusing to revoke .*: the new credential of .* does not log in/);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true, 'the old account still works');
  });

  it('TLS: a server that cannot encrypt is refused before the admin password is sent (tls.mode require), and nothing changes', async () => {
    // The test server runs without TLS (have_ssl DISABLED): the refusal is what a downgrade looks like.
    const fx = await fixture();
    const before = [await accountState(fx.users[0]), await accountState(fx.users[1])];
    const { report } = await rotate(fx.id, spec(fx, 'alternating-users', {}, { tls: { mode: 'require' } }));
    assert.equal(report?.outcome, 'rollback-incomplete', JSON.stringify(report?.failure));
    assert.match(report!.failure!.message, /does not support secure connection/i);
    assert.deepEqual([await accountState(fx.users[0]), await accountState(fx.users[1])], before);
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
  });

  it('verifyQuery runs with the new credential in a read-only transaction: a query that would write fails verify and the rotation rolls back, the table untouched', async () => {
    const fx = await fixture();
    const { report } = await rotate(fx.id, spec(fx, 'alternating-users', { policy: { overlap: '0s' } }, { verifyQuery: 'INSERT INTO t VALUES (1)' }));
    assert.equal(report?.outcome, 'rolled-back', JSON.stringify(report?.failure));
    assert.match(report!.failure!.message, new RegExp(`verifyQuery failed as ${fx.users[1]}: .*READ ONLY`, 'i'));
    assert.equal(await root(`SELECT COUNT(*) FROM \`${fx.db}\`.t`), '0\n');
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), true);
  });

  it('dual passwords are recognised from VERSION() only on MySQL 8.0.14 or later, never on MariaDB', () => {
    for (const [version, dual] of [['8.0.13', false], ['8.0.14', true], ['8.4.3', true], ['9.1.0', true], ['5.7.44-log', false], ['10.11.19-MariaDB-0+deb12u1', false], ['11.4.2-MariaDB', false], ['garbage', false]] as const) {
      assert.equal(serverKind(version).dualPassword, dual, version);
    }
  });

  it('manifests: a reserved account, one without a host, two accounts of one name and TLS disabled to a remote host are refused', async () => {
    const fx = await fixture({ twin: false });
    const base = spec(fx, 'single-user');
    const t = base.target as Record<string, unknown>;
    for (const [target, problem] of [
      [{ ...t, user: { name: 'root', host: 'localhost' } }, /reserved account/],
      [{ ...t, user: { name: fx.users[0] } }, /host/],
      [{ ...t, strategy: 'alternating-users', user: undefined, users: [{ name: 'x', host: '%' }, { name: 'x', host: 'localhost' }] }, /two different user names/],
      [{ ...t, host: 'db.example.com', tls: { mode: 'disable' } }, /only allowed for loopback hosts/],
    ] as const) {
      await assert.rejects(manifests({ [fx.id]: { ...base, target } }), problem);
    }
  });
});
