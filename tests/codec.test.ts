import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { chmod, chown, readFile, symlink, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { createCodecServer, MAX_BODY_BYTES, SESSION_MS, type CodecServerOptions } from '../cli/commands/codec-server';
import { AesGcmCodec, ENCODING, KEY_ID, LEGACY_ENCODING, loadKeyring, type Keyring } from '../lib/codec';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { databaseFixture, manifests, postgresSpec, stack, tempDir, temporalClient, withWorker } from './helpers';

const keyring = (active: string, ...ids: string[]): Keyring => ({ activeId: active, keys: new Map(ids.map((id) => [id, keys[id]])) });
const keys: Record<string, Buffer> = { k1: randomBytes(32), k2: randomBytes(32) };
const text = (b?: Uint8Array | null) => Buffer.from(b ?? new Uint8Array()).toString('utf8');
const ROOT = join(__dirname, '..');

/** A payload as rekey sealed it before the key id and encoding were authenticated. */
function legacySeal(id: string, payload: Payload): Payload {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keys[id], iv);
  const plain = temporal.api.common.v1.Payload.encode(payload).finish();
  return { metadata: { encoding: Buffer.from(LEGACY_ENCODING), [KEY_ID]: Buffer.from(id) }, data: Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]) };
}

/** The payload as the remote codec protocol carries it: bytes as base64. */
const asJson = (p: Payload) => ({
  metadata: Object.fromEntries(Object.entries(p.metadata!).map(([k, v]) => [k, Buffer.from(v!).toString('base64')])),
  data: Buffer.from(p.data!).toString('base64'),
});

const rekey = (...args: string[]) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, NODE_NO_WARNINGS: '1' } }).then(
    (r) => ({ code: 0, out: r.stdout, errOut: r.stderr }),
    (e) => ({ code: e.code as number, out: e.stdout as string, errOut: e.stderr as string }),
  );

/** Every payload object anywhere in a history (they have `data` and `metadata`). */
function payloadsIn(value: unknown, out: Payload[] = [], seen = new Set<unknown>()): Payload[] {
  if (!value || typeof value !== 'object' || seen.has(value) || value instanceof Uint8Array) return out;
  seen.add(value);
  const v = value as Record<string, unknown>;
  if (v.metadata && typeof v.metadata === 'object' && 'data' in v && (v.metadata as Record<string, unknown>).encoding) out.push(v as Payload);
  for (const child of Object.values(v)) payloadsIn(child, out, seen);
  return out;
}

