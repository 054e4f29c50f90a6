// Passkeys (WebAuthn) as a second way to sign a rekey document: the authenticator signs an
// assertion whose challenge is the sha256 of the document's exact text, so a decision made on a
// phone is bound to the run, the pending version and the spec exactly like an SSH-signed one.
// Pure (no Node built-ins): the workflow sandbox verifies assertions inside the `decide` validator.
// Spec: https://www.w3.org/TR/webauthn-3/#sctn-verifying-assertion
// Every field arrives from whoever may send an update: sizes are bounded, encodings strict, and a
// verdict is returned, never a throw.
import { ed25519 } from '@noble/curves/ed25519';
import { p256 } from '@noble/curves/nist';
import { sha256 } from '@noble/hashes/sha2';
import { base64Encode, concat, equal, utf8 } from './sshsig';

export const PASSKEY_ALGORITHMS = ['ES256', 'Ed25519'] as const;
export type PasskeyAlgorithm = (typeof PASSKEY_ALGORITHMS)[number];

/** A passkey as the reviewed manifests list it for a person (what `rekey approvals enroll` prints). */
export interface Passkey {
  /** The credential id, base64url. */
  credentialId: string;
  /** The public key as SubjectPublicKeyInfo DER, base64url (what `openssl pkey -pubin` reads). */
  publicKey: string;
  algorithm: PasskeyAlgorithm;
}

/** The relying party the worker's manifests trust (Settings spec.passkeys). */
export interface RelyingParty {
  rpId: string;
  origins: string[];
}

/** A passkey with the relying party it is valid for, as the manifest loader resolves it. */
export type TrustedPasskey = Passkey & RelyingParty;

/** What the browser returns from navigator.credentials.get, every field base64url. */
export interface PasskeyAssertion {
  credentialId: string;
  authenticatorData: string;
  clientDataJSON: string;
  signature: string;
}

/** Bounds, in base64url characters: far above what any authenticator sends, far below harm. */
export const PASSKEY_LIMITS = { credentialId: 1366, authenticatorData: 1366, clientDataJSON: 2732, signature: 200 } as const;

const FLAG_UP = 0x01;
const FLAG_UV = 0x04;
const FLAG_AT = 0x40;
const FLAG_ED = 0x80;

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** Strict base64url without padding: one text per value (no "=", no stray bits). */
export function base64urlDecode(text: string): Uint8Array {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new Error('not base64url');
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const ch of text) {
    acc = ((acc << 6) | B64URL.indexOf(ch)) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // Leftover bits must be zero, or two texts would decode to the same bytes.
  if (bits > 0 && (acc & ((1 << bits) - 1)) !== 0) throw new Error('not canonical base64url');
  return out.subarray(0, o);
}

export function base64urlEncode(bytes: Uint8Array): string {
  return base64Encode(bytes, false).replace(/\+/g, '-').replace(/\//g, '_');
}

/** The challenge a document is signed with: base64url(sha256(its exact text)). */
export function challengeFor(document: string): string {
  return base64urlEncode(sha256(utf8(document)));
}

const hex = (h: string) => Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));
/** SubjectPublicKeyInfo prefixes: id-ecPublicKey + prime256v1 (uncompressed point), and id-Ed25519. */
const SPKI_P256 = hex('3059301306072a8648ce3d020106082a8648ce3d030107034200');
const SPKI_ED25519 = hex('302a300506032b6570032100');

export interface PasskeyKey {
  algorithm: PasskeyAlgorithm;
  /** The point (P-256: 65 bytes, 0x04 || x || y) or the Ed25519 key (32 bytes). */
  raw: Uint8Array;
  spki: Uint8Array;
  /** How a signer's key reads in results and the audit trail: "webauthn-es256 <spki base64url>". */
  text: string;
  /** "SHA256:..." of the SPKI, like ssh-keygen -l. */
  fingerprint: string;
}

