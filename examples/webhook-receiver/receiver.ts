// A webhook receiver that checks GitHub-style signatures with keys rekey rotates. It reads the key
// file rekey's `command` consumer writes and accepts a signature by any key in it: the current one
// and, while a rotation overlaps them, the previous one, so senders can switch keys at their pace.
//
//   npx tsx examples/webhook-receiver/receiver.ts --port 8080 --keys /path/keys.json [--field value]
//
// Neither keys nor signatures are ever logged. See README.md.
import { open, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { matchingKey } from './verify';

/** GitHub caps payloads at 25 MB, but the events a receiver like this handles are far smaller. */
const MAX_BODY_BYTES = 1024 * 1024;

interface KeySet {
  /** The current key first, then the previous one if the file has it. */
  keys: string[];
  /** The rekey_version_id of each key, in the same order. */
  versions: string[];
}

/** A problem with the key file, in words that never quote its contents. */
class KeyFileError extends Error {}

function parseKeyFile(text: string, field: string): KeySet {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the text around the error, which may be a key.
    throw new KeyFileError('is not valid JSON');
  }
  const entry = (value: unknown, where: string): { key: string; version: string } => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KeyFileError(`${where} is not a JSON object`);
    const record = value as Record<string, unknown>;
    const key = record[field];
    const version = record.rekey_version_id;
    if (typeof key !== 'string' || key.length === 0) throw new KeyFileError(`${where} has no non-empty text field "${field}"`);
    if (typeof version !== 'string' || version.length === 0) throw new KeyFileError(`${where} has no rekey_version_id`);
    return { key, version };
  };
  const entries = [entry(data, 'the file')];
  const previous = (data as Record<string, unknown>).previous;
  if (previous !== undefined && previous !== null) entries.push(entry(previous, '"previous"'));
  return { keys: entries.map((e) => e.key), versions: entries.map((e) => e.version) };
}

/**
 * The key file, re-read whenever it changes. rekey replaces it by renaming a new file over it, so
 * its inode changes; size and nanosecond times catch an editor writing in place. Checking on every
 * request (one stat) means the first request after a rotation already sees the new keys, which
 * fs.watch, being asynchronous and unreliable across renames, would not promise.
 */
class KeyFile {
  private cached?: { identity: string; keySet: KeySet };

  constructor(
    readonly path: string,
    private readonly field: string,
  ) {}

  async current(): Promise<KeySet> {
    const seen = await stat(this.path, { bigint: true });
    if (this.cached?.identity === identityOf(seen)) return this.cached.keySet;
    // Read through one handle, so the identity remembered is that of the bytes parsed.
    const handle = await open(this.path, 'r');
    try {
      const info = await handle.stat({ bigint: true });
      if (info.mode & 0o077n) {
        console.error(`warning: ${this.path} is open to group or others (mode ${(info.mode & 0o777n).toString(8)}); rekey writes it 0600`);
      }
      const keySet = parseKeyFile(await handle.readFile('utf8'), this.field);
      this.cached = { identity: identityOf(info), keySet };
      console.log(`loaded ${keySet.keys.length} key(s) from ${this.path}: versions ${keySet.versions.join(', ')}`);
      return keySet;
    } finally {
      await handle.close();
    }
  }
}

function identityOf(s: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint }): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
}

/** Why the key file cannot be used, safe to log. */
function describe(err: unknown): string {
  if (err instanceof KeyFileError) return err.message;
  const code = (err as NodeJS.ErrnoException)?.code;
  return code ? `cannot be read (${code})` : 'cannot be read';
}

/** A header value fit for a log line: senders choose these, so nothing that could forge a line. */
function loggable(value: string | string[] | undefined): string {
  return typeof value === 'string' && /^[A-Za-z0-9_.:-]{1,100}$/.test(value) ? value : '-';
}

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  if (body === undefined) {
    res.writeHead(status, headers).end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(`${JSON.stringify(body)}\n`);
}

/**
 * Answer before the body is read (a refusal): close the connection afterwards instead of reading a
 * body nobody wants. The rest of the body is read and dropped briefly first, because closing with
 * unread data resets the connection, and the sender would lose the answer.
 */
