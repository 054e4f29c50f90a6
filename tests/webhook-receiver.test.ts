// The example webhook receiver (examples/webhook-receiver): it must accept a signature by either
// key while a rotation overlaps them, drop the old key the moment rekey replaces the key file,
// and never write a key or a signature to its log. The receiver runs as its own process, as it
// would beside a service; no Temporal or other stack is needed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signatureHeader, verifySignature } from '../examples/webhook-receiver/verify';

const ROOT = join(__dirname, '..');
const RECEIVER = join(ROOT, 'examples/webhook-receiver/receiver.ts');

const CURRENT = 'current-key-8f3a1c0d9e';
const PREVIOUS = 'previous-key-27b4e6a1f5';
const STRANGER = 'stranger-key-c0ffee1234';

interface Receiver {
  base: string;
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr. */
  output: () => string;
  exited: Promise<number | null>;
}

async function startReceiver(keysPath: string, extra: string[] = []): Promise<Receiver> {
  const child = spawn(process.execPath, ['--import', 'tsx', RECEIVER, '--port', '0', '--keys', keysPath, ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const base = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`receiver did not start:\n${output}`)), 20_000);
    const check = () => {
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`receiver exited (${code}) before listening:\n${output}`));
    });
  });
  return { base, child, output: () => output, exited };
}

async function stopReceiver(receiver: Receiver): Promise<number | null> {
  if (receiver.child.exitCode === null && receiver.child.signalCode === null) receiver.child.kill('SIGTERM');
  return receiver.exited;
}

/** Write the key file as rekey's command consumer does: a private temp file renamed over the old one. */
async function writeKeys(path: string, content: unknown): Promise<void> {
  const temp = `${path}.tmp-${Math.random().toString(36).slice(2)}`;
  await writeFile(temp, typeof content === 'string' ? content : `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  await rename(temp, path);
}

async function post(base: string, body: Buffer, headers: Record<string, string>): Promise<number> {
  const res = await fetch(`${base}/hooks/github`, { method: 'POST', body, headers: { 'x-github-event': 'push', ...headers } });
  await res.arrayBuffer();
  return res.status;
}

const signedBy = (key: string, body: Buffer) => ({ 'x-hub-signature-256': signatureHeader(body, key) });

/** POST through node:http so the test controls Content-Length and streaming; resolves with the status. */
function rawPost(base: string, headers: Record<string, string | number>, write: (req: import('node:http').ClientRequest) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/`, { method: 'POST', headers }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    // The receiver may close while we still send; the status it answered is what counts.
    req.on('error', (err) => setTimeout(() => reject(err), 500));
    write(req);
  });
}