describe('payload encryption', () => {
  it('raw history holds only encrypted payloads, failure messages included; the codec decodes them', async () => {
    const fx = await databaseFixture('alternating-users');
    const dir = await tempDir();
    const spec = postgresSpec(fx, 'alternating-users', {
      consumers: [{ type: 'command', name: 'broken', file: join(dir, 'f.json'), health: 'exit 1' }],
      policy: { overlap: '0s', timeouts: { verify: '1s' } },
    });
    const trusted = await manifests({ [fx.id]: spec });
    const report: RotationReport = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id, { reason: 'codec' })] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report.outcome, 'rolled-back');

    const plain = new Client({ connection: await Connection.connect({ address: stack.temporalAddress }) });
    const history = await plain.workflow.getHandle(rotationWorkflowId(fx.id)).fetchHistory();
    const payloads = payloadsIn(history.events);
    const sealed = payloads.filter((p) => text(p.metadata!.encoding) === ENCODING);
    const open = payloads.filter((p) => text(p.metadata!.encoding) !== ENCODING);
    assert.ok(sealed.length > 10, `${sealed.length} encrypted payloads`);
    const failures = history.events!.filter((e) => e.activityTaskFailedEventAttributes);
    assert.ok(failures.length > 0);
    for (const e of failures) {
      const failure = e.activityTaskFailedEventAttributes!.failure!;
      assert.equal(failure.message, 'Encoded failure', 'failure messages are inside the encrypted payload');
      assert.equal(text(failure.encodedAttributes!.metadata!.encoding), ENCODING);
    }
    // The only plain payloads are search attribute values (secret name, stage, outcome, audit
    // trail), which Temporal must be able to index; they are names, never values.
    const indexable = [fx.id, 'generate', 'prepare', 'deploy', 'verify', 'rollback', 'done', 'rolled-back', report.auditHead?.trail];
    // Markers carry the SDK's own bookkeeping in the clear: a local activity's (which activity,
    // which attempt, when) and a patch's (its name); never an argument or a result.
    const LOCAL_ACTIVITY_FIELDS = ['seq', 'attempt', 'activity_id', 'activity_type', 'complete_time', 'backoff', 'original_schedule_time'];
    const localActivity = (v: object) => Object.keys(v).every((k) => LOCAL_ACTIVITY_FIELDS.includes(k)) && ['resolveRotation', 'recordAuditEvent'].includes((v as { activity_type?: string }).activity_type ?? '');
    // A patch marker (workflow versioning) names the change: {"id": "rekey-notify", "deprecated": false}.
    const patchMarker = (v: object) => Object.keys(v).every((k) => k === 'id' || k === 'deprecated') && /^rekey-[a-z-]+$/.test(String((v as { id?: unknown }).id));
    // ...and the TemporalChangeVersion search attribute lists the patches: ["rekey-notify"].
    const patchList = (v: unknown) => Array.isArray(v) && v.every((id) => /^rekey-[a-z-]+$/.test(String(id)));
    const bookkeeping = (v: unknown) => patchList(v) || (!!v && typeof v === 'object' && (localActivity(v) || patchMarker(v)));
    let markers = 0;
    for (const p of open) {
      const value = defaultPayloadConverter.fromPayload(p);
      if (bookkeeping(value)) markers++;
      else assert.ok(indexable.includes(value as string), `unexpected plain payload ${text(p.data)}`);
    }
    assert.ok(markers > 0, 'the local activities were seen');

    const decoded: RotationReport = await (await temporalClient()).workflow.getHandle(rotationWorkflowId(fx.id)).result();
    assert.equal(decoded.reason, 'codec', 'a client with the codec reads the same history');
  });

  it('after a new codec key is added, old payloads still decode and new ones use the new key', async () => {
    const original = await new AesGcmCodec(keyring('k1', 'k1')).encode([defaultPayloadConverter.toPayload({ secret: 'orders-db' })]);
    const rotated = new AesGcmCodec(keyring('k2', 'k1', 'k2'));
    assert.deepEqual(defaultPayloadConverter.fromPayload((await rotated.decode(original))[0]), { secret: 'orders-db' });
    const fresh = await rotated.encode([defaultPayloadConverter.toPayload('x')]);
    assert.equal(text(fresh[0].metadata![KEY_ID]), 'k2');
    await assert.rejects(new AesGcmCodec(keyring('k1', 'k1')).decode(fresh), /codec key "k2", which this keyring does not hold/);
  });

  it('payloads sealed before the key id was authenticated (binary/encrypted) still decode; new ones are sealed as binary/encrypted-v2', async () => {
    const codec = new AesGcmCodec(keyring('k2', 'k1', 'k2'));
    const old = legacySeal('k1', defaultPayloadConverter.toPayload({ secret: 'orders-db' }));
    assert.deepEqual(defaultPayloadConverter.fromPayload((await codec.decode([old]))[0]), { secret: 'orders-db' });
    const [fresh] = await codec.encode([defaultPayloadConverter.toPayload('x')]);
    assert.equal(text(fresh.metadata!.encoding), 'binary/encrypted-v2');
  });

  it('a payload whose key id was swapped (even to a twin of the same key) or whose encoding was downgraded is refused, not decoded', async () => {
    const twins = new AesGcmCodec({ activeId: 'k1', keys: new Map([['k1', keys.k1], ['twin', keys.k1]]) });
    const [sealed] = await twins.encode([defaultPayloadConverter.toPayload({ secret: 'orders-db' })]);
    const swapped = { ...sealed, metadata: { ...sealed.metadata, [KEY_ID]: Buffer.from('twin') } };
    await assert.rejects(twins.decode([swapped]), /sealed as binary\/encrypted-v2 with codec key "twin" does not authenticate: its data, key id or encoding was altered/);
    const downgraded = { ...sealed, metadata: { ...sealed.metadata, encoding: Buffer.from(LEGACY_ENCODING) } };
    await assert.rejects(twins.decode([downgraded]), /does not authenticate/);
    const truncated = { ...sealed, data: Buffer.from(sealed.data!).subarray(0, 10) };
    await assert.rejects(twins.decode([truncated]), /does not authenticate/);
  });

  it('the codec server decodes for a caller with the token, refuses others, answers the UI preflight, and logs no payload', async () => {
    const codec = new AesGcmCodec(keyring('k1', 'k1'));
    const token = randomBytes(16).toString('hex');
    const lines: string[] = [];
    const origin = 'http://127.0.0.1:8233';
    const server = createCodecServer({ codec, token, origins: [origin], log: (l) => lines.push(l) });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const [sealed] = await codec.encode([defaultPayloadConverter.toPayload({ note: 'visible-only-decoded' })]);
      const body = JSON.stringify({
        payloads: [{ metadata: Object.fromEntries(Object.entries(sealed.metadata!).map(([k, v]) => [k, Buffer.from(v!).toString('base64')])), data: Buffer.from(sealed.data!).toString('base64') }],
      });
      const post = (headers: Record<string, string>) => fetch(`${base}/decode`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

      assert.equal((await post({})).status, 401);
      assert.equal((await post({ authorization: 'Bearer wrong' })).status, 401);
      const ok = await post({ authorization: `Bearer ${token}` });
      assert.equal(ok.status, 200);
      const [payload] = ((await ok.json()) as { payloads: { data: string }[] }).payloads;
      assert.deepEqual(JSON.parse(Buffer.from(payload.data, 'base64').toString()), { note: 'visible-only-decoded' });

      const preflight = await fetch(`${base}/decode`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      assert.equal(preflight.headers.get('access-control-allow-origin'), origin);
      assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /authorization/);
      const stranger = await fetch(`${base}/decode`, { method: 'OPTIONS', headers: { origin: 'http://evil.example' } });
      assert.equal(stranger.headers.get('access-control-allow-origin'), null);

      // A browser logs in once; its cookie then stands in for the bearer token.
      const login = await fetch(`${base}/login?token=${token}`);
      const cookie = login.headers.get('set-cookie')!.split(';')[0];
      assert.equal((await post({ cookie })).status, 200);
      assert.equal((await fetch(`${base}/login?token=nope`)).status, 401);

      assert.ok(lines.length >= 5);
      assert.ok(!lines.join('\n').includes('visible-only-decoded'));
      assert.ok(!lines.join('\n').includes(token));
    } finally {
      server.close();
    }
  });
});

