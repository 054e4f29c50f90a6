// Signed documents: how a person proves a decision to rekey. A document is a small JSON text that
// binds the decision to exactly one thing (this run, this pending version, this spec), signed with
// the person's SSH key in the SSHSIG format. The exact text is what is signed and what is kept, so
// an auditor re-verifies it with `ssh-keygen -Y verify` and the public keys alone. Pure: the
// workflow sandbox verifies these inside update validators.
import { canonicalJson } from './canonical';
import { parsePublicKey, verifySignature, type PublicKey } from './sshsig';
import { verifyAssertion, type PasskeyAssertion, type TrustedPasskey } from './webauthn';

/**
 * What travels in an update, a signal or a workflow input: the signed text and either its SSH
 * signature, or a passkey's WebAuthn assertion whose challenge is the sha256 of the text.
 */
export type SignedDocument = SshSignedDocument | PasskeySignedDocument;

export interface SshSignedDocument {
  document: string;
  signature: string;
  passkey?: undefined;
}

export interface PasskeySignedDocument {
  document: string;
  passkey: PasskeyAssertion;
  signature?: undefined;
}

/** A person as the trusted manifests declare them: a name (a label) and keys (the identity). */
export interface Person {
  name: string;
  /** "ssh-ed25519 AAAA..." */
  keys: string[];
  /** WebAuthn credentials, each with the relying party (Settings spec.passkeys) it is valid for. */
  passkeys?: TrustedPasskey[];
}

interface DocumentBase {
  /** Temporal namespace the document is meant for. */
  namespace: string;
  secret: string;
  /** ISO 8601; the document counts only between these two instants. */
  issuedAt: string;
  expiresAt: string;
}

/** An approver's approve/reject of one waiting rotation run. */
export interface DecisionDocument extends DocumentBase {
  kind: 'rekey.dev/decision';
  workflowId: string;
  runId: string;
  pendingVersionId: string;
  specHash: string;
  decision: 'approve' | 'reject';
  comment?: string;
}

/** The requester's signature on a rotation request: who asked (so they cannot also approve). */
export interface RequestDocument extends DocumentBase {
  kind: 'rekey.dev/request';
  workflowId: string;
  specHash?: string;
  reason?: string;
}

/** A break-glass key holder's authorisation of an emergency rotation. */
export interface BreakGlassDocument extends DocumentBase {
  kind: 'rekey.dev/break-glass';
  specHash?: string;
  revokeFirst: boolean;
  reason: string;
}

export type AnyDocument = DecisionDocument | RequestDocument | BreakGlassDocument;

export const MAX_DOCUMENT_CHARS = 4096;
export const MAX_COMMENT_CHARS = 500;
/** A signed document is short-lived: at most this long between issuedAt and expiresAt. */
export const MAX_VALIDITY_MS = 24 * 3_600_000;
/** Clocks of the signer and the worker may disagree by this much. */
export const CLOCK_SKEW_MS = 5 * 60_000;

export interface Signer {
  name: string;
  fingerprint: string;
  /** "ssh-ed25519 AAAA..." */
  key: string;
}

export type Opened<D> = { ok: true; doc: D; signer: Signer } | { ok: false; reason: string };

/** The text to sign: canonical JSON, so the same decision always reads the same. */
export function documentText(doc: AnyDocument): string {
  return canonicalJson(doc);
}

/** Every key of these people, each with its owner, ready for verification. Bad keys are skipped. */
export function keyring(people: readonly Person[]): { name: string; key: PublicKey }[] {
  const out: { name: string; key: PublicKey }[] = [];
  for (const person of people) {
    for (const text of person.keys) {
      try {
        out.push({ name: person.name, key: parsePublicKey(text) });
      } catch {
        // Manifests are validated before they reach here; a bad key can only be skipped.
      }
    }
  }
  return out;
}

const isText = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

/**
 * Check a signed document of `kind`: its shape and size, its validity window at `now` (skipped when
 * undefined: re-verification of a document accepted earlier), and a valid signature by one of
 * `people`'s keys. Bindings to a run, a version or a spec are the caller's to
 * compare (see `mismatch`). Never throws on hostile input; the reason names what is wrong.
 */
export function openSigned<D extends AnyDocument>(signed: unknown, kind: D['kind'], people: readonly Person[], now: number | undefined): Opened<D> {
  // Total: whatever arrives (a signal's payload is anyone's JSON), the answer is a verdict, never a
  // throw that would fail the workflow task over and over.
  try {
    return open<D>(signed, kind, people, now);
  } catch {
    return { ok: false, reason: 'not a well-formed signed document' };
  }
}

/** How an untrusted value is named in a reason: a string (cut short) or its type, never its methods. */
export function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : value === undefined ? '(none)' : `(a ${typeof value})`;
}