function refuse(req: IncomingMessage, res: ServerResponse, status: number, body: unknown): void {
  send(res, status, body, { connection: 'close' });
  req.resume();
  res.once('finish', () => setTimeout(() => req.socket.destroy(), 1000).unref());
}

/** The raw body (the signature covers its exact bytes), or undefined once it passes `limit`. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    // A sender that hangs up mid-body gets no answer; settle so the request is not left pending.
    req.on('close', () => {
      if (!req.complete) reject(new Error('request aborted'));
    });
  });
}

async function handle(keyFile: KeyFile, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];

  if (path === '/health') {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'use GET' }, { allow: 'GET, HEAD' });
    try {
      const { versions } = await keyFile.current();
      // Version ids only: a health check (rekey's `health` command) compares them with the version it delivered.
      return send(res, 200, { versions });
    } catch (err) {
      console.error(`health: key file ${describe(err)}`);
      return send(res, 503, { error: 'key file unusable' });
    }
  }

  if (req.method !== 'POST') return send(res, 405, { error: 'use POST' }, { allow: 'POST' });

  const event = loggable(req.headers['x-github-event']);
  const delivery = loggable(req.headers['x-github-delivery']);
  const signature = req.headers['x-hub-signature-256'];
  if (typeof signature !== 'string') return refuse(req, res, 400, { error: 'missing X-Hub-Signature-256' });
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) return refuse(req, res, 413, { error: 'body too large' });

  const body = await readBody(req, MAX_BODY_BYTES);
  if (!body) return refuse(req, res, 413, { error: 'body too large' });

  let keySet: KeySet;
  try {
    keySet = await keyFile.current();
  } catch (err) {
    // Fail closed: without a readable key file nothing is accepted, not even with keys seen before.
    console.error(`key file ${describe(err)}; refusing event=${event} delivery=${delivery}`);
    return send(res, 503, { error: 'key file unusable' });
  }
  const index = matchingKey(body, signature, keySet.keys);
  if (index < 0) {
    console.log(`rejected event=${event} delivery=${delivery}: no key matches the signature`);
    return send(res, 401, { error: 'bad signature' });
  }
  // Which key matched (current or previous) tells when every sender has moved to the new key.
  console.log(`accepted event=${event} delivery=${delivery} key=${index === 0 ? 'current' : 'previous'} version=${keySet.versions[index]}`);
  // A real receiver would act on the event here.
  return send(res, 204);
}

function usage(message: string): never {
  console.error(`${message}\nusage: receiver.ts --keys <key file> [--port <port, default 8080>] [--field <key field, default value>]`);
  process.exit(2);
}

async function main(): Promise<void> {
  let values: { port?: string; keys?: string; field?: string };
  try {
    ({ values } = parseArgs({ options: { port: { type: 'string' }, keys: { type: 'string' }, field: { type: 'string' } }, strict: true }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (!values.keys) usage('--keys is required');
  const port = Number(values.port ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage('--port must be a port number (0 picks a free one)');
  const field = values.field ?? 'value';
  if (field === 'rekey_version_id' || field === 'previous') usage(`--field cannot be "${field}"`);

  const keyFile = new KeyFile(values.keys, field);
  try {
    await keyFile.current();
  } catch (err) {
    // Refuse to start rather than answer 503 to everything: a wrong path is better found now.
    console.error(`key file ${values.keys} ${describe(err)}`);
    process.exit(1);
  }

  const server = createServer((req, res) => {
    handle(keyFile, req, res).catch((err: unknown) => {
      console.error(`request failed: ${(err as Error)?.name ?? 'error'}`);
      if (!res.headersSent) send(res, 500, { error: 'internal error' }, { connection: 'close' });
      else res.destroy();
    });
  });
  // Slow senders cannot hold connections open for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  const stop = (signal: string) => {
    console.log(`${signal}: closing`);
    server.close(() => console.log('closed'));
    server.closeIdleConnections();
    // Requests still running get a few seconds; then the process ends anyway.
    setTimeout(() => process.exit(1), 10_000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  server.on('error', (err: NodeJS.ErrnoException) => {
    console.error(`cannot listen on 127.0.0.1:${port}: ${err.code ?? err.message}`);
    process.exit(1);
  });
  // 127.0.0.1 only: put a TLS-terminating proxy in front of it to receive from the internet.
  server.listen(port, '127.0.0.1', () => {
    console.log(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
}

void main();
