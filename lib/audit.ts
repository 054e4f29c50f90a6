// The audit trail: who rotated what, when, why, who approved (with their signed decision), which
// versions; never a value. Every record is hash-chained to the one before it and signed with the
// worker's audit key (Ed25519), so an edit, even with the chain recomputed, needs the key. Each
// rotation's result keeps the head it reached (trail, sequence number, hash): truncating or
// rewinding the trail is found by comparing it with those heads. Two backends behind one
// interface: a Postgres table shared by every worker (production), and a JSON-lines file for one
// host.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { canonicalJson } from './canonical';
import { verifySigned, type Person, type SignedDocument } from './signed';
import { parsePublicKey, verifySignature } from './sshsig';
import { isPasskeyKeyText, parsePasskeyKeyText, verifyAssertionWithKey, type PasskeyAssertion } from './webauthn';

export const GENESIS = '0'.repeat(64);

export type AuditEventKind =
  | 'requested'
  | 'refused'
  | 'approved'
  | 'rejected'
  | 'approval-ignored'
  | 'escalated'
  | 'break-glass'
  | 'promoted'
  | 'revoked'
  | 'post-verified'
  /** What a revoke only disabled (an inactive IAM key) was removed, after the target's retireAfter. */
  | 'retired'
  | 'rolled-back'
  | 'rollback-incomplete'
  | 'failed'
  | 'superseded'
  /** A group's one decision (2PC): every member promotes, or every member rolls back. */
  | 'group-released'
  | 'group-aborted'
  /** A member run joined its group's run: from then on it rolls back only if the group aborts. */
  | 'group-joined'
  /** A notification went out on a channel of the secret's policy `notify` (the detail names the channel), or gave up. */
  | 'notified'
  | 'notify-failed';

/** A signed document behind an event, kept whole: an auditor re-verifies it with the public key alone. */
export interface SignedEvidence {
  document: string;
  /** An SSH signature, or (instead) a passkey's WebAuthn assertion over the document's sha256. */
  signature?: string;
  passkey?: PasskeyAssertion;
  /** Who the trusted manifests say holds the key, its fingerprint and the key itself. */
  signer: string;
  fingerprint: string;
  key: string;
}

/** One event of the trail, as the workflow reports it. Who, what, when, why, which versions. */
export interface AuditEvent {
  /** Unique per event (rotation id + "#" + its number in the rotation): a retry writes it once. */
  id: string;
  /** workflow id + "/" + run id of the rotation. */
  rotationId: string;
  secret: string;
  event: AuditEventKind;
  /** Who did it: a person (by key where signed), "rekey" for the engine, or a requester's label. */
  actor: string;
  /** When it happened, in workflow time (ISO 8601). */
  at: string;
  reason?: string;
  /** previous: the version a revoke made stop working (its record is when that happened). */
  versions?: { current?: string; pending?: string; previous?: string };
  detail?: string;
  signed?: SignedEvidence;
  /** The signed approvals promote accepted, kept whole like `signed`. */
  approvals?: SignedEvidence[];
}

export interface AuditRecord extends AuditEvent {
  /** Which trail this record belongs to (a database table, a file). */
  trail: string;
  seq: number;
  prev: string;
  hash: string;
  /** Fingerprint of the audit key that signed it. */
  keyId: string;
  /** Ed25519 signature over `hash`, base64. */
  sig: string;
}

/** Where a rotation left the trail: the anchor that makes truncation visible. */
export interface AuditHead {
  trail: string;
  seq: number;
  hash: string;
  /** The audit key's signature over the head: a head anyone could invent counts for nothing. */
  sig?: string;
}

export interface AuditTrail {
  /** Stable identity of the trail (which table, which file), recorded in every record and head. */
  readonly trail: string;
  /** Where it is, for people. */
  readonly where: string;
  /** Append `event` unless a record with its id exists. Returns the record now in the trail. */
  append(event: AuditEvent): Promise<{ record: AuditRecord; written: boolean }>;
  /** The record with this id, if one was written. */
  find(id: string): Promise<AuditRecord | undefined>;
  /** Every record as stored, in sequence order; a line that is not JSON stays text. */
  read(): Promise<(AuditRecord | string)[]>;
  close(): Promise<void>;
}