describe('the codec keyring file', () => {
  it('a keyring others may read is refused, naming the file, its mode and the fix; codec-key new leaves it alone', async () => {
    const path = join(await tempDir(), 'keyring.json');
    const content = JSON.stringify({ active: 'k1', keys: { k1: keys.k1.toString('base64') } });
    await writeFile(path, content);
    await chmod(path, 0o644);
    assert.throws(() => loadKeyring(path), new RegExp(`the codec keyring ${path} has mode 0644: group or others may access it; run: chmod 600 ${path}`));
    const refused = await rekey('codec-key', 'new', '--keyring', path);
    assert.equal(refused.code, 2);
    assert.match(refused.errOut, /has mode 0644.*chmod 600/);
    assert.ok(!refused.errOut.includes(keys.k1.toString('base64')));
    assert.equal(await readFile(path, 'utf8'), content);
    await chmod(path, 0o600);
    assert.equal(loadKeyring(path)!.activeId, 'k1');
    // Owned by someone else, or reached through a symlink (which could be pointed at any file): refused.
    await chown(path, 65534, 65534);
    assert.throws(() => loadKeyring(path), /is owned by another user \(uid 65534\)/);
    await chown(path, process.getuid!(), process.getgid!());
    const link = join(dirname(path), 'link.json');
    await symlink(path, link);
    assert.throws(() => loadKeyring(link), /cannot read the codec keyring .*link\.json/);
  });

  it('codec-key new replaces the keyring whole, mode 0600: a reader of the old file still sees it complete, and no temporary file is left', async () => {
    const dir = await tempDir();
    const path = join(dir, 'keyring.json');
    assert.equal((await rekey('codec-key', 'new', '--keyring', path, '--id', 'first')).code, 0);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const reader = openSync(path, 'r');
    try {
      const added = await rekey('codec-key', 'new', '--keyring', path, '--id', 'second');
      assert.equal(added.code, 0, added.errOut);
      assert.deepEqual(Object.keys(JSON.parse(readFileSync(reader, 'utf8')).keys), ['first'], 'the old file was never rewritten in place');
    } finally {
      closeSync(reader);
    }
    assert.deepEqual([...loadKeyring(path)!.keys.keys()], ['first', 'second']);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir), ['keyring.json']);
  });

  it('codec-key new with an id the keyring already has, or one that is not a name, changes nothing', async () => {
    const path = join(await tempDir(), 'keyring.json');
    await rekey('codec-key', 'new', '--keyring', path, '--id', 'k1');
    const before = await readFile(path, 'utf8');
    const again = await rekey('codec-key', 'new', '--keyring', path, '--id', 'k1');
    assert.equal(again.code, 2);
    assert.match(again.errOut, /already has a key "k1"/);
    const empty = await rekey('codec-key', 'new', '--keyring', path, '--id', '');
    assert.equal(empty.code, 2);
    assert.match(empty.errOut, /--id "": use 1 to 64 letters/);
    assert.equal(await readFile(path, 'utf8'), before);
  });
});

