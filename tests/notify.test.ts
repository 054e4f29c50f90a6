// Notifications against real receivers: a local HTTP server that checks the HMAC signature the way
// a receiver must, and a local SMTP server (smtp-server) that requires a login. The rotations are
// real too (Postgres, moto, Temporal): a notice must never change what a rotation does.
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { SMTPServer } from 'smtp-server';
import { auditSettingsFromEnv, openAuditTrail } from '../lib/audit-trails';
import type { AuditRecord } from '../lib/audit';
import { ManifestError, loadManifests, type SecretSpec } from '../lib/manifest';
import { channelsOf, type Notice } from '../activities/notify';
import type { BreakGlassDocument } from '../lib/signed';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { emergencyWorkflowId, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { newKey, people, sign, validFor } from './keys';
import { databaseFixture, failureOf, manifests, postgresSpec, sm, stack, storeVersions, tempDir, temporalClient, testPassword, uniqueId, withWorker, type DatabaseFixture, type Manifests } from './helpers';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { stringify } from 'yaml';

interface Hook {
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The body parsed, when the signature held. */
  json?: { text: string; rekey: Record<string, unknown> };
  signatureOk: boolean;
}

/** A webhook receiver that checks X-Rekey-Signature with `key` and answers `status()`. */
async function receiver(key: string, status: () => number = () => 200): Promise<{ url: string; hooks: Hook[]; close(): Promise<void> }> {
  const hooks: Hook[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const header = String(req.headers['x-rekey-signature'] ?? '');
      const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header) ?? [];
      const expected = t ? createHmac('sha256', key).update(`${t}.${body}`).digest() : Buffer.alloc(32);
      const signatureOk = !!v1 && timingSafeEqual(expected, Buffer.from(v1, 'hex'));
      hooks.push({ headers: req.headers, body, signatureOk, json: signatureOk ? JSON.parse(body) : undefined });
      res.writeHead(signatureOk ? status() : 401).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/rekey`,
    hooks,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** An SMTP server that takes mail only after a login with `user` / `password`. */
async function mailServer(user: string, password: string, tls?: { key: string; cert: string }): Promise<{ port: number; mails: string[]; logins: string[]; secure: boolean[]; close(): Promise<void> }> {
  const mails: string[] = [];
  const logins: string[] = [];
  const secure: boolean[] = [];
  const server = new SMTPServer({
    // With a certificate it offers STARTTLS and takes a login only after it; without, it is a
    // plain loopback relay, as the notify schema allows for loopback hosts alone.
    ...(tls ? { key: tls.key, cert: tls.cert } : { disabledCommands: ['STARTTLS'], allowInsecureAuth: true }),
    authMethods: ['PLAIN', 'LOGIN'],
    logger: false,
    onAuth(auth, _session, callback) {
      logins.push(auth.username ?? '');
      if (auth.username === user && auth.password === password) return callback(null, { user });
      return callback(new Error('invalid login'));
    },
    onData(stream, session, callback) {
      secure.push(session.secure);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push(Buffer.concat(chunks).toString('utf8'));
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.server.address() as AddressInfo).port, mails, logins, secure, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A CA and a certificate it issued for 127.0.0.1, made with openssl, as PEM text and the CA's file. */
async function certificates(): Promise<{ caFile: string; key: string; cert: string }> {
  const dir = await tempDir();
  const run = (...args: string[]) => promisify(execFile)('openssl', args, { cwd: dir });
  await run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=rekey test CA');
  await run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'smtp.key', '-out', 'smtp.csr', '-subj', '/CN=127.0.0.1');
  await writeFile(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  await run('x509', '-req', '-in', 'smtp.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'smtp.pem', '-days', '1', '-extfile', 'san.ext');
  return { caFile: join(dir, 'ca.pem'), key: await readFile(join(dir, 'smtp.key'), 'utf8'), cert: await readFile(join(dir, 'smtp.pem'), 'utf8') };
}

/** A closed port: connections are refused. */
async function downUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/down`;
}

/** The HMAC key and the SMTP password, each in its own stored secret, as the manifest refers to them. */
async function channelSecrets(id: string) {
  const hmacKey = testPassword();
  const smtpPassword = testPassword();
  const keyId = `rekey-test/${id}/notify-hmac`;
  const smtpId = `rekey-test/${id}/smtp`;
  await sm.send(new CreateSecretCommand({ Name: keyId, SecretString: JSON.stringify({ key: hmacKey }) }));
  await sm.send(new CreateSecretCommand({ Name: smtpId, SecretString: JSON.stringify({ password: smtpPassword }) }));
  const ref = (secretId: string, field: string) => ({ store: { type: 'aws-secrets-manager', secretId }, field });
  return { hmacKey, smtpPassword, signingKey: ref(keyId, 'key'), password: ref(smtpId, 'password') };
}

type Channels = Awaited<ReturnType<typeof channelSecrets>>;

function notifyPolicy(channels: Channels, webhooks: { name: string; url: string }[], smtpPort: number) {
  return {
    webhooks: webhooks.map((w) => ({ ...w, signingKey: channels.signingKey })),
    email: [{ name: 'oncall', host: '127.0.0.1', port: smtpPort, tls: { mode: 'none' }, auth: { user: 'rekey', password: channels.password }, from: 'rekey@example.test', to: ['oncall@example.test'] }],
  };
}

/** A rotation that rolls back at verify: its one consumer is never healthy. */
async function rollingBack(fx: DatabaseFixture, notify: object) {
  const dir = await tempDir();
  return manifests({
    [fx.id]: postgresSpec(fx, 'alternating-users', {
      consumers: [{ type: 'command', name: 'broken', file: join(dir, 'db.json'), health: 'exit 1' }],
      policy: { overlap: '0s', timeouts: { verify: '1s' }, notify },
    }),
  });
}

const NOTIFY = { attempts: 3, backoffMs: 50, maxBackoffMs: 200, temporalUi: 'http://localhost:8233' };

/** Run one rotation of `secret` to its end on a worker that trusts `trusted` and retries notices quickly. */
function rotate(trusted: Manifests, secret: string): Promise<RotationReport> {
  return withWorker(
    async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] }),
    { manifestDirs: [trusted.dir], notify: NOTIFY },
  );
}