// --- the audit key ---------------------------------------------------------------------------

export interface AuditSigner {
  keyId: string;
  sign(hash: string): string;
  publicKey: KeyObject;
}

/** "SHA256:..." of the key's SubjectPublicKeyInfo: names the key in every record it signs. */
export function auditKeyId(publicKey: KeyObject): string {
  return `SHA256:${createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('base64').replace(/=+$/, '')}`;
}

export function auditSignerFrom(privateKeyPem: string, source: string): AuditSigner {
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch {
    throw new Error(`${source}: not a PEM private key (make one with: rekey audit keygen)`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${source}: the audit key must be Ed25519, not ${key.asymmetricKeyType}`);
  const publicKey = createPublicKey(key);
  return { keyId: auditKeyId(publicKey), publicKey, sign: (hash) => sign(null, Buffer.from(hash), key).toString('base64') };
}

export function loadPublicKeys(paths: string[]): KeyObject[] {
  return paths.map((path) => {
    try {
      return createPublicKey(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read the audit public key ${path}: ${(err as Error).message}`);
    }
  });
}

// --- records -----------------------------------------------------------------------------------

export function hashOf(record: Omit<AuditRecord, 'hash' | 'sig'>): string {
  return createHash('sha256').update(canonicalJson(record)).digest('hex');
}

/** The record that follows `last` in `trail`, hashed and signed. */
export function nextRecord(trail: string, event: AuditEvent, last: { seq: number; hash: string } | undefined, signer: AuditSigner): AuditRecord {
  const unsigned = { ...(JSON.parse(JSON.stringify(event)) as AuditEvent), trail, seq: (last?.seq ?? 0) + 1, prev: last?.hash ?? GENESIS, keyId: signer.keyId };
  const hash = hashOf(unsigned);
  return { ...unsigned, hash, sig: signer.sign(hash) };
}

const headText = (h: AuditHead) => `rekey-head/v1|${h.trail}|${h.seq}|${h.hash}`;

/** The head a record makes, signed when the signer is given (the worker's activities sign theirs). */
export function headOf(record: AuditRecord, signer?: AuditSigner): AuditHead {
  const head: AuditHead = { trail: record.trail, seq: record.seq, hash: record.hash };
  return signer ? { ...head, sig: signer.sign(headText(head)) } : head;
}

/** Is this a head one of `publicKeys` signed? */
export function headHolds(head: AuditHead, publicKeys: KeyObject[]): boolean {
  if (!head || typeof head.sig !== 'string' || typeof head.trail !== 'string' || !Number.isInteger(head.seq) || typeof head.hash !== 'string') return false;
  return publicKeys.some((key) => verify(null, Buffer.from(headText(head)), key, Buffer.from(head.sig!, 'base64')));
}

export type Verdict = { ok: true; records: number; heads: number } | { ok: false; seq: number; problem: string };

/**
 * Check a whole trail: order, chain, each record's signature by a trusted audit key, each signed
 * decision inside against the key it names (and, given `people`, that the key is that person's),
 * and that the trail still reaches every head rotations recorded. The first problem is reported.
 */
