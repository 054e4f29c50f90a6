import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { Client as PgClient } from 'pg';
import { auditKeyId, headHolds, loadPublicKeys, verifyTrail, type AuditHead, type AuditRecord, type AuditTrail } from '../../lib/audit';
import { auditSettingsFromEnv, initAuditTable, loadAuditSigner, openAuditTrail, type AuditSettings } from '../../lib/audit-trails';
import { loadManifests } from '../../lib/manifest';
import { connectClient } from '../../lib/temporal';
import { AUDIT_TRAIL_ATTRIBUTE, type RotationReport } from '../../workflows/messages';
import { EXIT, UsageError, err, out, parse, plain } from '../common';

const TAMPERED = 5;
/** Intact as far as it goes, but its end could not be checked against any rotation's head. */
const UNANCHORED = 6;
const WHERE = { log: { type: 'string' }, database: { type: 'string' } } as const;

/** The trail the options or the environment name: --database, --log, else REKEY_AUDIT_*. */
function settingsFrom(values: Record<string, unknown>): AuditSettings {
  const env = auditSettingsFromEnv();
  if (values.database) return { ...env, databaseUrl: values.database as string, logPath: undefined };
  if (values.log) return { ...env, databaseUrl: undefined, logPath: values.log as string };
  return env;
}

/**
 * `rekey audit [NAME] [--json]`, `rekey audit verify`, `rekey audit keygen --out PATH`,
 * `rekey audit init --database ADMIN_URL --writer ROLE`.
 */
export async function audit(args: string[]): Promise<number> {
  if (args[0] === 'verify') return verifyCommand(args.slice(1));
  if (args[0] === 'keygen') return keygen(args.slice(1));
  if (args[0] === 'init') return init(args.slice(1));
  const { values, positionals } = parse(args, { ...WHERE, json: { type: 'boolean' } }, args.length && !args[0].startsWith('-') ? ['NAME'] : []);
  const trail = openAuditTrail(settingsFrom(values));
  try {
    const records = (await trail.read()).filter((r): r is AuditRecord => typeof r !== 'string' && (!positionals[0] || r.secret === positionals[0]));
    if (values.json) {
      for (const r of records) out(JSON.stringify(r));
    } else if (!records.length) {
      err(`no audit records${positionals[0] ? ` for ${positionals[0]}` : ''} in ${trail.where}`);
    } else {
      for (const r of records) out(formatRecord(r));
    }
    return EXIT.ok;
  } finally {
    await trail.close();
  }
}

function formatRecord(r: AuditRecord): string {
  const versions = r.versions?.pending ? ` ${r.versions.current ?? '?'} -> ${r.versions.pending}` : '';
  const why = [r.reason, r.detail].filter(Boolean).join('; ');
  const key = r.signed ? ` [signed ${r.signed.fingerprint}]` : '';
  return plain(`${r.at}  ${r.secret.padEnd(20)} ${r.event.padEnd(16)} ${r.actor.padEnd(12)}${key}${versions}${why ? `  ${why}` : ''}`);
}

/** The audit public keys to trust: --public-key files, REKEY_AUDIT_PUBLIC_KEY, else the public half of REKEY_AUDIT_KEY. */
async function trustedKeys(values: Record<string, unknown>, settings: AuditSettings): Promise<KeyObject[]> {
  const given = (values['public-key'] as string[] | undefined) ?? (process.env.REKEY_AUDIT_PUBLIC_KEY ?? '').split(':').filter(Boolean);
  if (given.length) return loadPublicKeys(given);
  if (settings.key) {
    const signer = await loadAuditSigner(settings.key);
    err(`(trusting the public half of REKEY_AUDIT_KEY, ${signer.keyId}; an auditor passes --public-key)`);
    return [signer.publicKey];
  }
  throw new UsageError('audit verify needs the audit public key: --public-key PATH (or REKEY_AUDIT_PUBLIC_KEY)');
}

/**
 * Where recent rotations left this trail, from their results (or their failures' details) in
 * Temporal. Only heads the audit key signed count; anyone may start a workflow that claims a head.
 */