describe('the codec server against hostile requests', () => {
  const servers: Server[] = [];
  afterEach(() => servers.splice(0).forEach((s) => s.close()));

  /** A codec server on a random port, and a sealed payload only a caller it trusts can read. */
  async function codecServer(options: Partial<CodecServerOptions> = {}) {
    const codec = new AesGcmCodec(keyring('k1', 'k1'));
    const token = randomBytes(16).toString('hex');
    const lines: string[] = [];
    const server = createCodecServer({ codec, token, origins: [], log: (l) => lines.push(l), ...options });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const [sealed] = await codec.encode([defaultPayloadConverter.toPayload({ note: 'visible-only-decoded' })]);
    const body = JSON.stringify({ payloads: [asJson(sealed)] });
    const decode = (headers: Record<string, string>, content: string | ReadableStream = body) =>
      fetch(`http://127.0.0.1:${port}/decode`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: content, duplex: 'half' } as RequestInit);
    return { port, token, lines, sealed, decode, bearer: { authorization: `Bearer ${token}` } };
  }

  /** Send bytes as they are, with no client in between to tidy them up; the status line that comes back. */
  const raw = (port: number, request: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => socket.write(request));
      let answer = '';
      socket.on('data', (d) => (answer += d));
      socket.on('end', () => resolve(answer.split('\r\n')[0]));
      socket.on('error', reject);
    });

  it('a malformed URL (GET http://[) or a badly encoded cookie, sent without any token, gets 400 and the server keeps serving', async () => {
    const { port, decode, bearer, lines } = await codecServer();
    assert.equal(await raw(port, 'GET http://[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 'HTTP/1.1 400 Bad Request');
    assert.equal(await raw(port, 'POST /decode HTTP/1.1\r\nHost: x\r\nCookie: rekey_codec=%\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'), 'HTTP/1.1 400 Bad Request');
    assert.equal((await decode(bearer)).status, 200);
    assert.deepEqual(lines.slice(0, 2), ['GET (malformed URL) 400', 'POST /decode 400']);
  });

  it('a body over 4 MiB gets 413 and nothing in it is decoded, whether its size is announced or streamed', async () => {
    const { decode, bearer, sealed, lines } = await codecServer();
    // A payload the server would decode, padded past the limit with metadata it ignores.
    const padded = asJson(sealed);
    padded.metadata.padding = 'A'.repeat(MAX_BODY_BYTES);
    const oversized = JSON.stringify({ payloads: [padded] });
    const announced = await decode(bearer, oversized);
    assert.equal(announced.status, 413);
    assert.deepEqual(await announced.json(), { error: `a request body may hold at most ${MAX_BODY_BYTES} bytes` });
    const bytes = new TextEncoder().encode(oversized);
    const streamed = new ReadableStream({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 65536) controller.enqueue(bytes.subarray(i, i + 65536));
        controller.close();
      },
    });
    const chunked = await decode(bearer, streamed);
    assert.equal(chunked.status, 413);
    assert.ok(!(await chunked.text()).includes('payloads'));
    assert.equal((await decode(bearer)).status, 200);
    assert.deepEqual(lines, ['POST /decode 413', 'POST /decode 413', 'POST /decode 200']);
  });

  it('a request without payloads ({}, how the temporal CLI sends an empty list) gets an empty list; a body of another shape gets 400', async () => {
    const { decode, bearer } = await codecServer();
    const answer = await decode(bearer, '{}');
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { payloads: [] });
    for (const bad of ['{"payloads": "all"}', '{"payloads": [null]}', 'null', '[]']) assert.equal((await decode(bearer, bad)).status, 400, bad);
  });

  it('payload fields that are not base64 strings get 400 (an object with a huge "length" would make Buffer.from allocate it)', async () => {
    const { decode, bearer } = await codecServer();
    for (const bad of ['{"payloads": [{"data": {"length": 300000000}}]}', '{"payloads": [{"metadata": {"encoding": {"length": 300000000}}, "data": ""}]}', '{"payloads": [{"data": 7}]}']) {
      const answer = await decode(bearer, bad);
      assert.equal(answer.status, 400, bad);
      assert.match(((await answer.json()) as { error: string }).error, /must be base64 strings/);
    }
  });

  it('the login cookie is a random session that ends after 12 hours, never the token: a cookie holding the token itself is refused', async () => {
    let clock = Date.now();
    const { port, token, decode, lines } = await codecServer({ now: () => clock });
    const login = await fetch(`http://127.0.0.1:${port}/login?token=${token}`);
    assert.equal(login.status, 200);
    const setCookie = login.headers.get('set-cookie')!;
    assert.match(setCookie, /^rekey_codec=[\w-]{43}; HttpOnly; SameSite=Lax; Path=\/; Max-Age=43200$/);
    const session = setCookie.split(';')[0];
    assert.ok(!setCookie.includes(token));
    assert.equal((await decode({ cookie: session })).status, 200);

    assert.equal((await decode({ cookie: `rekey_codec=${token}` })).status, 401, 'the token is not a session');
    assert.equal((await decode({ cookie: `rekey_codec=${randomBytes(32).toString('base64url')}` })).status, 401, 'nor is a guess');
    clock += SESSION_MS;
    assert.equal((await decode({ cookie: session })).status, 401, 'the session has ended');
    assert.ok(!lines.join('\n').includes(token) && !lines.join('\n').includes(session.split('=')[1]));
  });
});
