// Workflow inputs are untrusted: anyone who may start a workflow in the namespace writes them. They
// are checked field by field before anything else happens; a spec, a command or a host in them is
// refused, never used.
import { ApplicationFailure } from '@temporalio/workflow';
import { MAX_DOCUMENT_CHARS } from '../lib/signed';
import { MAX_SIGNATURE_CHARS } from '../lib/sshsig';
import type { EmergencyInput, RotationInput } from './messages';

export const REFUSED = 'RotationRefused';

const SECRET_NAME = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;
const SPEC_HASH = /^sha256:[0-9a-f]{64}$/;
const MAX_REASON = 500;
const MAX_LABEL = 100;

export function refuse(message: string): never {
  throw ApplicationFailure.nonRetryable(message, REFUSED);
}

function text(value: unknown, field: string, max: number): string | undefined {
  if (value === undefined) return undefined;
  // Control characters would let a label forge lines in logs and reports.
  if (typeof value !== 'string' || value.length > max || /[\u0000-\u001f\u007f]/.test(value)) {
    refuse(`input.${field}: expected text of at most ${max} characters without control characters`);
  }
  return value;
}

function signed(value: unknown, field: string): { document: string; signature: string } | undefined {
  if (value === undefined) return undefined;
  const v = value as Record<string, unknown>;
  if (!v || typeof v !== 'object' || Array.isArray(v)) refuse(`input.${field}: expected {"document": "...", "signature": "..."}`);
  const extra = Object.keys(v).filter((k) => k !== 'document' && k !== 'signature');
  if (extra.length) refuse(`input.${field}: unknown field ${extra[0].slice(0, 40)}`);
  if (typeof v.document !== 'string' || v.document.length > MAX_DOCUMENT_CHARS) refuse(`input.${field}.document: expected text of at most ${MAX_DOCUMENT_CHARS} characters`);
  if (typeof v.signature !== 'string' || v.signature.length > MAX_SIGNATURE_CHARS) refuse(`input.${field}.signature: expected an SSH signature of at most ${MAX_SIGNATURE_CHARS} characters`);
  return { document: v.document, signature: v.signature };
}

function fields(input: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (!input || typeof input !== 'object' || Array.isArray(input)) refuse('input: expected {"secret": "<name>", "specHash": "sha256:..."}');
  const record = input as Record<string, unknown>;
  if ('spec' in record) {
    refuse('input.spec: a rotation input never carries a spec; the worker rotates what its own reviewed manifests say (send {"secret", "specHash"})');
  }
  const unknown = Object.keys(record).filter((k) => !allowed.includes(k));
  if (unknown.length) refuse(`input.${unknown[0].slice(0, 40)}: unknown field (expected ${allowed.join(', ')})`);
  if (typeof record.secret !== 'string' || !SECRET_NAME.test(record.secret)) refuse('input.secret: expected the name of a Secret manifest');
  if (record.specHash !== undefined && (typeof record.specHash !== 'string' || !SPEC_HASH.test(record.specHash))) {
    refuse('input.specHash: expected "sha256:" and 64 hex digits (rekey plan and rekey rotate print it)');
  }
  return record;
}

export function checkRotationInput(input: unknown): RotationInput {
  const r = fields(input, ['secret', 'specHash', 'reason', 'requestedBy', 'request', 'emergency']);
  return {
    secret: r.secret as string,
    specHash: r.specHash as string | undefined,
    reason: text(r.reason, 'reason', MAX_REASON),
    requestedBy: text(r.requestedBy, 'requestedBy', MAX_LABEL),
    request: signed(r.request, 'request'),
    emergency: signed(r.emergency, 'emergency'),
  };
}

export function checkEmergencyInput(input: unknown): EmergencyInput {
  const r = fields(input, ['secret', 'specHash', 'reason', 'requestedBy', 'authorization']);
  const authorization = signed(r.authorization, 'authorization');
  if (!authorization) refuse('input.authorization: an emergency rotation needs a break-glass signature (rekey revoke --emergency --key)');
  return {
    secret: r.secret as string,
    specHash: r.specHash as string | undefined,
    reason: text(r.reason, 'reason', MAX_REASON),
    requestedBy: text(r.requestedBy, 'requestedBy', MAX_LABEL),
    authorization,
  };
}
