import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ApplicationFailure } from '@temporalio/common';
import { escapeIdentifier, type Client } from 'pg';
import { ScramOnlyClient } from '../../lib/pg-strict';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween, serverAddress, targetTlsSchema } from '../../lib/schema';
import { rotatedUsers, textOf, type Acceptance, type Credential, type Target, type TargetAccount } from '../provider';
import { describeStore, readCurrent, storeSchema } from '../stores';

/** Roles rekey must never act on, whatever a manifest or a stored value says. */
const RESERVED = /^(postgres$|pg_)/;

const role = z
  .string()
  .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case Postgres role name')
  .refine((name) => !RESERVED.test(name), { message: 'is a reserved role (postgres, pg_*): rekey never changes it' });

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export const postgresSchema = z
  .object({
    type: z.literal('postgres'),
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(5432),
    database: z.string().min(1),
    strategy: z.enum(['single-user', 'alternating-users']),
    /** single-user: the one role whose password changes. */
    user: role.optional(),
    /** alternating-users: the two roles that take turns; the inactive one gets the new password. */
    users: z.tuple([role, role]).optional(),
    /**
     * The credential that performs the change, as a reference to a stored {username, password};
     * never inline. It needs CREATEROLE (or superuser) on the cluster.
     */
    admin: z.object({ store: storeSchema }).strict(),
    /**
     * TLS to the server: verify-full (the default for any host but loopback) checks the server's
     * certificate and name against `ca` (a PEM file) or the system's CAs; require encrypts only.
     */
    ssl: targetTlsSchema.optional(),
    /** End the old role's sessions when it is revoked (always in an emergency). */
    terminateSessions: z.boolean().default(true),
    /** Run with the new credential at verify, e.g. "SELECT 1 FROM orders LIMIT 1": it must succeed. */
    verifyQuery: z.string().min(1).max(10_000).optional(),
    connectTimeout: durationBetween('100ms', '5m').default('5s'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.strategy === 'single-user' && !spec.user) {
      ctx.addIssue({ code: 'custom', path: ['user'], message: 'is required for strategy single-user' });
    }
    if (spec.strategy === 'alternating-users') {
      if (!spec.users) {
        ctx.addIssue({ code: 'custom', path: ['users'], message: 'is required for strategy alternating-users (two role names)' });
      } else if (spec.users[0] === spec.users[1]) {
        ctx.addIssue({ code: 'custom', path: ['users'], message: 'must name two different roles' });
      }
    }
    if (spec.ssl?.mode === 'disable' && !LOOPBACK.has(spec.host)) {
      ctx.addIssue({ code: 'custom', path: ['ssl', 'mode'], message: `disable sends the admin credential in the open to ${spec.host}: only allowed for loopback hosts` });
    }
  });
export type PostgresSpec = z.infer<typeof postgresSchema>;

/** Roles belong to the cluster, not to a database: two manifests on one role in two databases still share it. */
export function postgresAccounts(spec: PostgresSpec): TargetAccount[] {
  return rotatedUsers(spec).map(({ path, user }) => ({ path, account: `postgres role ${user} at ${serverAddress(spec.host, spec.port)}` }));
}

// SQLSTATEs for "wrong password", "no such role / login not allowed".
const AUTH_FAILURES = new Set(['28P01', '28000']);

/**
 * SASLprep as node-postgres applies it at login (non-ASCII spaces to spaces, "mapped to nothing"
 * characters removed, NFKC): a verifier made without it does not match the password a client sends.
 */
