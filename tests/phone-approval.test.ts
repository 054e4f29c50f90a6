// Approval from a phone: the approvals server's page in Debian's chromium with a phone viewport,
// passkeys made and used by Chromium's virtual authenticator (DevTools WebAuthn domain), against
// the real Temporal dev server and moto. Enrolment only prints lines for the manifests; decisions
// count because the workflow verifies the assertion, not because the page says so.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import type { WorkflowHandle } from '@temporalio/client';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { stringify, parse as parseYaml } from 'yaml';
import { documentText, type DecisionDocument, type SignedDocument } from '../lib/signed';
import type { Passkey } from '../lib/webauthn';
import { announceWaiting, createApprovalsServer } from '../web/server';
import { decideUpdate, progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { refusal, sm, temporalClient, tempDir, uniqueId, untilProgress, withWorker } from './helpers';
import { newKey } from './keys';

const CHROMIUM = process.env.REKEY_CHROMIUM ?? '/usr/bin/chromium';
const ROOT = join(__dirname, '..');
const ARTIFACTS = join(ROOT, 'artifacts');
/** A phone: Pixel 7 sized, touch, mobile user agent. */
const PHONE = {
  viewport: { width: 412, height: 915 },
  deviceScaleFactor: 2.625,
  isMobile: true,
  hasTouch: true,
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36',
};

async function freePort(): Promise<number> {
  const probe: Server = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

/** A phone: its own browser context and a virtual platform authenticator with user verification. */
async function phone(browser: Browser): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext(PHONE);
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  return { context, page };
}

const rekey = (args: string[], env: Record<string, string> = {}) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, NODE_NO_WARNINGS: '1', ...env } });

/** The lines the enrolment printed, as the reviewer pastes them. */
function pastedPasskeys(snippet: string): Passkey[] {
  return (parseYaml(snippet) as { passkeys: Passkey[] }).passkeys;
}