describe('webhook receiver example', () => {
  let dir: string;
  let keysPath: string;
  let receiver: Receiver | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rekey-webhook-'));
    keysPath = join(dir, 'keys.json');
  });
  afterEach(async () => {
    if (receiver) await stopReceiver(receiver);
    receiver = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts either key while a rotation overlaps them, refuses others, and drops the old key once the file is replaced', async () => {
    await writeKeys(keysPath, { value: CURRENT, rekey_version_id: 'v2', previous: { value: PREVIOUS, rekey_version_id: 'v1' } });
    receiver = await startReceiver(keysPath);
    const body = Buffer.from(JSON.stringify({ ref: 'refs/heads/main', after: 'abc123' }));

    assert.equal(await post(receiver.base, body, signedBy(CURRENT, body)), 204);
    assert.equal(await post(receiver.base, body, signedBy(PREVIOUS, body)), 204);
    assert.equal(await post(receiver.base, body, signedBy(STRANGER, body)), 401);
    assert.equal(await post(receiver.base, body, {}), 400, 'no signature header');
    assert.equal(await post(receiver.base, body, { 'x-hub-signature-256': 'sha256=abc' }), 401, 'a short signature');
    assert.equal(await post(receiver.base, body, { 'x-hub-signature-256': signatureHeader(body, CURRENT).replace('sha256=', 'sha1=') }), 401);
    assert.equal(await post(receiver.base, Buffer.from(`${body} `), signedBy(CURRENT, body)), 401, 'a body other than the one signed');

    let health = await fetch(`${receiver.base}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { versions: ['v2', 'v1'] });

    // The rotation ends: rekey writes the file again with only the new key. The very next request sees it.
    await writeKeys(keysPath, { value: CURRENT, rekey_version_id: 'v2' });
    assert.equal(await post(receiver.base, body, signedBy(PREVIOUS, body)), 401);
    assert.equal(await post(receiver.base, body, signedBy(CURRENT, body)), 204);
    health = await fetch(`${receiver.base}/health`);
    assert.deepEqual(await health.json(), { versions: ['v2'] });

    // And the next rotation begins.
    const NEXT = 'next-key-5d7e9f0a1b';
    await writeKeys(keysPath, { value: NEXT, rekey_version_id: 'v3', previous: { value: CURRENT, rekey_version_id: 'v2' } });
    assert.equal(await post(receiver.base, body, signedBy(NEXT, body)), 204);
    assert.equal(await post(receiver.base, body, signedBy(CURRENT, body)), 204);
    assert.equal(await post(receiver.base, body, signedBy(PREVIOUS, body)), 401);

    const log = receiver.output();
    for (const secret of [CURRENT, PREVIOUS, STRANGER, NEXT]) {
      assert.ok(!log.includes(secret), 'a key appears in the log');
      assert.ok(!log.includes(signatureHeader(body, secret).slice('sha256='.length)), 'a signature appears in the log');
    }
    assert.match(log, /accepted event=push delivery=- key=previous version=v1/);
    assert.equal(await stopReceiver(receiver), 0, 'SIGTERM closes cleanly');
  });

  it('reads the key from the field --field names', async () => {
    await writeKeys(keysPath, { secret: CURRENT, rekey_version_id: 'v7' });
    receiver = await startReceiver(keysPath, ['--field', 'secret']);
    const body = Buffer.from('{}');
    assert.equal(await post(receiver.base, body, signedBy(CURRENT, body)), 204);
    assert.equal(await post(receiver.base, body, signedBy(STRANGER, body)), 401);
  });

  it('fails closed when the key file turns unusable, without quoting it', async () => {
    await writeKeys(keysPath, { value: CURRENT, rekey_version_id: 'v2' });
    receiver = await startReceiver(keysPath);
    const body = Buffer.from('{}');
    // Broken JSON around a key: JSON.parse's own message would quote it.
    await writeKeys(keysPath, `{ "value": "${CURRENT}", oops`);
    assert.equal(await post(receiver.base, body, signedBy(CURRENT, body)), 503);
    assert.equal((await fetch(`${receiver.base}/health`)).status, 503);
    await writeKeys(keysPath, { value: '', rekey_version_id: 'v3' });
    assert.equal(await post(receiver.base, body, signedBy('', body)), 503, 'an empty key is a broken file, not an open door');
    await writeKeys(keysPath, { value: CURRENT, rekey_version_id: 'v4' });
    assert.equal(await post(receiver.base, body, signedBy(CURRENT, body)), 204);
    assert.ok(!receiver.output().includes(CURRENT), 'a key appears in the log');
    assert.match(receiver.output(), /not valid JSON/);
  });

  it('refuses to start without a usable key file', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', RECEIVER, '--port', '0', '--keys', join(dir, 'missing.json')], { cwd: ROOT, stdio: 'ignore' });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 1);
  });

  it('answers 413 to a body over 1 MiB, declared or streamed', async () => {
    await writeKeys(keysPath, { value: CURRENT, rekey_version_id: 'v2' });
    receiver = await startReceiver(keysPath);
    const big = Buffer.alloc(1024 * 1024 + 1, 'a');
    const headers = signedBy(CURRENT, big);
    assert.equal(await rawPost(receiver.base, { ...headers, 'content-length': big.length }, (req) => req.end(big)), 413);
    assert.equal(
      await rawPost(receiver.base, { ...headers, 'transfer-encoding': 'chunked' }, (req) => {
        for (let at = 0; at < big.length; at += 64 * 1024) req.write(big.subarray(at, at + 64 * 1024));
        req.end();
      }),
      413,
    );
    // Exactly the limit is fine.
    const limit = big.subarray(1);
    assert.equal(await post(receiver.base, limit, signedBy(CURRENT, limit)), 204);
  });

  describe('verifySignature', () => {
    const body = Buffer.from('{"zen":"Keep it logically awesome."}');

    it('accepts a signature by any of the keys', () => {
      assert.equal(verifySignature(body, signatureHeader(body, CURRENT), [CURRENT, PREVIOUS]), true);
      assert.equal(verifySignature(body, signatureHeader(body, PREVIOUS), [CURRENT, PREVIOUS]), true);
      assert.equal(verifySignature(body, signatureHeader(body, STRANGER), [CURRENT, PREVIOUS]), false);
      assert.equal(verifySignature(body, signatureHeader(body, CURRENT), []), false);
    });

    it('rejects malformed headers without throwing', () => {
      const good = signatureHeader(body, CURRENT);
      for (const header of [undefined, '', 'sha256=', 'sha256=abcd', `${good}00`, good.slice(0, -1), `${good.slice(0, -1)}z`, good.toUpperCase(), good.replace('sha256', 'sha1'), ` ${good}`, `${good}, ${good}`]) {
        assert.doesNotThrow(() => verifySignature(body, header, [CURRENT]));
        assert.equal(verifySignature(body, header, [CURRENT]), false, JSON.stringify(header));
      }
    });

    it('never accepts an empty key', () => {
      assert.equal(verifySignature(body, signatureHeader(body, ''), ['']), false);
    });
  });
});
