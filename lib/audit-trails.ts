// Where the audit trail lives. Postgres (REKEY_AUDIT_DATABASE_URL) is shared by every worker host
// and written through a role that may only INSERT and SELECT; appenders take turns on an advisory
// lock, so two hosts write one chain. The JSON-lines file (REKEY_AUDIT_LOG) serves one host.
import { hostname } from 'node:os';
import { mkdir, open, readFile, rm, stat, truncate } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Pool, type Client as PgClient } from 'pg';
import { readCurrent } from '../activities/stores';
import { auditSignerFrom, nextRecord, type AuditEvent, type AuditRecord, type AuditSigner, type AuditTrail } from './audit';

// --- file -------------------------------------------------------------------------------------

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

/**
 * What an appender needs to know of a log: the ids already written and the last record. Kept per
 * file and brought up to date from the bytes appended since (by any process), so an append costs
 * what was added since the last one, not the whole log.
 */
interface Tail {
  size: number;
  ids: Map<string, AuditRecord>;
  last?: AuditRecord;
}
const tails = new Map<string, Tail>();

export class FileAuditTrail implements AuditTrail {
  readonly trail: string;
  readonly where: string;

  constructor(
    readonly path: string,
    private readonly signer?: AuditSigner,
    /** Told about repairs and skipped lines (the activity logger in a worker). */
    private readonly warn: (message: string, meta?: Record<string, unknown>) => void = () => undefined,
  ) {
    this.trail = `file:${hostname()}:${resolve(path)}`;
    this.where = path;
  }

  /** Read what was appended since the last call; a torn last line (a crash mid-append) is cut off. */
  private async catchUp(): Promise<Tail> {
    let tail = tails.get(this.path);
    const size = (await stat(this.path).catch(() => undefined))?.size ?? 0;
    if (!tail || size < tail.size) tail = { size: 0, ids: new Map() };
    if (size > tail.size) {
      const handle = await open(this.path, 'r');
      let text: string;
      try {
        const buffer = Buffer.alloc(size - tail.size);
        await handle.read(buffer, 0, buffer.length, tail.size);
        text = buffer.toString('utf8');
      } finally {
        await handle.close();
      }
      const complete = text.lastIndexOf('\n') + 1;
      const torn = text.slice(complete);
      if (torn) {
        const end = tail.size + Buffer.byteLength(text.slice(0, complete));
        this.warn('repaired the audit log: cut off a torn last line left by an interrupted append', { path: this.path, bytes: Buffer.byteLength(torn) });
        await truncate(this.path, end);
      }
      for (const line of text.slice(0, complete).split('\n').filter(Boolean)) {
        try {
          const record = JSON.parse(line) as AuditRecord;
          tail.ids.set(record.id, record);
          tail.last = record;
        } catch {
          // A garbled record in the middle is tampering: `rekey audit verify` names it. Appends go on.
          this.warn('the audit log holds a line that is not JSON; rekey audit verify will name it', { path: this.path });
        }
      }
      tail.size = tail.size + Buffer.byteLength(text.slice(0, complete));
    }
    tails.set(this.path, tail);
    return tail;
  }

  async append(event: AuditEvent): Promise<{ record: AuditRecord; written: boolean }> {
    const signer = this.signer;
    if (!signer) throw new Error('no audit key: set REKEY_AUDIT_KEY');
    await mkdir(dirname(this.path), { recursive: true });
    return withLock(this.path, async () => {
      const tail = await this.catchUp();
      const existing = tail.ids.get(event.id);
      if (existing) return { record: existing, written: false };
      const record = nextRecord(this.trail, event, tail.last, signer);
      const line = `${JSON.stringify(record)}\n`;
      const handle = await open(this.path, 'a', 0o600);
      try {
        await handle.appendFile(line);
        await handle.sync();
      } finally {
        await handle.close();
      }
      tail.ids.set(record.id, record);
      tail.last = record;
      tail.size += Buffer.byteLength(line);
      return { record, written: true };
    });
  }

  async read(): Promise<(AuditRecord | string)[]> {
    const text = await readFile(this.path, 'utf8').catch((err) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw err;
    });
    return text
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => {
        try {
          return JSON.parse(line) as AuditRecord;
        } catch {
          return line;
        }
      });
  }

  async close(): Promise<void> {}
}

// --- Postgres ---------------------------------------------------------------------------------

export const AUDIT_TABLE = 'rekey_audit';

/**
 * Create the audit table (run once, as an administrator) and let `writer` only INSERT and SELECT:
 * the role the workers use can add records but never change or remove one.
 */
export async function initAuditTable(admin: PgClient, writer: string): Promise<void> {
  const quoted = `"${writer.replaceAll('"', '""')}"`;
  await admin.query(`CREATE TABLE IF NOT EXISTS ${AUDIT_TABLE} (
    seq bigint PRIMARY KEY,
    id text NOT NULL UNIQUE,
    secret text NOT NULL,
    event text NOT NULL,
    at timestamptz NOT NULL,
    hash text NOT NULL,
    record text NOT NULL
  )`);
  await admin.query(`REVOKE ALL ON ${AUDIT_TABLE} FROM PUBLIC`);
  await admin.query(`REVOKE ALL ON ${AUDIT_TABLE} FROM ${quoted}`);
  await admin.query(`GRANT SELECT, INSERT ON ${AUDIT_TABLE} TO ${quoted}`);
}

const pools = new Map<string, Pool>();

export class PostgresAuditTrail implements AuditTrail {
  readonly trail: string;
  readonly where: string;
  private readonly key: string;
  private readonly connection: { host: string; port: number; database: string; user: string; password?: string };

