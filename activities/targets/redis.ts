// A Redis ACL user (Redis 6+). Redis lets one user hold several passwords, so rotation is natively
// dual (`dual-password`): prepare adds the new password, both work during the overlap, revoke
// removes the old one and ends the user's connections, undo removes the new one. Passwords reach
// Redis as SHA-256 hashes (`#<hash>` / `!<hash>`, the form ACL GETUSER shows), so ACL SETUSER never
// carries one in clear; only AUTH does, as it must. The user's ACL rules are never changed: a user
// whose rules a password change would alter (nopass), that does not exist or is off is refused
// before anything happens. A tiny RESP2 client below talks to the server; every reply is bounded
// and every server message is scrubbed of the passwords the connection knows.
// https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP, Socket, connect as netConnect } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween, serverAddress, targetTlsSchema } from '../../lib/schema';
import { rotatedUsers, textOf, type Acceptance, type Credential, type Target, type TargetAccount } from '../provider';
import { describeStore, readCurrent, storeSchema } from '../stores';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

const aclUser = z
  .string()
  .regex(/^[A-Za-z0-9_.:@-]{1,128}$/, 'must be a Redis ACL user name (letters, digits, _ . : @ -)')
  .refine((name) => name !== 'default', { message: 'is the default user, which every unauthenticated connection is: give the application its own ACL user' });

export const redisSchema = z
  .object({
    type: z.literal('redis'),
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(6379),
    /** dual-password: the user holds the old and the new password from prepare until revoke. */
    strategy: z.literal('dual-password').default('dual-password'),
    /** The ACL user whose password rotates. */
    user: aclUser,
    /**
     * The credential that changes the user, as a reference to a stored {username, password}; never
     * inline. It needs +acl|getuser +acl|setuser +acl|save +acl|dryrun +client|kill (or +acl +client|kill).
     */
    admin: z.object({ store: storeSchema }).strict(),
    /** TLS: verify-full (the default for any host but loopback) checks the certificate and name against `ca` or the system's CAs. */
    tls: targetTlsSchema.optional(),
    /** End the user's connections when the old password is removed (always in an emergency). */
    killConnections: z.boolean().default(true),
    connectTimeout: durationBetween('100ms', '5m').default('5s'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.tls?.mode === 'disable' && !LOOPBACK.has(spec.host)) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'mode'], message: `disable sends passwords in the open to ${spec.host}: only allowed for loopback hosts` });
    }
    // AUTH sends the password itself (no SCRAM binding it to the channel, as Postgres has): an
    // unchecked certificate hands it to whoever is in the middle.
    if (spec.tls?.mode === 'require' && !spec.tls.ca && !LOOPBACK.has(spec.host)) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'ca'], message: `require without a ca accepts any certificate, and AUTH sends the password to whoever answers for ${spec.host}: give ca, or use verify-full` });
    }
  });
export type RedisSpec = z.infer<typeof redisSchema>;

/** ACL users are per server (see the README's known limit), so the server and the user name one. */
export function redisAccounts(spec: RedisSpec): TargetAccount[] {
  return rotatedUsers(spec).map(({ path, user }) => ({ path, account: `redis user ${user} at ${serverAddress(spec.host, spec.port)}` }));
}

/** Refused, never retried: a stored value, the server or a setting asks for something the manifest does not allow. */
function refusal(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, 'TargetRefused');
}

// ---- a tiny RESP2 client -------------------------------------------------------------------------

export type Reply = string | number | null | Reply[] | ReplyError;
/** An error reply (-ERR ..., -WRONGPASS ...), its text already scrubbed of known passwords. */
export class ReplyError {
  constructor(readonly code: string, readonly message: string) {}
}

const MAX_REPLY = 1 << 20; // a reply to any command rekey sends is far smaller
const MAX_ITEMS = 10_000;
const MAX_DEPTH = 8;

class Incomplete extends Error {}

