// A RabbitMQ user pair (`alternating-users`), changed through the management HTTP API: the idle
// user of `users` gets the new password, the current one keeps working until revoke, which clears
// the old user's password and closes its connections. The two users must be twins (same tags, vhost
// and topic permissions, limits): prepare compares them and refuses with a diff, before any change.
// Passwords reach the API as salted hashes (`password_hash`, in the user's own hashing algorithm),
// never in clear and never on a command line (`rabbitmqctl change_password` would put one there);
// only the AMQP login at verify carries one, as it must. Verify opens an AMQP connection (amqplib)
// to the manifest's vhost with the new credential.
// https://www.rabbitmq.com/docs/management#http-api, https://www.rabbitmq.com/docs/passwords
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { connect as amqpConnect } from 'amqplib';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween, serverAddress } from '../../lib/schema';
import { rotatedUsers, textOf, type Acceptance, type Credential, type Target, type TargetAccount } from '../provider';
import { describeStore, readCurrent, storeSchema } from '../stores';

const LOOPBACK = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);

const rabbitUser = z.string().regex(/^[A-Za-z0-9_.@-]{1,128}$/, 'must be a RabbitMQ user name (letters, digits, _ . @ -)');

/** The management API's base URL: https, or http to a loopback host; no credentials, query or fragment in it. */
const managementUrl = z.string().superRefine((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'is not a URL' });
    return;
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
    ctx.addIssue({ code: 'custom', message: `must be https (plain http sends the admin credential in the open; only allowed for loopback hosts)` });
  }
  if (url.username || url.password) ctx.addIssue({ code: 'custom', message: 'must not carry credentials: the admin credential comes from admin.store' });
  if (url.search || url.hash) ctx.addIssue({ code: 'custom', message: 'must not have a query or a fragment' });
});

export const rabbitmqSchema = z
  .object({
    type: z.literal('rabbitmq'),
    /** Where applications connect over AMQP: verify logs in here. */
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(5672),
    /** The virtual host the application uses: verify opens its AMQP connection there. */
    vhost: z.string().min(1).max(255).default('/'),
    /** alternating-users: the idle user of `users` gets the new password; the old keeps working until revoke. */
    strategy: z.literal('alternating-users').default('alternating-users'),
    users: z.tuple([rabbitUser, rabbitUser]),
    /** The management HTTP API, e.g. https://rabbit.internal:15671 (http only for loopback). */
    managementUrl,
    // Not `tls.ca`: that is AMQP's, and the management listener has its own certificate (or sits
    // behind a proxy with one) that may come from another CA; a CA given replaces the system's.
    managementCa: z.string().min(1).optional().describe("For an https managementUrl on a private CA: a PEM file of the CA the API's certificate must chain to, trusted instead of the system's CAs for this API alone. Separate from tls.ca, which is for AMQP: the management listener (or a proxy in front of it) has its own certificate, possibly from another CA."),
    /**
     * The credential that calls the management API, as a reference to a stored {username, password};
     * never inline, never one of `users`. It needs the `administrator` tag.
     */
    admin: z.object({ store: storeSchema }).strict(),
    /** TLS for AMQP (amqps): verify-full (the default for any host but loopback) checks the certificate and name against `ca` or the system's CAs. */
    tls: z
      .object({ mode: z.enum(['disable', 'require', 'verify-full']), ca: z.string().min(1).optional() })
      .strict()
      .optional(),
    /** Close the old user's connections at revoke (always in an emergency). */
    closeConnections: z.boolean().default(true),
    connectTimeout: durationBetween('100ms', '5m').default('5s'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.users[0] === spec.users[1]) ctx.addIssue({ code: 'custom', path: ['users'], message: 'must name two different users' });
    if (spec.managementCa && URL.canParse(spec.managementUrl) && new URL(spec.managementUrl).protocol !== 'https:') {
      ctx.addIssue({ code: 'custom', path: ['managementCa'], message: 'applies to an https managementUrl only (plain http has no certificate to check)' });
    }
    if (spec.tls?.mode === 'disable' && !LOOPBACK.has(spec.host)) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'mode'], message: `disable sends passwords in the open to ${spec.host}: only allowed for loopback hosts` });
    }
  });