async function notifyRecords(secret: string): Promise<AuditRecord[]> {
  const trail = openAuditTrail(auditSettingsFromEnv());
  try {
    return (await trail.read()).filter((r): r is AuditRecord => typeof r !== 'string' && r.secret === secret && (r.event === 'notified' || r.event === 'notify-failed'));
  } finally {
    await trail.close();
  }
}

/** Every value a notice must never carry: each version's password, the admin's, and the channels' own credentials. */
async function secretValues(fx: DatabaseFixture, channels: Channels): Promise<string[]> {
  const versions = await storeVersions(fx.secretId);
  const values = [...versions.map((v) => v.value.password), stack.pgAdminPassword(), channels.hmacKey, channels.smtpPassword].filter(Boolean);
  // The initial password and the one the rotation generated (then discarded) are both there.
  assert.ok(versions.length >= 2, 'the generated version is among the values scanned');
  return values;
}

interface Receivers {
  fx: DatabaseFixture;
  channels: Channels;
  hook: Awaited<ReturnType<typeof receiver>>;
  smtp: Awaited<ReturnType<typeof mailServer>>;
}

/** A database fixture, the channels' stored credentials, and a webhook receiver and SMTP server that take them, closed after `work`. */
async function withReceivers(work: (r: Receivers) => Promise<void>, status?: () => number): Promise<void> {
  const fx = await databaseFixture('alternating-users');
  const channels = await channelSecrets(fx.id);
  const hook = await receiver(channels.hmacKey, status);
  const smtp = await mailServer('rekey', channels.smtpPassword);
  try {
    await work({ fx, channels, hook, smtp });
  } finally {
    await hook.close();
    await smtp.close();
  }
}

