import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { addKey, readKeyringFile, type KeyringFile } from '../../lib/codec';
import { EXIT, UsageError, out, parse } from '../common';

/**
 * The keyring is replaced whole or not at all: a crash or a full disk mid-write must never leave a
 * truncated keyring (every payload in Temporal would become unreadable), and the new file is never,
 * even for a moment, readable by anyone but its owner.
 */
function replaceFile(path: string, content: string): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fd = openSync(temp, 'wx', 0o600);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw new Error(`cannot write the codec keyring ${path}: ${(err as Error).message}; it was left as it was`);
  }
  // The rename itself is durable only once the folder is on disk.
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * `rekey codec-key new [--id ID] [--keyring PATH]`: add a key and make it active. Payloads written
 * from then on use it; older payloads keep decoding with the key they name.
 */
export async function codecKey(args: string[]): Promise<number> {
  if (args[0] !== 'new') throw new UsageError('usage: rekey codec-key new [--id ID] [--keyring PATH]');
  const { values } = parse(args.slice(1), { id: { type: 'string' }, keyring: { type: 'string' } }, []);
  const path = (values.keyring as string | undefined) ?? process.env.REKEY_CODEC_KEYRING;
  if (!path) throw new UsageError('codec-key needs --keyring PATH or REKEY_CODEC_KEYRING');
  let next: KeyringFile;
  try {
    const existing = existsSync(path) ? readKeyringFile(path) : undefined;
    const id = (values.id as string | undefined) ?? `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}-${Object.keys(existing?.keys ?? {}).length + 1}`;
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) throw new Error(`--id "${id}": use 1 to 64 letters, digits, ".", "_" or "-"`);
    next = addKey(existing, id);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  replaceFile(path, `${JSON.stringify(next, null, 2)}\n`);
  out(`added codec key "${next.active}" to ${path} and made it active; restart workers and the codec server to use it`);
  return EXIT.ok;
}
