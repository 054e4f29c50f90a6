// SSH signatures (the SSHSIG format of `ssh-keygen -Y sign`, the one git's SSH commit signing
// uses) over ed25519 keys, verified in pure JavaScript. Pure on purpose: the workflow sandbox runs
// it inside an update validator, deterministically, with no Node built-ins. Spec:
// https://github.com/openssh/openssh-portable/blob/master/PROTOCOL.sshsig
import { ed25519 } from '@noble/curves/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2';

/** The SSHSIG namespace rekey's documents are signed in: `ssh-keygen -Y sign -n rekey`. */
export const SIGNATURE_NAMESPACE = 'rekey';
const KEY_TYPE = 'ssh-ed25519';
const MAGIC = 'SSHSIG';
/** Far more than an ed25519 SSHSIG needs (about 300 characters armored). */
export const MAX_SIGNATURE_CHARS = 2048;

export interface PublicKey {
  /** The key as written in manifests: "ssh-ed25519 AAAA..." (no comment). */
  text: string;
  /** What `ssh-keygen -l` prints: "SHA256:..." */
  fingerprint: string;
  blob: Uint8Array;
  raw: Uint8Array;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Strict base64: padding only at the end, nothing else but the alphabet (one text per value). */
export function base64Decode(text: string): Uint8Array {
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) throw new Error('not base64');
  const clean = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const ch of clean) {
    acc = (acc << 6) | B64.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, o);
}

export function base64Encode(bytes: Uint8Array, pad = true): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = [B64[(n >> 18) & 63], B64[(n >> 12) & 63], B64[(n >> 6) & 63], B64[n & 63]];
    const keep = i + 1 >= bytes.length ? 2 : i + 2 >= bytes.length ? 3 : 4;
    out += chars.slice(0, keep).join('') + (pad ? '='.repeat(4 - keep) : '');
  }
  return out;
}

export function utf8(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

/** Constant-time byte comparison. */
export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** SSH wire "string": a big-endian uint32 length, then the bytes. */
function sshString(bytes: Uint8Array): Uint8Array {
  const n = bytes.length;
  return concat(Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255), bytes);
}