/** Read a manifest's passkey public key (SPKI DER, base64url) for `algorithm`. Throws a reason fit for a manifest error. */
export function parsePasskeyKey(algorithm: string, publicKey: string): PasskeyKey {
  if (!PASSKEY_ALGORITHMS.includes(algorithm as PasskeyAlgorithm)) throw new Error(`algorithm must be one of ${PASSKEY_ALGORITHMS.join(', ')}`);
  let spki: Uint8Array;
  try {
    if (publicKey.length > 200) throw new Error('long');
    spki = base64urlDecode(publicKey);
  } catch {
    throw new Error('publicKey must be the SubjectPublicKeyInfo in base64url (what rekey approvals enroll prints)');
  }
  const prefix = algorithm === 'ES256' ? SPKI_P256 : SPKI_ED25519;
  const size = algorithm === 'ES256' ? 65 : 32;
  if (spki.length !== prefix.length + size || !equal(spki.subarray(0, prefix.length), prefix)) {
    throw new Error(`publicKey is not ${algorithm === 'ES256' ? 'a P-256' : 'an Ed25519'} SubjectPublicKeyInfo`);
  }
  const raw = spki.subarray(prefix.length);
  try {
    if (algorithm === 'ES256') p256.Point.fromBytes(raw).assertValidity();
    else if (ed25519.Point.fromBytes(raw).isSmallOrder()) throw new Error('small order');
  } catch {
    throw new Error('publicKey is not a point on its curve');
  }
  return {
    algorithm: algorithm as PasskeyAlgorithm,
    raw,
    spki,
    text: `webauthn-${algorithm.toLowerCase()} ${base64urlEncode(spki)}`,
    fingerprint: `SHA256:${base64Encode(sha256(spki), false)}`,
  };
}

/** Read a key as `Signer.key` writes it ("webauthn-es256 ..."); throws if it is not one. */
export function parsePasskeyKeyText(text: string): PasskeyKey {
  const m = /^webauthn-(es256|ed25519) ([A-Za-z0-9_-]+)$/.exec(text);
  if (!m) throw new Error('not a passkey key');
  return parsePasskeyKey(m[1] === 'es256' ? 'ES256' : 'Ed25519', m[2]);
}

export function isPasskeyKeyText(text: unknown): boolean {
  return typeof text === 'string' && text.startsWith('webauthn-');
}

export type PasskeyVerdict<K> = { ok: true; key: K; passkey: PasskeyKey } | { ok: false; reason: string };

interface Decoded {
  credentialId: Uint8Array;
  authenticatorData: Uint8Array;
  clientDataJSON: Uint8Array;
  signature: Uint8Array;
}

/** The four fields, present, strings, bounded and base64url; or why not. */
function decodeAssertion(assertion: unknown): Decoded | string {
  if (!assertion || typeof assertion !== 'object' || Array.isArray(assertion)) return 'passkey must be {credentialId, authenticatorData, clientDataJSON, signature}';
  const extra = Object.keys(assertion).filter((k) => !Object.hasOwn(PASSKEY_LIMITS, k));
  if (extra.length) return `passkey has unknown field ${JSON.stringify(extra[0].slice(0, 40))}`;
  const out: Partial<Decoded> = {};
  for (const [field, max] of Object.entries(PASSKEY_LIMITS) as [keyof Decoded, number][]) {
    const value = (assertion as Record<string, unknown>)[field];
    if (typeof value !== 'string' || value.length === 0 || value.length > max) return `passkey.${field} must be a base64url string of at most ${max} characters`;
    try {
      out[field] = base64urlDecode(value);
    } catch {
      return `passkey.${field} is not base64url`;
    }
  }
  return out as Decoded;
}

/** clientDataJSON is ASCII JSON as browsers write it (origins are ASCII; challenges are base64url). */
function clientData(bytes: Uint8Array): Record<string, unknown> | string {
  let text = '';
  for (const b of bytes) {
    if (b >= 0x80) return 'passkey.clientDataJSON is not ASCII JSON';
    text += String.fromCharCode(b);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return 'passkey.clientDataJSON is not JSON';
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) return 'passkey.clientDataJSON is not a JSON object';
  return data as Record<string, unknown>;
}

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v.slice(0, 80)) : v === undefined ? '(none)' : `(a ${typeof v})`);