/** Parse one reply at `at`: [reply, next offset]; throws Incomplete when more bytes are needed. */
function parseReply(buf: Buffer, at: number, depth: number, scrub: (s: string) => string): [Reply, number] {
  if (depth > MAX_DEPTH) throw new Error('the server sent a reply nested too deeply');
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) {
    if (buf.length - at > 64 * 1024) throw new Error('the server sent a line without an end');
    throw new Incomplete();
  }
  const type = String.fromCharCode(buf[at]);
  const line = buf.toString('utf8', at + 1, eol);
  const next = eol + 2;
  const int = () => {
    if (!/^-?\d{1,19}$/.test(line)) throw new Error('the server sent a malformed length or number');
    return Number(line);
  };
  switch (type) {
    case '+':
      return [line, next];
    case '-': {
      const text = scrub(line).slice(0, 300);
      return [new ReplyError(text.split(' ')[0], text), next];
    }
    case ':':
      return [int(), next];
    case '$': {
      const n = int();
      if (n === -1) return [null, next];
      if (n < 0 || n > MAX_REPLY) throw new Error('the server sent an oversized bulk string');
      if (buf.length < next + n + 2) throw new Incomplete();
      if (buf[next + n] !== 13 || buf[next + n + 1] !== 10) throw new Error('the server sent a malformed bulk string');
      return [buf.toString('utf8', next, next + n), next + n + 2];
    }
    case '*': {
      const n = int();
      if (n === -1) return [null, next];
      if (n < 0 || n > MAX_ITEMS) throw new Error('the server sent an oversized array');
      const items: Reply[] = [];
      let offset = next;
      for (let i = 0; i < n; i++) {
        const [item, after] = parseReply(buf, offset, depth + 1, scrub);
        items.push(item);
        offset = after;
      }
      return [items, offset];
    }
    default:
      throw new Error('the server does not speak RESP2 (unexpected reply type)');
  }
}

export interface RespOptions {
  host: string;
  port: number;
  tls: false | ConnectionOptions;
  timeoutMs: number;
}

/** One connection, one command at a time. Passwords given to it are scrubbed from every message it produces. */
export class RespConnection {
  private buf = Buffer.alloc(0);
  private waiting?: { resolve: (r: Reply) => void; reject: (e: Error) => void };
  private failed?: Error;
  private secrets: string[] = [];