export type RabbitmqSpec = z.infer<typeof rabbitmqSchema>;

/** Users belong to the broker the management API manages: its address names the broker here. */
export function rabbitmqAccounts(spec: RabbitmqSpec): TargetAccount[] {
  const url = new URL(spec.managementUrl);
  const api = `${serverAddress(url.hostname, Number(url.port || (url.protocol === 'https:' ? 443 : 80)))}${url.pathname.replace(/\/+$/, '')}`;
  return rotatedUsers(spec).map(({ path, user }) => ({ path, account: `rabbitmq user ${user} at ${api}` }));
}

function refusal(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, 'TargetRefused');
}

const ALGORITHMS: Record<string, 'sha256' | 'sha512' | 'md5'> = {
  rabbit_password_hashing_sha256: 'sha256',
  rabbit_password_hashing_sha512: 'sha512',
  // Users from RabbitMQ before 3.6 keep MD5 hashes: rekey checks them, and writes sha256 instead.
  rabbit_password_hashing_md5: 'md5',
};
const WRITE_ALGORITHMS = new Set(['rabbit_password_hashing_sha256', 'rabbit_password_hashing_sha512']);

/** RabbitMQ's password hash: base64(salt ‖ H(salt ‖ password)), with a 4-byte salt. */
export function rabbitHash(password: string, algorithm = 'rabbit_password_hashing_sha256', salt: Buffer = randomBytes(4)): string {
  const h = ALGORITHMS[algorithm];
  if (!h) throw refusal(`RabbitMQ reports hashing algorithm ${JSON.stringify(algorithm.slice(0, 64))}, which rekey does not use (sha256 or sha512 only)`);
  return Buffer.concat([salt, createHash(h).update(Buffer.concat([salt, Buffer.from(password, 'utf8')])).digest()]).toString('base64');
}

/** Does `hash` (as the API shows it) belong to `password`? */
export function hashMatches(hash: string, algorithm: string, password: string): boolean {
  if (!hash || !ALGORITHMS[algorithm]) return false;
  const salt = Buffer.from(hash, 'base64').subarray(0, 4);
  return salt.length === 4 && rabbitHash(password, algorithm, salt) === hash;
}

interface RabbitUser {
  name: string;
  passwordHash: string;
  algorithm: string;
  tags: string[];
}

/** Everything that makes two users equivalent for an application, as comparable lines. */
interface Facets {
  lines: Set<string>;
}

const MAX_BODY = 4 << 20;

