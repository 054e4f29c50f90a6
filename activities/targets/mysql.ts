// A MariaDB or MySQL account ('user'@'host', both from the manifest). Strategies as Postgres's:
// `single-user` changes one account's password (the old stops at prepare), `alternating-users`
// gives the idle account of a twin pair the new password (both work until revoke, which locks the
// old account and KILLs its connections). `dual-password` (MySQL 8.0.14+ only) keeps one account
// with two passwords from prepare (RETAIN CURRENT PASSWORD) to revoke (DISCARD OLD PASSWORD).
// Every statement is sent with client-side escaping (mysql2's `?` / `??`), never built from a
// value; on MariaDB a password reaches the server only as its mysql_native_password hash, so a
// statement log cannot hold it. Errors of a statement that carries a password are reduced to
// their code: the server's words (and mysql2's `sql` field) could quote it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ApplicationFailure } from '@temporalio/common';
import { createConnection, type Connection, type RowDataPacket, type SslOptions } from 'mysql2/promise';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween, serverAddress, targetTlsSchema } from '../../lib/schema';
import { rotatedUsers, textOf, type Acceptance, type Credential, type Target, type TargetAccount } from '../provider';
import { describeStore, readCurrent, storeSchema } from '../stores';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Accounts rekey must never act on, whatever a manifest or a stored value says. */
const RESERVED = /^(root|mysql\..*|mariadb\.sys|debian-sys-maint)$/;

const account = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.$-]{1,80}$/, 'must be a user name (letters, digits, _ . $ -)')
      .refine((name) => !RESERVED.test(name), { message: 'is a reserved account (root, mysql.*, mariadb.sys): rekey never changes it' }),
    /** The host part of 'user'@'host', exactly as CREATE USER gave it ('%', '10.0.%', 'localhost'). */
    host: z.string().regex(/^[A-Za-z0-9_.%:/-]{1,255}$/, "must be an account host ('%', 'localhost', an address or a pattern)"),
  })
  .strict();
type Account = z.infer<typeof account>;

export const mysqlSchema = z
  .object({
    type: z.literal('mysql'),
    /** What the server is, when known: `mariadb` refuses `dual-password` at validation. */
    flavor: z.enum(['mariadb', 'mysql']).optional(),
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(3306),
    /** The database the application uses (for verifyQuery); none: the connection opens no database. */
    database: z.string().min(1).max(64).optional(),
    strategy: z.enum(['single-user', 'alternating-users', 'dual-password']),
    /** single-user and dual-password: the one account whose password changes. */
    user: account.optional(),
    /** alternating-users: the two accounts that take turns; the idle one gets the new password. */
    users: z.tuple([account, account]).optional(),
    /**
     * The credential that performs the change, as a reference to a stored {username, password};
     * never inline. It needs CREATE USER, SELECT on mysql.* (SHOW GRANTS of other accounts),
     * PROCESS and CONNECTION ADMIN (or SUPER) to KILL the old account's connections.
     */
    admin: z.object({ store: storeSchema }).strict(),
    /** TLS: verify-full (the default for any host but loopback) checks certificate and name against `ca` or the system's CAs. */
    tls: targetTlsSchema.optional(),
    /** KILL the old account's connections at revoke (always in an emergency). */
    killConnections: z.boolean().default(true),
    /** Run with the new credential at verify, e.g. "SELECT 1 FROM orders LIMIT 1", in a read-only transaction. */
    verifyQuery: z.string().min(1).max(10_000).optional(),
    connectTimeout: durationBetween('100ms', '5m').default('5s'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.strategy !== 'alternating-users' && !spec.user) {
      ctx.addIssue({ code: 'custom', path: ['user'], message: `is required for strategy ${spec.strategy} ({name, host})` });
    }
    if (spec.strategy === 'alternating-users') {
      if (!spec.users) ctx.addIssue({ code: 'custom', path: ['users'], message: 'is required for strategy alternating-users (two {name, host} accounts)' });
      else if (spec.users[0].name === spec.users[1].name) ctx.addIssue({ code: 'custom', path: ['users'], message: 'must name two different user names (the stored username says which account is current)' });
    }
    if (spec.strategy === 'dual-password' && spec.flavor === 'mariadb') {
      ctx.addIssue({ code: 'custom', path: ['strategy'], message: 'dual-password needs MySQL 8.0.14+ (RETAIN CURRENT PASSWORD); MariaDB has no dual passwords: use alternating-users' });
    }
    if (spec.tls?.mode === 'disable' && !LOOPBACK.has(spec.host)) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'mode'], message: `disable sends the admin credential in the open to ${spec.host}: only allowed for loopback hosts` });
    }
  });
