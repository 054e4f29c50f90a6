// The Redis target against a real Redis 7 (127.0.0.1:6379 unless REKEY_REDIS_HOST / REKEY_REDIS_PORT
// say otherwise): each test makes its own ACL users (an application user and an admin with a
// password, stored in moto) and deletes them afterwards. Each test is named for what it stops.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand, PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { passwordHash, redis, redisSchema, ReplyError, RespConnection } from '../activities/targets/redis';
import { workerLog } from './setup';
import { checkTargets, clientDuringRotation, rotateKilledMidDeploy, rotateWithHistory } from './target-harness';
import { canAuth, dropCreatedUsers, getUser, HOST, PORT, redisFixture, redisSpec, root, rulesOf, type RedisFixture } from './redis-fixtures';
import { allText, labelled, manifests, sm, storeVersions, tempDir, testPassword, uniqueId } from './helpers';


async function storeCurrent(fx: RedisFixture, value: Record<string, string>): Promise<void> {
  await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify(value), VersionStages: ['AWSCURRENT'] }));
}

function assertNoValues(values: string[], ...texts: string[]): void {
  for (const value of values) for (const text of texts) assert.ok(!text.includes(value), 'a secret value (or its hash) is in history, a log or a message');
}

describe('the Redis target', () => {
  before(async () => {
    await root(['PING']);
  });
  after(dropCreatedUsers);

  it('rotates with two passwords: the new one works, the old one is rejected and its connections are gone, the rules stay, the store holds current and previous', async () => {
    const fx = await redisFixture();
    const rulesBefore = await rulesOf(fx.user);
    // A connection opened with the old password before the rotation: revoke must end it.
    const session = await RespConnection.open({ host: HOST, port: PORT, tls: false, timeoutMs: 3000 });
    assert.equal(await session.call(['AUTH', fx.user, fx.initialPassword], { secrets: [fx.initialPassword] }), 'OK');
    const logStart = workerLog.length;
    const { report, failure, history } = await rotateWithHistory(fx.id, redisSpec(fx));
    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.ok((report!.sessionsEnded ?? 0) >= 1, 'revoke says it ended the old connection');
    await assert.rejects(session.call(['PING']), /closed|reset|EPIPE/i, 'the old password\'s connection was killed');
    session.close();

    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.filter((v) => v.stages.includes('AWSCURRENT')).length, 1);
    assert.equal(versions.filter((v) => v.stages.includes('AWSPREVIOUS')).length, 1);
    assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
    const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!.value;
    assert.equal(current.username, fx.user);
    assert.equal(await canAuth(fx.user, current.password), true, 'the new password works');
    assert.equal(await canAuth(fx.user, fx.initialPassword), false, 'the old password is rejected');
    assert.deepEqual((await getUser(fx.user))!.passwords, [passwordHash(current.password)], 'exactly one password: the new one');
    assert.deepEqual(await rulesOf(fx.user), rulesBefore, 'the ACL rules are unchanged');
    assert.match(report!.postVerify?.detail ?? '', /old credential rejected; new credential accepted/);

    const log = allText(workerLog.slice(logStart));
    assert.ok(history.includes(fx.id));
    const values = [fx.initialPassword, current.password, fx.adminPassword];
    assertNoValues([...values, ...values.map(passwordHash)], history, log, JSON.stringify(report));
  });

  it('a failed consumer rolls back: the old password still works, the new one is rejected, nothing else changed', async () => {
    const fx = await redisFixture();
    const before = await getUser(fx.user);
    const dir = await tempDir();
    const { report } = await rotateWithHistory(fx.id, redisSpec(fx, { consumers: [{ type: 'command', name: 'broken', file: join(dir, 'f.json'), health: 'exit 1' }], policy: { overlap: '0s', timeouts: { verify: '1s' } } }));
    assert.equal(report?.outcome, 'rolled-back');
    assert.equal(await canAuth(fx.user, fx.initialPassword), true);
    assert.deepEqual(await getUser(fx.user), before, 'passwords and rules as before');
    const versions = await storeVersions(fx.secretId);
    const discarded = versions.find((v) => v.value.password && v.value.password !== fx.initialPassword);
    assert.ok(discarded, 'the new version was written before the rollback');
    assert.equal(await canAuth(fx.user, discarded.value.password), false, 'the new password is rejected');
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))?.value.password, fx.initialPassword);
  });

  it('a client that keeps connecting with whatever the store calls current sees no authentication failure', async () => {
    const fx = await redisFixture();
    const { result, logins, failures } = await clientDuringRotation(
      fx.secretId,
      async (current) => {
        const conn = await RespConnection.open({ host: HOST, port: PORT, tls: false, timeoutMs: 3000 });
        try {
          return !((await conn.call(['AUTH', current.username, current.password], { secrets: [current.password] })) instanceof ReplyError);
        } finally {
          conn.close();
        }
      },
      () => rotateWithHistory(fx.id, redisSpec(fx, { policy: { overlap: '1s' } })),
    );
    assert.equal(result.report?.outcome, 'rotated');
    assert.ok(logins > 10, `the client kept logging in (${logins})`);
    assert.equal(failures, 0, 'authentication failures during the rotation');
  });

  it('a worker killed with SIGKILL mid-rotation is replaced and the rotation completes with exactly one new version', async () => {
    const fx = await redisFixture();
    const { report, stderr } = await rotateKilledMidDeploy(fx.id, (consumers) => redisSpec(fx, { consumers }));
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.length, 2, 'one initial and exactly one new version');
    const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!.value;
    assert.equal(await canAuth(fx.user, current.password), true);
    assert.equal(await canAuth(fx.user, fx.initialPassword), false);
    assert.deepEqual((await getUser(fx.user))!.passwords, [passwordHash(current.password)]);
    assertNoValues([fx.initialPassword, current.password, fx.adminPassword], stderr);
  });

  it('a user name read from the store is acted on only if the manifest names it: the admin user stored as current keeps its passwords', async () => {
    const fx = await redisFixture();
    const [adminBefore, userBefore] = [await getUser(fx.admin), await getUser(fx.user)];
    await storeCurrent(fx, { username: fx.admin, password: fx.adminPassword });
    const { failure, history } = await rotateWithHistory(fx.id, redisSpec(fx));
    assert.match(failure ?? '', new RegExp(`the current credential names user "${fx.admin}", which is not the one this manifest rotates \\(${fx.user}\\); nothing was changed`));
    assert.deepEqual(await getUser(fx.admin), adminBefore);
    assert.deepEqual(await getUser(fx.user), userBefore);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assertNoValues([fx.adminPassword, fx.initialPassword], history, failure ?? '');
  });

  it('an admin that may not kill connections is refused at prepare, naming the permission, before any change', async () => {
    const fx = await redisFixture({ adminRules: ['+acl'] });
    const before = await getUser(fx.user);
    const { report } = await rotateWithHistory(fx.id, redisSpec(fx));
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, new RegExp(`the admin user ${fx.admin} lacks \\+client\\|kill: grant it \\+client\\|kill; nothing was changed`));
    assert.deepEqual(await getUser(fx.user), before);
    assert.equal(await canAuth(fx.user, fx.initialPassword), true);
  });

  it('a user whose rules a password would change (nopass) is refused before any change, naming it', async () => {
    const fx = await redisFixture({ userRules: ['nopass', '+ping'] });
    const before = await getUser(fx.user);
    const { report } = await rotateWithHistory(fx.id, redisSpec(fx));
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, new RegExp(`the ACL user ${fx.user} is nopass \\(any password logs in\\): adding one would change its rules`));
    assert.deepEqual(await getUser(fx.user), before, 'still nopass, no password added');
  });

  it('a stored password that is not the user\'s is refused before any change (revoke would otherwise remove nothing the application uses)', async () => {
    const fx = await redisFixture();
    const before = await getUser(fx.user);
    const stranger = testPassword();
    await storeCurrent(fx, { username: fx.user, password: stranger });
    const { report, history } = await rotateWithHistory(fx.id, redisSpec(fx));
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, new RegExp(`the stored current password is not one of ${fx.user}'s passwords .*; nothing was changed`));
    assert.deepEqual(await getUser(fx.user), before);
    assertNoValues([stranger, passwordHash(stranger), fx.initialPassword], history);
  });

  it('an admin that may neither save nor kill is refused at prepare, and the rollback finishes (undo needs no grant when nothing changed)', async () => {
    const fx = await redisFixture({ adminRules: ['+acl|getuser', '+acl|setuser', '+acl|dryrun'] });
    const before = await getUser(fx.user);
    const { report } = await rotateWithHistory(fx.id, redisSpec(fx));
    assert.equal(report?.outcome, 'rolled-back', JSON.stringify(report?.failure));
    assert.match(report!.failure!.message, new RegExp(`the admin user ${fx.admin} lacks \\+acl\\|save \\+client\\|kill`));
    assert.deepEqual(await getUser(fx.user), before);
  });

  it('rekey validate --check-targets reports a missing user and an admin lacking a permission, changing nothing', async () => {
    const [missing, weak] = [await redisFixture({ createUser: false }), await redisFixture({ adminRules: ['+acl|getuser', '+acl|setuser', '+acl|dryrun'] })];
    const before = await getUser(weak.user);
    const trusted = await manifests({ [missing.id]: redisSpec(missing), [weak.id]: redisSpec(weak) });
    const checked = await checkTargets(trusted.dir);
    assert.equal(checked.code, 1, checked.out);
    assert.match(checked.out, new RegExp(`the ACL user ${missing.user} does not exist`));
    assert.match(checked.out, new RegExp(`the admin user ${weak.admin} lacks \\+acl\\|save \\+client\\|kill`));
    assert.equal(await getUser(missing.user), null, 'no user was created');
    assert.deepEqual(await getUser(weak.user), before);
    assertNoValues([missing.adminPassword, weak.adminPassword, weak.initialPassword], checked.out);
  });

  it('undo and revoke are idempotent: adding a password twice and removing one already gone change nothing more', async () => {
    const fx = await redisFixture();
    const target = redis(redisSchema.parse(redisSpec(fx).target));
    const context = { secret: fx.id, currentVersionId: 'v1', nextVersionId: 'v2' };
    const current = { username: fx.user, password: fx.initialPassword };
    const next = { username: fx.user, password: testPassword() };
    await target.prepare(next, current, context);
    await target.prepare(next, current, context);
    assert.deepEqual(((await getUser(fx.user))!.passwords as string[]).sort(), [passwordHash(fx.initialPassword), passwordHash(next.password)].sort());
    await target.undo(next, current, context);
    await target.undo(next, current, context);
    assert.deepEqual((await getUser(fx.user))!.passwords, [passwordHash(fx.initialPassword)]);
    await target.prepare(next, current, context);
    // A password rekey did not set (a person's, or a terminated rotation's) stays, and revoke says so.
    const extra = testPassword();
    await root(['ACL', 'SETUSER', fx.user, `>${extra}`]);
    const revoked = await target.revoke(current, next, { context });
    assert.match(revoked?.warning ?? '', new RegExp(`the ACL user ${fx.user} still has 1 password\\(s\\) besides the new one, which rekey did not remove`));
    await target.revoke(current, next, { context });
    assert.deepEqual(((await getUser(fx.user))!.passwords as string[]).sort(), [passwordHash(next.password), passwordHash(extra)].sort());
    await root(['ACL', 'SETUSER', fx.user, `<${extra}`]);
    // Revoke never removes the old password while the new one is not there.
    const other = { username: fx.user, password: testPassword() };
    await assert.rejects(target.revoke(next, other, { context }), /refusing to remove the old password .*: the new one is not among its passwords/);
    assert.equal(await canAuth(fx.user, next.password), true);
  });

  it('killConnections: false leaves the old connections open (no new login works with the old password); an emergency ends them anyway', async () => {
    for (const emergency of [false, true]) {
      const fx = await redisFixture();
      const target = redis(redisSchema.parse(redisSpec(fx, {}, { killConnections: false }).target));
      const context = { secret: fx.id, currentVersionId: 'v1', nextVersionId: 'v2' };
      const [current, next] = [{ username: fx.user, password: fx.initialPassword }, { username: fx.user, password: testPassword() }];
      const session = await RespConnection.open({ host: HOST, port: PORT, tls: false, timeoutMs: 3000 });
      try {
        assert.equal(await session.call(['AUTH', fx.user, fx.initialPassword], { secrets: [fx.initialPassword] }), 'OK');
        await target.prepare(next, current, context);
        const outcome = await target.revoke(current, next, { context, emergency });
        assert.equal(await canAuth(fx.user, fx.initialPassword), false);
        if (emergency) {
          assert.equal(outcome?.sessionsEnded, 1);
          await assert.rejects(session.call(['PING']), /closed|reset|EPIPE/i);
        } else {
          assert.equal(outcome?.sessionsEnded, 0);
          assert.equal(await session.call(['PING']), 'PONG');
        }
      } finally {
        session.close();
      }
    }
  });

  describe('a server that answers oddly', () => {
    let server: Server;
    let answer: (command: string) => string;
    beforeEach(async () => {
      server = createServer((socket) => socket.on('data', (d) => socket.write(answer(d.toString('utf8')))));
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
    });
    afterEach(() => server.close());
    const target = () =>
      redis(redisSchema.parse({ type: 'redis', host: '127.0.0.1', port: (server.address() as AddressInfo).port, user: 'app', admin: { store: { type: 'aws-secrets-manager', secretId: 'unused' } }, connectTimeout: '1s' }));

    it('an error that echoes the password never carries it into a reason', async () => {
      const password = testPassword();
      answer = (command) => `-WRONGPASS no such pair ${command.replace(/\r\n/g, ' ')}\r\n`;
      const verdict = await target().accepts({ username: 'app', password });
      assert.equal(verdict.accepted, false);
      assert.match(verdict.reason!, /redis rejected user app \(WRONGPASS\)/);
      assertNoValues([password], JSON.stringify(verdict));
    });

    it('an oversized, malformed or unasked reply fails the step without hanging', async () => {
      const credential = { username: 'app', password: testPassword() };
      for (const [reply, problem] of [
        [`$${2 ** 30}\r\n`, /oversized bulk string/],
        ['*99999999\r\n', /oversized array/],
        ['?what\r\n', /does not speak RESP2/],
        ['+OK\r\n+OK\r\n', /a reply nobody asked for|closed/],
      ] as const) {
        answer = () => reply;
        await assert.rejects(target().accepts(credential), problem);
      }
      answer = () => '';
      await assert.rejects(target().accepts(credential), /no answer to AUTH within 1000 ms/);
    });
  });

  it('manifests: the default user, and TLS disabled or unchecked (require without a ca) to a remote host, are refused', async () => {
    const fx = { id: uniqueId(), user: 'app', adminSecretId: 'adm', secretId: 'own' } as RedisFixture;
    await assert.rejects(manifests({ [fx.id]: { ...redisSpec(fx), target: { ...(redisSpec(fx).target as object), user: 'default' } } }), /spec\.target\.user: is the default user/);
    await assert.rejects(manifests({ [fx.id]: redisSpec(fx, {}, { host: 'cache.example.com', tls: { mode: 'disable' } }) }), /spec\.target\.tls\.mode: disable sends passwords in the open to cache\.example\.com/);
    // AUTH carries the password itself: a certificate nobody checks would hand it to whoever answers.
    await assert.rejects(manifests({ [fx.id]: redisSpec(fx, {}, { host: 'cache.example.com', tls: { mode: 'require' } }) }), /spec\.target\.tls\.ca: require without a ca accepts any certificate/);
    await assert.rejects(manifests({ [fx.id]: redisSpec({ ...fx, adminSecretId: 'own' }) }), /spec\.target\.admin\.store: is the secret's own store/);
  });
});