export function verifyTrail(
  trail: string,
  stored: (AuditRecord | string)[],
  options: { publicKeys: KeyObject[]; heads?: AuditHead[]; people?: Person[] },
): Verdict {
  const keys = new Map(options.publicKeys.map((k) => [auditKeyId(k), k]));
  let prev = GENESIS;
  const bySeq = new Map<number, AuditRecord>();
  for (let i = 0; i < stored.length; i++) {
    const expected = i + 1;
    const record = stored[i];
    if (typeof record === 'string') return { ok: false, seq: expected, problem: 'not valid JSON (truncated or garbled)' };
    const { hash, sig, ...unsigned } = record;
    if (hashOf(unsigned) !== hash) return { ok: false, seq: expected, problem: 'edited (its hash does not match its content)' };
    const key = keys.get(record.keyId);
    if (!key) return { ok: false, seq: expected, problem: `signed by an unknown audit key ${record.keyId}` };
    if (typeof sig !== 'string' || !verify(null, Buffer.from(hash), key, Buffer.from(sig, 'base64'))) {
      return { ok: false, seq: expected, problem: 'its signature does not verify: rewritten without the audit key' };
    }
    if (record.trail !== trail) return { ok: false, seq: expected, problem: `belongs to another trail (${record.trail})` };
    if (record.seq !== expected) return { ok: false, seq: expected, problem: `out of sequence (seq ${record.seq}, expected ${expected}): a record was removed or reordered` };
    if (record.prev !== prev) return { ok: false, seq: expected, problem: 'does not follow the record before it: a record was removed, inserted or reordered' };
    for (const signed of [...(record.signed ? [record.signed] : []), ...(Array.isArray(record.approvals) ? record.approvals : [])]) {
      const evidence = checkEvidence(signed, options.people);
      if (evidence) return { ok: false, seq: expected, problem: evidence };
    }
    bySeq.set(record.seq, record);
    prev = hash;
  }
  const heads = (options.heads ?? []).filter((h) => h.trail === trail && headHolds(h, options.publicKeys));
  for (const head of heads.sort((a, b) => b.seq - a.seq)) {
    const record = bySeq.get(head.seq);
    if (!record) {
      return { ok: false, seq: head.seq, problem: `missing: a rotation recorded the trail at record ${head.seq}, but it ends at ${stored.length} (records were removed or the trail was truncated)` };
    }
    if (record.hash !== head.hash) return { ok: false, seq: head.seq, problem: 'differs from the record a rotation saw at this position (the trail was rewritten)' };
  }
  return { ok: true, records: stored.length, heads: heads.length };
}

/** Why a signed decision kept in a record does not hold up, or undefined. */
function checkEvidence(signed: SignedEvidence, people?: Person[]): string | undefined {
  if (signed.passkey !== undefined || isPasskeyKeyText(signed.key)) return checkPasskeyEvidence(signed, people);
  let key;
  try {
    key = parsePublicKey(signed.key);
  } catch {
    return 'holds a signed document with an unreadable key';
  }
  if (typeof signed.signature !== 'string' || !verifySignature(signed.document, signed.signature, [{ key }]).ok) return `holds a signed document whose signature does not verify (${signed.signer})`;
  if (people) {
    const person = people.find((p) => p.name === signed.signer);
    if (!person || !person.keys.some((k) => parsePublicKey(k).text === key.text)) {
      return `holds a document signed by ${signed.fingerprint}, which the manifests given do not list for ${signed.signer} (if the key was rotated since, verify against the manifests of that time)`;
    }
  }
  return undefined;
}

/**
 * A passkey-signed document: the assertion must hold for the key the record names (type,
 * challenge = the document, user present and verified, signature); given the manifests, the
 * passkey must be the signer's and the origin and relying party the manifests' too.
 */
function checkPasskeyEvidence(signed: SignedEvidence, people?: Person[]): string | undefined {
  if (signed.passkey === undefined || signed.signature !== undefined) return `holds a passkey-signed document without its assertion (${signed.signer})`;
  const problem = verifyAssertionWithKey(signed.document, signed.passkey, signed.key);
  if (problem) return `holds a passkey-signed document that does not verify (${signed.signer}): ${problem}`;
  if (people) {
    const person = people.find((p) => p.name === signed.signer);
    const verdict = person ? verifySigned({ document: signed.document, passkey: signed.passkey } as SignedDocument, [person]) : undefined;
    if (!verdict?.ok || verdict.signer.key !== parsePasskeyKeyText(signed.key).text) {
      return `holds a document signed by passkey ${signed.fingerprint}, which the manifests given do not list for ${signed.signer} with their relying party${verdict && !verdict.ok ? ` (${verdict.reason})` : ''}`;
    }
  }
  return undefined;
}
