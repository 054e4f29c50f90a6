// The audit trail: an append-only JSON-lines file where every record carries the hash of the one
// before it, so an edited, removed or reordered record is found by `verify`. Records hold who,
// what, when, why and which versions; never a value.
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AuditEvent } from '../workflows/messages';

export const GENESIS = '0'.repeat(64);

export interface AuditRecord extends AuditEvent {
  seq: number;
  prev: string;
  hash: string;
}

export function defaultAuditLogPath(): string {
  return process.env.REKEY_AUDIT_LOG ?? join(__dirname, '..', '.data', 'audit', 'audit.jsonl');
}

/** Canonical JSON: keys sorted at every level, so the hash does not depend on key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function hashOf(record: Omit<AuditRecord, 'hash'>): string {
  return createHash('sha256').update(canonical(record)).digest('hex');
}

/** What makes an event unique: a retried activity writes the same key and is not written twice. */
export function auditKey(e: Pick<AuditEvent, 'rotationId' | 'event' | 'actor'>): string {
  return `${e.rotationId}|${e.event}|${e.actor}`;
}

const LOCK_STALE_MS = 30_000;

/** An exclusive lock file beside the log: appenders in any process on this host take turns. */
async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(lock, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A holder that died leaves its lock behind; after a generous wait it is taken over.
      const info = await stat(lock).catch(() => undefined);
      if (info && Date.now() - info.mtimeMs > LOCK_STALE_MS) await rm(lock, { force: true });
      if (attempt > 2000) throw new Error(`audit log ${path} stayed locked (${lock})`);
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
    }
  }
  try {
    return await work();
  } finally {
    await rm(lock, { force: true });
  }
}

async function readLines(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch((err) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  });
  return text.split('\n').filter((line) => line.length > 0);
}

/**
 * What an appender needs to know of a log: the keys already written and the last record. Kept per
 * file and brought up to date from the bytes appended since (by any process), so an append costs
 * what was added since the last one, not the whole log.
 */
interface Tail {
  size: number;
  keys: Map<string, AuditRecord>;
  last?: AuditRecord;
}
const tails = new Map<string, Tail>();

async function catchUp(path: string): Promise<Tail> {
  let tail = tails.get(path);
  const size = (await stat(path).catch(() => undefined))?.size ?? 0;
  if (!tail || size < tail.size) tail = { size: 0, keys: new Map() };
  if (size > tail.size) {
    const handle = await open(path, 'r');
    try {
      const buffer = Buffer.alloc(size - tail.size);
      await handle.read(buffer, 0, buffer.length, tail.size);
      for (const line of buffer.toString('utf8').split('\n').filter(Boolean)) {
        const record = JSON.parse(line) as AuditRecord;
        tail.keys.set(auditKey(record), record);
        tail.last = record;
      }
    } finally {
      await handle.close();
    }
    tail.size = size;
  }
  tails.set(path, tail);
  return tail;
}

export class AuditLog {
  constructor(readonly path: string = defaultAuditLogPath()) {}

  /** Append `event` unless a record with the same key exists. Returns the record now in the log. */
  async append(event: AuditEvent): Promise<{ record: AuditRecord; written: boolean }> {
    await mkdir(dirname(this.path), { recursive: true });
    return withLock(this.path, async () => {
      const tail = await catchUp(this.path);
      const existing = tail.keys.get(auditKey(event));
      if (existing) return { record: existing, written: false };
      const last = tail.last;
      const unsigned = { ...stripUndefined(event), seq: (last?.seq ?? 0) + 1, prev: last?.hash ?? GENESIS };
      const record: AuditRecord = { ...unsigned, hash: hashOf(unsigned) };
      const line = `${JSON.stringify(record)}\n`;
      const handle = await open(this.path, 'a', 0o600);
      try {
        await handle.appendFile(line);
        await handle.sync();
      } finally {
        await handle.close();
      }
      tail.keys.set(auditKey(record), record);
      tail.last = record;
      tail.size += Buffer.byteLength(line);
      return { record, written: true };
    });
  }

  async read(secret?: string): Promise<AuditRecord[]> {
    const records = (await readLines(this.path)).map((line) => JSON.parse(line) as AuditRecord);
    return secret ? records.filter((r) => r.secret === secret) : records;
  }

  /** The first record that breaks the chain, or ok with the number of records. */
  async verify(): Promise<{ ok: true; records: number } | { ok: false; line: number; problem: string }> {
    const lines = await readLines(this.path);
    let prev = GENESIS;
    for (let i = 0; i < lines.length; i++) {
      const line = i + 1;
      let record: AuditRecord;
      try {
        record = JSON.parse(lines[i]);
      } catch {
        return { ok: false, line, problem: 'not valid JSON (truncated or garbled)' };
      }
      const { hash, ...unsigned } = record;
      if (hashOf(unsigned) !== hash) return { ok: false, line, problem: 'edited (its hash does not match its content)' };
      if (record.seq !== line) return { ok: false, line, problem: `out of sequence (seq ${record.seq}, expected ${line}): a record was removed or reordered` };
      if (record.prev !== prev) return { ok: false, line, problem: 'does not follow the record before it: a record was removed, inserted or reordered' };
      prev = hash;
    }
    return { ok: true, records: lines.length };
  }
}

function stripUndefined<T extends object>(value: T): T {
  return JSON.parse(JSON.stringify(value));
}