  constructor(
    url: string,
    private readonly passwordFile?: string,
    private readonly signer?: AuditSigner,
  ) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error('REKEY_AUDIT_DATABASE_URL is not a URL (expected postgres://user@host:port/database)');
    }
    // The identity leaves out the user and any password: the same table is the same trail.
    const where = `${parsed.hostname}:${parsed.port || 5432}${parsed.pathname}`;
    this.trail = `postgres:${where}`;
    this.where = `postgres://${where} (table ${AUDIT_TABLE})`;
    this.key = `${url}|${passwordFile ?? ''}`;
    this.connection = {
      host: parsed.hostname,
      port: Number(parsed.port || 5432),
      database: decodeURIComponent(parsed.pathname.slice(1)),
      user: decodeURIComponent(parsed.username),
      password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    };
  }

  private pool(): Pool {
    let pool = pools.get(this.key);
    if (!pool) {
      const passwordFile = this.passwordFile;
      pool = new Pool({
        ...this.connection,
        // Read at each connect, so the password file can be rotated like any other credential.
        ...(passwordFile ? { password: () => readFileSync(passwordFile, 'utf8').trim() } : {}),
        max: 3,
        idleTimeoutMillis: 10_000,
        allowExitOnIdle: true,
        application_name: 'rekey-audit',
      });
      pool.on('error', () => undefined); // an idle connection dropped by the server is replaced on the next use
      pools.set(this.key, pool);
    }
    return pool;
  }

  async append(event: AuditEvent): Promise<{ record: AuditRecord; written: boolean }> {
    const signer = this.signer;
    if (!signer) throw new Error('no audit key: set REKEY_AUDIT_KEY');
    const db = await this.pool().connect();
    try {
      await db.query('BEGIN');
      // One appender at a time across every host; advisory locks need no table privilege.
      await db.query(`SELECT pg_advisory_xact_lock(hashtext('${AUDIT_TABLE}'))`);
      const existing = await db.query<{ record: string }>(`SELECT record FROM ${AUDIT_TABLE} WHERE id = $1`, [event.id]);
      if (existing.rowCount) {
        await db.query('COMMIT');
        return { record: JSON.parse(existing.rows[0].record), written: false };
      }
      const last = await db.query<{ seq: string; hash: string }>(`SELECT seq, hash FROM ${AUDIT_TABLE} ORDER BY seq DESC LIMIT 1`);
      const record = nextRecord(this.trail, event, last.rowCount ? { seq: Number(last.rows[0].seq), hash: last.rows[0].hash } : undefined, signer);
      await db.query(`INSERT INTO ${AUDIT_TABLE} (seq, id, secret, event, at, hash, record) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [
        record.seq,
        record.id,
        record.secret,
        record.event,
        record.at,
        record.hash,
        JSON.stringify(record),
      ]);
      await db.query('COMMIT');
      return { record, written: true };
    } catch (err) {
      await db.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      db.release();
    }
  }

  async read(): Promise<(AuditRecord | string)[]> {
    const rows = await this.pool().query<{ record: string }>(`SELECT record FROM ${AUDIT_TABLE} ORDER BY seq`);
    return rows.rows.map(({ record }) => {
      try {
        return JSON.parse(record) as AuditRecord;
      } catch {
        return record;
      }
    });
  }

  async close(): Promise<void> {
    const pool = pools.get(this.key);
    pools.delete(this.key);
    await pool?.end();
  }
}

// --- configuration -----------------------------------------------------------------------------

export interface AuditSettings {
  /** postgres://user@host:port/database; the shared trail. */
  databaseUrl?: string;
  /** A file holding the database user's password (kept out of the URL and the environment). */
  databasePasswordFile?: string;
  /** The JSON-lines file, for one host, when there is no database. */
  logPath?: string;
  /** The audit signing key: a PEM file, or "aws-secrets-manager:<secretId>" holding {"privateKey": "<PEM>"}. */
  key?: string;
}

export function auditSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): AuditSettings {
  return {
    databaseUrl: env.REKEY_AUDIT_DATABASE_URL || undefined,
    databasePasswordFile: env.REKEY_AUDIT_DATABASE_PASSWORD_FILE || undefined,
    logPath: env.REKEY_AUDIT_LOG || undefined,
    key: env.REKEY_AUDIT_KEY || undefined,
  };
}

export function defaultAuditLogPath(): string {
  return join(__dirname, '..', '.data', 'audit', 'audit.jsonl');
}

/** The audit signing key named by `settings.key`. */
export async function loadAuditSigner(key: string | undefined): Promise<AuditSigner> {
  if (!key) throw new Error('no audit key: set REKEY_AUDIT_KEY to a PEM file (rekey audit keygen makes one) or aws-secrets-manager:<secretId>');
  const store = /^aws-secrets-manager:(.+)$/.exec(key);
  if (store) {
    const value = await readCurrent({ type: 'aws-secrets-manager', secretId: store[1] });
    if (!value.privateKey) throw new Error(`${key}: the stored value has no privateKey field`);
    return auditSignerFrom(value.privateKey, key);
  }
  let pem: string;
  try {
    pem = readFileSync(key, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the audit key ${key} (REKEY_AUDIT_KEY): ${(err as Error).message}`);
  }
  return auditSignerFrom(pem, key);
}

/** The trail `settings` name: the database when one is set, else the file. */
export function openAuditTrail(settings: AuditSettings, signer?: AuditSigner, warn?: (message: string, meta?: Record<string, unknown>) => void): AuditTrail {
  if (settings.databaseUrl) return new PostgresAuditTrail(settings.databaseUrl, settings.databasePasswordFile, signer);
  return new FileAuditTrail(settings.logPath ?? defaultAuditLogPath(), signer, warn);
}
