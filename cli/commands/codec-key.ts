import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { addKey, parseKeyring, type KeyringFile } from '../../lib/codec';
import { EXIT, UsageError, out, parse } from '../common';

/**
 * `rekey codec-key new [--id ID] [--keyring PATH]`: add a key and make it active. Payloads written
 * from then on use it; older payloads keep decoding with the key they name.
 */
export async function codecKey(args: string[]): Promise<number> {
  if (args[0] !== 'new') throw new UsageError('usage: rekey codec-key new [--id ID] [--keyring PATH]');
  const { values } = parse(args.slice(1), { id: { type: 'string' }, keyring: { type: 'string' } }, []);
  const path = (values.keyring as string | undefined) ?? process.env.REKEY_CODEC_KEYRING;
  if (!path) throw new UsageError('codec-key needs --keyring PATH or REKEY_CODEC_KEYRING');
  let existing: KeyringFile | undefined;
  if (existsSync(path)) {
    existing = JSON.parse(readFileSync(path, 'utf8'));
    parseKeyring(path, existing);
  }
  const id = (values.id as string | undefined) ?? `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}-${Object.keys(existing?.keys ?? {}).length + 1}`;
  writeFileSync(path, `${JSON.stringify(addKey(existing, id), null, 2)}\n`, { mode: 0o600 });
  out(`added codec key "${id}" to ${path} and made it active; restart workers and the codec server to use it`);
  return EXIT.ok;
}