export function saslprep(password: string): string {
  return password
    .replace(/[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g, ' ')
    .replace(/[\u00AD\u034F\u1806\u180B\u180C\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g, '')
    .normalize('NFKC');
}

/**
 * A SCRAM-SHA-256 verifier, so ALTER ROLE never carries the cleartext password: a statement log
 * on the server cannot leak what it never received.
 */
export function scramVerifier(password: string): string {
  const salt = randomBytes(16);
  const iterations = 4096;
  const salted = pbkdf2Sync(saslprep(password), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** Refused, never retried: a stored value or a setting asks for something the manifest does not allow. */
function refusal(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, 'TargetRefused');
}

/**
 * Everything that makes two roles equivalent for an application, in the target database and the
 * cluster: attributes, settings (global and per database), memberships (with admin option),
 * ownership, direct privileges (with grant option) on databases, schemas, relations, columns,
 * functions, types, languages, foreign data, tablespaces and large objects, default privileges,
 * and row-level security policies that name the role. Twins must match on all of it.
 */
const TWIN_FACETS = `
  WITH me AS (SELECT oid FROM pg_roles WHERE rolname = $1),
  acl(kind, name, acl) AS (
    SELECT 'database', datname::text, datacl FROM pg_database
    UNION ALL SELECT 'schema', nspname::text, nspacl FROM pg_namespace
    UNION ALL SELECT 'relation', oid::regclass::text, relacl FROM pg_class
    UNION ALL SELECT 'function', oid::regprocedure::text, proacl FROM pg_proc
    UNION ALL SELECT 'type', oid::regtype::text, typacl FROM pg_type
    UNION ALL SELECT 'language', lanname::text, lanacl FROM pg_language
    UNION ALL SELECT 'foreign data wrapper', fdwname::text, fdwacl FROM pg_foreign_data_wrapper
    UNION ALL SELECT 'foreign server', srvname::text, srvacl FROM pg_foreign_server
    UNION ALL SELECT 'tablespace', spcname::text, spcacl FROM pg_tablespace
    UNION ALL SELECT 'large object', oid::text, lomacl FROM pg_largeobject_metadata
  )
  SELECT 'attribute' AS facet, a.k || '=' || a.v AS value FROM pg_roles r,
    LATERAL (VALUES ('superuser', r.rolsuper::text), ('inherit', r.rolinherit::text), ('createrole', r.rolcreaterole::text),
                    ('createdb', r.rolcreatedb::text), ('replication', r.rolreplication::text), ('bypassrls', r.rolbypassrls::text),
                    ('connection limit', r.rolconnlimit::text), ('valid until', coalesce(r.rolvaliduntil::text, 'always'))) AS a(k, v)
   WHERE r.rolname = $1
  UNION ALL SELECT 'setting', coalesce(d.datname || ': ', '') || unnest(s.setconfig) FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase WHERE s.setrole = (SELECT oid FROM me)
  UNION ALL SELECT 'member of', g.rolname || CASE WHEN m.admin_option THEN ' with admin option' ELSE '' END FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = (SELECT oid FROM me)
  UNION ALL SELECT 'privilege', acl.kind || ' ' || acl.name || ': ' || x.privilege_type || CASE WHEN x.is_grantable THEN ' with grant option' ELSE '' END FROM acl, aclexplode(acl.acl) x WHERE x.grantee = (SELECT oid FROM me)
  UNION ALL SELECT 'privilege', 'column ' || c.oid::regclass::text || '.' || a.attname || ': ' || x.privilege_type FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid, aclexplode(a.attacl) x WHERE x.grantee = (SELECT oid FROM me)
  UNION ALL SELECT 'owner of', 'relation ' || oid::regclass::text FROM pg_class WHERE relowner = (SELECT oid FROM me)
  UNION ALL SELECT 'owner of', 'schema ' || nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM me)
  UNION ALL SELECT 'owner of', 'function ' || oid::regprocedure::text FROM pg_proc WHERE proowner = (SELECT oid FROM me)
  UNION ALL SELECT 'owner of', 'database ' || datname FROM pg_database WHERE datdba = (SELECT oid FROM me)
  UNION ALL SELECT 'default privileges', 'set by it: ' || defaclobjtype::text || ' ' || coalesce(defaclnamespace::regnamespace::text, 'all schemas') FROM pg_default_acl WHERE defaclrole = (SELECT oid FROM me)
  UNION ALL SELECT 'default privileges', 'granted to it: ' || defaclobjtype::text || ' ' || x.privilege_type FROM pg_default_acl, aclexplode(defaclacl) x WHERE x.grantee = (SELECT oid FROM me)
  UNION ALL SELECT 'row security policy', polname || ' on ' || polrelid::regclass::text FROM pg_policy WHERE (SELECT oid FROM me) = ANY (polroles)`;

export function postgres(spec: PostgresSpec): Target {
  const connectTimeoutMillis = parseDuration(spec.connectTimeout);
  const allowed = new Set(spec.strategy === 'single-user' ? [spec.user!] : spec.users!);
  const mode = spec.ssl?.mode ?? (LOOPBACK.has(spec.host) ? 'disable' : 'verify-full');
  const ca = spec.ssl?.ca ? readFileSync(spec.ssl.ca, 'utf8') : undefined;
  // require with a CA checks the chain (verify-ca); verify-full also checks the name.
  const ssl =
    mode === 'disable'
      ? false
      : mode === 'verify-full'
        ? { rejectUnauthorized: true, ...(ca ? { ca } : {}) }
        : ca
          ? { rejectUnauthorized: true, ca, checkServerIdentity: () => undefined }
          : { rejectUnauthorized: false };

  /** A role name read from a stored value is data: it is acted on only if the manifest names it. */
  function ownRole(credential: Credential, which: string): string {
    const name = credential.username;
    if (typeof name !== 'string' || !allowed.has(name)) {
      throw refusal(`the ${which} credential names role ${JSON.stringify(String(name).slice(0, 63))}, which is not one this manifest rotates (${[...allowed].join(', ')}); nothing was changed`);
    }
    return name;
  }

  function passwordOf(credential: Credential, which: string): string {
    const password = textOf(credential, 'password');
    if (!password) throw refusal(`the ${which} credential has no password (text) field`);
    return password;
  }

  /** A SCRAM-only client (lib/pg-strict.ts), bound to the TLS channel when there is one. */
  function clientFor(user: string, password: string): Client {
    return new ScramOnlyClient(
      {
        host: spec.host,
        port: spec.port,
        database: spec.database,
        user,
        password,
        ssl,
        enableChannelBinding: ssl !== false,
        connectionTimeoutMillis: connectTimeoutMillis,
        application_name: 'rekey',
      },
      `${spec.host}:${spec.port}`,
    );
  }

  /** Connect; a server that fails TLS verification or asks for a weak password exchange is refused, not retried. */
  async function connect(db: Client): Promise<void> {
    try {
      await db.connect();
    } catch (err) {
      const e = err as Error & { code?: string };
      if (/^(SELF_SIGNED|DEPTH_ZERO|UNABLE_TO_|CERT_|ERR_TLS_CERT)/.test(e.code ?? '') || /rekey only authenticates with SCRAM|without a SCRAM password exchange/.test(e.message)) {
        throw refusal(`${spec.host}:${spec.port}: ${e.message}`);
      }
      throw err;
    }
  }

  async function asAdmin<T>(work: (db: Client) => Promise<T>): Promise<T> {
    const admin = await readCurrent(spec.admin.store);
    const [username, password] = [textOf(admin, 'username'), textOf(admin, 'password')];
    if (!username || !password) {
      throw refusal(`admin credential ${describeStore(spec.admin.store)} must hold username and password as text`);
    }
    if (allowed.has(username)) throw refusal(`the admin credential is role ${username}, one of the roles this manifest rotates: use a separate admin role`);
    const db = clientFor(username, password);
    await connect(db);
    try {
      return await work(db);
    } finally {
      await db.end().catch(() => undefined);
    }
  }

  async function setPassword(db: Client, user: string, password: string): Promise<void> {
    const exists = await db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [user]);
    const verb = exists.rowCount ? 'ALTER' : 'CREATE';
    // The verifier is a hash, so inlining it as a literal reveals nothing usable.
    await db.query(`${verb} ROLE ${escapeIdentifier(user)} WITH LOGIN PASSWORD '${scramVerifier(password)}'`);
  }

  async function disableLogin(db: Client, user: string): Promise<void> {
    const exists = await db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [user]);
    if (exists.rowCount) await db.query(`ALTER ROLE ${escapeIdentifier(user)} WITH NOLOGIN PASSWORD NULL`);
  }

  /** Give `user` every role `model` is a member of (a twin created by rekey starts with none). */
  async function cloneMemberships(db: Client, model: string, user: string): Promise<void> {
    const roles = await db.query<{ rolname: string }>(
      `SELECT g.rolname FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
        WHERE u.rolname = $1`,
      [model],
    );
    for (const { rolname } of roles.rows) {
      await db.query(`GRANT ${escapeIdentifier(rolname)} TO ${escapeIdentifier(user)}`);
    }
  }

  /** How two roles differ in what they may do, as readable lines ("- only in a: ...", "+ only in b: ..."). */
  async function twinDiff(db: Client, a: string, b: string): Promise<string[]> {
    const facets = async (name: string) => new Set((await db.query<{ facet: string; value: string }>(TWIN_FACETS, [name])).rows.map((r) => `${r.facet} ${r.value}`));
    const [fa, fb] = [await facets(a), await facets(b)];
    return [...[...fa].filter((f) => !fb.has(f)).map((f) => `- only ${a}: ${f}`), ...[...fb].filter((f) => !fa.has(f)).map((f) => `+ only ${b}: ${f}`)].sort();
  }

  return {
    acceptsBoth: spec.strategy === 'alternating-users',

    nextCredential(current, material) {
      const base: Credential = {
        engine: 'postgres',
        host: spec.host,
        port: String(spec.port),
        dbname: spec.database,
      };
      if (spec.strategy === 'single-user') {
        ownRole(current, 'current');
        return { ...base, username: spec.user!, password: material.value };
      }
      const [a, b] = spec.users!;
      return { ...base, username: ownRole(current, 'current') === a ? b : a, password: material.value };
    },

    async prepare(next, current) {
      const [nextRole, currentRole] = [ownRole(next, 'new'), ownRole(current, 'current')];
      await asAdmin(async (db) => {
        await setPassword(db, nextRole, passwordOf(next, 'new'));
        if (spec.strategy === 'alternating-users' && currentRole !== nextRole) {
          await cloneMemberships(db, currentRole, nextRole);
          // Both roles must be able to do exactly the same: otherwise the app breaks after the switch.
          const diff = await twinDiff(db, currentRole, nextRole);
          if (diff.length) {
            throw refusal(`roles ${currentRole} and ${nextRole} are not twins, so the application would lose or gain rights when it switches:\n  ${diff.join('\n  ')}\nGrant both the same (ideally through one group role), then rotate again`);
          }
        }
      });
    },

    async undo(next, current) {
      const [nextRole, currentRole] = [ownRole(next, 'new'), ownRole(current, 'current')];
      await asAdmin(async (db) => {
        if (spec.strategy === 'single-user' || nextRole === currentRole) {
          await setPassword(db, currentRole, passwordOf(current, 'current'));
        } else {
          await disableLogin(db, nextRole);
        }
      });
    },

    async revoke(old, next, options) {
      const [oldRole, nextRole] = [ownRole(old, 'old'), ownRole(next, 'new')];
      if (oldRole === nextRole) return { sessionsEnded: 0 }; // single-user: prepare already replaced the password
      return asAdmin(async (db) => {
        await disableLogin(db, oldRole);
        if (!(options.emergency || spec.terminateSessions)) return { sessionsEnded: 0 };
        // NOLOGIN stops new sessions; the ones opened with the old credential end here. A login
        // already past authentication can still appear, so it is repeated until none is left.
        let ended = 0;
        try {
          for (let round = 0; round < 10; round++) {
            const result = await db.query<{ n: string }>('SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE usename = $1', [oldRole]);
            ended += Number(result.rows[0].n);
            const left = await db.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1', [oldRole]);
            if (Number(left.rows[0].n) === 0) break;
            await new Promise((r) => setTimeout(r, 100));
          }
        } catch (err) {
          // The revoke itself is done; an admin without pg_signal_backend cannot end sessions.
          if ((err as { code?: string }).code !== '42501') throw err;
          return { sessionsEnded: ended, warning: `sessions of ${oldRole} were not ended: the admin role needs pg_signal_backend (or superuser)` };
        }
        return { sessionsEnded: ended };
      });
    },

    async accepts(credential, options = {}): Promise<Acceptance> {
      const db = clientFor(ownRole(credential, 'checked'), passwordOf(credential, 'checked'));
      try {
        await connect(db);
        await db.query('SELECT 1');
        if (options.thorough && spec.verifyQuery) {
          try {
            // Read only, and rolled back: a check must not change the data it checks.
            await db.query('BEGIN READ ONLY');
            await db.query(spec.verifyQuery);
            await db.query('ROLLBACK');
          } catch (err) {
            const e = err as { code?: string; message?: string };
            return { accepted: false, reason: `verifyQuery failed as ${credential.username}: ${e.message ?? 'error'}${e.code ? ` (SQLSTATE ${e.code})` : ''}` };
          }
        }
        return { accepted: true };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code && AUTH_FAILURES.has(code)) {
          return { accepted: false, reason: `postgres rejected user ${credential.username} (SQLSTATE ${code})` };
        }
        throw err;
      } finally {
        await db.end().catch(() => undefined);
      }
    },

    async preflight(current) {
      if (spec.strategy !== 'alternating-users') return [];
      const currentRole = ownRole(current, 'current');
      const idle = spec.users!.find((u) => u !== currentRole)!;
      return asAdmin(async (db) => {
        const exists = await db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [idle]);
        if (!exists.rowCount) return [`the idle role ${idle} does not exist yet: rekey creates it and gives it ${currentRole}'s memberships; direct grants must be given by hand`];
        // Memberships the idle role lacks are granted at prepare; everything else must match already.
        return (await twinDiff(db, currentRole, idle)).filter((line) => !line.startsWith(`- only ${currentRole}: member of `));
      });
    },
  };
}