export type MysqlSpec = z.infer<typeof mysqlSchema>;

/** An account is 'name'@'host': the same name with another host part is another account (host parts compare without case). */
export function mysqlAccounts(spec: MysqlSpec): TargetAccount[] {
  return rotatedUsers(spec).map(({ path, user }) => ({ path, account: `mysql account '${user.name}'@'${user.host.toLowerCase()}' at ${serverAddress(spec.host, spec.port)}` }));
}

/** Refused, never retried: a stored value, the server or a setting asks for something the manifest does not allow. */
function refusal(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, 'TargetRefused');
}

/** The mysql_native_password hash ('*' + SHA1(SHA1(password)), upper-case hex) MariaDB stores. */
export function nativePasswordHash(password: string): string {
  const once = createHash('sha1').update(password, 'utf8').digest();
  return `*${createHash('sha1').update(once).digest('hex').toUpperCase()}`;
}

// Wrong password / no such user; account locked (MariaDB 4151, MySQL 3118); no access to the database.
const AUTH_FAILURES = new Set([1045, 4151, 3118, 1044]);
// Access denied for a statement: the admin lacks a privilege.
const DENIED = new Set([1044, 1142, 1143, 1227, 1370, 1045, 1095]);

const show = (a: Account) => `'${a.name}'@'${a.host}'`;

/** Which server this is, from VERSION(): MariaDB, or MySQL with its version. */
export function serverKind(version: string): { mariadb: boolean; dualPassword: boolean; label: string } {
  const mariadb = /mariadb/i.test(version);
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  const n = m ? Number(m[1]) * 10_000 + Number(m[2]) * 100 + Number(m[3]) : 0;
  return { mariadb, dualPassword: !mariadb && n >= 80014, label: `${mariadb ? 'MariaDB' : 'MySQL'} ${version.slice(0, 60)}` };
}

