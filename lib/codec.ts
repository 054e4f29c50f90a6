// Payload encryption: AES-256-GCM over every payload Temporal stores, with the key id in the
// payload's metadata so the codec key itself can be rotated (new payloads use the active key; old
// ones still decode with the key they name). A second layer: nothing in rekey's payloads is a
// secret value in the first place.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { z } from 'zod';

export const ENCODING = 'binary/encrypted';
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

export function loadKeyring(path = process.env.REKEY_CODEC_KEYRING): Keyring | undefined {
  if (!path) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the codec keyring ${path} (REKEY_CODEC_KEYRING): ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${path}: not valid JSON`);
  }
  return parseKeyring(path, json);
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b).toString('utf8') : undefined);

export class AesGcmCodec implements PayloadCodec {
  constructor(private readonly keyring: Keyring) {}

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const id = this.keyring.activeId;
    const key = this.keyring.keys.get(id)!;
    return payloads.map((payload) => {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const plain = temporal.api.common.v1.Payload.encode(payload).finish();
      const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return { metadata: { encoding: utf8(ENCODING), [KEY_ID]: utf8(id) }, data: sealed };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      if (text(payload.metadata?.encoding) !== ENCODING) return payload;
      const id = text(payload.metadata?.[KEY_ID]);
      const key = id ? this.keyring.keys.get(id) : undefined;
      if (!key) throw new Error(`payload encrypted with codec key "${id ?? '(none)'}", which this keyring does not hold`);
      const sealed = Buffer.from(payload.data ?? new Uint8Array());
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      const plain = Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
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
