// One-time enrolment links: `rekey approvals enroll --as alice` writes a short-lived record under
// the server's data directory, named by the sha256 of a random token, and prints the link with the
// token. The server reads the record when the link is opened and removes it when a passkey is
// enrolled: single use, and nobody reading the directory learns a usable link. Enrolment grants
// nothing: the credential counts only once a reviewer adds it to the manifests.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const ENROLMENT_TTL_MS = 15 * 60_000;
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export interface Enrolment {
  person: string;
  expiresAt: string;
}

const fileOf = (dataDir: string, token: string) => join(dataDir, 'enrol', `${createHash('sha256').update(token).digest('hex')}.json`);

/** Make a one-time token for `person`, valid for `ttlMs`. Returns the token (for the link only). */
export async function createEnrolment(dataDir: string, person: string, ttlMs = ENROLMENT_TTL_MS, now = Date.now()): Promise<{ token: string; expiresAt: string }> {
  await mkdir(join(dataDir, 'enrol'), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString('base64url');
  const expiresAt = new Date(now + ttlMs).toISOString();
  await writeFile(fileOf(dataDir, token), JSON.stringify({ person, expiresAt } satisfies Enrolment), { mode: 0o600, flag: 'wx' });
  return { token, expiresAt };
}

/** The enrolment a token stands for, if it is well-formed, unused and unexpired. Changes nothing. */
export async function findEnrolment(dataDir: string, token: string, now = Date.now()): Promise<Enrolment | undefined> {
  if (!TOKEN.test(token)) return undefined;
  let record: Enrolment;
  try {
    record = JSON.parse(await readFile(fileOf(dataDir, token), 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof record?.person !== 'string' || typeof record.expiresAt !== 'string') return undefined;
  if (!(Date.parse(record.expiresAt) > now)) {
    await unlink(fileOf(dataDir, token)).catch(() => undefined);
    return undefined;
  }
  return record;
}

/** Use the token up: exactly one caller wins (rename is atomic); everyone else gets undefined. */
export async function useEnrolment(dataDir: string, token: string, now = Date.now()): Promise<Enrolment | undefined> {
  const record = await findEnrolment(dataDir, token, now);
  if (!record) return undefined;
  const file = fileOf(dataDir, token);
  const claimed = `${file}.used-${randomBytes(6).toString('hex')}`;
  try {
    await rename(file, claimed);
  } catch {
    return undefined;
  }
  await unlink(claimed).catch(() => undefined);
  return record;
}
