import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { createCodecServer } from '../cli/commands/codec-server';
import { AesGcmCodec, ENCODING, KEY_ID, type Keyring } from '../lib/codec';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { databaseFixture, manifests, postgresSpec, stack, tempDir, temporalClient, withWorker } from './helpers';

const keyring = (active: string, ...ids: string[]): Keyring => ({ activeId: active, keys: new Map(ids.map((id) => [id, keys[id]])) });
const keys: Record<string, Buffer> = { k1: randomBytes(32), k2: randomBytes(32) };
const text = (b?: Uint8Array | null) => Buffer.from(b ?? new Uint8Array()).toString('utf8');

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
    for (const p of open) assert.ok(indexable.includes(defaultPayloadConverter.fromPayload(p)), `unexpected plain payload ${text(p.data)}`);

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