export function rabbitmq(spec: RabbitmqSpec): Target {
  const timeoutMs = parseDuration(spec.connectTimeout);
  const allowed = new Set(spec.users);
  const base = spec.managementUrl.replace(/\/+$/, '');
  const mode = spec.tls?.mode ?? (LOOPBACK.has(spec.host) ? 'disable' : 'verify-full');
  const ca = spec.tls?.ca ? readFileSync(spec.tls.ca, 'utf8') : undefined;
  const managementCa = spec.managementCa ? readFileSync(spec.managementCa, 'utf8') : undefined;
  const servername = isIP(spec.host) ? undefined : spec.host;
  const where = `rabbitmq ${base}`;

  function ownUser(credential: Credential, which: string): string {
    const name = credential.username;
    if (typeof name !== 'string' || !allowed.has(name)) {
      throw refusal(`the ${which} credential names user ${JSON.stringify(String(name).slice(0, 128))}, which is not one this manifest rotates (${spec.users.join(', ')}); nothing was changed`);
    }
    return name;
  }

  function passwordOf(credential: Credential, which: string): string {
    const password = textOf(credential, 'password');
    if (!password) throw refusal(`the ${which} credential has no password (text) field`);
    return password;
  }

  /** Why the API could not be asked, named for the operator; a certificate problem is not retried. */
  function unreachable(err: Error & { code?: string }): Error {
    const code = err.code ?? err.name;
    if (/ALTNAME/.test(code)) return refusal(`${where}: the management API's TLS certificate is not for ${new URL(base).hostname} (${code})`);
    if (/CERT|SELF_SIGNED|UNABLE_TO_/.test(code)) {
      return refusal(`${where}: the management API's TLS certificate is not trusted (${code})${spec.managementCa ? `, checked against managementCa ${spec.managementCa}` : ': on a private CA, give managementCa (the CA as a PEM file)'}`);
    }
    if (code === 'ABORT_ERR' || code === 'AbortError') return new Error(`${where}: the management API did not answer within ${spec.connectTimeout}`);
    return new Error(`${where}: the management API is not reachable (${code})`);
  }

  /**
   * One HTTP exchange with the API. node:http(s) rather than fetch: Node's fetch takes no CA per
   * request (undici's Agent would, but undici is not a dependency), and managementCa must apply
   * to this API alone. node:http never follows a redirect; an answer is read to MAX_BODY bytes at
   * most (an endless one ends the step, not the memory).
   */
  function exchange(method: string, path: string, headers: Record<string, string>, body: string | undefined): Promise<{ status: number; text: string }> {
    const url = new URL(`${base}/api/${path}`);
    const what = `${method} ${path.split('?')[0]}`;
    const tls = url.protocol === 'https:' && managementCa ? { ca: managementCa } : {};
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, { method, headers: { ...headers, ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }) }, signal: AbortSignal.timeout(timeoutMs), ...tls }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size <= MAX_BODY) return void chunks.push(chunk);
          reject(new Error(`${where}: ${what}: the answer is oversized (over ${MAX_BODY} bytes)`));
          req.destroy();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => reject(unreachable(err)));
        res.on('close', () => res.complete || reject(new Error(`${where}: ${what}: the answer was cut short`)));
      });
      req.on('error', (err) => reject(unreachable(err)));
      req.end(body);
    });
  }

  /** One management API call as the admin: JSON in, JSON out (undefined for 404). Never follows redirects. */
  async function api(auth: string, method: string, path: string, body?: unknown): Promise<unknown> {
    const headers = { authorization: auth, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(method === 'DELETE' ? { 'x-reason': 'rekey: credential revoked' } : {}) };
    const { status, text } = await exchange(method, path, headers, body === undefined ? undefined : JSON.stringify(body));
    if (status === 404 && method === 'GET') return undefined;
    if (status === 401) throw refusal(`${where} rejected the admin credential ${describeStore(spec.admin.store)} (401)`);
    if (status === 403) throw refusal(`${where}: the admin may not ${method} ${path.split('?')[0]} (403): it needs the administrator tag`);
    if (status >= 300 && status < 400) throw refusal(`${where}: ${method} ${path.split('?')[0]} answered with a redirect (${status}); rekey does not follow one: set managementUrl to where the API is`);
    // The server's words are not repeated: an answer to a write could echo what was sent.
    if (status < 200 || status >= 300) throw new Error(`${where}: ${method} ${path.split('?')[0]} failed with HTTP ${status}`);
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`${where}: ${method} ${path.split('?')[0]}: the answer is not JSON`);
    }
  }

  const tagsOf = (value: unknown): string[] =>
    (Array.isArray(value) ? value.map(String) : typeof value === 'string' ? value.split(',') : []).map((t) => t.trim()).filter(Boolean).sort();

  async function getUser(auth: string, name: string): Promise<RabbitUser | undefined> {
    const found = (await api(auth, 'GET', `users/${encodeURIComponent(name)}`)) as Record<string, unknown> | undefined;
    if (!found) return undefined;
    if (found.name !== name || typeof found.password_hash !== 'string') throw new Error(`${where}: GET users/${name}: the answer is not this user`);
    return { name, passwordHash: found.password_hash, algorithm: String(found.hashing_algorithm ?? ''), tags: tagsOf(found.tags) };
  }

  /** Tags, permissions per vhost, topic permissions and limits, as lines ("permission /app: configure=^app read=.* write=.*"). */
  async function facets(auth: string, user: RabbitUser): Promise<Facets> {
    const name = encodeURIComponent(user.name);
    const lines = new Set<string>(user.tags.map((t) => `tag ${t}`));
    const list = async (path: string) => {
      const got = await api(auth, 'GET', path);
      if (got === undefined) return [];
      if (!Array.isArray(got)) throw new Error(`${where}: GET ${path}: the answer is not a list`);
      return got as Record<string, unknown>[];
    };
    for (const p of await list(`users/${name}/permissions`)) lines.add(`permission vhost ${JSON.stringify(p.vhost)}: configure=${JSON.stringify(p.configure)} write=${JSON.stringify(p.write)} read=${JSON.stringify(p.read)}`);
    for (const p of await list(`users/${name}/topic-permissions`)) lines.add(`topic permission vhost ${JSON.stringify(p.vhost)} exchange ${JSON.stringify(p.exchange)}: write=${JSON.stringify(p.write)} read=${JSON.stringify(p.read)}`);
    for (const l of await list(`user-limits/${name}`)) {
      for (const [k, v] of Object.entries((l.value as Record<string, unknown>) ?? {})) lines.add(`limit ${k}=${JSON.stringify(v)}`);
    }
    return { lines };
  }

  async function twinDiff(auth: string, a: RabbitUser, b: RabbitUser): Promise<string[]> {
    const [fa, fb] = [(await facets(auth, a)).lines, (await facets(auth, b)).lines];
    return [...[...fa].filter((f) => !fb.has(f)).map((f) => `- only ${a.name}: ${f}`), ...[...fb].filter((f) => !fa.has(f)).map((f) => `+ only ${b.name}: ${f}`)].sort();
  }

  /** The stored admin credential as an Authorization header, or why it may not be used at all (before any call). */
  async function adminLogin(): Promise<{ auth: string; username: string } | { unusable: string }> {
    const stored = await readCurrent(spec.admin.store);
    const [username, password] = [textOf(stored, 'username'), textOf(stored, 'password')];
    if (!username || !password) return { unusable: `admin credential ${describeStore(spec.admin.store)} must hold username and password as text` };
    if (allowed.has(username)) return { unusable: `the admin credential is user ${username}, one of the users this manifest rotates: use a separate admin user` };
    return { auth: `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`, username };
  }

  async function asAdmin<T>(work: (auth: string, adminUser: string) => Promise<T>): Promise<T> {
    const login = await adminLogin();
    if ('unusable' in login) throw refusal(login.unusable);
    return work(login.auth, login.username);
  }

  /** Problems with the admin: it must have the administrator tag (users, permissions and connections are administrator-only). */
  async function adminProblems(auth: string, adminUser: string): Promise<string[]> {
    const me = (await api(auth, 'GET', 'whoami')) as Record<string, unknown> | undefined;
    if (!me || me.name !== adminUser) throw new Error(`${where}: GET whoami did not answer for ${adminUser}`);
    return tagsOf(me.tags).includes('administrator') ? [] : [`the admin user ${adminUser} lacks the administrator tag, which managing users and closing connections need: rabbitmqctl set_user_tags ${adminUser} administrator`];
  }

  /**
   * Everything that would stop a rotation from `current` to `idle` half-way, found without changing
   * anything: the admin's tag, both users present, the stored password the current user's, twins.
   */
  async function problems(auth: string, adminUser: string, currentName: string, idleName: string, currentPassword: string): Promise<{ problems: string[]; idle?: RabbitUser }> {
    const found = [...(await adminProblems(auth, adminUser))];
    if (found.length) return { problems: found };
    const [current, idle] = [await getUser(auth, currentName), await getUser(auth, idleName)];
    for (const [name, user] of [[currentName, current], [idleName, idle]] as const) {
      if (!user) found.push(`the user ${name} does not exist on ${base}: rekey never creates one (create it with the same tags and permissions as its twin)`);
    }
    if (current && !hashMatches(current.passwordHash, current.algorithm, currentPassword)) found.push(`the stored current password is not ${currentName}'s (the store and RabbitMQ disagree)`);
    if (current && idle) {
      const diff = await twinDiff(auth, current, idle);
      if (diff.length) {
        found.push(`users ${currentName} and ${idleName} are not twins, so the application would lose or gain rights when it switches:\n  ${diff.join('\n  ')}\nGive both the same tags, permissions and limits, then rotate again`);
      }
    }
    return { problems: found, idle };
  }

  /** The algorithm a new hash of `user` is made with: its own, unless that is MD5 (or unknown): then sha256. */
  const writeAlgorithm = (user: RabbitUser) => (WRITE_ALGORITHMS.has(user.algorithm) ? user.algorithm : 'rabbit_password_hashing_sha256');

  async function setHash(auth: string, user: RabbitUser, password: string | undefined): Promise<void> {
    const algorithm = writeAlgorithm(user);
    // PUT replaces the user: its tags are sent back as they are, so only the password changes.
    await api(auth, 'PUT', `users/${encodeURIComponent(user.name)}`, { password_hash: password === undefined ? '' : rabbitHash(password, algorithm), hashing_algorithm: algorithm, tags: user.tags.join(',') });
  }

  /**
   * The user's connections as the broker tracks them (/api/connections/username/: registered when
   * a connection opens). Not /api/connections, which lists a new connection only after the next
   * statistics interval (5 s by default): revoke would take an empty list for "none left".
   */
  async function connectionsOf(auth: string, name: string): Promise<number> {
    const got = await api(auth, 'GET', `connections/username/${encodeURIComponent(name)}`);
    if (got === undefined) return 0;
    if (!Array.isArray(got)) throw new Error(`${where}: GET connections of ${name}: the answer is not a list`);
    return (got as Record<string, unknown>[]).filter((c) => c.user === name).length;
  }

  return {
    acceptsBoth: true,

    nextCredential(current, material) {
      const [a, b] = spec.users;
      const username = ownUser(current, 'current') === a ? b : a;
      const proto = mode === 'disable' ? 'amqp' : 'amqps';
      return { ...current, engine: 'rabbitmq', host: spec.host, port: String(spec.port), vhost: spec.vhost, protocol: proto, username, password: material.value };
    },

    async prepare(next, current) {
      const [nextName, currentName] = [ownUser(next, 'new'), ownUser(current, 'current')];
      if (nextName === currentName) throw refusal(`the new and the current credential both name ${nextName}: alternating-users needs the other user`);
      const [newPassword, oldPassword] = [passwordOf(next, 'new'), passwordOf(current, 'current')];
      await asAdmin(async (auth, adminUser) => {
        const found = await problems(auth, adminUser, currentName, nextName, oldPassword);
        if (found.problems.length) throw refusal(`${found.problems.join('; ')}; nothing was changed`);
        const idle = found.idle!;
        // A retry finds the new password already set and changes nothing.
        if (!hashMatches(idle.passwordHash, idle.algorithm, newPassword)) await setHash(auth, idle, newPassword);
        // Someone may have changed either user meanwhile: the twins are compared again after the change.
        const [after, currentAfter] = [await getUser(auth, nextName), await getUser(auth, currentName)];
        if (!after || !currentAfter || !hashMatches(after.passwordHash, after.algorithm, newPassword)) {
          throw refusal(`the user ${nextName} is not as prepare left it (someone else changed it meanwhile?); check it in the management UI`);
        }
        const diff = await twinDiff(auth, currentAfter, after);
        if (diff.length) throw refusal(`users ${currentName} and ${nextName} stopped being twins during prepare (someone else changed them meanwhile?):\n  ${diff.join('\n  ')}`);
      });
    },

    async undo(next, current) {
      const [nextName, currentName] = [ownUser(next, 'new'), ownUser(current, 'current')];
      if (nextName === currentName) return;
      const newPassword = passwordOf(next, 'new');
      const login = await adminLogin();
      // An admin credential that may not be used at all, or lacks the administrator tag, cannot have
      // made prepare's change (prepare refuses it first, and the API would): nothing to undo with it.
      if ('unusable' in login || (await adminProblems(login.auth, login.username)).length) return;
      const idle = await getUser(login.auth, nextName);
      // Only the password prepare set is cleared: the idle user is back to accepting nothing rekey gave it.
      if (idle && hashMatches(idle.passwordHash, idle.algorithm, newPassword)) await setHash(login.auth, idle, undefined);
    },

    async revoke(old, next, options) {
      const [oldName, nextName] = [ownUser(old, 'old'), ownUser(next, 'new')];
      if (oldName === nextName) throw refusal(`the old and the new version both name ${oldName}; nothing was revoked`);
      const newPassword = passwordOf(next, 'new');
      return asAdmin(async (auth) => {
        const [oldUser, nextUser] = [await getUser(auth, oldName), await getUser(auth, nextName)];
        // Never lock the application out: the old user's password goes only while the new one works.
        if (!nextUser || !hashMatches(nextUser.passwordHash, nextUser.algorithm, newPassword)) {
          throw refusal(`refusing to clear the password of ${oldName}: ${nextName} does not hold the new password`);
        }
        if (oldUser && oldUser.passwordHash !== '') await setHash(auth, oldUser, undefined);
        if (!(options.emergency || spec.closeConnections) || !oldUser) return { sessionsEnded: 0 };
        // A login already past authentication can still appear: repeat until none is left.
        // Two empty answers in a row, 200 ms apart, end it: a login that authenticated just before
        // the password was cleared is registered by then.
        let [ended, empty] = [0, 0];
        for (let round = 0; round < 20 && empty < 2; round++) {
          const open = await connectionsOf(auth, oldName);
          if (open) {
            await api(auth, 'DELETE', `connections/username/${encodeURIComponent(oldName)}`);
            ended += open;
            empty = 0;
          } else empty++;
          await new Promise((r) => setTimeout(r, 200));
        }
        return { sessionsEnded: ended };
      });
    },

    async accepts(credential): Promise<Acceptance> {
      const username = ownUser(credential, 'checked');
      const password = passwordOf(credential, 'checked');
      const tls =
        mode === 'disable'
          ? {}
          : mode === 'verify-full'
            ? { rejectUnauthorized: true, servername, ...(ca ? { ca: [ca] } : {}) }
            : ca
              ? { rejectUnauthorized: true, servername, ca: [ca], checkServerIdentity: () => undefined }
              : { rejectUnauthorized: false, servername };
      let conn;
      try {
        // The credential goes as fields, never in a URL that an error could repeat.
        conn = await amqpConnect({ protocol: mode === 'disable' ? 'amqp' : 'amqps', hostname: spec.host, port: spec.port, vhost: spec.vhost, username, password, heartbeat: 0 }, { timeout: timeoutMs, ...tls });
      } catch (err) {
        const message = String((err as Error).message ?? '').split(password).join('***');
        if (/ACCESS[-_]REFUSED|403/.test(message)) return { accepted: false, reason: `rabbitmq rejected user ${username} (ACCESS_REFUSED)` };
        if (/NOT[-_]ALLOWED|530/.test(message)) return { accepted: false, reason: `rabbitmq let user ${username} in but refused vhost ${spec.vhost} (NOT_ALLOWED)` };
        const code = (err as { code?: string }).code ?? '';
        if (/CERT|SELF_SIGNED|UNABLE_TO_/.test(code)) throw refusal(`rabbitmq ${spec.host}:${spec.port}: ${message}`);
        throw new Error(`rabbitmq ${spec.host}:${spec.port}: AMQP connection failed: ${message.slice(0, 300)}`);
      }
      try {
        const channel = await conn.createChannel();
        await channel.close();
        return { accepted: true };
      } finally {
        await conn.close().catch(() => undefined);
      }
    },

    async preflight(current) {
      const currentName = ownUser(current, 'current');
      const idleName = spec.users.find((u) => u !== currentName)!;
      return asAdmin(async (auth, adminUser) => (await problems(auth, adminUser, currentName, idleName, passwordOf(current, 'current'))).problems);
    },
  };
}