export function mysql(spec: MysqlSpec): Target {
  const connectTimeout = parseDuration(spec.connectTimeout);
  const accounts = spec.strategy === 'alternating-users' ? spec.users! : [spec.user!];
  const mode = spec.tls?.mode ?? (LOOPBACK.has(spec.host) ? 'disable' : 'verify-full');
  const ca = spec.tls?.ca ? readFileSync(spec.tls.ca, 'utf8') : undefined;
  const ssl: SslOptions | undefined =
    mode === 'disable'
      ? undefined
      : mode === 'verify-full'
        ? { rejectUnauthorized: true, ...(ca ? { ca } : {}) }
        : ca
          ? { rejectUnauthorized: true, ca, checkServerIdentity: () => undefined } as SslOptions
          : { rejectUnauthorized: false };
  const where = `${spec.host}:${spec.port}`;

  /** A user name read from a stored value is data: acted on only if the manifest names it; the host part is always the manifest's. */
  function ownAccount(credential: Credential, which: string): Account {
    const name = credential.username;
    const found = accounts.find((a) => a.name === name);
    if (typeof name !== 'string' || !found) {
      throw refusal(`the ${which} credential names user ${JSON.stringify(String(name).slice(0, 80))}, which is not one this manifest rotates (${accounts.map(show).join(', ')}); nothing was changed`);
    }
    return found;
  }

  function passwordOf(credential: Credential, which: string): string {
    const password = textOf(credential, 'password');
    if (!password) throw refusal(`the ${which} credential has no password (text) field`);
    return password;
  }

  async function open(user: string, password: string, database?: string): Promise<Connection> {
    try {
      const db = await createConnection({
        host: spec.host,
        port: spec.port,
        user,
        password,
        database,
        ssl,
        connectTimeout,
        multipleStatements: false,
        // A server must never get to read a local file (LOAD DATA LOCAL).
        flags: ['-LOCAL_FILES'],
      });
      db.on('error', () => undefined);
      return db;
    } catch (err) {
      const e = err as Error & { code?: string; errno?: number };
      if (/^(SELF_SIGNED|DEPTH_ZERO|UNABLE_TO_|CERT_|ERR_TLS_CERT|HANDSHAKE_NO_SSL_SUPPORT)/.test(e.code ?? '') || /secure connection|mysql_clear_password/i.test(e.message)) {
        throw refusal(`${where}: ${e.message}`);
      }
      if (e.code === 'ECONNREFUSED') throw new Error(`${where}: connection refused (is the server running? e.g. \`service mariadb start\`)`);
      throw err;
    }
  }

  async function asAdmin<T>(work: (db: Connection, admin: string) => Promise<T>): Promise<T> {
    const stored = await readCurrent(spec.admin.store);
    const [username, password] = [textOf(stored, 'username'), textOf(stored, 'password')];
    if (!username || !password) throw refusal(`admin credential ${describeStore(spec.admin.store)} must hold username and password as text`);
    if (accounts.some((a) => a.name === username)) throw refusal(`the admin credential is user ${username}, one of the accounts this manifest rotates: use a separate admin account`);
    let db: Connection;
    try {
      db = await open(username, password);
    } catch (err) {
      if (AUTH_FAILURES.has((err as { errno?: number }).errno ?? 0)) {
        throw refusal(`${where} rejected the admin credential ${describeStore(spec.admin.store)} (user ${username}): ${(err as Error).message}`);
      }
      throw err;
    }
    try {
      return await work(db, username);
    } finally {
      await db.end().catch(() => db.destroy());
    }
  }

  /** A statement that carries a password: its failure says only its code, never the server's words. */
  async function secretStatement(db: Connection, what: string, sql: string, values: unknown[]): Promise<void> {
    try {
      await db.query(sql, values);
    } catch (err) {
      const e = err as { errno?: number; code?: string };
      if (DENIED.has(e.errno ?? 0)) throw refusal(`${where}: the admin may not ${what} (${e.code}): grant it CREATE USER`);
      throw new Error(`${where}: ${what} failed with ${e.code ?? 'an error'} (${e.errno ?? '?'})`);
    }
  }

  async function version(db: Connection) {
    const [rows] = await db.query<RowDataPacket[]>('SELECT VERSION() AS v');
    return serverKind(String(rows[0]?.v ?? ''));
  }

  async function exists(db: Connection, a: Account): Promise<boolean> {
    // SHOW GRANTS answers 1141 (no such grant) for an account that does not exist; it needs SELECT on mysql.*.
    try {
      await db.query('SHOW GRANTS FOR ?@?', [a.name, a.host]);
      return true;
    } catch (err) {
      if ((err as { errno?: number }).errno === 1141) return false;
      throw err;
    }
  }

  /**
   * What an account may do, as SHOW GRANTS lists it, with its own name replaced by <account> and
   * every authentication clause (a password hash) removed: the twin comparison and its diff.
   */
  async function grantsOf(db: Connection, a: Account): Promise<string[]> {
    const [rows] = await db.query<RowDataPacket[]>({ sql: 'SHOW GRANTS FOR ?@?', values: [a.name, a.host], rowsAsArray: true });
    const me = new RegExp(`\`${a.name.replace(/[.$]/g, '\\$&')}\`@\`${a.host.replace(/[.%]/g, '\\$&')}\``, 'g');
    return (rows as unknown as string[][])
      .map((r) => String(r[0]))
      .map((line) =>
        line
          .replace(/\s+IDENTIFIED\s+(BY|VIA|WITH|AS)\b[\s\S]*?(?=\s+(REQUIRE|WITH)\s|$)/gi, '')
          .replace(/'[^']*'/g, (q) => (/^'\*?[0-9A-F]{40}'$/i.test(q) ? "'[hash]'" : q))
          .replace(me, '<account>'),
      )
      .sort();
  }

  async function twinDiff(db: Connection, a: Account, b: Account): Promise<string[]> {
    const [ga, gb] = [new Set(await grantsOf(db, a)), new Set(await grantsOf(db, b))];
    return [...[...ga].filter((g) => !gb.has(g)).map((g) => `- only ${show(a)}: ${g}`), ...[...gb].filter((g) => !ga.has(g)).map((g) => `+ only ${show(b)}: ${g}`)].sort();
  }

  /**
   * The admin's own global privileges (and SELECT on mysql) it lacks for a rotation. MariaDB names
   * CONNECTION ADMIN, MySQL 8 CONNECTION_ADMIN; SUPER covers both. Privileges the admin holds only
   * through a role are not seen here: grant them directly.
   */
  async function missingPrivileges(db: Connection, admin: string, kill: boolean): Promise<string[]> {
    const [[who]] = await db.query<RowDataPacket[]>('SELECT CURRENT_USER() AS u');
    const [rows] = await db.query<RowDataPacket[]>(
      `SELECT PRIVILEGE_TYPE AS p FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = CONCAT("'", SUBSTRING_INDEX(?, '@', 1), "'@'", SUBSTRING_INDEX(?, '@', -1), "'")
       UNION SELECT 'SELECT mysql' FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = CONCAT("'", SUBSTRING_INDEX(?, '@', 1), "'@'", SUBSTRING_INDEX(?, '@', -1), "'") AND TABLE_SCHEMA = 'mysql' AND PRIVILEGE_TYPE = 'SELECT'`,
      [who.u, who.u, who.u, who.u],
    );
    const has = new Set(rows.map((r) => String(r.p)));
    const missing: string[] = [];
    if (!has.has('CREATE USER')) missing.push('CREATE USER');
    if (!has.has('SELECT') && !has.has('SELECT mysql')) missing.push('SELECT ON mysql.*');
    if (kill) {
      if (!has.has('PROCESS') && !has.has('SUPER')) missing.push('PROCESS');
      if (!has.has('CONNECTION ADMIN') && !has.has('CONNECTION_ADMIN') && !has.has('SUPER')) missing.push('CONNECTION ADMIN');
    }
    return missing.length ? [`the admin user ${admin} lacks ${missing.join(', ')}: GRANT ${missing.map((m) => m.replace(' ON mysql.*', '')).join(', ')} ON ${missing.every((m) => m === 'SELECT ON mysql.*') ? 'mysql' : '*'}.* TO it`] : [];
  }

  /** Everything prepare would stop on, found before any change. */
  async function problems(db: Connection, admin: string, current: Account, next: Account): Promise<string[]> {
    const found: string[] = [];
    const kind = await version(db);
    if (spec.strategy === 'dual-password' && !kind.dualPassword) {
      found.push(`dual-password needs MySQL 8.0.14+ (RETAIN CURRENT PASSWORD); ${where} is ${kind.label}: use alternating-users`);
    }
    found.push(...(await missingPrivileges(db, admin, spec.killConnections && spec.strategy === 'alternating-users')));
    if (found.length) return found;
    for (const a of new Set([current, next])) {
      if (!(await exists(db, a))) {
        found.push(`the account ${show(a)} does not exist on ${where}: rekey never creates one; create it${a === next && a !== current ? ` as a twin of ${show(current)} (the same grants, ACCOUNT LOCK)` : ''}`);
      }
    }
    if (found.length || current === next) return found;
    const diff = await twinDiff(db, current, next);
    if (diff.length) {
      found.push(`accounts ${show(current)} and ${show(next)} are not twins, so the application would lose or gain rights when it switches:\n  ${diff.join('\n  ')}\nGrant both the same (ideally through one role), then rotate again`);
    }
    return found;
  }

  async function setPassword(db: Connection, a: Account, password: string, unlock: boolean, kind: { mariadb: boolean }): Promise<void> {
    const lock = unlock ? ' ACCOUNT UNLOCK' : '';
    if (kind.mariadb) {
      await secretStatement(db, `change the password of ${show(a)}`, `ALTER USER ?@? IDENTIFIED BY PASSWORD ?${lock}`, [a.name, a.host, nativePasswordHash(password)]);
    } else {
      await secretStatement(db, `change the password of ${show(a)}`, `ALTER USER ?@? IDENTIFIED BY ?${lock}`, [a.name, a.host, password]);
    }
  }

  /** Does the server let `a` in with `password`? false for an authentication failure only. */
  async function loginWorks(a: Account, password: string): Promise<boolean> {
    try {
      const db = await open(a.name, password);
      await db.end().catch(() => db.destroy());
      return true;
    } catch (err) {
      if (AUTH_FAILURES.has((err as { errno?: number }).errno ?? 0)) return false;
      throw err;
    }
  }

  /** Other accounts with the same user name ('app'@'localhost' beside 'app'@'%'): the process list cannot tell their connections apart. */
  async function namesakes(db: Connection, a: Account): Promise<string[]> {
    const [rows] = await db.query<RowDataPacket[]>('SELECT Host AS host FROM mysql.user WHERE User = ? AND Host <> ?', [a.name, a.host]);
    return rows.map((r) => `'${a.name}'@'${String(r.host).slice(0, 255)}'`);
  }

  async function killSessions(db: Connection, a: Account): Promise<{ sessionsEnded: number; warning?: string }> {
    const others = await namesakes(db, a);
    const result = await killAll(db, a);
    if (!others.length) return result;
    const warning = `the process list names users, not accounts: connections of ${others.join(', ')} (the same user name as ${show(a)}) were ended too`;
    return { sessionsEnded: result.sessionsEnded, warning: [result.warning, warning].filter(Boolean).join('; ') };
  }

  async function killAll(db: Connection, a: Account): Promise<{ sessionsEnded: number; warning?: string }> {
    // ACCOUNT LOCK stops new logins; the connections opened before end here. A login already past
    // authentication can still appear, so it is repeated until none is left. The process list
    // names the user, not the account's host part: every connection of that user name ends.
    let ended = 0;
    for (let round = 0; round < 10; round++) {
      const [rows] = await db.query<RowDataPacket[]>('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()', [a.name]);
      if (!rows.length) break;
      for (const { id } of rows) {
        try {
          await db.query('KILL CONNECTION ?', [Number(id)]);
          ended++;
        } catch (err) {
          const errno = (err as { errno?: number }).errno ?? 0;
          if (errno === 1094) continue; // gone meanwhile
          if (errno === 1095 || DENIED.has(errno)) return { sessionsEnded: ended, warning: `connections of ${show(a)} were not ended: the admin needs CONNECTION ADMIN (or SUPER)` };
          throw err;
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return { sessionsEnded: ended };
  }

  return {
    acceptsBoth: spec.strategy !== 'single-user',

    nextCredential(current, material) {
      const base: Credential = { engine: 'mysql', host: spec.host, port: String(spec.port), ...(spec.database ? { dbname: spec.database } : {}) };
      const now = ownAccount(current, 'current');
      if (spec.strategy !== 'alternating-users') return { ...base, username: now.name, password: material.value };
      const [a, b] = spec.users!;
      return { ...base, username: now === a ? b.name : a.name, password: material.value };
    },

    async prepare(next, current) {
      const [nextAccount, currentAccount] = [ownAccount(next, 'new'), ownAccount(current, 'current')];
      const [newPassword, oldPassword] = [passwordOf(next, 'new'), passwordOf(current, 'current')];
      if (newPassword === oldPassword) throw refusal('the new and the current credential hold the same password');
      await asAdmin(async (db, admin) => {
        const found = await problems(db, admin, currentAccount, nextAccount);
        // The stored current credential must be what the application logs in with: otherwise a
        // forged or stale value (the idle twin named as current) would make the account in use the
        // "next" one, and prepare would change its password under the application. A retry after
        // a single-user prepare finds the new password working instead.
        if (!found.length && !(await loginWorks(currentAccount, oldPassword)) && !(await loginWorks(nextAccount, newPassword))) {
          found.push(`the stored current credential (${show(currentAccount)}) does not log in (the store and the server disagree, or the account is locked)`);
        }
        if (found.length) throw refusal(`${found.join('; ')}; nothing was changed`);
        const kind = await version(db);
        if (spec.strategy === 'dual-password') {
          // A retry after RETAIN CURRENT PASSWORD succeeded must not run it again: the old password would be discarded.
          if (await loginWorks(nextAccount, newPassword)) return;
          await secretStatement(db, `add a password to ${show(nextAccount)}`, 'ALTER USER ?@? IDENTIFIED BY ? RETAIN CURRENT PASSWORD', [nextAccount.name, nextAccount.host, newPassword]);
          return;
        }
        await setPassword(db, nextAccount, newPassword, spec.strategy === 'alternating-users', kind);
      });
    },

    async undo(next, current) {
      const [nextAccount, currentAccount] = [ownAccount(next, 'new'), ownAccount(current, 'current')];
      await asAdmin(async (db) => {
        // Undo only what prepare did: where the new password does not log in, prepare changed
        // nothing (it sets password and unlock in one statement). Otherwise a refused prepare's undo
        // would lock the account in use, or give it the stored "current" password, which whoever
        // wrote the store chose.
        if (!(await loginWorks(nextAccount, passwordOf(next, 'new')))) return;
        const kind = await version(db);
        if (spec.strategy === 'alternating-users' && nextAccount !== currentAccount) {
          await db.query('ALTER USER ?@? ACCOUNT LOCK', [nextAccount.name, nextAccount.host]);
          return;
        }
        const oldPassword = passwordOf(current, 'current');
        if (spec.strategy === 'dual-password') {
          // Primary back to the old password, then the retained one (also the old) is dropped.
          await secretStatement(db, `restore the password of ${show(currentAccount)}`, 'ALTER USER ?@? IDENTIFIED BY ?', [currentAccount.name, currentAccount.host, oldPassword]);
          await db.query('ALTER USER ?@? DISCARD OLD PASSWORD', [currentAccount.name, currentAccount.host]);
          return;
        }
        await setPassword(db, currentAccount, oldPassword, false, kind);
      });
    },

    async revoke(old, next, options) {
      const [oldAccount, nextAccount] = [ownAccount(old, 'old'), ownAccount(next, 'new')];
      const newPassword = passwordOf(next, 'new');
      if (spec.strategy === 'single-user') return { sessionsEnded: 0 }; // prepare already replaced the password
      return asAdmin(async (db) => {
        // Never take the old credential away unless the new one works: the application would be locked out.
        if (!(await loginWorks(nextAccount, newPassword))) throw refusal(`refusing to revoke ${show(oldAccount)}: the new credential of ${show(nextAccount)} does not log in`);
        if (spec.strategy === 'dual-password') {
          await db.query('ALTER USER ?@? DISCARD OLD PASSWORD', [oldAccount.name, oldAccount.host]);
          // Connections are not ended: they cannot be told apart by password, and the new one is the same account's.
          return { sessionsEnded: 0 };
        }
        if (oldAccount === nextAccount) return { sessionsEnded: 0 };
        if (await exists(db, oldAccount)) await db.query('ALTER USER ?@? ACCOUNT LOCK', [oldAccount.name, oldAccount.host]);
        if (!(options.emergency || spec.killConnections)) return { sessionsEnded: 0 };
        return killSessions(db, oldAccount);
      });
    },

    async accepts(credential, options = {}): Promise<Acceptance> {
      const a = ownAccount(credential, 'checked');
      let db: Connection;
      try {
        db = await open(a.name, passwordOf(credential, 'checked'), spec.database);
      } catch (err) {
        const e = err as { errno?: number; code?: string };
        if (AUTH_FAILURES.has(e.errno ?? 0)) return { accepted: false, reason: `${where} rejected user ${a.name} (${e.code})` };
        throw err;
      }
      try {
        await db.query('SELECT 1');
        if (options.thorough && spec.verifyQuery) {
          try {
            await db.query('START TRANSACTION READ ONLY');
            await db.query(spec.verifyQuery);
          } catch (err) {
            const e = err as { code?: string; message?: string };
            return { accepted: false, reason: `verifyQuery failed as ${a.name}: ${String(e.message ?? 'error').slice(0, 300)}${e.code ? ` (${e.code})` : ''}` };
          } finally {
            await db.query('ROLLBACK').catch(() => undefined);
          }
        }
        return { accepted: true };
      } finally {
        await db.end().catch(() => db.destroy());
      }
    },

    async preflight(current) {
      const currentAccount = ownAccount(current, 'current');
      const next = spec.strategy === 'alternating-users' ? spec.users!.find((u) => u !== currentAccount)! : currentAccount;
      return asAdmin(async (db, admin) => {
        const found = await problems(db, admin, currentAccount, next);
        if (spec.strategy === 'alternating-users' && spec.killConnections) {
          for (const a of spec.users!) {
            const others = await namesakes(db, a);
            if (others.length) found.push(`${others.join(', ')} share the user name of ${show(a)}: revoke KILLs their connections too (the process list names users, not accounts); rename one, or set killConnections: false`);
          }
        }
        if (!(await loginWorks(currentAccount, passwordOf(current, 'current')))) {
          found.push(`the stored current credential (${show(currentAccount)}) does not log in (the store and the server disagree, or the account is locked)`);
        }
        return found;
      });
    },
  };
}