/** POST to the approvals server with chosen headers (what another site, or a script, could send). */
function post(port: number, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('approval from a phone with passkeys', function () {
  let browser: Browser;
  let port: number;
  let origin: string;
  let dir: string;
  let dataDir: string;
  let server: Server;
  const log: string[] = [];
  let stopAnnouncing = () => {};
  const sshKeys: Record<string, string> = {};
  const enrolled: Record<string, Passkey[]> = {};
  const phones: Record<string, { context: BrowserContext; page: Page }> = {};
  const secrets = { approve: uniqueId('phone-a-'), reject: uniqueId('phone-r-'), other: uniqueId('phone-o-') };

  /** The reviewed manifests: three secrets needing approval, alice and bob (and their passkeys once enrolled). */
  const writeManifests = async () => {
    const approval = (min: number) => ({ required: true, approvers: ['alice', 'bob'], minApprovals: min, timeout: '10m' });
    const secret = (name: string, min: number) => ({
      apiVersion: 'rekey.dev/v1',
      kind: 'Secret',
      metadata: { name },
      spec: { store: { type: 'aws-secrets-manager', secretId: `rekey-test/${name}` }, generator: { type: 'random-bytes' }, policy: { overlap: '0s', approval: approval(min) } },
    });
    // Before enrolment they have only an SSH key each; here they decide with passkeys.
    const person = (name: string, sshKey: string) => ({ name, keys: [sshKey], ...(enrolled[name] ? { passkeys: enrolled[name] } : {}) });
    const settings = {
      apiVersion: 'rekey.dev/v1',
      kind: 'Settings',
      metadata: { name: 'people' },
      spec: {
        passkeys: { rpId: 'localhost', origins: [origin] },
        people: [person('alice', sshKeys.alice), person('bob', sshKeys.bob)],
      },
    };
    const docs = [secret(secrets.approve, 2), secret(secrets.reject, 1), secret(secrets.other, 1), settings];
    await writeFile(join(dir, 'manifests.yaml'), docs.map((d) => stringify(d)).join('---\n'));
  };

  before(async function () {
    if (!existsSync(CHROMIUM)) throw new Error(`chromium not found at ${CHROMIUM}: apt-get install chromium (or set REKEY_CHROMIUM)`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    port = await freePort();
    // WebAuthn needs a secure context and a domain for its rpId: http://localhost is both.
    origin = `http://localhost:${port}`;
    [dir, dataDir] = await Promise.all([tempDir(), tempDir()]);
    for (const name of ['alice', 'bob']) sshKeys[name] = (await newKey(name)).publicKey;
    await writeManifests();
    for (const name of Object.values(secrets)) await sm.send(new CreateSecretCommand({ Name: `rekey-test/${name}`, SecretString: JSON.stringify({ value: uniqueId('v') }) }));
    const options = { client: await temporalClient(), namespace: 'default', manifestDir: dir, dataDir, log: (line: string) => log.push(line) };
    server = createApprovalsServer(options);
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    stopAnnouncing = announceWaiting({ ...options, pageUrl: `${origin}/`, everyMs: 1000 });
    await mkdir(ARTIFACTS, { recursive: true });
    phones.alice = await phone(browser);
    phones.bob = await phone(browser);
  });
  /** Runs a test started: one that failed midway must not leave them waiting on the shared server. */
  const started: WorkflowHandle[] = [];
  const start = async (taskQueue: string, secret: string, extra: { requestedBy?: string; reason?: string } = {}) => {
    const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [{ secret, requestedBy: 'carol', ...extra }] });
    started.push(handle);
    return handle;
  };
  afterEach(async () => {
    await Promise.allSettled(started.splice(0).map((h) => h.terminate('test over')));
  });
  after(async () => {
    stopAnnouncing();
    server?.close();
    await browser?.close();
  });

  it('enrols alice and bob through one-time links: the page prints the lines for the manifests, and a link works once', async () => {
    for (const name of ['alice', 'bob']) {
      const { stdout } = await rekey(['approvals', 'enroll', '--as', name, '-f', dir, '--data', dataDir]);
      const link = stdout.trim();
      assert.match(link, new RegExp(`^${origin}/enroll/[A-Za-z0-9_-]{43}$`));
      const { page } = phones[name];
      await page.goto(link);
      await page.getByRole('button', { name: 'Create passkey' }).tap();
      await page.locator('.status.done').waitFor();
      const snippet = await page.locator('pre.snippet').textContent();
      const passkeys = pastedPasskeys(snippet!);
      assert.equal(passkeys.length, 1);
      assert.match(passkeys[0].credentialId, /^[A-Za-z0-9_-]+$/);
      assert.ok(['ES256', 'Ed25519'].includes(passkeys[0].algorithm));
      enrolled[name] = passkeys;
      // The server printed the same lines for the operator.
      assert.ok(log.some((l) => l.includes(`enrolled a passkey for ${name}`) && l.includes(passkeys[0].credentialId)));
      // Single use: the link is gone once used.
      assert.equal((await page.goto(link))!.status(), 404);
      await page.getByText('unknown, used or expired').waitFor();
    }
    // A made-up token gets nothing either.
    assert.equal((await phones.alice.page.goto(`${origin}/enroll/${'A'.repeat(43)}`))!.status(), 404);
    // Reviewed and merged: the passkeys are in the manifests now.
    await writeManifests();
  });

  it('approves from the phone: two passkeys, the same passkey twice refused, then it rotates', async () => {
    await withWorker(
      async (taskQueue) => {
        // Labels are anyone's text: the page must show them, never run them.
        const handle = await start(taskQueue, secrets.approve, { requestedBy: '<img src=x onerror="window.pwned=1">', reason: '<script>window.pwned=2</script> quarterly rotation' });
        await untilProgress(handle, (p) => p.stage === 'approve');

        const card = async (page: Page) => {
          await page.goto(`${origin}/`);
          return page.locator(`section.waiting[data-workflow-id="${rotationWorkflowId(secrets.approve)}"]`);
        };
        const alice = phones.alice.page;
        let section = await card(alice);
        await section.getByText('quarterly rotation').waitFor();
        assert.match((await section.textContent())!, /<img src=x onerror="window.pwned=1">/);
        assert.match((await section.textContent())!, /approvals\s*0 of 2/);
        await section.getByRole('button', { name: 'Approve' }).tap();
        await section.locator('.status.done').waitFor();
        assert.match((await section.locator('.status').textContent())!, /approved by alice: 1 of 2 approvals, still waiting/);
        // The same passkey again (a fresh assertion over a fresh document): one passkey counts once.
        section = await card(alice);
        await section.getByRole('button', { name: 'Approve' }).tap();
        await section.locator('.status.refused').waitFor();
        assert.match((await section.locator('.status').textContent())!, /Refused: alice has already approved/);
        assert.equal(await alice.evaluate(() => (globalThis as unknown as { pwned?: number }).pwned), undefined, 'a label from the workflow ran as script');
        await alice.screenshot({ path: join(ARTIFACTS, 'phone-approval.png'), fullPage: true });

        const bob = phones.bob.page;
        section = await card(bob);
        await section.locator('input.comment').fill('looks good from my phone');
        await section.getByRole('button', { name: 'Approve' }).tap();
        await section.locator('.status.done').waitFor();
        assert.match((await section.locator('.status').textContent())!, /approved by bob: 2 of 2, the rotation proceeds/);

        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
        assert.deepEqual(report.approval.approvedBy.map((a) => [a.approver, a.comment]), [['alice', undefined], ['bob', 'looks good from my phone']]);
        assert.ok(report.approval.approvedBy.every((a) => a.fingerprint.startsWith('SHA256:')));
        // The notification: a log line with the page's link when the run started waiting.
        const announced = `approval needed: rotation "${secrets.approve}" (${handle.workflowId}, run ${handle.firstExecutionRunId}) waits for a decision: ${origin}/`;
        for (let i = 0; i < 100 && !log.includes(announced); i++) await new Promise((r) => setTimeout(r, 100));
        assert.ok(log.includes(announced), `no notification line among:\n${log.join('\n')}`);
      },
      { manifestDirs: [dir] },
    );
  });

  it('rejects from the phone: the rotation rolls back', async () => {
    await withWorker(
      async (taskQueue) => {
        const handle = await start(taskQueue, secrets.reject);
        await untilProgress(handle, (p) => p.stage === 'approve');
        const bob = phones.bob.page;
        await bob.goto(`${origin}/`);
        const section = bob.locator(`section.waiting[data-workflow-id="${rotationWorkflowId(secrets.reject)}"]`);
        await section.locator('input.comment').fill('not during the freeze');
        await section.getByRole('button', { name: 'Reject' }).tap();
        await section.locator('.status.done').waitFor();
        assert.match((await section.locator('.status').textContent())!, /rejected by bob: the rotation rolls back/);
        const report: RotationReport = await handle.result();
        assert.equal(report.outcome, 'rolled-back');
        assert.equal(report.failure?.message, 'rejected by bob: not during the freeze');
      },
      { manifestDirs: [dir] },
    );
  });

  it('an assertion made for one run is refused by another run, sent straight to the decide update', async () => {
    await withWorker(
      async (taskQueue) => {
        // Two runs waiting: the page's run (approve-secret's second rotation) and the target.
        const mine = await start(taskQueue, secrets.approve);
        const target = await start(taskQueue, secrets.other);
        await Promise.all([untilProgress(mine, (p) => p.stage === 'approve'), untilProgress(target, (p) => p.stage === 'approve')]);

        // alice signs on the page for `mine`; the decision is caught on its way to the server.
        const alice = phones.alice.page;
        let captured: SignedDocument | undefined;
        await alice.route(`${origin}/api/decide`, async (route) => {
          captured = route.request().postDataJSON() as SignedDocument;
          await route.fulfill({ status: 409, contentType: 'application/json', body: JSON.stringify({ error: 'held back by the test' }) });
        });
        await alice.goto(`${origin}/`);
        const section = alice.locator(`section.waiting[data-workflow-id="${rotationWorkflowId(secrets.approve)}"]`);
        await section.getByRole('button', { name: 'Approve' }).tap();
        await section.locator('.status.refused').waitFor();
        await alice.unroute(`${origin}/api/decide`);
        assert.ok(captured?.passkey, 'the page sent a passkey assertion');
        const signed = { document: captured.document, passkey: captured.passkey };

        const decide = (handle: WorkflowHandle, s: unknown) => handle.executeUpdate(decideUpdate, { args: [s as SignedDocument] });
        // The whole decision, sent to the other run: bound to another run.
        assert.match(await refusal(decide(target, signed)), /signed for workflowId .*, but this is/);
        // The other run's own document, with the assertion made for the first: another challenge.
        const progress = await target.query(progressQuery);
        const theirs = documentText({
          ...(JSON.parse(signed.document) as DecisionDocument),
          workflowId: target.workflowId,
          runId: (await target.describe()).runId,
          secret: secrets.other,
          pendingVersionId: progress.versions.pending!,
          specHash: progress.specHash!,
        });
        assert.match(await refusal(decide(target, { document: theirs, passkey: signed.passkey })), /made for another document/);
        assert.equal((await target.query(progressQuery)).approval.approvedBy.length, 0);
        // And it was a real assertion: the run it was made for takes it.
        assert.equal((await decide(mine, signed)).approver, 'alice');
        await mine.cancel();
        await target.cancel();
        await Promise.allSettled([mine.result(), target.result()]);
      },
      { manifestDirs: [dir] },
    );
  });

  it('refuses what another site or a script could send: wrong Origin, no page token, another Host', async () => {
    const page = phones.bob.page;
    const response = (await page.goto(`${origin}/`))!;
    // No framing (clickjacking a tap on Approve), no inline script, no referrer carrying an enrolment link.
    const headers = response.headers();
    assert.match(headers['content-security-policy'], /script-src 'self'; .*frame-ancestors 'none'/);
    assert.doesNotMatch(headers['content-security-policy'], /unsafe-inline/);
    assert.equal(headers['x-frame-options'], 'DENY');
    assert.equal(headers['referrer-policy'], 'no-referrer');
    const csrf = await page.locator('meta[name=csrf]').getAttribute('content');
    const body = (extra: object) => JSON.stringify({ workflowId: rotationWorkflowId(secrets.other), runId: 'x', decision: 'approve', ...extra });
    const json = { 'content-type': 'application/json', host: `localhost:${port}` };
    assert.equal((await post(port, '/api/challenge', { ...json, origin: 'https://evil.example' }, body({ csrf }))).status, 403);
    assert.equal((await post(port, '/api/challenge', json, body({ csrf }))).status, 403, 'no Origin header');
    assert.equal((await post(port, '/api/challenge', { ...json, origin }, body({}))).status, 403, 'no page token');
    assert.equal((await post(port, '/api/challenge', { ...json, origin }, body({ csrf: 'made-up' }))).status, 403, 'a made-up page token');
    assert.equal((await post(port, '/api/challenge', { ...json, origin, 'content-type': 'text/plain' }, body({ csrf }))).status, 415);
    assert.equal((await post(port, '/api/challenge', { ...json, origin, host: `rebound.example:${port}` }, body({ csrf }))).status, 421, 'DNS rebinding');
    // With all of it, the request reaches the run (which is not waiting any more: nothing to sign).
    assert.notEqual((await post(port, '/api/challenge', { ...json, origin }, body({ csrf }))).status, 403);
    // A body is read up to 64 KiB, no further.
    assert.equal((await post(port, '/api/decide', { ...json, origin }, JSON.stringify({ csrf, document: 'x'.repeat(70_000) }))).status, 413);
    // The server relays decide updates only to runs it offers, with the binding it offers: not to any workflow a caller names.
    const finished = await (await temporalClient()).workflow.getHandle(rotationWorkflowId(secrets.reject)).describe();
    for (const [workflowId, runId] of [[finished.workflowId, finished.runId], ['fleet/nightly', 'some-run']]) {
      const document = JSON.stringify({ kind: 'rekey.dev/decision', workflowId, runId, decision: 'approve' });
      const relayed = await post(port, '/api/decide', { ...json, origin }, JSON.stringify({ csrf, document, passkey: { credentialId: 'AAAA' } }));
      assert.equal(relayed.status, 409, relayed.body);
      assert.match(JSON.parse(relayed.body).error, /not offered for a decision here/);
    }
  });
});
