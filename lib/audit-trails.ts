// Where the audit trail lives. Postgres (REKEY_AUDIT_DATABASE_URL) is shared by every worker host
// and written through a role that may only INSERT and SELECT; the sequence number's primary key
// makes concurrent appenders take turns, so two hosts write one chain. The JSON-lines file (REKEY_AUDIT_LOG) serves one host.
import { hostname } from 'node:os';
import { link, mkdir, open, readFile, rename, rm, stat, truncate } from 'node:fs/promises';
import { readFileSync, readlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Pool, type Client as PgClient } from 'pg';
import { ScramOnlyClient } from './pg-strict';
import { readCurrent } from '../activities/stores';
import { auditSignerFrom, nextRecord, type AuditEvent, type AuditRecord, type AuditSigner, type AuditTrail } from './audit';

// --- file -------------------------------------------------------------------------------------

/** A lock whose holder is on another host (a shared folder) is taken over only after this long. */
const FOREIGN_LOCK_STALE_MS = 10 * 60_000;

/** Which process namespace this process lives in: two containers may share a host name, not PIDs. */
const PID_NAMESPACE = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid').replace(/\D/g, '');
  } catch {
    return 'unknown';
  }
})();

/** A lock file nobody wrote an owner into (a crash between creating and writing it). */
const EMPTY_LOCK_STALE_MS = 60_000;

