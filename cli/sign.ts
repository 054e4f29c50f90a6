// Signing a document with the person's own SSH key, through ssh-keygen, so every key OpenSSH can
// use works: a key file (with its passphrase prompt) or, with --agent, a key held by ssh-agent.
// rekey never reads a private key itself.
import { spawn } from 'node:child_process';
import { documentText, type AnyDocument, type SignedDocument } from '../lib/signed';
import { SIGNATURE_NAMESPACE, parsePublicKey, signatureKey, verifySignature } from '../lib/sshsig';
import { parseDuration } from '../lib/duration';
import { UsageError } from './common';

export const SIGN_OPTIONS = {
  key: { type: 'string' },
  agent: { type: 'boolean' },
} as const;

export interface KeyChoice {
  /** A private key file, or with `agent` the public key of a key ssh-agent holds. */
  path: string;
  agent: boolean;
}

export function keyChoice(values: Record<string, unknown>, what: string): KeyChoice {
  const path = values.key as string | undefined;
  if (!path) throw new UsageError(`${what} must be signed: give --key ~/.ssh/id_ed25519 (or --agent --key ~/.ssh/id_ed25519.pub for a key in ssh-agent)`);
  return { path, agent: values.agent === true };
}

/** issuedAt now, expiresAt after `validity` (at most 24h): a short-lived document. */
export function validity(text: string | undefined, fallback: string): { issuedAt: string; expiresAt: string } {
  const given = text ?? fallback;
  let ms: number;
  try {
    ms = parseDuration(given);
  } catch {
    throw new UsageError(`--expires: "${given}" is not a duration (e.g. 30m, 2h)`);
  }
  if (ms <= 0 || ms > 24 * 3_600_000) throw new UsageError('--expires: at most 24h');
  const now = Date.now();
  return { issuedAt: new Date(now).toISOString(), expiresAt: new Date(now + ms).toISOString() };
}

export async function signDocument(doc: AnyDocument, key: KeyChoice): Promise<SignedDocument> {
  const document = documentText(doc);
  const args = ['-Y', 'sign', '-n', SIGNATURE_NAMESPACE, '-f', key.path, ...(key.agent ? ['-U'] : [])];
  const signature = await new Promise<string>((resolve, reject) => {
    // stdin carries the document; the passphrase prompt, if any, goes to the terminal.
    const child = spawn('ssh-keygen', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => reject(new UsageError(`cannot run ssh-keygen (install openssh-client): ${e.message}`)));
    child.on('close', (code) =>
      code === 0 ? resolve(stdout) : reject(new UsageError(`ssh-keygen could not sign with ${key.path}: ${stderr.trim().split('\n').pop() || `exit ${code}`}`)),
    );
    child.stdin.end(document);
  });
  // Only ed25519 signatures count with rekey: say so now rather than be refused by the workflow.
  let signer;
  try {
    signer = signatureKey(signature);
  } catch (e) {
    throw new UsageError(`${key.path}: ${(e as Error).message}; rekey accepts ed25519 keys (ssh-keygen -t ed25519)`);
  }
  if (!verifySignature(document, signature, [{ key: signer }]).ok) throw new UsageError(`ssh-keygen produced a signature that does not verify (${key.path})`);
  return { document, signature: signature.trim() };
}

/** The fingerprint of a public key line, for messages. */
export function fingerprintOf(line: string): string {
  return parsePublicKey(line).fingerprint;
}