function open<D extends AnyDocument>(signed: unknown, kind: D['kind'], people: readonly Person[], now: number | undefined): Opened<D> {
  if (!signed || typeof signed !== 'object') return { ok: false, reason: 'expected {"document": "...", "signature": "..."} (a signed document; see rekey approve --print)' };
  const { document, signature, passkey } = signed as { document?: unknown; signature?: unknown; passkey?: unknown };
  if (!isText(document, MAX_DOCUMENT_CHARS)) return { ok: false, reason: `document must be a string of at most ${MAX_DOCUMENT_CHARS} characters` };
  if (signature !== undefined && passkey !== undefined) return { ok: false, reason: 'give a signature or a passkey assertion, not both' };
  if (passkey === undefined && (typeof signature !== 'string' || !signature)) return { ok: false, reason: 'unsigned: signature is missing' };
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(document);
  } catch {
    return { ok: false, reason: 'document is not JSON' };
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return { ok: false, reason: 'document is not a JSON object' };
  // One text per document: a reader and the parser see the same fields (no duplicate keys).
  if (canonicalJson(doc) !== document) return { ok: false, reason: 'document is not canonical JSON (sorted keys, no spaces, no repeated keys): sign what rekey prints' };
  if (doc.kind !== kind) return { ok: false, reason: `document kind is ${show(doc.kind)}, expected ${kind}` };
  // A passkey prompt shows neither the document nor its kind, and the page that asks for the tap
  // is served by the approvals server: a passkey decides, it never requests or breaks the glass.
  if (passkey !== undefined && kind !== 'rekey.dev/decision') return { ok: false, reason: `a passkey signs decisions only; sign a ${kind.slice('rekey.dev/'.length)} document with your SSH key` };
  const issuedAt = typeof doc.issuedAt === 'string' ? Date.parse(doc.issuedAt) : NaN;
  const expiresAt = typeof doc.expiresAt === 'string' ? Date.parse(doc.expiresAt) : NaN;
  if (Number.isNaN(issuedAt) || Number.isNaN(expiresAt)) return { ok: false, reason: 'issuedAt and expiresAt must be ISO 8601 times' };
  if (expiresAt - issuedAt > MAX_VALIDITY_MS) return { ok: false, reason: 'valid for more than 24h: sign a shorter-lived document' };
  if (now !== undefined && issuedAt > now + CLOCK_SKEW_MS) return { ok: false, reason: `issued in the future (${doc.issuedAt})` };
  if (now !== undefined && expiresAt <= now) return { ok: false, reason: `expired at ${doc.expiresAt}` };
  if ('comment' in doc && doc.comment !== undefined && !isText(doc.comment, MAX_COMMENT_CHARS)) {
    return { ok: false, reason: `comment must be a string of at most ${MAX_COMMENT_CHARS} characters` };
  }
  const verdict = verifySigned(signed as SignedDocument, people);
  if (!verdict.ok) return verdict;
  return { ok: true, doc: doc as unknown as D, signer: verdict.signer };
}

/** Only the signed text and its signature or assertion: nothing else a sender added is kept or passed on. */
export function signedOnly(signed: SignedDocument): SignedDocument {
  if (signed.passkey === undefined) return { document: signed.document, signature: signed.signature };
  const { credentialId, authenticatorData, clientDataJSON, signature } = signed.passkey;
  return { document: signed.document, passkey: { credentialId, authenticatorData, clientDataJSON, signature } };
}

/** Every passkey of these people, each with its owner. */
export function passkeyring(people: readonly Person[]): { name: string; passkey: TrustedPasskey }[] {
  return people.flatMap((person) => (person.passkeys ?? []).map((passkey) => ({ name: person.name, passkey })));
}

/**
 * Who signed `signed.document`, by the keys and passkeys of `people`: the signature part of
 * openSigned, for re-verifying a document accepted earlier (the audit trail). Never throws.
 */
export function verifySigned(signed: SignedDocument, people: readonly Person[]): { ok: true; signer: Signer } | { ok: false; reason: string } {
  try {
    if (signed.passkey !== undefined) {
      const verdict = verifyAssertion(signed.document, signed.passkey, passkeyring(people));
      if (!verdict.ok) return verdict;
      // The identity is the credential's public key: one passkey is one signer, whoever it is named after.
      return { ok: true, signer: { name: verdict.key.name, fingerprint: verdict.passkey.fingerprint, key: verdict.passkey.text } };
    }
    const verdict = verifySignature(signed.document, signed.signature, keyring(people));
    if (!verdict.ok) return verdict;
    const { name, key } = verdict.key;
    return { ok: true, signer: { name, fingerprint: key.fingerprint, key: key.text } };
  } catch {
    return { ok: false, reason: 'not a well-formed signed document' };
  }
}

/** The first field of `doc` that differs from `expected`, as a sentence; undefined if all match. */
export function mismatch(doc: object, expected: Record<string, unknown>): string | undefined {
  for (const [field, want] of Object.entries(expected)) {
    const got = (doc as Record<string, unknown>)[field];
    if (got !== want) return `signed for ${field} ${show(got)}, but this is ${JSON.stringify(want)}`;
  }
  return undefined;
}