describe('the Redis target over TLS, on a server with an ACL file', () => {
  let server: ChildProcess | undefined;
  let dir: string;
  let port: number;
  const [appPassword, adminPassword] = [testPassword(), testPassword()];
  const adminSecretId = `rekey-test/${uniqueId()}/redis-tls-admin`;
  const sh = promisify(execFile);

  before(async function () {
    this.timeout(60_000);
    dir = await tempDir();
    // A throwaway CA and a certificate for 127.0.0.1, and a second CA that signed nothing here.
    await sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=rekey test CA', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt')]);
    await sh('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.csr')]);
    await writeFile(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    await sh('openssl', ['x509', '-req', '-in', join(dir, 'server.csr'), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-days', '1', '-extfile', join(dir, 'san.ext'), '-out', join(dir, 'server.crt')]);
    await sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=not this server', '-keyout', join(dir, 'other.key'), '-out', join(dir, 'other.crt')]);
    await writeFile(
      join(dir, 'users.acl'),
      [`user default off`, `user app on #${passwordHash(appPassword)} ~app:* +get +ping`, `user rekey_admin on #${passwordHash(adminPassword)} +acl +client|kill`].join('\n') + '\n',
    );
    // A port nobody listens on right now (the shared machine runs other tests' servers).
    const probe = createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    let output = '';
    server = spawn('redis-server', ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--tls-cert-file', join(dir, 'server.crt'), '--tls-key-file', join(dir, 'server.key'), '--tls-ca-cert-file', join(dir, 'ca.crt'), '--tls-auth-clients', 'no', '--aclfile', join(dir, 'users.acl'), '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    server.stdout!.on('data', (d) => (output += d));
    server.stderr!.on('data', (d) => (output += d));
    for (let i = 0; ; i++) {
      const up = await RespConnection.open({ host: '127.0.0.1', port, tls: { ca: await readFile(join(dir, 'ca.crt'), 'utf8') }, timeoutMs: 500 }).then((c) => (c.close(), true), () => false);
      if (up) break;
      if (i > 100 || server.exitCode !== null) throw new Error(`the TLS redis-server did not start (is redis-server built with TLS?):\n${output.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await sm.send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify({ username: 'rekey_admin', password: adminPassword }) }));
  });
  after(() => {
    server?.kill('SIGTERM');
  });

  const target = (ca: string) =>
    redis(redisSchema.parse({ type: 'redis', host: '127.0.0.1', port, user: 'app', tls: { mode: 'verify-full', ca }, admin: { store: { type: 'aws-secrets-manager', secretId: adminSecretId } } }));

  it('rotates over verify-full TLS and saves the ACL file: the file holds the new hash and not the old one', async () => {
    const t = target(join(dir, 'ca.crt'));
    const context = { secret: 'tls', currentVersionId: 'v1', nextVersionId: 'v2' };
    const [current, next] = [{ username: 'app', password: appPassword }, { username: 'app', password: testPassword() }];
    assert.deepEqual(await t.accepts(current), { accepted: true });
    await t.prepare(next, current, context);
    let file = await readFile(join(dir, 'users.acl'), 'utf8');
    assert.ok(file.includes(passwordHash(next.password)) && file.includes(passwordHash(appPassword)), 'both passwords saved after prepare');
    await t.revoke(current, next, { context });
    file = await readFile(join(dir, 'users.acl'), 'utf8');
    assert.ok(file.includes(passwordHash(next.password)), 'the new password is in the ACL file');
    assert.ok(!file.includes(passwordHash(appPassword)), 'the old password is gone from the ACL file');
    assert.match(file, /user app on .*~app:\* .*\+get/, 'the rules are saved as they were');
    assert.deepEqual(await t.accepts(next), { accepted: true });
    assert.equal((await t.accepts(current)).accepted, false);
  });

  it('a server whose certificate another CA signed is refused before any password is sent', async () => {
    await assert.rejects(target(join(dir, 'other.crt')).accepts({ username: 'app', password: testPassword() }), (err: Error) => {
      assert.match(err.message, /self[- ]signed|unable to verify|certificate/i);
      assert.equal((err as { nonRetryable?: boolean }).nonRetryable, true);
      return true;
    });
  });
});