/** Is the holder named in a lock file gone? In this host's PID namespace: its process no longer exists. */
async function holderGone(lock: string, owner: string): Promise<boolean> {
  const [host, namespace, pid] = owner.split(':');
  if (!owner) {
    const info = await stat(lock).catch(() => undefined);
    return info !== undefined && Date.now() - info.mtimeMs > EMPTY_LOCK_STALE_MS;
  }
  if (host === hostname() && namespace === PID_NAMESPACE && /^\d+$/.test(pid ?? '')) {
    try {
      process.kill(Number(pid), 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }
  const info = await stat(lock).catch(() => undefined);
  return info !== undefined && Date.now() - info.mtimeMs > FOREIGN_LOCK_STALE_MS;
}

/**
 * Remove `lock` only if it still says `owner`: moved aside atomically, checked, and put back if it
 * turned out to be someone else's (a new holder took it in between).
 */
async function removeIfOwner(lock: string, owner: string): Promise<void> {
  const aside = `${lock}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  try {
    await rename(lock, aside);
  } catch {
    return;
  }
  if ((await readFile(aside, 'utf8').catch(() => '')) !== owner) await link(aside, lock).catch(() => undefined);
  await rm(aside, { force: true });
}

/** An exclusive lock file beside the log: appenders in any process on this host take turns. */
async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  const me = `${hostname()}:${PID_NAMESPACE}:${process.pid}:${Math.random().toString(36).slice(2)}`;
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(lock, 'wx', 0o600);
      await handle.writeFile(me);
      await handle.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A holder that died leaves its lock behind; a live one, however slow, keeps it.
      const owner = await readFile(lock, 'utf8').catch(() => undefined);
      if (owner !== undefined && (await holderGone(lock, owner))) await removeIfOwner(lock, owner);
      if (attempt > 4000) throw new Error(`audit log ${path} stayed locked by ${owner || 'someone'} (${lock})`);
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
    }
  }
  try {
    return await work();
  } finally {
    await removeIfOwner(lock, me);
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

  async find(id: string): Promise<AuditRecord | undefined> {
    await mkdir(dirname(this.path), { recursive: true });
    return withLock(this.path, async () => (await this.catchUp()).ids.get(id));
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
  // A table the writer created (or owns) is one it could change: refuse to vouch for it.
  const owner = await admin.query<{ owner: string }>(`SELECT tableowner AS owner FROM pg_tables WHERE tablename = $1 AND schemaname = current_schema()`, [AUDIT_TABLE]);
  if (owner.rows[0]?.owner === writer) {
    throw new Error(`${AUDIT_TABLE} is owned by ${writer}, so it could rewrite records; recreate it as an administrator and grant ${writer} INSERT and SELECT only`);
  }
  await admin.query(`REVOKE ALL ON ${AUDIT_TABLE} FROM PUBLIC`);
  await admin.query(`REVOKE ALL ON ${AUDIT_TABLE} FROM ${quoted}`);
  await admin.query(`GRANT SELECT, INSERT ON ${AUDIT_TABLE} TO ${quoted}`);
  // Only the writer (and administrators) may even connect to the audit database.
  const database = (await admin.query<{ db: string }>('SELECT current_database() AS db')).rows[0].db;
  const db = `"${database.replaceAll('"', '""')}"`;
  await admin.query(`REVOKE CONNECT ON DATABASE ${db} FROM PUBLIC`);
  await admin.query(`GRANT CONNECT ON DATABASE ${db} TO ${quoted}`);
}

const pools = new Map<string, Pool>();

/** libpq's sslmode and sslrootcert, read from the URL: the audit database may be across a network. */
function sslFrom(url: URL): false | { rejectUnauthorized: boolean; ca?: string } | undefined {
  const mode = url.searchParams.get('sslmode');
  const root = url.searchParams.get('sslrootcert');
  if (!mode || mode === 'disable') return mode ? false : undefined;
  if (mode === 'require' || mode === 'prefer' || mode === 'allow') return { rejectUnauthorized: false };
  if (mode === 'verify-ca' || mode === 'verify-full') return { rejectUnauthorized: true, ...(root ? { ca: readFileSync(root, 'utf8') } : {}) };
  throw new Error(`REKEY_AUDIT_DATABASE_URL: sslmode=${mode} is not one of disable, require, verify-ca, verify-full`);
}

export class PostgresAuditTrail implements AuditTrail {
  readonly trail: string;
  readonly where: string;
  private readonly key: string;
  private readonly connection: { host: string; port: number; database: string; user: string; password?: string; ssl?: false | { rejectUnauthorized: boolean; ca?: string } };

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
      ssl: sslFrom(parsed),
    };
  }

  private pool(): Pool {
    let pool = pools.get(this.key);
    if (!pool) {
      const passwordFile = this.passwordFile;
      pool = new Pool({
        // SCRAM only: the writer's password is never sent in clear text or as md5.
        Client: ScramOnlyClient,
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

  /**
   * Append without a lock anyone could hold: read the last record, insert the next sequence
   * number, and on a unique violation (another worker got there first, or this event is already
   * written) look again. The primary key on seq keeps one chain; the unique id keeps one record
   * per event.
   */
  async append(event: AuditEvent): Promise<{ record: AuditRecord; written: boolean }> {
    const signer = this.signer;
    if (!signer) throw new Error('no audit key: set REKEY_AUDIT_KEY');
    const db = await this.pool().connect();
    try {
      for (let attempt = 1; ; attempt++) {
        const existing = await db.query<{ record: string }>(`SELECT record FROM ${AUDIT_TABLE} WHERE id = $1`, [event.id]);
        if (existing.rowCount) return { record: JSON.parse(existing.rows[0].record), written: false };
        const last = await db.query<{ seq: string; hash: string }>(`SELECT seq, hash FROM ${AUDIT_TABLE} ORDER BY seq DESC LIMIT 1`);
        const record = nextRecord(this.trail, event, last.rowCount ? { seq: Number(last.rows[0].seq), hash: last.rows[0].hash } : undefined, signer);
        try {
          await db.query(`INSERT INTO ${AUDIT_TABLE} (seq, id, secret, event, at, hash, record) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [
            record.seq,
            record.id,
            record.secret,
            record.event,
            record.at,
            record.hash,
            JSON.stringify(record),
          ]);
          return { record, written: true };
        } catch (err) {
          if ((err as { code?: string }).code !== '23505' || attempt >= 50) throw err;
          await new Promise((r) => setTimeout(r, Math.random() * 20 * Math.min(attempt, 10)));
        }
      }
    } finally {
      db.release();
    }
  }

  async find(id: string): Promise<AuditRecord | undefined> {
    const rows = await this.pool().query<{ record: string }>(`SELECT record FROM ${AUDIT_TABLE} WHERE id = $1`, [id]);
    return rows.rowCount ? (JSON.parse(rows.rows[0].record) as AuditRecord) : undefined;
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
    if (typeof value.privateKey !== 'string') throw new Error(`${key}: the stored value has no privateKey field`);
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