  private constructor(private readonly socket: Socket, private readonly where: string, private readonly timeoutMs: number) {
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new Error(`${where}: ${this.scrub(err.message)}`)));
    socket.on('close', () => this.fail(new Error(`${where}: the connection was closed`)));
  }

  static open(options: RespOptions): Promise<RespConnection> {
    const where = `redis ${options.host}:${options.port}`;
    return new Promise((resolve, reject) => {
      const socket: Socket = options.tls
        ? tlsConnect({ host: options.host, port: options.port, ...options.tls })
        : netConnect({ host: options.host, port: options.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`${where}: no connection within ${options.timeoutMs} ms`));
      }, options.timeoutMs);
      const onError = (err: Error & { code?: string }) => {
        clearTimeout(timer);
        socket.destroy();
        // A certificate that does not verify is refused, not retried: the password was not sent.
        if (/^(SELF_SIGNED|DEPTH_ZERO|UNABLE_TO_|CERT_|ERR_TLS_CERT)/.test(err.code ?? '')) reject(refusal(`${where}: ${err.message}`));
        else reject(new Error(`${where}: ${err.message}`));
      };
      socket.once('error', onError);
      socket.once(options.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(new RespConnection(socket, where, options.timeoutMs));
      });
    });
  }

  private scrub = (text: string): string => this.secrets.reduce((t, s) => (s ? t.split(s).join('[redacted]') : t), text);

  private fail(err: Error): void {
    this.failed ??= err;
    this.waiting?.reject(this.failed);
    this.waiting = undefined;
  }

  private onData(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    if (this.buf.length > MAX_REPLY + 64 * 1024) {
      this.fail(new Error(`${this.where}: the server sent an oversized reply`));
      this.socket.destroy();
      return;
    }
    if (!this.waiting) {
      if (this.buf.length) {
        this.fail(new Error(`${this.where}: the server sent a reply nobody asked for`));
        this.socket.destroy();
      }
      return;
    }
    try {
      const [reply, next] = parseReply(this.buf, 0, 0, this.scrub);
      this.buf = this.buf.subarray(next);
      // One command, one reply: anything after it was not asked for.
      if (this.buf.length) throw new Error('the server sent a reply nobody asked for');
      const w = this.waiting;
      this.waiting = undefined;
      w.resolve(reply);
    } catch (err) {
      if (err instanceof Incomplete) return;
      this.fail(new Error(`${this.where}: ${(err as Error).message}`));
      this.socket.destroy();
    }
  }

  /** Send one command (each argument one bulk string: nothing is parsed by the server as syntax). */
  call(args: string[], options: { secrets?: string[] } = {}): Promise<Reply> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.waiting) return Promise.reject(new Error('one command at a time'));
    this.secrets.push(...(options.secrets ?? []));
    const parts = [`*${args.length}\r\n`, ...args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`)];
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new Error(`${this.where}: no answer to ${args[0]} within ${this.timeoutMs} ms`));
        this.socket.destroy();
      }, this.timeoutMs);
      this.waiting = {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.socket.write(parts.join(''));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---- the target ----------------------------------------------------------------------------------

/** The SHA-256 of a password as ACL GETUSER lists it and `#` / `!` take it. */
export const passwordHash = (password: string) => createHash('sha256').update(password, 'utf8').digest('hex');

/** What ACL GETUSER says of a user: its password hashes, and everything else (its rules) as one comparable text. */
interface AclUser {
  flags: string[];
  passwords: string[];
  rules: string;
}

function parseUser(reply: Reply, user: string): AclUser | undefined {
  if (reply === null) return undefined;
  if (!Array.isArray(reply) || reply.length % 2) throw new Error(`ACL GETUSER ${user}: the server's answer is not a field list`);
  const fields = new Map<string, Reply>();
  for (let i = 0; i < reply.length; i += 2) fields.set(String(reply[i]), reply[i + 1]);
  const strings = (r: Reply | undefined, what: string) => {
    if (!Array.isArray(r) || !r.every((x) => typeof x === 'string')) throw new Error(`ACL GETUSER ${user}: ${what} is not a list of text`);
    return r as string[];
  };
  const flags = strings(fields.get('flags'), 'flags');
  const passwords = strings(fields.get('passwords'), 'passwords');
  if (!passwords.every((p) => /^[0-9a-f]{64}$/.test(p))) throw new Error(`ACL GETUSER ${user}: a password is not a SHA-256 hash`);
  fields.delete('passwords');
  return { flags, passwords, rules: JSON.stringify([...fields.entries()].sort(([a], [b]) => a.localeCompare(b))) };
}

/** The commands the admin runs, as ACL DRYRUN names them, and what to grant for each. */
function adminNeeds(user: string, killConnections: boolean): { args: string[]; grant: string }[] {
  return [
    { args: ['ACL', 'GETUSER', user], grant: '+acl|getuser' },
    { args: ['ACL', 'SETUSER', user], grant: '+acl|setuser' },
    { args: ['ACL', 'SAVE'], grant: '+acl|save' },
    ...(killConnections ? [{ args: ['CLIENT', 'KILL', 'USER', user], grant: '+client|kill' }] : []),
  ];
}

export function redis(spec: RedisSpec): Target {
  const timeoutMs = parseDuration(spec.connectTimeout);
  const mode = spec.tls?.mode ?? (LOOPBACK.has(spec.host) ? 'disable' : 'verify-full');
  const ca = spec.tls?.ca ? readFileSync(spec.tls.ca, 'utf8') : undefined;
  const servername = isIP(spec.host) ? undefined : spec.host;
  const tls: false | ConnectionOptions =
    mode === 'disable'
      ? false
      : mode === 'verify-full'
        ? { rejectUnauthorized: true, servername, ...(ca ? { ca } : {}) }
        : ca
          ? { rejectUnauthorized: true, servername, ca, checkServerIdentity: () => undefined }
          : { rejectUnauthorized: false, servername };
  const open = () => RespConnection.open({ host: spec.host, port: spec.port, tls, timeoutMs });
  const user = spec.user;

  /** A user name read from a stored value is data: it is acted on only if the manifest names it. */
  function ownUser(credential: Credential, which: string): string {
    const name = credential.username;
    if (name !== user) {
      throw refusal(`the ${which} credential names user ${JSON.stringify(String(name).slice(0, 128))}, which is not the one this manifest rotates (${user}); nothing was changed`);
    }
    return user;
  }

  function passwordOf(credential: Credential, which: string): string {
    const password = textOf(credential, 'password');
    if (!password) throw refusal(`the ${which} credential has no password (text) field`);
    return password;
  }

  /** Log in; false when the server rejected the user name or password. */
  async function auth(conn: RespConnection, username: string, password: string): Promise<ReplyError | undefined> {
    const reply = await conn.call(['AUTH', username, password], { secrets: [password] });
    if (reply instanceof ReplyError) return reply;
    if (reply !== 'OK') throw new Error(`redis ${spec.host}:${spec.port}: AUTH got an unexpected answer`);
    return undefined;
  }

  async function asAdmin<T>(work: (conn: RespConnection, admin: string) => Promise<T>): Promise<T> {
    const stored = await readCurrent(spec.admin.store);
    const [username, password] = [textOf(stored, 'username'), textOf(stored, 'password')];
    if (!username || !password) throw refusal(`admin credential ${describeStore(spec.admin.store)} must hold username and password as text`);
    if (username === user) throw refusal(`the admin credential is user ${user}, the user this manifest rotates: use a separate admin user`);
    const conn = await open();
    try {
      const denied = await auth(conn, username, password);
      if (denied) throw refusal(`redis ${spec.host}:${spec.port} rejected the admin credential ${describeStore(spec.admin.store)} (user ${username}): ${denied.code}`);
      return await work(conn, username);
    } finally {
      conn.close();
    }
  }

  /** Run an admin command; NOPERM is refused naming what to grant. */
  async function admin(conn: RespConnection, adminUser: string, args: string[], grant: string): Promise<Reply> {
    const reply = await conn.call(args);
    if (reply instanceof ReplyError) {
      if (reply.code === 'NOPERM') throw refusal(`the admin user ${adminUser} may not run ${args.slice(0, 2).join(' ')}: grant it ${grant}`);
      throw new Error(`redis ${spec.host}:${spec.port}: ${args.slice(0, 2).join(' ')} ${user} failed: ${reply.message}`);
    }
    return reply;
  }

  async function getUser(conn: RespConnection, adminUser: string): Promise<AclUser | undefined> {
    return parseUser(await admin(conn, adminUser, ['ACL', 'GETUSER', user], '+acl|getuser'), user);
  }

  /** The user as prepare may change it: it exists, is on, and adding a password leaves its rules alone. */
  function problemsOf(found: AclUser | undefined): string[] {
    if (!found) return [`the ACL user ${user} does not exist on ${spec.host}:${spec.port}: rekey never creates one (create it with its rules and a password, then store that password)`];
    const problems: string[] = [];
    if (found.flags.includes('nopass')) problems.push(`the ACL user ${user} is nopass (any password logs in): adding one would change its rules; give it a password first`);
    if (!found.flags.includes('on')) problems.push(`the ACL user ${user} is off: no password logs it in`);
    return problems;
  }

  /** Which of the admin's needs ACL DRYRUN says it lacks (Redis 7+; Redis 6 has no DRYRUN: nothing is said). */
  async function missingGrants(conn: RespConnection, adminUser: string, killConnections: boolean): Promise<string[]> {
    const missing: string[] = [];
    for (const need of adminNeeds(user, killConnections)) {
      const reply = await conn.call(['ACL', 'DRYRUN', adminUser, ...need.args]);
      if (reply instanceof ReplyError) {
        if (/unknown subcommand/i.test(reply.message)) return [];
        if (reply.code === 'NOPERM') return [`the admin user ${adminUser} may not run ACL DRYRUN, which rekey uses to check its permissions: grant it +acl|dryrun`];
        throw new Error(`redis ${spec.host}:${spec.port}: ACL DRYRUN failed: ${reply.message}`);
      }
      if (reply !== 'OK') missing.push(need.grant);
    }
    return missing.length ? [`the admin user ${adminUser} lacks ${missing.join(' ')}: grant it ${missing.join(' ')}`] : [];
  }

  /**
   * Persist the change where the server keeps its users (an ACL file); a server without one keeps
   * them in memory. Also after a retry that found its change made (the save may be what failed);
   * only where nothing changed is an admin that may not save let be.
   */
  async function save(conn: RespConnection, adminUser: string, changed = true): Promise<void> {
    const reply = await conn.call(['ACL', 'SAVE']);
    if (!(reply instanceof ReplyError) || /not configured to use an ACL file/i.test(reply.message)) return;
    if (reply.code === 'NOPERM' && !changed) return;
    if (reply.code === 'NOPERM') throw refusal(`the admin user ${adminUser} may not run ACL SAVE: grant it +acl|save (the change is made in memory, not yet in the ACL file)`);
    throw new Error(`redis ${spec.host}:${spec.port}: ACL SAVE failed: ${reply.message}`);
  }

  /** ACL SETUSER with one password operation (`#hash` adds, `!hash` removes); idempotent. */
  async function setPassword(conn: RespConnection, adminUser: string, op: '#' | '!', password: string): Promise<void> {
    const hash = passwordHash(password);
    const reply = await conn.call(['ACL', 'SETUSER', user, `${op}${hash}`], { secrets: [password, hash] });
    if (reply instanceof ReplyError) {
      // Removing a password already gone (a retry) is done.
      if (op === '!' && /does not exist/i.test(reply.message)) return;
      if (reply.code === 'NOPERM') throw refusal(`the admin user ${adminUser} may not run ACL SETUSER: grant it +acl|setuser`);
      // The server's words are not repeated: they would name the password's hash.
      throw new Error(`redis ${spec.host}:${spec.port}: ACL SETUSER ${user} (${op === '#' ? 'add' : 'remove'} a password) failed with ${reply.code}`);
    }
  }

  /** After a password change, the user's rules must be what they were. */
  function sameRules(before: AclUser, after: AclUser | undefined, step: string): void {
    if (!after || after.rules !== before.rules) {
      throw refusal(`the ACL rules of ${user} changed during ${step} (someone else changed the user meanwhile?); check it with ACL GETUSER ${user}`);
    }
  }

  return {
    acceptsBoth: true,

    nextCredential(current, material) {
      ownUser(current, 'current');
      return { ...current, engine: 'redis', host: spec.host, port: String(spec.port), username: user, password: material.value };
    },

    async prepare(next, current) {
      ownUser(next, 'new');
      ownUser(current, 'current');
      const [newPassword, oldPassword] = [passwordOf(next, 'new'), passwordOf(current, 'current')];
      if (newPassword === oldPassword) throw refusal('the new and the current credential hold the same password');
      await asAdmin(async (conn, adminUser) => {
        const before = await getUser(conn, adminUser);
        // Everything that would stop the rotation half-way is refused here, before any change.
        const problems = [...problemsOf(before), ...(await missingGrants(conn, adminUser, spec.killConnections))];
        // The stored password must be the user's: otherwise revoke would remove nothing the application uses.
        if (before && !before.passwords.includes(passwordHash(oldPassword))) problems.push(`the stored current password is not one of ${user}'s passwords (the store and Redis disagree)`);
        if (problems.length) throw refusal(`${problems.join('; ')}; nothing was changed`);
        if (!before!.passwords.includes(passwordHash(newPassword))) await setPassword(conn, adminUser, '#', newPassword);
        sameRules(before!, await getUser(conn, adminUser), 'prepare');
        await save(conn, adminUser);
      });
    },

    async undo(next, current) {
      ownUser(next, 'new');
      ownUser(current, 'current');
      const newPassword = passwordOf(next, 'new');
      if (newPassword === passwordOf(current, 'current')) return;
      await asAdmin(async (conn, adminUser) => {
        const found = await getUser(conn, adminUser);
        const present = found?.passwords.includes(passwordHash(newPassword)) ?? false;
        if (present) await setPassword(conn, adminUser, '!', newPassword);
        // A prepare refused for want of a grant changed nothing: its undo must not fail for the same want.
        await save(conn, adminUser, present);
      });
    },

    async revoke(old, next, options) {
      ownUser(old, 'old');
      ownUser(next, 'new');
      const [oldPassword, newPassword] = [passwordOf(old, 'old'), passwordOf(next, 'new')];
      if (oldPassword === newPassword) throw refusal('the old and the new version hold the same password; nothing was removed');
      return asAdmin(async (conn, adminUser) => {
        const found = await getUser(conn, adminUser);
        // Never remove the old password unless the new one works: that would lock the application out.
        if (!found?.passwords.includes(passwordHash(newPassword))) {
          throw refusal(`refusing to remove the old password of ${user}: the new one is not among its passwords`);
        }
        if (found.passwords.includes(passwordHash(oldPassword))) await setPassword(conn, adminUser, '!', oldPassword);
        await save(conn, adminUser);
        // rekey cannot tell whose other passwords are (a person's, or one a terminated rotation left): it says so.
        const others = found.passwords.filter((p) => p !== passwordHash(oldPassword) && p !== passwordHash(newPassword)).length;
        const warning = others
          ? `the ACL user ${user} still has ${others} password(s) besides the new one, which rekey did not remove (a person's, or one a terminated rotation left): check ACL GETUSER ${user} and remove them once nothing uses them`
          : undefined;
        if (!(options.emergency || spec.killConnections)) return { sessionsEnded: 0, warning };
        // Redis does not record which password a connection used: every connection of the user
        // ends, and clients reconnect with the new password (the only one left).
        const killed = await conn.call(['CLIENT', 'KILL', 'USER', user]);
        if (killed instanceof ReplyError) {
          if (killed.code !== 'NOPERM') throw new Error(`redis ${spec.host}:${spec.port}: CLIENT KILL USER ${user} failed: ${killed.message}`);
          return { sessionsEnded: 0, warning: [`connections of ${user} were not ended: the admin user ${adminUser} needs +client|kill`, warning].filter(Boolean).join('; ') };
        }
        return { sessionsEnded: typeof killed === 'number' ? killed : 0, warning };
      });
    },

    async accepts(credential): Promise<Acceptance> {
      const username = ownUser(credential, 'checked');
      const password = passwordOf(credential, 'checked');
      const conn = await open();
      try {
        const denied = await auth(conn, username, password);
        if (denied) return { accepted: false, reason: `redis rejected user ${username} (${denied.code})` };
        // A harmless command, as the application would run it.
        const pong = await conn.call(['PING']);
        if (pong instanceof ReplyError) return { accepted: false, reason: `user ${username} logged in but PING failed (${pong.code})` };
        if (pong !== 'PONG') throw new Error(`redis ${spec.host}:${spec.port}: PING got an unexpected answer`);
        return { accepted: true };
      } finally {
        conn.close();
      }
    },

    async preflight(current) {
      const username = ownUser(current, 'current');
      return asAdmin(async (conn, adminUser) => {
        const found = await getUser(conn, adminUser);
        const problems = [...problemsOf(found), ...(await missingGrants(conn, adminUser, true))];
        if (found && !found.passwords.includes(passwordHash(passwordOf(current, 'current')))) {
          problems.push(`the stored current password is not one of ${username}'s passwords (the store and Redis disagree)`);
        } else if (found && found.passwords.length > 1) {
          problems.push(`the ACL user ${username} has ${found.passwords.length - 1} password(s) besides the stored one: a rotation revokes only the stored one`);
        }
        return problems;
      });
    },
  };
}
