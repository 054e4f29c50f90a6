import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { Client, escapeIdentifier } from 'pg';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationSchema } from '../../lib/schema';
import type { Acceptance, Credential, Target } from '../provider';
import { describeStore, readCurrent, storeSchema } from '../stores';

const role = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case Postgres role name');

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
    connectTimeout: durationSchema.default('5s'),
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
  });
export type PostgresSpec = z.infer<typeof postgresSchema>;

// SQLSTATEs for "wrong password", "no such role / login not allowed".
const AUTH_FAILURES = new Set(['28P01', '28000']);

/**
 * A SCRAM-SHA-256 verifier, so ALTER ROLE never carries the cleartext password: a statement log
 * on the server cannot leak what it never received.
 */
export function scramVerifier(password: string): string {
  const salt = randomBytes(16);
  const iterations = 4096;
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

export function postgres(spec: PostgresSpec): Target {
  const connectTimeoutMillis = parseDuration(spec.connectTimeout);

  function clientFor(user: string, password: string): Client {
    return new Client({
      host: spec.host,
      port: spec.port,
      database: spec.database,
      user,
      password,
      connectionTimeoutMillis: connectTimeoutMillis,
      application_name: 'rekey',
    });
  }

  async function asAdmin<T>(work: (db: Client) => Promise<T>): Promise<T> {
    const admin = await readCurrent(spec.admin.store);
    if (!admin.username || !admin.password) {
      throw new Error(`admin credential ${describeStore(spec.admin.store)} must hold username and password`);
    }
    const db = clientFor(admin.username, admin.password);
    await db.connect();
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

  /** Give `user` every role and database privilege `model` has, so the two alternating users are twins. */
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

  return {
    nextCredential(current, material) {
      const base: Credential = {
        engine: 'postgres',
        host: spec.host,
        port: String(spec.port),
        dbname: spec.database,
      };
      if (spec.strategy === 'single-user') return { ...base, username: spec.user!, password: material };
      const [a, b] = spec.users!;
      return { ...base, username: current.username === a ? b : a, password: material };
    },

    async prepare(next, current) {
      await asAdmin(async (db) => {
        await setPassword(db, next.username, next.password);
        if (spec.strategy === 'alternating-users' && current.username && current.username !== next.username) {
          await cloneMemberships(db, current.username, next.username);
        }
      });
    },

    async undo(next, current) {
      await asAdmin(async (db) => {
        if (spec.strategy === 'single-user' || next.username === current.username) {
          await setPassword(db, current.username, current.password);
        } else {
          await disableLogin(db, next.username);
        }
      });
    },

    async revoke(old, next) {
      if (old.username === next.username) return; // single-user: prepare already replaced the password
      await asAdmin((db) => disableLogin(db, old.username));
    },

    async accepts(credential): Promise<Acceptance> {
      const db = clientFor(credential.username, credential.password);
      try {
        await db.connect();
        await db.query('SELECT 1');
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
  };
}