/** The checks of a signed assertion that need no relying party: type, challenge, flags, signature. */
function checkSigned(message: string, d: Decoded, key: PasskeyKey): string | undefined {
  const data = clientData(d.clientDataJSON);
  if (typeof data === 'string') return data;
  if (data.type !== 'webauthn.get') return `passkey: clientData.type is ${show(data.type)}, expected "webauthn.get"`;
  if (data.challenge !== challengeFor(message)) return 'passkey: the assertion was made for another document (its challenge is not the sha256 of this document)';
  const auth = d.authenticatorData;
  if (auth.length < 37) return 'passkey.authenticatorData is too short';
  const flags = auth[32];
  if (!(flags & FLAG_UP)) return 'passkey: the user was not present (flag UP clear)';
  if (!(flags & FLAG_UV)) return 'passkey: the user was not verified (flag UV clear): the authenticator must ask for a PIN or biometric';
  // Nothing may follow the 37 fixed bytes but extensions the ED flag announces; an assertion never carries attested data.
  if (flags & FLAG_AT) return 'passkey: authenticatorData of an assertion carries attested credential data';
  if (!(flags & FLAG_ED) && auth.length !== 37) return 'passkey.authenticatorData has trailing bytes';
  const signed = concat(auth, sha256(d.clientDataJSON));
  let valid = false;
  try {
    if (key.algorithm === 'ES256') {
      // DER only (what WebAuthn specifies); a malformed one is refused. High S is legal ECDSA, and
      // authenticators are not required to normalise it, so it is accepted.
      valid = d.signature.length <= 72 && p256.verify(d.signature, sha256(signed), key.raw, { prehash: false, format: 'der', lowS: false });
    } else {
      valid = d.signature.length === 64 && ed25519.verify(d.signature, signed, key.raw, { zip215: false });
    }
  } catch {
    valid = false;
  }
  return valid ? undefined : `passkey: the signature does not match (key ${key.fingerprint})`;
}

/**
 * Verify a passkey assertion over `message` by one of `keys` (each a passkey of the manifests with
 * its relying party): the credential id maps to exactly one listed passkey, clientData says
 * webauthn.get with this document's challenge from an allowed origin and not cross-origin, the
 * rpIdHash is the relying party's, the user was present and verified, and the signature holds.
 */
export function verifyAssertion<K extends { passkey: TrustedPasskey }>(message: string, assertion: unknown, keys: readonly K[]): PasskeyVerdict<K> {
  const d = decodeAssertion(assertion);
  if (typeof d === 'string') return { ok: false, reason: d };
  const id = base64urlEncode(d.credentialId);
  // The same person's same passkey reached twice (Settings people and a secret's approvers) is one entry.
  const same = (a: K, b: K) => JSON.stringify([(a as { name?: unknown }).name, a.passkey]) === JSON.stringify([(b as { name?: unknown }).name, b.passkey]);
  const matches = keys.filter((k) => k.passkey.credentialId === id).filter((k, i, all) => all.findIndex((o) => same(o, k)) === i);
  if (matches.length === 0) return { ok: false, reason: `signed by a passkey that is not allowed here (credential ${id.slice(0, 24)})` };
  // The same credential listed twice (for two people, or twice with different keys) decides nothing.
  if (matches.length > 1) return { ok: false, reason: `passkey credential ${id.slice(0, 24)} is listed more than once in the manifests` };
  const signer = matches[0];
  let key: PasskeyKey;
  try {
    key = parsePasskeyKey(signer.passkey.algorithm, signer.passkey.publicKey);
  } catch (e) {
    return { ok: false, reason: `the manifests' passkey ${id.slice(0, 24)} is unusable: ${(e as Error).message}` };
  }
  const data = clientData(d.clientDataJSON);
  if (typeof data === 'string') return { ok: false, reason: data };
  if (typeof data.origin !== 'string' || !signer.passkey.origins.includes(data.origin)) return { ok: false, reason: `passkey: made on origin ${show(data.origin)}, which the manifests do not allow` };
  if (data.crossOrigin !== undefined && data.crossOrigin !== false) return { ok: false, reason: 'passkey: made in a cross-origin frame' };
  if (data.topOrigin !== undefined) return { ok: false, reason: 'passkey: made in an embedded frame (topOrigin)' };
  if (d.authenticatorData.length < 37 || !equal(d.authenticatorData.subarray(0, 32), sha256(utf8(signer.passkey.rpId)))) {
    return { ok: false, reason: `passkey: made for another relying party than ${signer.passkey.rpId}` };
  }
  const problem = checkSigned(message, d, key);
  return problem ? { ok: false, reason: problem } : { ok: true, key: signer, passkey: key };
}

