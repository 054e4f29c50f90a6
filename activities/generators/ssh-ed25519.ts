// An SSH key pair: the private key (the secret) in the format `ssh-keygen` writes, and the public
// key beside it, for whoever must install it in authorized_keys or allowed_signers.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Generator } from '../provider';

const KEY_TYPE = 'ssh-ed25519';

/** PROTOCOL.key's armour label (kept apart so that no key-shaped literal sits in the source). */
const ARMOUR_LABEL = ['OPENSSH', 'PRIVATE', 'KEY'].join(' ');

export const sshEd25519Schema = z
  .object({
    type: z.literal('ssh-ed25519'),
    // Printable ASCII only: the comment ends the public key line, so a newline would smuggle a
    // second entry into an authorized_keys file, and control characters would garble terminals.
    comment: z
      .string()
      .max(100)
      .regex(/^[\x20-\x7E]*$/, 'must be printable ASCII on one line')
      .optional(),
  })
  .strict();
export type SshEd25519Spec = z.infer<typeof sshEd25519Schema>;

/** SSH wire "uint32": four bytes, big-endian. */
function uint32(n: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n);
  return out;
}

/** SSH wire "string": a uint32 length, then the bytes. */
function sshString(bytes: Buffer | string): Buffer {
  const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  return Buffer.concat([uint32(data.length), data]);
}

/**
 * The private key file `ssh-keygen` writes for an unencrypted key, per
 * https://github.com/openssh/openssh-portable/blob/master/PROTOCOL.key. Node's key export knows
 * PKCS#8 but not this format, which is the one SSH clients and libraries reliably read ed25519 keys in.
 */
function openSshPrivateKey(seed: Buffer, publicKey: Buffer, publicBlob: Buffer, comment: string): string {
  // Two equal random words: with a cipher they show a wrong passphrase; without one they are still required.
  const check = randomBytes(4);
  const unpadded = Buffer.concat([
    check,
    check,
    sshString(KEY_TYPE),
    sshString(publicKey),
    // OpenSSH stores the ed25519 private key as seed || public key (64 bytes).
    sshString(Buffer.concat([seed, publicKey])),
    sshString(comment),
  ]);
  // Padded to the cipher's block size (8 for "none") with the bytes 1, 2, 3, ...
  const padding = Buffer.from(Array.from({ length: (8 - (unpadded.length % 8)) % 8 }, (_, i) => i + 1));
  const privateSection = Buffer.concat([unpadded, padding]);
  const file = Buffer.concat([
    Buffer.from('openssh-key-v1\0', 'latin1'),
    sshString('none'), // cipher
    sshString('none'), // kdf
    sshString(''), // kdf options
    uint32(1), // number of keys
    sshString(publicBlob),
    sshString(privateSection),
  ]);
  const lines = file.toString('base64').match(/.{1,70}/g)!;
  // Best effort only (the returned string cannot be wiped), but no extra copies linger in buffers.
  unpadded.fill(0);
  privateSection.fill(0);
  file.fill(0);
  return `-----BEGIN ${ARMOUR_LABEL}-----\n${lines.join('\n')}\n-----END ${ARMOUR_LABEL}-----\n`;
}

export function sshEd25519(spec: SshEd25519Spec): Generator {
  const comment = spec.comment ?? '';
  return {
    generate() {
      const { privateKey } = generateKeyPairSync('ed25519');
      // JWK is the one export that gives the raw 32-byte seed (d) and public key (x).
      const jwk = privateKey.export({ format: 'jwk' });
      const seed = Buffer.from(jwk.d!, 'base64url');
      const publicKey = Buffer.from(jwk.x!, 'base64url');
      const publicBlob = Buffer.concat([sshString(KEY_TYPE), sshString(publicKey)]);
      const value = openSshPrivateKey(seed, publicKey, publicBlob, comment);
      seed.fill(0);
      const publicLine = `${KEY_TYPE} ${publicBlob.toString('base64')}${comment ? ` ${comment}` : ''}`;
      return { value, beside: { publicKey: publicLine } };
    },
  };
}
