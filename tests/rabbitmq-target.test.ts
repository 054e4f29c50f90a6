// The RabbitMQ target against a real RabbitMQ (AMQP 127.0.0.1:5672, management API
// http://127.0.0.1:15672 unless REKEY_RABBITMQ_HOST / _PORT / _API say otherwise): each test makes
// its own vhost, an administrator admin and an application user pair (stored in moto) and deletes
// them afterwards. Each test is named for what it stops.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand, PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { hashMatches, rabbitHash, rabbitmq, rabbitmqSchema } from '../activities/targets/rabbitmq';
import { workerLog } from './setup';
import { checkTargets, clientDuringRotation, rotateKilledMidDeploy, rotateWithHistory } from './target-harness';
import { amqp, API, canLogin, dropCreated, permit, rabbitFixture, rabbitSpec, rightsOf, root, userRecord, type RabbitFixture } from './rabbitmq-fixtures';
import { allText, labelled, manifests, sm, storeVersions, tempDir, testPassword, uniqueId } from './helpers';


function assertNoValues(values: string[], ...texts: string[]): void {
  for (const value of values) for (const text of texts) assert.ok(!text.includes(value), 'a secret value is in history, a log or a message');
}

/** Wait until the management API lists `n` connections of `user` (it learns of them asynchronously). */
async function connectionsListed(user: string, n: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const list = (await root('GET', 'connections?columns=name,user')) as { user: string }[];
    if (list.filter((c) => c.user === user).length >= n) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the management API never listed ${n} connection(s) of ${user}`);
}

describe('the RabbitMQ target', () => {
  before(async () => {
    await root('GET', 'overview');
  });
  after(dropCreated);

  it('hashes passwords as RabbitMQ does: a hash rekey made logs in over AMQP', async () => {
    const fx = await rabbitFixture();
    const password = testPassword();
    await root('PUT', `users/${fx.users[1]}`, { password_hash: rabbitHash(password), tags: '' });
    assert.equal(await canLogin(fx.vhost, fx.users[1], password), true);
    const record = (await userRecord(fx.users[0])) as { password_hash: string; hashing_algorithm: string };
    assert.equal(hashMatches(record.password_hash, record.hashing_algorithm, fx.initialPassword), true);
    assert.equal(hashMatches(record.password_hash, record.hashing_algorithm, password), false);
  });

  it('rotates to the twin: the new credential opens AMQP, the old is rejected and its connections closed, the twins keep equal rights, the store holds current and previous', async () => {
    const fx = await rabbitFixture();
    const rightsBefore = await rightsOf(fx.users[0]);
    const session = await amqp(fx.vhost, fx.users[0], fx.initialPassword);
    assert.ok(typeof session !== 'string', String(session));
    let closed = false;
    session.on('close', () => (closed = true));
    session.on('error', () => undefined);
    await connectionsListed(fx.users[0], 1);
    const logStart = workerLog.length;
    const { report, failure, history } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.ok((report!.sessionsEnded ?? 0) >= 1, 'revoke says it closed the old connection');
    for (let i = 0; i < 50 && !closed; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(closed, true, "the old user's connection was closed");

    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.filter((v) => v.stages.includes('AWSCURRENT')).length, 1);
    assert.equal(versions.filter((v) => v.stages.includes('AWSPREVIOUS')).length, 1);
    assert.equal(versions.filter((v) => v.stages.includes('AWSPENDING')).length, 0);
    const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!.value;
    assert.equal(current.username, fx.users[1]);
    assert.equal(current.vhost, fx.vhost);
    assert.equal(await canLogin(fx.vhost, fx.users[1], current.password), true, 'the new credential works');
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), false, 'the old credential is rejected');
    assert.deepEqual(await rightsOf(fx.users[0]), rightsBefore, "the old user's tags and permissions are unchanged");
    assert.deepEqual(await rightsOf(fx.users[1]), rightsBefore, 'the twins have equal tags and permissions');
    assert.match(report!.postVerify?.detail ?? '', /old credential rejected; new credential accepted/);

    const log = allText(workerLog.slice(logStart));
    assert.ok(history.includes(fx.id));
    assertNoValues([fx.initialPassword, current.password, fx.adminPassword], history, log, JSON.stringify(report));
  });

  it('a failed consumer rolls back: the old credential still works, the idle user has no password again, nothing else changed', async () => {
    const fx = await rabbitFixture();
    const before = [await userRecord(fx.users[0]), await userRecord(fx.users[1]), await rightsOf(fx.users[1])];
    const dir = await tempDir();
    const { report } = await rotateWithHistory(fx.id, rabbitSpec(fx, { consumers: [{ type: 'command', name: 'broken', file: join(dir, 'f.json'), health: 'exit 1' }], policy: { overlap: '0s', timeouts: { verify: '1s' } } }));
    assert.equal(report?.outcome, 'rolled-back');
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), true);
    assert.deepEqual([await userRecord(fx.users[0]), await userRecord(fx.users[1]), await rightsOf(fx.users[1])], before);
    const discarded = (await storeVersions(fx.secretId)).find((v) => v.value.password !== fx.initialPassword);
    assert.ok(discarded, 'the new version was written before the rollback');
    assert.equal(await canLogin(fx.vhost, fx.users[1], discarded.value.password), false);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))?.value.password, fx.initialPassword);
  });

  it('a client that keeps connecting with whatever the store calls current sees no authentication failure', async () => {
    const fx = await rabbitFixture();
    const { result, logins, failures } = await clientDuringRotation(
      fx.secretId,
      async (current) => {
        const conn = await amqp(fx.vhost, current.username, current.password);
        if (typeof conn === 'string') return false;
        await conn.close().catch(() => undefined);
        return true;
      },
      () => rotateWithHistory(fx.id, rabbitSpec(fx, { policy: { overlap: '1s' } })),
    );
    assert.equal(result.report?.outcome, 'rotated');
    assert.ok(logins > 10, `the client kept logging in (${logins})`);
    assert.equal(failures, 0, 'authentication failures during the rotation');
  });

  it('a worker killed with SIGKILL mid-rotation is replaced and the rotation completes with exactly one new version', async () => {
    const fx = await rabbitFixture();
    const { report, stderr } = await rotateKilledMidDeploy(fx.id, (consumers) => rabbitSpec(fx, { consumers }));
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const versions = await storeVersions(fx.secretId);
    assert.equal(versions.length, 2, 'one initial and exactly one new version');
    const current = versions.find((v) => v.stages.includes('AWSCURRENT'))!.value;
    assert.equal(await canLogin(fx.vhost, fx.users[1], current.password), true);
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), false);
    assertNoValues([fx.initialPassword, current.password, fx.adminPassword], stderr);
  });

  it('a user name read from the store is acted on only if the manifest names it: the admin stored as current keeps its password', async () => {
    const fx = await rabbitFixture();
    const before = [await userRecord(fx.admin), await userRecord(fx.users[0]), await userRecord(fx.users[1])];
    await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify({ username: fx.admin, password: fx.adminPassword }), VersionStages: ['AWSCURRENT'] }));
    const { failure, report, history } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    const message = failure ?? report?.failure?.message ?? '';
    assert.match(message, new RegExp(`the current credential names user "${fx.admin}", which is not one this manifest rotates \\(${fx.users.join(', ')}\\); nothing was changed`));
    assert.deepEqual([await userRecord(fx.admin), await userRecord(fx.users[0]), await userRecord(fx.users[1])], before);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
    assertNoValues([fx.adminPassword, fx.initialPassword], history, message);
  });

  it('a twin that lacks a vhost permission is refused at prepare with a readable diff, before any change', async () => {
    const fx = await rabbitFixture({ idlePermissions: false });
    const before = await userRecord(fx.users[1]);
    const { report } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    assert.equal(report?.outcome, 'rolled-back');
    const message = report!.failure!.message;
    assert.match(message, new RegExp(`users ${fx.users[0]} and ${fx.users[1]} are not twins`));
    assert.ok(message.includes(`- only ${fx.users[0]}: permission vhost "${fx.vhost}": configure="^app\\\\." write="^app\\\\." read=".*"`), message);
    assert.match(message, /nothing was changed/);
    assert.deepEqual(await userRecord(fx.users[1]), before, 'the idle user got no password');
  });

  it('an admin credential that is one of the rotated users is refused before any change', async () => {
    const fx = await rabbitFixture();
    const before = [await userRecord(fx.users[0]), await userRecord(fx.users[1])];
    await sm.send(new PutSecretValueCommand({ SecretId: fx.adminSecretId, SecretString: JSON.stringify({ username: fx.users[1], password: testPassword() }), VersionStages: ['AWSCURRENT'] }));
    const { report } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, new RegExp(`the admin credential is user ${fx.users[1]}, one of the users this manifest rotates`));
    assert.deepEqual([await userRecord(fx.users[0]), await userRecord(fx.users[1])], before);
  });

  it('an admin without the administrator tag is refused before any change, naming the tag', async () => {
    const fx = await rabbitFixture({ adminTags: ['monitoring'] });
    const before = [await userRecord(fx.users[0]), await userRecord(fx.users[1])];
    const { report } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    assert.equal(report?.outcome, 'rolled-back', JSON.stringify(report?.failure));
    assert.match(report!.failure!.message, new RegExp(`the admin user ${fx.admin} lacks the administrator tag`));
    assert.deepEqual([await userRecord(fx.users[0]), await userRecord(fx.users[1])], before);
  });

  it('a stored password that is not the current user\'s is refused before any change (revoke would otherwise lock out what the application uses)', async () => {
    const fx = await rabbitFixture();
    const before = await userRecord(fx.users[1]);
    const stranger = testPassword();
    await sm.send(new PutSecretValueCommand({ SecretId: fx.secretId, SecretString: JSON.stringify({ username: fx.users[0], password: stranger }), VersionStages: ['AWSCURRENT'] }));
    const { report, history } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, new RegExp(`the stored current password is not ${fx.users[0]}'s`));
    assert.deepEqual(await userRecord(fx.users[1]), before);
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), true);
    assertNoValues([stranger, fx.initialPassword], history);
  });

  it('rekey validate --check-targets reports twin drift and a missing user, changing nothing', async () => {
    const [drift, missing] = [await rabbitFixture(), await rabbitFixture({ createIdle: false })];
    await permit(drift.users[1], drift.vhost, '.*', '.*', '.*');
    const before = await userRecord(drift.users[1]);
    const trusted = await manifests({ [drift.id]: rabbitSpec(drift), [missing.id]: rabbitSpec(missing) });
    const checked = await checkTargets(trusted.dir);
    assert.equal(checked.code, 1, checked.out);
    assert.match(checked.out, new RegExp(`users ${drift.users[0]} and ${drift.users[1]} are not twins`));
    assert.match(checked.out, new RegExp(`\\+ only ${drift.users[1]}: permission vhost "${drift.vhost}": configure="\\.\\*"`));
    assert.match(checked.out, new RegExp(`the user ${missing.users[1]} does not exist`));
    assert.deepEqual(await userRecord(drift.users[1]), before);
    assert.equal(await userRecord(missing.users[1]), undefined, 'no user was created');
    assertNoValues([drift.adminPassword, missing.adminPassword, drift.initialPassword], checked.out);
  });

  it('prepare, undo and revoke are idempotent; revoke never clears the old password while the new one is not set', async () => {
    const fx = await rabbitFixture();
    const target = rabbitmq(rabbitmqSchema.parse(rabbitSpec(fx).target));
    const context = { secret: fx.id, currentVersionId: 'v1', nextVersionId: 'v2' };
    const current = { username: fx.users[0], password: fx.initialPassword };
    const next = { username: fx.users[1], password: testPassword() };
    await assert.rejects(target.revoke(current, next, { context }), /refusing to clear the password of .*: .* does not hold the new password/);
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), true);
    await target.prepare(next, current, context);
    const prepared = await userRecord(fx.users[1]);
    await target.prepare(next, current, context);
    assert.deepEqual(await userRecord(fx.users[1]), prepared, 'a second prepare changes nothing (same salt)');
    await target.undo(next, current, context);
    await target.undo(next, current, context);
    assert.equal(await canLogin(fx.vhost, fx.users[1], next.password), false);
    await target.prepare(next, current, context);
    await target.revoke(current, next, { context });
    await target.revoke(current, next, { context });
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), false);
    assert.deepEqual(await target.accepts(next), { accepted: true });
  });

  it('a user with a pre-3.6 MD5 hash rotates: its password is checked as MD5 and the twin gets a sha256 hash', async () => {
    const fx = await rabbitFixture();
    const salt = Buffer.from([1, 2, 3, 4]);
    const md5 = Buffer.concat([salt, createHash('md5').update(Buffer.concat([salt, Buffer.from(fx.initialPassword)])).digest()]).toString('base64');
    await root('PUT', `users/${fx.users[0]}`, { password_hash: md5, hashing_algorithm: 'rabbit_password_hashing_md5', tags: '' });
    await root('PUT', `users/${fx.users[1]}`, { password_hash: '', hashing_algorithm: 'rabbit_password_hashing_md5', tags: '' });
    assert.equal(await canLogin(fx.vhost, fx.users[0], fx.initialPassword), true, 'the MD5 user logs in');
    const { report, failure } = await rotateWithHistory(fx.id, rabbitSpec(fx));
    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.equal(((await userRecord(fx.users[1])) as { hashing_algorithm: string }).hashing_algorithm, 'rabbit_password_hashing_sha256');
  });

  it('revoke closes a connection opened just before it, which the management API lists only a moment later', async () => {
    for (let round = 0; round < 3; round++) {
      const fx = await rabbitFixture();
      const target = rabbitmq(rabbitmqSchema.parse(rabbitSpec(fx).target));
      const context = { secret: fx.id, currentVersionId: 'v1', nextVersionId: 'v2' };
      const [current, next] = [{ username: fx.users[0], password: fx.initialPassword }, { username: fx.users[1], password: testPassword() }];
      await target.prepare(next, current, context);
      const session = await amqp(fx.vhost, fx.users[0], fx.initialPassword);
      assert.ok(typeof session !== 'string', String(session));
      let closed = false;
      session.on('close', () => (closed = true));
      session.on('error', () => undefined);
      // No wait: revoke must not take an empty list for "no connections left".
      const outcome = await target.revoke(current, next, { context });
      for (let i = 0; i < 20 && !closed; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(closed, true, `round ${round}: the connection opened just before revoke is still open`);
      assert.equal(outcome?.sessionsEnded, 1);
    }
  });

  it('a management API behind https on a private CA: trusted through managementCa, and without it refused naming the certificate problem', async () => {
    const fx = await rabbitFixture();
    const dir = await tempDir();
    const cert = join(dir, 'cert.pem');
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', cert]);
    // A TLS-terminating proxy in front of the real management API, as a load balancer would be.
    const upstream = new URL(API);
    const proxy = createHttpsServer({ key: await readFile(join(dir, 'key.pem')), cert: await readFile(cert) }, (req, res) => {
      const forward = httpRequest({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (up) => up.pipe(res.writeHead(up.statusCode!, up.headers)));
      forward.on('error', () => res.destroy());
      req.pipe(forward);
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    try {
      const managementUrl = `https://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const target = (extra: Record<string, unknown>) => rabbitmq(rabbitmqSchema.parse(rabbitSpec(fx, {}, { managementUrl, ...extra }).target));
      const current = { username: fx.users[0], password: fx.initialPassword };
      assert.deepEqual(await target({ managementCa: cert }).preflight!(current), []);
      await assert.rejects(target({}).preflight!(current), /the management API's TLS certificate is not trusted \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)\): on a private CA, give managementCa/);
    } finally {
      proxy.close();
    }
  });

  describe('a management API that answers oddly', () => {
    let server: Server;
    let answer: (req: { method?: string; url?: string }) => { status: number; body: string; headers?: Record<string, string> };
    let adminSecretId: string;
    const adminPassword = testPassword();
    before(async () => {
      adminSecretId = `rekey-test/${uniqueId()}/odd-admin`;
      await sm.send(new CreateSecretCommand({ Name: adminSecretId, SecretString: JSON.stringify({ username: 'adm', password: adminPassword }) }));
    });
    beforeEach(async () => {
      server = createServer((req, res) => {
        const a = answer(req);
        res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) }).end(a.body);
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
    });
    afterEach(() => server.close());
    const target = () =>
      rabbitmq(rabbitmqSchema.parse({ type: 'rabbitmq', users: ['app_a', 'app_b'], managementUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, admin: { store: { type: 'aws-secrets-manager', secretId: adminSecretId } }, connectTimeout: '1s' }));

    it('a redirect is refused, not followed (the admin credential stays with the manifest\'s URL)', async () => {
      answer = () => ({ status: 307, body: '', headers: { location: 'http://127.0.0.1:1/api/whoami' } });
      await assert.rejects(target().preflight!({ username: 'app_a', password: testPassword() }), /answered with a redirect \(307\); rekey does not follow one/);
    });

    it('an error answer that echoes the request is not repeated', async () => {
      const next = { username: 'app_b', password: testPassword() };
      answer = (req) => {
        if (req.url === '/api/whoami') return { status: 200, body: JSON.stringify({ name: 'adm', tags: ['administrator'] }) };
        if (req.method === 'GET' && /^\/api\/users\/app_[ab]$/.test(req.url ?? '')) return { status: 200, body: JSON.stringify({ name: req.url!.split('/')[3], password_hash: req.url!.endsWith('app_a') ? rabbitHash('old-password') : '', hashing_algorithm: 'rabbit_password_hashing_sha256', tags: [] }) };
        if (req.method === 'GET') return { status: 200, body: '[]' };
        return { status: 400, body: JSON.stringify({ error: 'bad_request', reason: `you sent ${adminPassword} ${next.password}` }) };
      };
      await assert.rejects(target().prepare(next, { username: 'app_a', password: 'old-password' }, { secret: 's', currentVersionId: 'v1', nextVersionId: 'v2' }), (err: Error) => {
        assert.match(err.message, /PUT users\/app_b failed with HTTP 400/);
        assertNoValues([adminPassword, next.password], err.message, JSON.stringify(err));
        return true;
      });
    });

    it('an endless answer ends the step as oversized, without waiting for the timeout or holding it all', async () => {
      server.removeAllListeners('request');
      server.on('request', (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(1 << 16, 0x20);
        const pump = () => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        pump();
      });
      const t = rabbitmq(rabbitmqSchema.parse({ type: 'rabbitmq', users: ['app_a', 'app_b'], managementUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, admin: { store: { type: 'aws-secrets-manager', secretId: adminSecretId } }, connectTimeout: '30s' }));
      const started = Date.now();
      await assert.rejects(t.preflight!({ username: 'app_a', password: testPassword() }), /GET whoami: the answer is oversized/);
      assert.ok(Date.now() - started < 20_000);
    });

    it('twins that stop being twins while prepare changes the password are refused (compared again after the change)', async () => {
      const [old, next] = ['old-password', testPassword()];
      let put: { password_hash: string; hashing_algorithm: string } | undefined;
      server.removeAllListeners('request');
      server.on('request', (req, res) => {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          const reply = (status: number, value: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
          const url = req.url ?? '';
          if (req.method === 'PUT') return (put = JSON.parse(body)), reply(204, '');
          if (url === '/api/whoami') return reply(200, { name: 'adm', tags: ['administrator'] });
          if (url === '/api/users/app_a') return reply(200, { name: 'app_a', password_hash: rabbitHash(old), hashing_algorithm: 'rabbit_password_hashing_sha256', tags: [] });
          if (url === '/api/users/app_b') return reply(200, { name: 'app_b', password_hash: put?.password_hash ?? '', hashing_algorithm: 'rabbit_password_hashing_sha256', tags: [] });
          // Someone grants app_b more right after rekey's change.
          if (url === '/api/users/app_b/permissions' && put) return reply(200, [{ vhost: '/', configure: '.*', write: '.*', read: '.*' }]);
          return reply(200, []);
        });
      });
      await assert.rejects(target().prepare({ username: 'app_b', password: next }, { username: 'app_a', password: old }, { secret: 's', currentVersionId: 'v1', nextVersionId: 'v2' }), /users app_a and app_b stopped being twins during prepare[^]*\+ only app_b: permission vhost "\/"/);
    });

    it('a user record for another name, or a non-list, fails the step', async () => {
      answer = (req) => (req.url === '/api/whoami' ? { status: 200, body: JSON.stringify({ name: 'adm', tags: 'administrator' }) } : { status: 200, body: JSON.stringify({ name: 'someone_else', password_hash: '' }) });
      await assert.rejects(target().preflight!({ username: 'app_a', password: testPassword() }), /the answer is not this user/);
    });
  });

  it('manifests: plain http to a remote API, credentials in the URL and the same user twice are refused', async () => {
    const fx = { id: uniqueId(), users: ['a_1', 'b_1'], vhost: '/', adminSecretId: 'adm', secretId: 'own' } as unknown as RabbitFixture;
    await assert.rejects(manifests({ [fx.id]: rabbitSpec(fx, {}, { managementUrl: 'http://rabbit.example.com:15672' }) }), /spec\.target\.managementUrl: must be https/);
    await assert.rejects(manifests({ [fx.id]: rabbitSpec(fx, {}, { managementUrl: 'https://u:p@rabbit.example.com' }) }), /spec\.target\.managementUrl: must not carry credentials/);
    await assert.rejects(manifests({ [fx.id]: rabbitSpec(fx, {}, { users: ['a_1', 'a_1'] }) }), /spec\.target\.users: must name two different users/);
    await assert.rejects(manifests({ [fx.id]: rabbitSpec(fx, {}, { host: 'mq.example.com', tls: { mode: 'disable' } }) }), /spec\.target\.tls\.mode: disable sends passwords in the open/);
    await assert.rejects(manifests({ [fx.id]: rabbitSpec({ ...fx, adminSecretId: 'own' }) }), /spec\.target\.admin\.store: is the secret's own store/);
    await assert.rejects(manifests({ [fx.id]: rabbitSpec(fx, {}, { managementUrl: 'http://127.0.0.1:15672', managementCa: '/etc/rabbitmq/ca.pem' }) }), /spec\.target\.managementCa: applies to an https managementUrl only/);
  });
});
