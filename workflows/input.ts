// Workflow inputs are untrusted: anyone who may start a workflow in the namespace writes them. They
// are checked field by field before anything else happens; a spec, a command or a host in them is
// refused, never used.
import { ApplicationFailure } from '@temporalio/workflow';
import type { AuditHead } from '../lib/audit';
import { MAX_DOCUMENT_CHARS } from '../lib/signed';
import { MAX_SIGNATURE_CHARS } from '../lib/sshsig';
import type { EmergencyInput, FleetInput, GroupInput, RetireInput, RotationInput } from './messages';

export const REFUSED = 'RotationRefused';

const SECRET_NAME = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;
const SPEC_HASH = /^sha256:[0-9a-f]{64}$/;
const MAX_REASON = 500;
const MAX_LABEL = 100;

/** Fail the run: nothing happened. `head`: where its refusal left the audit trail (the failure's details). */
export function refuse(message: string, head?: AuditHead): never {
  throw ApplicationFailure.create({ message, type: REFUSED, nonRetryable: true, details: head ? [head] : undefined });
}

function text(value: unknown, field: string, max: number): string | undefined {
  if (value === undefined) return undefined;
  // Control and direction-changing characters would let a label forge lines or reorder text in logs and reports.
  if (typeof value !== 'string' || value.length > max || /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(value)) {
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
  const r = fields(input, ['secret', 'specHash', 'reason', 'requestedBy', 'request', 'emergency', 'group']);
  if (r.group !== undefined && (typeof r.group !== 'string' || !SECRET_NAME.test(r.group))) refuse('input.group: expected the name of a RotationGroup manifest');
  if (r.group !== undefined && r.emergency !== undefined) refuse('input.group: an emergency rotation never waits for a group');
  return {
    group: r.group as string | undefined,
    secret: r.secret as string,
    specHash: r.specHash as string | undefined,
    reason: text(r.reason, 'reason', MAX_REASON),
    requestedBy: text(r.requestedBy, 'requestedBy', MAX_LABEL),
    request: signed(r.request, 'request'),
    emergency: signed(r.emergency, 'emergency'),
  };
}

const FLEET_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/;

/** A fleet's input: secrets as [name, hash] pairs, bounded; each child checks its own input again. */
export function checkFleetInput(input: unknown): FleetInput {
  if (!input || typeof input !== 'object' || Array.isArray(input)) refuse('input: expected {"fleet", "items": [[secret, specHash], ...], "maxParallel"}');
  const r = input as Record<string, unknown>;
  const allowed = ['fleet', 'items', 'maxParallel', 'overdueOnly', 'requestedBy', 'reason', 'childrenPerRun', 'summary'];
  const unknown = Object.keys(r).filter((k) => !allowed.includes(k));
  if (unknown.length) refuse(`input.${unknown[0].slice(0, 40)}: unknown field (expected ${allowed.join(', ')})`);
  if (typeof r.fleet !== 'string' || !FLEET_NAME.test(r.fleet)) refuse('input.fleet: expected a name (letters, digits, ".", "_", ":", "-")');
  if (!Array.isArray(r.items) || r.items.length > 20_000) refuse('input.items: expected at most 20000 [secret, specHash] pairs');
  (r.items as unknown[]).forEach((item, i) => {
    if (!Array.isArray(item) || item.length !== 2 || typeof item[0] !== 'string' || !SECRET_NAME.test(item[0]) || typeof item[1] !== 'string' || !SPEC_HASH.test(item[1])) {
      refuse(`input.items[${i}]: expected ["<secret>", "sha256:<64 hex digits>"]`);
    }
  });
  const whole = (v: unknown, field: string, min: number, max: number) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)) refuse(`input.${field}: expected a whole number from ${min} to ${max}`);
  };
  whole(r.maxParallel, 'maxParallel', 1, 100);
  whole(r.childrenPerRun, 'childrenPerRun', 1, 1000);
  if (r.overdueOnly !== undefined && typeof r.overdueOnly !== 'boolean') refuse('input.overdueOnly: expected true or false');
  return {
    ...(r as unknown as FleetInput),
    maxParallel: (r.maxParallel as number | undefined) ?? 2,
    requestedBy: text(r.requestedBy, 'requestedBy', MAX_LABEL),
    reason: text(r.reason, 'reason', MAX_REASON),
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

/** A group's input: its name, the reviewed hash, labels. Members are the worker's to look up. */
export function checkGroupInput(input: unknown): GroupInput {
  if (!input || typeof input !== 'object' || Array.isArray(input)) refuse('input: expected {"group": "<name>", "specHash": "sha256:..."}');
  const r = input as Record<string, unknown>;
  if ('secrets' in r || 'spec' in r) refuse('input: a group input never carries its members or a spec; the worker rotates what its own RotationGroup manifest says');
  const allowed = ['group', 'specHash', 'reason', 'requestedBy'];
  const unknown = Object.keys(r).filter((k) => !allowed.includes(k));
  if (unknown.length) refuse(`input.${unknown[0].slice(0, 40)}: unknown field (expected ${allowed.join(', ')})`);
  if (typeof r.group !== 'string' || !SECRET_NAME.test(r.group)) refuse('input.group: expected the name of a RotationGroup manifest');
  if (r.specHash !== undefined && (typeof r.specHash !== 'string' || !SPEC_HASH.test(r.specHash))) refuse('input.specHash: expected "sha256:" and 64 hex digits (rekey plan prints it)');
  return {
    group: r.group,
    specHash: r.specHash as string | undefined,
    reason: text(r.reason, 'reason', MAX_REASON),
    requestedBy: text(r.requestedBy, 'requestedBy', MAX_LABEL),
  };
}

const VERSION_ID = /^[A-Za-z0-9-]{1,64}$/;
const RUN_ID = /^rotation\/[a-z0-9.-]{1,63}\/[A-Za-z0-9-]{1,64}$/;

/** A retire timer's input: which revoked version, revoked by which rotation; the worker checks both again. */
export function checkRetireInput(input: unknown): RetireInput {
  const r = fields(input, ['secret', 'specHash', 'versionId', 'revokedBy']);
  if (typeof r.specHash !== 'string') refuse('input.specHash: expected "sha256:" and 64 hex digits');
  if (typeof r.versionId !== 'string' || !VERSION_ID.test(r.versionId)) refuse('input.versionId: expected a store version id');
  if (typeof r.revokedBy !== 'string' || !RUN_ID.test(r.revokedBy)) refuse('input.revokedBy: expected "rotation/<secret>/<run id>"');
  return { secret: r.secret as string, specHash: r.specHash, versionId: r.versionId, revokedBy: r.revokedBy };
}