async function headsFromTemporal(trail: AuditTrail, limit: number, publicKeys: KeyObject[]): Promise<{ heads: AuditHead[]; ignored: number }> {
  const client = await connectClient();
  const heads: AuditHead[] = [];
  let ignored = 0;
  const value = trail.trail.replaceAll('\\', '\\\\').replaceAll("'", "\\'");
  const query = `WorkflowType = 'rotateSecret' AND ${AUDIT_TRAIL_ATTRIBUTE.name} = '${value}' AND (ExecutionStatus = 'Completed' OR ExecutionStatus = 'Failed')`;
  let scanned = 0;
  // Anyone may start runs that carry this trail's attribute; scanning on past them keeps real heads in view.
  for await (const wf of client.workflow.list({ query, pageSize: 100 })) {
    if (heads.length >= limit || ++scanned > 100_000) break;
    let head: AuditHead | undefined;
    try {
      head = ((await client.workflow.getHandle(wf.workflowId, wf.runId).result()) as RotationReport)?.auditHead;
    } catch (e) {
      if (!(e instanceof WorkflowFailedError)) throw e;
      const details = (e.cause as { details?: unknown[] } | undefined)?.details;
      head = details?.[0] as AuditHead | undefined;
    }
    if (head && head.trail === trail.trail && headHolds(head, publicKeys)) heads.push(head);
    else if (head) ignored++;
  }
  return { heads, ignored };
}

async function verifyCommand(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    { ...WHERE, 'public-key': { type: 'string', multiple: true }, file: { type: 'string', short: 'f' }, offline: { type: 'boolean' }, heads: { type: 'string' } },
    [],
  );
  const settings = settingsFrom(values);
  const publicKeys = await trustedKeys(values, settings);
  const limit = Number(values.heads ?? 100);
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--heads: "${values.heads}" is not a positive whole number`);
  const people = values.file ? await peopleOf(values.file as string) : undefined;
  const trail = openAuditTrail(settings);
  try {
    const stored = await trail.read();
    const found = values.offline ? undefined : await headsFromTemporal(trail, limit, publicKeys);
    const verdict = verifyTrail(trail.trail, stored, { publicKeys, heads: found?.heads, people });
    if (!verdict.ok) {
      err(`audit trail TAMPERED: record ${verdict.seq}: ${verdict.problem} (${trail.where})`);
      return TAMPERED;
    }
    out(`audit trail intact: ${verdict.records} records signed by ${publicKeys.map((k) => auditKeyId(k)).join(', ')} (${trail.where})`);
    if (found?.ignored) out(`  WARNING: ignored ${found.ignored} head(s) not signed by the audit key (runs that claim this trail without having written to it)`);
    if (!found) out('  rotation heads not checked (--offline): a trail cut short at its end would not be noticed');
    else if (verdict.heads > 0) out(`  reaches all ${verdict.heads} rotation head(s) recorded in Temporal`);
    else if (verdict.records > 0) {
      err('  no rotation in Temporal (within its retention) recorded a signed head of this trail: its end cannot be vouched for (--offline to check the rest only)');
      return UNANCHORED;
    }
    if (people) out('  every signed decision is by a key the manifests list for its signer');
    return EXIT.ok;
  } finally {
    await trail.close();
  }
}

/** Everyone whose key may sign something the trail keeps, as the worker's vouchFor sees them. */
async function peopleOf(dir: string) {
  const set = await loadManifests(dir);
  // Every entry, not one per name: two secrets may each declare an inline approver of one name.
  return [...set.settings.people.values(), ...[...set.secrets.values(), ...set.groups.values()].flatMap((entry) => entry.approvers)];
}

/** `rekey audit keygen --out PATH`: an Ed25519 audit key (PATH, mode 0600) and its public half (PATH.pub). */
async function keygen(args: string[]): Promise<number> {
  const { values } = parse(args, { out: { type: 'string' } }, []);
  const path = values.out as string | undefined;
  if (!path) throw new UsageError('usage: rekey audit keygen --out PATH');
  if (existsSync(path)) throw new UsageError(`${path} exists; an audit key is never overwritten`);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(`${path}.pub`, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
  out(`audit key ${auditKeyId(createPublicKey(privateKey))}: ${path} (keep it with the workers), ${path}.pub (give it to auditors)`);
  return EXIT.ok;
}

/** `rekey audit init --database ADMIN_URL [--password-file F] --writer ROLE`: create the table; the writer may only INSERT and SELECT. */
async function init(args: string[]): Promise<number> {
  const { values } = parse(args, { database: { type: 'string' }, 'password-file': { type: 'string' }, writer: { type: 'string' } }, []);
  if (!values.database || !values.writer) throw new UsageError('usage: rekey audit init --database postgres://admin@host/db [--password-file F] --writer ROLE');
  const password = values['password-file'] ? (await readFile(values['password-file'] as string, 'utf8')).trim() : undefined;
  const db = new PgClient({ connectionString: values.database as string, ...(password ? { password } : {}) });
  await db.connect();
  try {
    await initAuditTable(db, values.writer as string);
  } finally {
    await db.end();
  }
  out(`audit table ready; ${values.writer} may INSERT and SELECT only`);
  return EXIT.ok;
}