describe('notifications', () => {
  it('a rollback sends one signed webhook and one e-mail naming the secret and outcome, audited, with no secret value in either', async () => {
    await withReceivers(async ({ fx, channels, hook, smtp }) => {
      const trusted = await rollingBack(fx, notifyPolicy(channels, [{ name: 'ops', url: hook.url }], smtp.port));
      const report = await rotate(trusted, fx.id);
      assert.equal(report.outcome, 'rolled-back');

      assert.equal(hook.hooks.length, 1, 'one webhook');
      const [sent] = hook.hooks;
      assert.ok(sent.signatureOk, 'the HMAC signature holds');
      assert.equal(sent.headers['x-rekey-event'], 'rolled-back');
      assert.match(sent.json!.text, new RegExp(`rotation of ${fx.id} rolled back at verify`));
      assert.equal(sent.json!.rekey.secret, fx.id);
      assert.equal(sent.json!.rekey.event, 'rolled-back');
      assert.equal(sent.json!.rekey.stage, 'verify');
      assert.deepEqual(sent.json!.rekey.versions, { current: report.versions.before, pending: report.versions.pending });
      assert.match(String(sent.json!.rekey.link), new RegExp(`^http://localhost:8233/namespaces/default/workflows/rotation%2F${fx.id}/`));

      assert.equal(smtp.mails.length, 1, 'one e-mail');
      assert.deepEqual(smtp.logins, ['rekey']);
      assert.match(smtp.mails[0], new RegExp(`Subject: rekey: the rotation of ${fx.id} rolled back at verify`));
      assert.match(smtp.mails[0], /^To: oncall@example\.test/m);

      for (const value of await secretValues(fx, channels)) {
        assert.ok(!hook.hooks.some((h) => h.body.includes(value) || JSON.stringify(h.headers).includes(value)), 'no secret value in a webhook');
        assert.ok(!smtp.mails.some((m) => m.includes(value)), 'no secret value in an e-mail');
      }

      const records = await notifyRecords(fx.id);
      assert.deepEqual(records.map((r) => [r.event, r.detail!.split(':')[0]]).sort(), [['notified', 'email oncall'], ['notified', 'webhook ops']]);
      assert.ok(records.every((r) => !r.detail!.includes(hook.url.split('/hooks')[0])), 'the audit names the channel, not its URL');
    });
  });

  it('a receiver answering 500, or down, leaves the rotation as it was: each is retried, then audited as failed; e-mail still goes', async () => {
    await withReceivers(async ({ fx, channels, hook, smtp }) => {
      const trusted = await rollingBack(fx, notifyPolicy(channels, [{ name: 'ops', url: hook.url }, { name: 'down', url: await downUrl() }], smtp.port));
      const report = await rotate(trusted, fx.id);
      assert.equal(report.outcome, 'rolled-back');
      assert.equal(report.failure?.stage, 'verify');
      assert.equal(hook.hooks.length, NOTIFY.attempts, 'every attempt reached the receiver');
      assert.ok(hook.hooks.every((h) => h.signatureOk));
      // One delivery id for every attempt: a receiver can tell a retry from a second event.
      assert.equal(new Set(hook.hooks.map((h) => h.headers['x-rekey-delivery'])).size, 1);
      assert.equal(smtp.mails.length, 1);

      const records = await notifyRecords(fx.id);
      const byChannel = Object.fromEntries(records.map((r) => [r.detail!.split(':')[0], r]));
      assert.equal(records.length, 3);
      assert.equal(byChannel['webhook ops'].event, 'notify-failed');
      assert.match(byChannel['webhook ops'].detail!, /after 3 attempt\(s\): webhook ops: answered HTTP 500/);
      assert.equal(byChannel['webhook down'].event, 'notify-failed');
      assert.match(byChannel['webhook down'].detail!, /after 3 attempt\(s\): webhook down: not sent \(ECONNREFUSED\)/);
      assert.equal(byChannel['email oncall'].event, 'notified');
    }, () => 500);
  });

  it('an approval asks, escalates and gives up: each is a notice', async () => {
    const alice = await newKey('alice');
    await withReceivers(async ({ fx, channels, hook, smtp }) => {
      const trusted = await manifests(
        {
          [fx.id]: postgresSpec(fx, 'alternating-users', {
            policy: {
              overlap: '0s',
              approval: { required: true, approvers: ['alice'], timeout: '1s', onTimeout: 'escalate', escalationLimit: '3s' },
              notify: { ...notifyPolicy(channels, [{ name: 'ops', url: hook.url }], smtp.port), events: ['approval-requested', 'escalated', 'rolled-back'] },
            },
          }),
        },
        people([alice]),
      );
      const report = await rotate(trusted, fx.id);
      assert.equal(report.outcome, 'rolled-back');
      assert.equal(report.approval.escalated, true);
      assert.deepEqual(hook.hooks.map((h) => h.json?.rekey.event), ['approval-requested', 'escalated', 'rolled-back']);
      assert.match(hook.hooks[1].json!.text, new RegExp(`rotation of ${fx.id} is waiting for approval past its timeout \\(escalated\\)`));
      assert.equal(smtp.mails.length, 3);
      assert.deepEqual(smtp.mails.map((m) => /^X-Rekey-Event: (.*)$/m.exec(m)?.[1]), ['approval-requested', 'escalated', 'rolled-back']);
      assert.equal((await notifyRecords(fx.id)).filter((r) => r.event === 'notified').length, 6);
    });
  });

  it('an emergency rotation (break-glass) is a notice, sent while it goes on to rotate', async () => {
    const oncall = await newKey('oncall');
    await withReceivers(async ({ fx, channels, hook, smtp }) => {
      const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { notify: notifyPolicy(channels, [{ name: 'ops', url: hook.url }], smtp.port) } }) }, people([oncall], ['oncall']));
      const document: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: fx.id, revokeFirst: false, reason: 'leaked', ...validFor(600_000) };
      const report: RotationReport = await withWorker(
        async (taskQueue) =>
          (await temporalClient()).workflow.execute(emergencyRevoke, { taskQueue, workflowId: emergencyWorkflowId(fx.id), args: [{ secret: fx.id, reason: 'leaked', authorization: await sign(oncall, document) }] }),
        { manifestDirs: [trusted.dir], notify: NOTIFY },
      );
      assert.equal(report.outcome, 'rotated');
      assert.deepEqual(hook.hooks.map((h) => h.json?.rekey.event), ['emergency']);
      assert.match(hook.hooks[0].json!.text, new RegExp(`rotation of ${fx.id} is an emergency rotation`));
      assert.equal(smtp.mails.length, 1);
      for (const value of await secretValues(fx, channels)) assert.ok(!hook.hooks[0].body.includes(value) && !smtp.mails[0].includes(value), 'no secret value in a notice');
    });
  });

  it('a forged rotation/<secret> run cannot page as an emergency without a break-glass claim, nor send more than 20 notices, nor choose its delivery id', async () => {
    await withReceivers(async ({ fx, channels, hook, smtp }) => {
      const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { notify: notifyPolicy(channels, [{ name: 'ops', url: hook.url }], smtp.port) } }) });
      const outcomes: string[] = await withWorker(
        async (taskQueue) => (await temporalClient()).workflow.execute('forgedNotify', { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [fx.id] }),
        { manifestDirs: [trusted.dir], notify: NOTIFY, forgedWorkflows: true },
      );
      assert.match(outcomes[0], /notify: emergency: this run claimed no break-glass authorisation/);
      assert.match(outcomes[1], /notifies of its own events only, at most 20/);
      assert.match(outcomes[2], /notifies of its own events only, at most 20/);
      assert.deepEqual(hook.hooks, [], 'nothing reached the webhook');
      assert.equal(smtp.mails.length, 0, 'nothing reached the mail server');
    });
  });

  it('a rotation that fails before anything changed notifies "failed"; a receiver that redirects gets one try and its target nothing', async () => {
    await withReceivers(async ({ fx, channels, hook, smtp }) => {
      const elsewhere = await receiver(channels.hmacKey);
      const redirecting = createServer((_req, res) => res.writeHead(307, { location: elsewhere.url }).end());
      await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
      try {
        const redirectUrl = `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}/hook`;
        // No such stored secret: generate fails, and nothing was changed.
        const spec = { ...postgresSpec(fx, 'alternating-users'), store: { type: 'aws-secrets-manager', secretId: `rekey-test/${fx.id}/missing` } };
        const trusted = await manifests({ [fx.id]: { ...spec, policy: { timeouts: { generate: '2s' }, notify: notifyPolicy(channels, [{ name: 'ops', url: hook.url }, { name: 'moved', url: redirectUrl }], smtp.port) } } });
        const failure = await failureOf(
          withWorker(
            async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] }),
            { manifestDirs: [trusted.dir], notify: NOTIFY },
          ),
        );
        assert.match(failure, /can't find the specified secret/);
        assert.deepEqual(hook.hooks.map((h) => [h.json?.rekey.event, h.json?.rekey.stage]), [['failed', 'generate']]);
        assert.match(hook.hooks[0].json!.text, new RegExp(`rotation of ${fx.id} failed at generate`));
        assert.equal(smtp.mails.length, 1);
        assert.equal(elsewhere.hooks.length, 0, 'the redirect was not followed');
        const moved = (await notifyRecords(fx.id)).find((r) => r.detail!.startsWith('webhook moved'));
        assert.equal(moved?.event, 'notify-failed');
        assert.match(moved!.detail!, /after 1 attempt\(s\): webhook moved: answered with a redirect \(HTTP 307\), which rekey does not follow/);
      } finally {
        await elsewhere.close();
        await new Promise((resolve) => redirecting.close(resolve));
      }
    });
  });

  it('e-mail over STARTTLS: the certificate is checked against tls.ca; a server without STARTTLS, or with a certificate nobody vouches for, never sees the password', async () => {
    const fx = await databaseFixture('alternating-users');
    const channels = await channelSecrets(fx.id);
    const { caFile, key, cert } = await certificates();
    const withTls = await mailServer('rekey', channels.smtpPassword, { key, cert });
    const plain = await mailServer('rekey', channels.smtpPassword);
    const notice: Notice = { delivery: `rotation/${fx.id}/run#notice-1`, event: 'failed', secret: fx.id, workflowId: `rotation/${fx.id}`, runId: 'run', stage: 'generate', versions: {}, at: new Date().toISOString() };
    /** The one e-mail channel of a policy, as the worker builds it from the manifest. */
    const email = async (port: number, tls: object) => {
      const trusted = await manifests({ [fx.id]: postgresSpec(fx, 'alternating-users', { policy: { notify: { email: [{ name: 'oncall', host: '127.0.0.1', port, tls, auth: { user: 'rekey', password: channels.password }, from: 'rekey@example.test', to: ['oncall@example.test'] }] } } }) });
      return channelsOf((trusted.set.secrets.get(fx.id)!.spec as SecretSpec).policy.notify!)[0];
    };
    try {
      assert.match(await (await email(withTls.port, { mode: 'starttls', ca: caFile })).send(notice), /accepted by 127\.0\.0\.1:\d+ for 1 recipient/);
      assert.deepEqual([withTls.mails.length, withTls.secure, withTls.logins], [1, [true], ['rekey']]);
      // The same server, its CA not given: the system's CAs do not vouch for it.
      await assert.rejects((await email(withTls.port, { mode: 'starttls' })).send(notice), /email oncall: not sent/);
      // A relay that does not offer STARTTLS gets neither the message nor the login.
      await assert.rejects((await email(plain.port, { mode: 'starttls', ca: caFile })).send(notice), /email oncall: not sent/);
      assert.deepEqual([withTls.mails.length, withTls.logins, plain.mails.length, plain.logins], [1, ['rekey'], 0, []]);
    } finally {
      await withTls.close();
      await plain.close();
    }
  });

  it('a manifest with an inline HMAC key, an SMTP password inline, or a plain-http URL to another host is refused, naming the field', async () => {
    const store = { store: { type: 'aws-secrets-manager', secretId: 'rekey-test/notify/key' }, field: 'key' };
    const refusal = async (notify: object): Promise<string> => {
      const dir = await tempDir();
      const spec = { store: { type: 'aws-secrets-manager', secretId: `rekey-test/${uniqueId()}` }, generator: { type: 'password' }, policy: { notify } };
      await writeFile(join(dir, 'm.yaml'), stringify({ apiVersion: 'rekey.dev/v1', kind: 'Secret', metadata: { name: 'notified' }, spec }));
      const err = await loadManifests(dir).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof ManifestError, String(err));
      return err.message;
    };
    const hook = { name: 'ops', url: 'https://hooks.example.test/rekey', signingKey: store };
    const mail = { name: 'oncall', host: 'smtp.example.test', from: 'rekey@example.test', to: ['oncall@example.test'] };

    assert.match(await refusal({ webhooks: [{ ...hook, signingKey: 'hunter2-inline' }] }), /spec\.policy\.notify\.webhooks\[0\]\.signingKey: signingKey must be a store reference/);
    assert.doesNotMatch(await refusal({ webhooks: [{ ...hook, signingKey: 'hunter2-inline' }] }), /hunter2/);
    assert.match(await refusal({ webhooks: [{ ...hook, url: 'http://hooks.example.test/rekey' }] }), /spec\.policy\.notify\.webhooks\[0\]\.url: .*must be https/);
    assert.match(await refusal({ email: [{ ...mail, auth: { user: 'rekey', password: 'inline' } }] }), /spec\.policy\.notify\.email\[0\]\.auth\.password: auth\.password must be a store reference/);
    assert.match(await refusal({ email: [{ ...mail, tls: { mode: 'none' } }] }), /spec\.policy\.notify\.email\[0\]\.tls\.mode: none sends mail in the open to smtp\.example\.test/);
    // Accepted: https anywhere, plain http to loopback.
    const dir = await tempDir();
    await writeFile(
      join(dir, 'm.yaml'),
      stringify({ apiVersion: 'rekey.dev/v1', kind: 'Secret', metadata: { name: 'notified' }, spec: { store: { type: 'aws-secrets-manager', secretId: `rekey-test/${uniqueId()}` }, generator: { type: 'password' }, policy: { notify: { webhooks: [hook, { ...hook, name: 'local', url: 'http://127.0.0.1:9/hook' }], email: [mail] } } } }),
    );
    assert.equal((await loadManifests(dir)).secrets.get('notified')!.spec.policy.notify!.webhooks.length, 2);
  });
});