/**
 * Re-verify an assertion kept in the audit trail against the key it names, without the manifests:
 * type, challenge, flags and signature (origin and relying party need the manifests; see verifyAssertion).
 */
export function verifyAssertionWithKey(message: string, assertion: unknown, keyText: string): string | undefined {
  let key: PasskeyKey;
  try {
    key = parsePasskeyKeyText(keyText);
  } catch {
    return 'an unreadable passkey key';
  }
  const d = decodeAssertion(assertion);
  if (typeof d === 'string') return d;
  return checkSigned(message, d, key);
}

// ---------------------------------------------------------------------------------------------
// Enrolment: read what navigator.credentials.create returned. This grants nothing: it only turns
// the authenticator's answer into the lines a person pastes into the reviewed manifests.

/** A small CBOR reader: maps, arrays, integers, byte and text strings; nothing else is needed. */
class Cbor {
  private at = 0;
  constructor(private readonly bytes: Uint8Array) {}
  get offset(): number {
    return this.at;
  }
  private byte(): number {
    if (this.at >= this.bytes.length) throw new Error('truncated CBOR');
    return this.bytes[this.at++];
  }
  private length(info: number): number {
    if (info < 24) return info;
    if (info === 24) return this.byte();
    if (info === 25) return (this.byte() << 8) | this.byte();
    if (info === 26) return ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte();
    throw new Error('unsupported CBOR length');
  }
  item(depth = 0): unknown {
    if (depth > 8) throw new Error('CBOR nested too deep');
    const first = this.byte();
    const major = first >> 5;
    const n = this.length(first & 31);
    switch (major) {
      case 0:
        return n;
      case 1:
        return -1 - n;
      case 2:
      case 3: {
        if (this.at + n > this.bytes.length) throw new Error('truncated CBOR');
        const raw = this.bytes.subarray(this.at, this.at + n);
        this.at += n;
        return major === 2 ? raw : String.fromCharCode(...raw);
      }
      case 4: {
        if (n > 64) throw new Error('CBOR array too long');
        return Array.from({ length: n }, () => this.item(depth + 1));
      }
      case 5: {
        if (n > 64) throw new Error('CBOR map too long');
        const map = new Map<unknown, unknown>();
        for (let i = 0; i < n; i++) map.set(this.item(depth + 1), this.item(depth + 1));
        return map;
      }
      default:
        throw new Error('unsupported CBOR item');
    }
  }
}

export type Enrolled = { ok: true; passkey: Passkey; fingerprint: string } | { ok: false; reason: string };

/**
 * Check a registration (navigator.credentials.create's clientDataJSON and attestationObject,
 * base64url) made for `challenge` on one of `rp.origins`, and read the new credential's public key
 * (COSE: EC2 P-256 with ES256, or OKP Ed25519 with EdDSA). The attestation statement is not
 * checked: which authenticator made the key is not what rekey trusts; the reviewed manifests are.
 */
