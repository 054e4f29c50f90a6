// Software passkeys for tests: real P-256 and Ed25519 keys from node:crypto, and assertions built
// byte for byte the way an authenticator and a browser build them, so a forgery (another origin, a
// clear UV flag, an edited authenticatorData) is a real signature over the wrong thing.
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import type { Passkey, PasskeyAlgorithm, PasskeyAssertion } from '../lib/webauthn';

const b64url = (b: Buffer | Uint8Array) => Buffer.from(b).toString('base64url');
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest();

export interface SoftPasskey {
  passkey: Passkey;
  privateKey: KeyObject;
  /** Sign `document` as navigator.credentials.get would on `origin` for `rpId`, with `change` applied. */
  assert(document: string, options?: AssertOptions): PasskeyAssertion;
}

export interface AssertOptions {
  origin?: string;
  rpId?: string;
  /** Authenticator flags byte (default UP|UV = 0x05). */
  flags?: number;
  type?: string;
  /** Extra clientData fields (crossOrigin, topOrigin). */
  clientData?: Record<string, unknown>;
  /** The challenge (default: base64url(sha256(document))). */
  challenge?: string;
  counter?: number;
}

export const RP_ID = 'localhost';

export function softPasskey(algorithm: PasskeyAlgorithm = 'ES256', defaultOrigin = 'http://localhost:8390'): SoftPasskey {
  const { privateKey, publicKey } = algorithm === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const passkey: Passkey = { credentialId: b64url(randomBytes(32)), publicKey: b64url(publicKey.export({ type: 'spki', format: 'der' })), algorithm };
  return {
    passkey,
    privateKey,
    assert(document, o = {}) {
      const clientDataJSON = Buffer.from(
        JSON.stringify({ type: o.type ?? 'webauthn.get', challenge: o.challenge ?? b64url(sha256(document)), origin: o.origin ?? defaultOrigin, crossOrigin: false, ...o.clientData }),
      );
      const counter = Buffer.alloc(4);
      counter.writeUInt32BE(o.counter ?? 1);
      const authenticatorData = Buffer.concat([sha256(o.rpId ?? RP_ID), Buffer.of(o.flags ?? 0x05), counter]);
      const data = Buffer.concat([authenticatorData, sha256(clientDataJSON)]);
      const signature = algorithm === 'ES256' ? sign('sha256', data, privateKey) : sign(null, data, privateKey);
      return { credentialId: passkey.credentialId, authenticatorData: b64url(authenticatorData), clientDataJSON: b64url(clientDataJSON), signature: b64url(signature) };
    },
  };
}

/** A Settings document: the relying party and these people, each with passkeys (and SSH keys if given). */
export function passkeySettings(origin: string, people: { name: string; passkeys?: Passkey[]; keys?: string[] }[]): object {
  return { passkeys: { rpId: RP_ID, origins: [origin] }, people: people.map((p) => ({ name: p.name, keys: p.keys ?? [], passkeys: p.passkeys ?? [] })) };
}
