import assert from 'node:assert/strict';
import { createHash, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { auditSignerFrom, nextRecord, verifyTrail, type AuditEvent, type AuditRecord } from '../lib/audit';
import { checkBreakGlass, checkDecision, checkRequest, validApprovals, type RunBinding } from '../lib/authority';
import { ManifestError } from '../lib/manifest';
import { documentText, openSigned, type DecisionDocument, type Person } from '../lib/signed';
import { challengeFor, readRegistration, verifyAssertionWithKey, type PasskeyAssertion } from '../lib/webauthn';
import { manifests } from './helpers';
import { validFor } from './keys';
import { RP_ID, passkeySettings, softPasskey, type SoftPasskey } from './passkeys';

const ORIGIN = 'http://localhost:8390';
const binding: RunBinding = {
  namespace: 'default',
  workflowId: 'rotation/db',
  runId: 'run-1',
  secret: 'db',
  pendingVersionId: 'v-pending',
  specHash: `sha256:${'a'.repeat(64)}`,
};
const decision = (change: Partial<DecisionDocument> = {}): string =>
  documentText({ kind: 'rekey.dev/decision', ...binding, decision: 'approve', ...validFor(3_600_000), ...change });

const trusted = (name: string, key: SoftPasskey, rp = { rpId: RP_ID, origins: [ORIGIN] }): Person => ({ name, keys: [], passkeys: [{ ...key.passkey, ...rp }] });

describe('passkey-signed documents (lib/webauthn)', () => {
  const es = softPasskey('ES256');
  const ed = softPasskey('Ed25519');
  const people = [trusted('alice', es), trusted('bob', ed)];
  const open = (document: string, passkey: unknown, who: Person[] = people) => openSigned<DecisionDocument>({ document, passkey }, 'rekey.dev/decision', who, Date.now());
  const refused = (document: string, passkey: unknown, who?: Person[]) => {
    const opened = open(document, passkey, who);
    assert.equal(opened.ok, false, 'accepted');
    return (opened as { reason: string }).reason;
  };

  it('accepts an ES256 and an Ed25519 assertion over the document, naming the signer by the passkey public key', () => {
    const doc = decision();
    const a = open(doc, es.assert(doc));
    assert.ok(a.ok, JSON.stringify(a));
    assert.equal(a.signer.name, 'alice');
    assert.match(a.signer.key, /^webauthn-es256 /);
    assert.match(a.signer.fingerprint, /^SHA256:/);
    const b = open(doc, ed.assert(doc));
    assert.ok(b.ok, JSON.stringify(b));
    assert.equal(b.signer.name, 'bob');
    assert.match(b.signer.key, /^webauthn-ed25519 /);
  });

  it('refuses an assertion made on another origin, in a cross-origin or embedded frame, or for another relying party', () => {
    const doc = decision();
    assert.match(refused(doc, es.assert(doc, { origin: 'https://evil.example' })), /made on origin "https:\/\/evil.example", which the manifests do not allow/);
    assert.match(refused(doc, es.assert(doc, { origin: 'http://localhost:8391' })), /which the manifests do not allow/);
    assert.match(refused(doc, es.assert(doc, { clientData: { crossOrigin: true } })), /cross-origin frame/);
    assert.match(refused(doc, es.assert(doc, { clientData: { topOrigin: 'https://evil.example' } })), /embedded frame/);
    assert.match(refused(doc, es.assert(doc, { rpId: 'evil.example' })), /another relying party than localhost/);
  });

  it('refuses an assertion without user verification or presence, of the wrong type, or for another document', () => {
    const doc = decision();
    assert.match(refused(doc, es.assert(doc, { flags: 0x01 })), /not verified \(flag UV clear\)/);
    assert.match(refused(doc, es.assert(doc, { flags: 0x04 })), /not present \(flag UP clear\)/);
    assert.match(refused(doc, es.assert(doc, { type: 'webauthn.create' })), /clientData.type is "webauthn.create"/);
    assert.match(refused(doc, es.assert(doc, { flags: 0x45 })), /carries attested credential data/);
    const other = decision({ runId: 'run-2' });
    assert.match(refused(doc, es.assert(other)), /made for another document/);
    // The right challenge on a document edited afterwards.
    const signed = es.assert(doc);
    assert.match(refused(doc.replace('"approve"', '"reject"'), signed), /made for another document/);
  });

  it('refuses a tampered authenticatorData, clientDataJSON or signature (ES256 and Ed25519)', () => {
    const doc = decision();
    for (const key of [es, ed]) {
      const good = key.assert(doc);
      const auth = Buffer.from(good.authenticatorData, 'base64url');
      auth[36] ^= 1; // the signature counter
      assert.match(refused(doc, { ...good, authenticatorData: auth.toString('base64url') }), /signature does not match/);
      const client = JSON.parse(Buffer.from(good.clientDataJSON, 'base64url').toString());
      const edited = Buffer.from(JSON.stringify({ ...client, extra: 1 })).toString('base64url');
      assert.match(refused(doc, { ...good, clientDataJSON: edited }), /signature does not match/);
      const sig = Buffer.from(good.signature, 'base64url');
      sig[sig.length - 1] ^= 1;
      assert.match(refused(doc, { ...good, signature: sig.toString('base64url') }), /signature does not match/);
      // One passkey's assertion presented under another's credential id.
      const other = key === es ? ed : es;
      assert.match(refused(doc, { ...good, credentialId: other.passkey.credentialId }), /signature does not match/);
    }
    // Trailing bytes after the fixed authenticatorData without the ED flag.
    const good = es.assert(doc);
    const longer = Buffer.concat([Buffer.from(good.authenticatorData, 'base64url'), Buffer.of(0)]).toString('base64url');
    assert.match(refused(doc, { ...good, authenticatorData: longer }), /trailing bytes/);
    // A malformed DER signature (a raw r||s) is refused, not half-parsed.
    assert.match(refused(doc, { ...good, signature: randomBytes(64).toString('base64url') }), /signature does not match/);
  });

  it('refuses unknown credentials, one credential listed for two people, and malformed or oversized fields', () => {
    const doc = decision();
    const stranger = softPasskey('ES256');
    assert.match(refused(doc, stranger.assert(doc)), /passkey that is not allowed here/);
    const twice = [trusted('alice', es), trusted('mallory', es)];
    assert.match(refused(doc, es.assert(doc), twice), /listed more than once/);
    // The same person reached twice (Settings people and a secret's approvers, as vouchFor sees them) is one passkey.
    assert.ok(open(doc, es.assert(doc), [people[0], people[0], people[1]]).ok);
    const good = es.assert(doc);
    assert.match(refused(doc, { ...good, clientDataJSON: 'A'.repeat(5000) }), /passkey.clientDataJSON must be a base64url string of at most/);
    assert.match(refused(doc, { ...good, signature: `${good.signature}=` }), /passkey.signature is not base64url/);
    assert.match(refused(doc, { ...good, authenticatorData: 42 }), /passkey.authenticatorData must be a base64url string/);
    assert.match(refused(doc, { ...good, userHandle: 'x' }), /unknown field "userHandle"/);
    assert.match(refused(doc, 'not an object'), /passkey must be/);
    // Non-canonical base64url: the same bytes written two ways.
    const last = good.credentialId.at(-1)!;
    const sibling = `${good.credentialId.slice(0, -1)}${'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.indexOf(last) ^ 1]}`;
    assert.match(refused(doc, { ...good, credentialId: sibling }), /not base64url|not allowed here/);
    assert.match(openSigned({ document: doc, signature: 'x', passkey: good }, 'rekey.dev/decision', people, Date.now()).ok ? '' : 'refused', /refused/);
  });

  it('applies the same rules as SSH decisions: binding to the run, expiry, two-person rule, one passkey counts once', () => {
    const doc = decision({ runId: 'run-2' });
    const other = checkDecision({ document: doc, passkey: es.assert(doc) }, people, binding, undefined, { now: Date.now() });
    assert.equal(other.ok, false);
    assert.match((other as { reason: string }).reason, /signed for runId "run-2"/);
    const old = decision(validFor(60_000, Date.now() - 3_600_000));
    assert.match((checkDecision({ document: old, passkey: es.assert(old) }, people, binding, undefined, { now: Date.now() }) as { reason: string }).reason, /expired at/);
    const mine = decision();
    const requester = { name: 'alice', fingerprint: 'SHA256:x', key: 'ssh-ed25519 AAAA' };
    assert.match((checkDecision({ document: mine, passkey: es.assert(mine) }, people, binding, requester, { now: Date.now() }) as { reason: string }).reason, /alice requested this rotation/);
    // The same passkey twice (two assertions over two documents) is one approval.
    const again = decision({ comment: 'again' });
    const { approvedBy } = validApprovals([{ document: mine, passkey: es.assert(mine) }, { document: again, passkey: es.assert(again) }], people, binding, undefined);
    assert.deepEqual(approvedBy.map((s) => s.name), ['alice']);
    // What promote keeps of an approval (and writes to the trail) is the signed part only, not what a sender added.
    const padded = { document: mine, passkey: { ...es.assert(mine) }, note: 'x'.repeat(10_000) };
    const { accepted } = validApprovals([padded], people, binding, undefined);
    assert.deepEqual(Object.keys(accepted[0].signed).sort(), ['document', 'passkey']);
  });

  it('a passkey decides and nothing else: a break-glass authorisation or a request it signed is refused (the prompt shows neither)', () => {
    const glass = documentText({ kind: 'rekey.dev/break-glass', namespace: 'default', secret: 'db', revokeFirst: true, reason: 'leaked', ...validFor(600_000) });
    const verdict = checkBreakGlass({ document: glass, passkey: es.assert(glass) }, people, { namespace: 'default', secret: 'db', specHash: binding.specHash }, { now: Date.now() });
    assert.match((verdict as { reason: string }).reason, /a passkey signs decisions only; sign a break-glass document with your SSH key/);
    const request = documentText({ kind: 'rekey.dev/request', namespace: 'default', workflowId: 'rotation/db', secret: 'db', ...validFor(600_000) });
    const asked = checkRequest({ document: request, passkey: es.assert(request) }, people, { namespace: 'default', workflowId: 'rotation/db', secret: 'db', specHash: binding.specHash }, { now: Date.now() });
    assert.match((asked as { reason: string }).reason, /a passkey signs decisions only/);
  });

  it('one key is one signer: the same passkey under two names counts once, and the manifests refuse it', async () => {
    const doc = decision();
    const twice = [trusted('alice', es), { ...trusted('mallory', es), passkeys: [{ ...trusted('mallory', es).passkeys![0], credentialId: 'bWFsbG9yeS1jcmVk' }] }];
    const assertion = es.assert(doc);
    const { approvedBy } = validApprovals([{ document: doc, passkey: assertion }, { document: doc, passkey: { ...assertion, credentialId: 'bWFsbG9yeS1jcmVk' } }], twice, binding, undefined);
    assert.equal(approvedBy.length, 1, 'one signature counted for two people');
    const spec = { store: { type: 'aws-secrets-manager', secretId: 'rekey-test/pk2' }, generator: { type: 'random-bytes' } };
    await assert.rejects(
      manifests({ pk2: spec }, passkeySettings(ORIGIN, [{ name: 'alice', passkeys: [es.passkey] }, { name: 'mallory', passkeys: [{ ...es.passkey, credentialId: 'bWFsbG9yeS1jcmVk' }] }])),
      /spec\.people\[1\]\.passkeys\[0\]\.publicKey: is also alice's key: a key belongs to one person/,
    );
  });

  it('re-verifies a kept assertion against the key alone (the audit trail), and finds an edit', () => {
    const doc = decision();
    const a = open(doc, es.assert(doc));
    assert.ok(a.ok);
    const assertion = es.assert(doc);
    assert.equal(verifyAssertionWithKey(doc, assertion, a.signer.key), undefined);
    assert.match(verifyAssertionWithKey(doc.replace('approve', 'reject'), assertion, a.signer.key) ?? '', /another document/);
    assert.match(verifyAssertionWithKey(doc, assertion, open(doc, ed.assert(doc)).ok ? (open(doc, ed.assert(doc)) as { signer: { key: string } }).signer.key : '') ?? '', /signature does not match/);
  });
});

describe('passkey decisions in the audit trail (rekey audit verify)', () => {
  const es = softPasskey('ES256');
  const alice = trusted('alice', es);
  const { privateKey } = generateKeyPairSync('ed25519');
  const signer = auditSignerFrom(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'test');
  const publicKeys = [createPublicKey(privateKey)];
  const trailWith = (signed: AuditEvent['signed']): AuditRecord[] => {
    const event: AuditEvent = { id: 'rotation/db/run-1#1', rotationId: 'rotation/db/run-1', secret: 'db', event: 'approved', actor: 'alice', at: new Date(0).toISOString(), signed };
    return [nextRecord('t', event, undefined, signer)];
  };
  const doc = decision();
  const opened = openSigned<DecisionDocument>({ document: doc, passkey: es.assert(doc) }, 'rekey.dev/decision', [alice], Date.now());
  assert.ok(opened.ok);
  const evidence = { document: doc, passkey: es.assert(doc), signer: 'alice', fingerprint: opened.signer.fingerprint, key: opened.signer.key };

  it('verifies a kept passkey decision with the key alone, and with the manifests\' people', () => {
    assert.deepEqual(verifyTrail('t', trailWith(evidence), { publicKeys }), { ok: true, records: 1, heads: 0 });
    assert.deepEqual(verifyTrail('t', trailWith(evidence), { publicKeys, people: [alice] }), { ok: true, records: 1, heads: 0 });
  });

  it('finds a kept passkey decision that does not hold: edited, another key, not the person\'s, another origin', () => {
    const problem = (signed: AuditEvent['signed'], people?: Person[]) => {
      const verdict = verifyTrail('t', trailWith(signed), { publicKeys, people });
      assert.equal(verdict.ok, false, 'accepted');
      return (verdict as { problem: string }).problem;
    };
    assert.match(problem({ ...evidence, document: doc.replace('approve', 'reject') }), /passkey-signed document that does not verify .*another document/);
    const other = softPasskey('ES256');
    const otherKey = (openSigned({ document: doc, passkey: other.assert(doc) }, 'rekey.dev/decision', [trusted('x', other)], Date.now()) as { signer: { key: string } }).signer.key;
    assert.match(problem({ ...evidence, key: otherKey }), /signature does not match/);
    assert.match(problem({ ...evidence, passkey: undefined }), /without its assertion/);
    assert.match(problem(evidence, [trusted('alice', other)]), /which the manifests given do not list for alice/);
    const elsewhere = { ...evidence, passkey: es.assert(doc, { origin: 'https://evil.example' }) };
    assert.equal(verifyTrail('t', trailWith(elsewhere), { publicKeys }).ok, true, 'without manifests the origin is unknown');
    assert.match(problem(elsewhere, [alice]), /do not list for alice .*origin "https:\/\/evil.example"/);
  });
});

describe('passkeys in manifests', () => {
  it('reads passkeys bound to the Settings relying party, and refuses what cannot be trusted', async () => {
    const alice = softPasskey('ES256');
    const spec = { store: { type: 'aws-secrets-manager', secretId: 'rekey-test/pk' }, generator: { type: 'random-bytes' }, policy: { approval: { required: true, approvers: ['alice'] } } };
    const ok = await manifests({ pk: spec }, passkeySettings(ORIGIN, [{ name: 'alice', passkeys: [alice.passkey] }]));
    assert.deepEqual(ok.set.secrets.get('pk')!.approvers[0].passkeys, [{ ...alice.passkey, rpId: RP_ID, origins: [ORIGIN] }]);

    const problems = async (...settings: object[]) =>
      manifests({ pk: spec }, ...settings).then(
        () => assert.fail('accepted'),
        (e) => {
          assert.ok(e instanceof ManifestError, String(e));
          return e.message;
        },
      );
    assert.match(await problems({ people: [{ name: 'alice', passkeys: [alice.passkey] }] }), /spec.people\[0\].passkeys: passkeys need the relying party/);
    const shared = passkeySettings(ORIGIN, [{ name: 'alice', passkeys: [alice.passkey] }, { name: 'bob', passkeys: [alice.passkey] }]);
    assert.match(await problems(shared), /spec.people\[1\].passkeys\[0\].credentialId: is also listed for alice/);
    const bad = passkeySettings(ORIGIN, [{ name: 'alice', passkeys: [{ ...alice.passkey, algorithm: 'Ed25519' }] }]);
    assert.match(await problems(bad), /passkeys\[0\].publicKey: publicKey is not an Ed25519 SubjectPublicKeyInfo/);
    assert.match(await problems({ passkeys: { rpId: RP_ID, origins: ['https://evil.example'] }, people: [] }), /spec.passkeys.origins\[0\]: https:\/\/evil.example is not on localhost/);
    assert.match(await problems({ passkeys: { rpId: 'example.com', origins: ['http://example.com'] }, people: [] }), /http only for localhost/);
    assert.match(await problems({ people: [{ name: 'alice', keys: [] }] }), /spec.people\[0\].keys: must list at least one key .* or passkey/);

    // An approver declared inline gets the same relying party, and cannot reuse another person's credential.
    const dave = softPasskey('Ed25519');
    const inline = (passkey: object) => ({ ...spec, policy: { approval: { required: true, approvers: [{ name: 'dave', passkeys: [passkey] }] } } });
    const withDave = await manifests({ pk: inline(dave.passkey) }, passkeySettings(ORIGIN, [{ name: 'alice', passkeys: [alice.passkey] }]));
    assert.deepEqual(withDave.set.secrets.get('pk')!.approvers[0].passkeys, [{ ...dave.passkey, rpId: RP_ID, origins: [ORIGIN] }]);
    const stolen = await manifests({ pk: inline(alice.passkey) }, passkeySettings(ORIGIN, [{ name: 'alice', passkeys: [alice.passkey] }])).then(
      () => '',
      (e) => String(e.message),
    );
    assert.match(stolen, /spec.policy.approval.approvers\[0\].passkeys\[0\].credentialId: is also listed for alice/);
  });
});

describe('passkey enrolment (readRegistration)', () => {
  const rp = { rpId: RP_ID, origins: [ORIGIN] };
  const challenge = randomBytes(32).toString('base64url');
  const sha = (b: Buffer | string) => createHash('sha256').update(b).digest();

  /** CBOR, just enough for an attestation object. */
  const cbor = (v: unknown): Buffer => {
    const head = (major: number, n: number) => (n < 24 ? Buffer.of((major << 5) | n) : n < 256 ? Buffer.of((major << 5) | 24, n) : Buffer.of((major << 5) | 25, n >> 8, n & 255));
    if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
    if (typeof v === 'string') return Buffer.concat([head(3, Buffer.byteLength(v)), Buffer.from(v)]);
    if (Buffer.isBuffer(v)) return Buffer.concat([head(2, v.length), v]);
    const entries = [...(v as Map<unknown, unknown>).entries()];
    return Buffer.concat([head(5, entries.length), ...entries.flatMap(([k, x]) => [cbor(k), cbor(x)])]);
  };
  const registration = (o: { type?: string; challenge?: string; origin?: string; flags?: number; cose?: Map<number, unknown> } = {}) => {
    const key = softPasskey('ES256');
    const spki = Buffer.from(key.passkey.publicKey, 'base64url');
    const point = spki.subarray(spki.length - 65);
    const cose = o.cose ?? new Map<number, unknown>([[1, 2], [3, -7], [-1, 1], [-2, point.subarray(1, 33)], [-3, point.subarray(33)]]);
    const id = Buffer.from(key.passkey.credentialId, 'base64url');
    const authData = Buffer.concat([sha(RP_ID), Buffer.of(o.flags ?? 0x45), Buffer.alloc(4), Buffer.alloc(16), Buffer.of(0, id.length), id, cbor(cose)]);
    const attestationObject = cbor(new Map<unknown, unknown>([['fmt', 'none'], ['attStmt', new Map()], ['authData', authData]])).toString('base64url');
    const clientDataJSON = Buffer.from(JSON.stringify({ type: o.type ?? 'webauthn.create', challenge: o.challenge ?? challenge, origin: o.origin ?? ORIGIN })).toString('base64url');
    return { key, response: { clientDataJSON, attestationObject } };
  };

  it('reads the credential id and public key a reviewer pastes into the manifests', () => {
    const { key, response } = registration();
    const got = readRegistration(response, challenge, rp);
    assert.ok(got.ok, JSON.stringify(got));
    assert.deepEqual(got.passkey, key.passkey);
    // And an assertion by that key verifies with what enrolment read.
    const doc = decision();
    assert.ok(openSigned({ document: doc, passkey: key.assert(doc) }, 'rekey.dev/decision', [trusted('alice', { ...key, passkey: got.passkey })], Date.now()).ok);
  });

  it('refuses a registration for another enrolment, origin, type, without user verification, or with another algorithm', () => {
    const reason = (r: ReturnType<typeof registration>) => {
      const got = readRegistration(r.response, challenge, rp);
      assert.equal(got.ok, false);
      return (got as { reason: string }).reason;
    };
    assert.match(reason(registration({ challenge: challengeFor('other') })), /another enrolment/);
    assert.match(reason(registration({ origin: 'https://evil.example' })), /origin "https:\/\/evil.example"/);
    assert.match(reason(registration({ type: 'webauthn.get' })), /expected "webauthn.create"/);
    assert.match(reason(registration({ flags: 0x41 })), /flags UP and UV/);
    assert.match(reason(registration({ cose: new Map<number, unknown>([[1, 3], [3, -257]]) })), /neither ES256/);
    assert.match(readRegistration({ clientDataJSON: 'x'.repeat(9000), attestationObject: 'AA' }, challenge, rp).ok ? '' : 'refused', /refused/);
  });
});

export type { PasskeyAssertion };
