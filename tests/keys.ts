// Throwaway SSH keys, made at run time with the real ssh-keygen, and documents signed the way a
// person signs them (`ssh-keygen -Y sign -n rekey`). Tests craft the documents themselves, so a
// forgery (another run, an expired decision) is a real signature over the wrong thing.
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { documentText, type AnyDocument, type DecisionDocument, type SignedDocument } from '../lib/signed';
import { parsePublicKey } from '../lib/sshsig';
import { tempDir } from './helpers';

export interface TestKey {
  name: string;
  /** The private key file. */
  path: string;
  /** "ssh-ed25519 AAAA..." */
  publicKey: string;
  fingerprint: string;
}

let folder: Promise<string> | undefined;

export async function newKey(name: string): Promise<TestKey> {
  folder ??= tempDir();
  const path = join(await folder, `${name}-${Math.random().toString(36).slice(2, 8)}`);
  await promisify(execFile)('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@rekey-test`, '-f', path]);
  const publicKey = parsePublicKey(await readFile(`${path}.pub`, 'utf8'));
  return { name, path, publicKey: publicKey.text, fingerprint: publicKey.fingerprint };
}

/** Sign `doc` (a document object, or exact text) with `key`, as `rekey approve` would. */
export async function sign(key: TestKey, doc: AnyDocument | Record<string, unknown> | string): Promise<SignedDocument> {
  const document = typeof doc === 'string' ? doc : documentText(doc as AnyDocument);
  const signature = await new Promise<string>((resolve, reject) => {
    const child = spawn('ssh-keygen', ['-Y', 'sign', '-n', 'rekey', '-f', key.path], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let errOut = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (errOut += d));
    child.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`ssh-keygen -Y sign: ${errOut}`))));
    child.stdin.end(document);
  });
  return { document, signature };
}

/** A Settings document: these people (by key) and who may break the glass. */
export function people(keys: TestKey[], breakGlass: string[] = []): object {
  return { people: keys.map((k) => ({ name: k.name, keys: [k.publicKey] })), breakGlass };
}

export function validFor(ms: number, from = Date.now()): { issuedAt: string; expiresAt: string } {
  return { issuedAt: new Date(from).toISOString(), expiresAt: new Date(from + ms).toISOString() };
}

/** The decision `rekey approve` would sign for the run waiting now, with `change` applied (a forgery's twist). */
export function decisionFor(
  run: { workflowId: string; firstExecutionRunId: string },
  progress: { secret: string; versions: { pending?: string }; specHash?: string },
  approve = true,
  change: Partial<DecisionDocument> = {},
): DecisionDocument {
  return {
    kind: 'rekey.dev/decision',
    namespace: 'default',
    workflowId: run.workflowId,
    runId: run.firstExecutionRunId,
    secret: progress.secret,
    pendingVersionId: progress.versions.pending!,
    specHash: progress.specHash!,
    decision: approve ? 'approve' : 'reject',
    ...validFor(3_600_000),
    ...change,
  };
}