class Reader {
  private at = 0;
  constructor(private readonly bytes: Uint8Array) {}
  raw(n: number): Uint8Array {
    if (this.at + n > this.bytes.length) throw new Error('truncated');
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  uint32(): number {
    const b = this.raw(4);
    return ((b[0] << 24) >>> 0) + (b[1] << 16) + (b[2] << 8) + b[3];
  }
  string(): Uint8Array {
    return this.raw(this.uint32());
  }
  text(): string {
    return String.fromCharCode(...this.string());
  }
  done(): boolean {
    return this.at === this.bytes.length;
  }
}

function fingerprintOf(blob: Uint8Array): string {
  return `SHA256:${base64Encode(sha256(blob), false)}`;
}

/**
 * Parse "ssh-ed25519 AAAA... [comment]" (one entry of an allowed_signers or authorized_keys file,
 * without options). Throws with a reason fit for a manifest error.
 */
export function parsePublicKey(line: string): PublicKey {
  const [type, data] = line.trim().split(/\s+/);
  if (type !== KEY_TYPE) throw new Error(`expected an "${KEY_TYPE} AAAA..." public key, got ${JSON.stringify(String(type ?? '').slice(0, 40))}`);
  let blob: Uint8Array;
  try {
    blob = base64Decode(data ?? '');
  } catch {
    throw new Error('the key data is not base64');
  }
  let raw: Uint8Array;
  try {
    const r = new Reader(blob);
    if (r.text() !== KEY_TYPE) throw new Error('type');
    raw = r.string();
    if (raw.length !== 32 || !r.done()) throw new Error('length');
  } catch {
    throw new Error('the key data is not an ed25519 public key');
  }
  return { text: `${KEY_TYPE} ${base64Encode(blob)}`, fingerprint: fingerprintOf(blob), blob, raw };
}

/** The bytes of an armored ("-----BEGIN SSH SIGNATURE-----", lines of base64) or bare base64 SSHSIG. */
function signatureBlob(signature: string): Uint8Array {
  const armored = /^-----BEGIN SSH SIGNATURE-----\r?\n([A-Za-z0-9+/=\r\n]+?)\r?\n-----END SSH SIGNATURE-----\s*$/.exec(signature.trim());
  return base64Decode(armored ? armored[1].replace(/\r?\n/g, '') : signature.trim());
}

export type Verdict<T> = { ok: true; key: T } | { ok: false; reason: string };

/**
 * Verify `signature` over `message` in `namespace`, by one of `keys`. Answers which key signed, or
 * why not: a wrong namespace, an unknown key, a bad signature. Never throws on hostile input.
 */
export function verifySignature<K extends { key: PublicKey }>(message: string, signature: string, keys: readonly K[], namespace = SIGNATURE_NAMESPACE): Verdict<K> {
  if (typeof signature !== 'string' || signature.length === 0) return { ok: false, reason: 'no signature' };
  if (signature.length > MAX_SIGNATURE_CHARS) return { ok: false, reason: `signature longer than ${MAX_SIGNATURE_CHARS} characters` };
  let publicKey: Uint8Array;
  let ns: string;
  let hashAlgorithm: string;
  let sig: Uint8Array;
  try {
    const r = new Reader(signatureBlob(signature));
    if (String.fromCharCode(...r.raw(6)) !== MAGIC) throw new Error('magic');
    if (r.uint32() !== 1) throw new Error('version');
    publicKey = r.string();
    ns = r.text();
    r.string(); // reserved
    hashAlgorithm = r.text();
    const s = new Reader(r.string());
    if (!r.done()) throw new Error('trailing bytes');
    if (s.text() !== KEY_TYPE) return { ok: false, reason: 'not an ed25519 signature' };
    sig = s.string();
    if (sig.length !== 64 || !s.done()) throw new Error('length');
  } catch {
    return { ok: false, reason: 'not an SSH signature (expected the output of ssh-keygen -Y sign)' };
  }
  if (ns !== namespace) return { ok: false, reason: `signed for namespace "${ns.slice(0, 40)}", not "${namespace}"` };
  const hash = hashAlgorithm === 'sha512' ? sha512 : hashAlgorithm === 'sha256' ? sha256 : undefined;
  if (!hash) return { ok: false, reason: `unsupported hash algorithm ${hashAlgorithm.slice(0, 20)}` };
  const signer = keys.find((k) => equal(k.key.blob, publicKey));
  if (!signer) return { ok: false, reason: `signed by a key that is not allowed here (${fingerprintOf(publicKey)})` };
  const signed = concat(utf8(MAGIC), sshString(utf8(namespace)), sshString(new Uint8Array(0)), sshString(utf8(hashAlgorithm)), sshString(hash(utf8(message))));
  let valid = false;
  try {
    valid = ed25519.verify(sig, signed, signer.key.raw, { zip215: false });
  } catch {
    valid = false;
  }
  return valid ? { ok: true, key: signer } : { ok: false, reason: `the signature does not match the document (key ${signer.key.fingerprint})` };
}

/** The ed25519 key inside a signature (who claims to have signed); throws if there is none. */
export function signatureKey(signature: string): PublicKey {
  let blob: Uint8Array;
  try {
    const r = new Reader(signatureBlob(signature));
    if (String.fromCharCode(...r.raw(6)) !== MAGIC) throw new Error('magic');
    r.uint32();
    blob = r.string();
  } catch {
    throw new Error('not an SSH signature');
  }
  return parsePublicKey(`${String.fromCharCode(...new Reader(blob).string())} ${base64Encode(blob)}`);
}

/** The fingerprint of the key inside a signature, for messages about unknown keys. */
export function signerFingerprint(signature: string): string | undefined {
  try {
    const r = new Reader(signatureBlob(signature));
    r.raw(6);
    r.uint32();
    return fingerprintOf(r.string());
  } catch {
    return undefined;
  }
}
