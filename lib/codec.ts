// Payload encryption: AES-256-GCM over every payload Temporal stores, with the key id in the
// payload's metadata so the codec key itself can be rotated (new payloads use the active key; old
// ones still decode with the key they name). The key id and the encoding are authenticated with the
// data, so relabelling a payload's metadata makes it undecodable rather than misread. A second
// layer: nothing in rekey's payloads is a secret value in the first place.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { z } from 'zod';

/** The key id and this name are authenticated along with the data, so neither can be swapped. */
export const ENCODING = 'binary/encrypted-v2';
/** Sealed without authenticated metadata by older rekey versions: still decoded, never written. */
export const LEGACY_ENCODING = 'binary/encrypted';
export const KEY_ID = 'encryption-key-id';
const IV_BYTES = 12;
const TAG_BYTES = 16;

const keyringSchema = z
  .object({
    active: z.string().min(1),
    keys: z.record(
      z.string(),
      z.string().refine((k) => Buffer.from(k, 'base64').length === 32, { message: 'must be 32 bytes, base64-encoded' }),
    ),
  })
  .strict()
  .refine((k) => k.active in k.keys, { path: ['active'], message: 'names a key that is not in keys' });
export type KeyringFile = z.infer<typeof keyringSchema>;

export interface Keyring {
  activeId: string;
  keys: Map<string, Buffer>;
}

export function parseKeyring(source: string, json: unknown): Keyring {
  const parsed = keyringSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${source}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return { activeId: parsed.data.active, keys: new Map(Object.entries(parsed.data.keys).map(([id, k]) => [id, Buffer.from(k, 'base64')])) };
}

/** A keyring file as written. It holds every codec key, so it is refused unless only its owner may read it. */
export function readKeyringFile(path: string): KeyringFile {
  let fd: number;
  try {
    // Not through a symlink (it could be pointed at any file), and read from the file checked.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    throw new Error(`cannot read the codec keyring ${path} (REKEY_CODEC_KEYRING): ${(err as Error).message}`);
  }
  let content: string;
  try {
    const info = fstatSync(fd);
    const mode = info.mode & 0o777;
    if (mode & 0o077) throw new Error(`the codec keyring ${path} has mode ${mode.toString(8).padStart(4, '0')}: group or others may access it; run: chmod 600 ${path}`);
    if (info.uid !== 0 && info.uid !== process.getuid?.()) throw new Error(`the codec keyring ${path} is owned by another user (uid ${info.uid}); it must be this user's or root's`);
    content = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  let json: unknown;
  try {
    json = JSON.parse(content);
  } catch {
    throw new Error(`${path}: not valid JSON`);
  }
  parseKeyring(path, json);
  return json as KeyringFile;
}

export function loadKeyring(path = process.env.REKEY_CODEC_KEYRING): Keyring | undefined {
  return path ? parseKeyring(path, readKeyringFile(path)) : undefined;
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b).toString('utf8') : undefined);

const additionalData = (encoding: string, id: string) => utf8(`${encoding}\0${id}`);

export class AesGcmCodec implements PayloadCodec {
  constructor(private readonly keyring: Keyring) {}

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const id = this.keyring.activeId;
    const key = this.keyring.keys.get(id)!;
    return payloads.map((payload) => {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv).setAAD(additionalData(ENCODING, id));
      const plain = temporal.api.common.v1.Payload.encode(payload).finish();
      const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return { metadata: { encoding: utf8(ENCODING), [KEY_ID]: utf8(id) }, data: sealed };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      const encoding = text(payload.metadata?.encoding);
      if (encoding !== ENCODING && encoding !== LEGACY_ENCODING) return payload;
      const id = text(payload.metadata?.[KEY_ID]);
      const key = id ? this.keyring.keys.get(id) : undefined;
      if (!key) throw new Error(`payload encrypted with codec key "${id ?? '(none)'}", which this keyring does not hold`);
      const sealed = Buffer.from(payload.data ?? new Uint8Array());
      const refused = new Error(`payload sealed as ${encoding} with codec key "${id}" does not authenticate: its data, key id or encoding was altered`);
      if (sealed.length < IV_BYTES + TAG_BYTES) throw refused;
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
      if (encoding === ENCODING) decipher.setAAD(additionalData(ENCODING, id!));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw refused;
      }
      return temporal.api.common.v1.Payload.decode(plain);
    });
  }
}

/**
 * The data converter every rekey client and worker uses: encrypted payloads and encrypted failure
 * messages when REKEY_CODEC_KEYRING names a keyring, plain otherwise.
 */
export function rekeyDataConverter(keyring = loadKeyring()): DataConverter | undefined {
  if (!keyring) return undefined;
  return {
    payloadCodecs: [new AesGcmCodec(keyring)],
    failureConverterPath: require.resolve('./failure-converter'),
  };
}

/** A new keyring file's content, or `existing` with a new key made active. */
export function addKey(existing: KeyringFile | undefined, id: string): KeyringFile {
  if (existing?.keys[id]) throw new Error(`the keyring already has a key "${id}"`);
  return { active: id, keys: { ...(existing?.keys ?? {}), [id]: randomBytes(32).toString('base64') } };
}