export function readRegistration(response: { clientDataJSON?: unknown; attestationObject?: unknown }, challenge: string, rp: RelyingParty): Enrolled {
  try {
    const fields = { clientDataJSON: response?.clientDataJSON, attestationObject: response?.attestationObject };
    for (const [field, value] of Object.entries(fields)) {
      if (typeof value !== 'string' || !value || value.length > 8192) return { ok: false, reason: `${field} must be a base64url string of at most 8192 characters` };
    }
    const data = clientData(base64urlDecode(fields.clientDataJSON as string));
    if (typeof data === 'string') return { ok: false, reason: data.replace('passkey.', '') };
    if (data.type !== 'webauthn.create') return { ok: false, reason: `clientData.type is ${show(data.type)}, expected "webauthn.create"` };
    if (data.challenge !== challenge) return { ok: false, reason: 'the registration was made for another enrolment (challenge)' };
    if (typeof data.origin !== 'string' || !rp.origins.includes(data.origin)) return { ok: false, reason: `made on origin ${show(data.origin)}, which the manifests do not allow` };
    if (data.crossOrigin !== undefined && data.crossOrigin !== false) return { ok: false, reason: 'made in a cross-origin frame' };
    const attestation = new Cbor(base64urlDecode(fields.attestationObject as string)).item();
    if (!(attestation instanceof Map) || !(attestation.get('authData') instanceof Uint8Array)) return { ok: false, reason: 'attestationObject has no authData' };
    const auth = attestation.get('authData') as Uint8Array;
    if (auth.length < 55) return { ok: false, reason: 'authData is too short' };
    if (!equal(auth.subarray(0, 32), sha256(utf8(rp.rpId)))) return { ok: false, reason: `made for another relying party than ${rp.rpId}` };
    const flags = auth[32];
    if (!(flags & FLAG_UP) || !(flags & FLAG_UV)) return { ok: false, reason: 'the user was not present and verified (flags UP and UV): use an authenticator with a PIN or biometric' };
    if (!(flags & FLAG_AT)) return { ok: false, reason: 'authData carries no credential' };
    const idLength = (auth[53] << 8) | auth[54];
    if (idLength === 0 || idLength > 1023 || auth.length < 55 + idLength) return { ok: false, reason: 'credential id length out of range' };
    const credentialId = auth.subarray(55, 55 + idLength);
    const cose = new Cbor(auth.subarray(55 + idLength));
    const key = cose.item();
    if (!(key instanceof Map)) return { ok: false, reason: 'the credential public key is not a COSE key' };
    let spki: Uint8Array;
    let algorithm: PasskeyAlgorithm;
    if (key.get(1) === 2 && key.get(3) === -7 && key.get(-1) === 1) {
      const x = key.get(-2);
      const y = key.get(-3);
      if (!(x instanceof Uint8Array) || !(y instanceof Uint8Array) || x.length !== 32 || y.length !== 32) return { ok: false, reason: 'the P-256 key coordinates are malformed' };
      spki = concat(SPKI_P256, Uint8Array.of(4), x, y);
      algorithm = 'ES256';
    } else if (key.get(1) === 1 && key.get(3) === -8 && key.get(-1) === 6) {
      const x = key.get(-2);
      if (!(x instanceof Uint8Array) || x.length !== 32) return { ok: false, reason: 'the Ed25519 key is malformed' };
      spki = concat(SPKI_ED25519, x);
      algorithm = 'Ed25519';
    } else {
      return { ok: false, reason: 'the credential is neither ES256 (P-256) nor Ed25519: rekey accepts only those' };
    }
    const publicKey = base64urlEncode(spki);
    const parsed = parsePasskeyKey(algorithm, publicKey);
    return { ok: true, passkey: { credentialId: base64urlEncode(credentialId), publicKey, algorithm }, fingerprint: parsed.fingerprint };
  } catch (e) {
    return { ok: false, reason: `not a well-formed registration (${(e as Error).message.slice(0, 80)})` };
  }
}
