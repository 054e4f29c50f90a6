import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Payload } from '@temporalio/common';
import { AesGcmCodec, loadKeyring } from '../../lib/codec';
import { HttpError, readBody as readLimited } from '../../lib/http';
import { EXIT, UsageError, err, parse } from '../common';

/** Temporal refuses payloads over 2 MiB; base64 and JSON add about a third. */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;
export const SESSION_MS = 12 * 60 * 60 * 1000;
const COOKIE = 'rekey_codec';

/** Payloads as Temporal's remote codec protocol carries them: bytes as base64. */
interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

const toPayload = (p: JsonPayload): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
  data: Buffer.from(p.data ?? '', 'base64'),
});
const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? new Uint8Array()).toString('base64')])),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

function tokenFromEnv(): string {
  if (process.env.REKEY_CODEC_TOKEN) return process.env.REKEY_CODEC_TOKEN;
  if (process.env.REKEY_CODEC_TOKEN_FILE) return readFileSync(process.env.REKEY_CODEC_TOKEN_FILE, 'utf8').trim();
  throw new UsageError('codec-server needs a bearer token: set REKEY_CODEC_TOKEN_FILE (or REKEY_CODEC_TOKEN)');
}

function sameSecret(given: string | undefined, token: string): boolean {
  if (!given) return false;
  const [a, b] = [Buffer.from(given), Buffer.from(token)];
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Only our own cookie is decoded: other servers on this host may set cookies we must not choke on. */
function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k !== name) continue;
    try {
      return decodeURIComponent(v.join('='));
    } catch {
      throw new HttpError(400, `the ${name} cookie is malformed`);
    }
  }
  return undefined;
}

function requestUrl(req: IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://codec');
  } catch {
    throw new HttpError(400, 'malformed request URL');
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function payloadsOf(raw: string): Payload[] {
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch {
    throw new HttpError(400, 'the body is not JSON');
  }
  // The temporal CLI sends {} for an empty list (proto3 JSON leaves empty lists out), e.g. for a query without arguments.
  const payloads = isObject(body) ? (body.payloads ?? []) : undefined;
  if (!Array.isArray(payloads) || !payloads.every(isObject)) throw new HttpError(400, 'body must be {"payloads": [{"metadata": {...}, "data": "..."}, ...]}');
  // Only base64 text: Buffer.from({length: 3e8}) would allocate whatever a caller asks for.
  const text = (v: unknown) => v === undefined || typeof v === 'string';
  if (!payloads.every((p) => text(p.data) && (p.metadata === undefined || (isObject(p.metadata) && Object.values(p.metadata).every((v) => typeof v === 'string'))))) {
    throw new HttpError(400, 'payload data and metadata values must be base64 strings');
  }
  return payloads.map((p) => toPayload(p as JsonPayload));
}

export interface CodecServerOptions {
  codec: AesGcmCodec;
  token: string;
  origins: string[];
  log?: (line: string) => void;
  now?: () => number;
}

/**
 * Temporal's remote codec endpoints (POST /encode, POST /decode) for the Web UI and the temporal CLI.
 * Callers prove themselves with `Authorization: Bearer <token>` (the temporal CLI's --codec-auth), or,
 * for a browser, with a session cookie set by visiting /login?token=<token>: the Temporal UI cannot add
 * a bearer token of ours, but sends cookies when its codec setting "include cross-origin credentials"
 * is on. The cookie holds a random session id that expires, never the token itself, so a stolen cookie
 * is worth hours, not the token. Logs name the route and the outcome, never a payload or a query string.
 */
export function createCodecServer({ codec, token, origins, log = () => undefined, now = Date.now }: CodecServerOptions): Server {
  const sessions = new Map<string, number>(); // session id -> when it expires

  const signedIn = (req: IncomingMessage) => {
    const bearer = req.headers.authorization?.match(/^Bearer (.+)$/)?.[1];
    if (sameSecret(bearer, token)) return true;
    const session = cookie(req, COOKIE);
    const expires = session === undefined ? undefined : sessions.get(session);
    if (expires === undefined) return false;
    if (expires > now()) return true;
    sessions.delete(session!);
    return false;
  };

  const startSession = () => {
    for (const [id, expires] of sessions) if (expires <= now()) sessions.delete(id);
    const id = randomBytes(32).toString('base64url');
    sessions.set(id, now() + SESSION_MS);
    return `${COOKIE}=${id}; HttpOnly; SameSite=Lax; Path=/; Max-Age=${SESSION_MS / 1000}`;
  };

  return createServer(async (req: IncomingMessage, res: ServerResponse) => {
    let path = '(malformed URL)';
    const reply = (status: number, body?: unknown) => {
      log(`${req.method} ${path} ${status}`);
      // The rest of a body we refused is not worth reading: the connection ends with the answer.
      if (status === 413) res.setHeader('Connection', 'close');
      res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    const origin = req.headers.origin;
    if (origin && origins.includes(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
      res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
      res.setHeader('Access-Control-Allow-Headers', 'content-type, authorization, x-namespace');
      res.setHeader('Vary', 'Origin');
    }
    // Whatever a request holds, it gets an answer and the server keeps serving the next one.
    try {
      const url = requestUrl(req);
      path = url.pathname;
      if (req.method === 'OPTIONS') return reply(204);
      if (req.method === 'GET' && path === '/login') {
        if (!sameSecret(url.searchParams.get('token') ?? undefined, token)) return reply(401, { error: 'wrong token' });
        res.setHeader('Set-Cookie', startSession());
        res.setHeader('Cache-Control', 'no-store');
        return reply(200, { ok: true, note: `this browser may now decode payloads in the Temporal UI for ${SESSION_MS / 3_600_000} hours` });
      }
      if (req.method !== 'POST' || !['/encode', '/decode'].includes(path)) return reply(404, { error: 'POST /encode or /decode' });
      if (!signedIn(req)) return reply(401, { error: 'a bearer token (or a session from /login) is required' });
      const input = payloadsOf(await readLimited(req, MAX_BODY_BYTES));
      const output = path === '/encode' ? await codec.encode(input) : await codec.decode(input);
      return reply(200, { payloads: output.map(toJson) });
    } catch (e) {
      if (res.headersSent) return res.destroy();
      return reply(e instanceof HttpError ? e.status : 400, { error: (e as Error).message });
    }
  });
}

/** `rekey codec-server [--port 8388] [--origin URL]...` */
export async function codecServer(args: string[]): Promise<number> {
  const { values } = parse(args, { port: { type: 'string' }, origin: { type: 'string', multiple: true } }, []);
  const keyring = loadKeyring();
  if (!keyring) throw new UsageError('codec-server needs REKEY_CODEC_KEYRING (the same keyring the worker uses)');
  const port = Number(values.port ?? process.env.REKEY_CODEC_PORT ?? 8388);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new UsageError(`--port: "${values.port}" is not a port number`);
  const origins = (values.origin as string[] | undefined) ?? [process.env.REKEY_TEMPORAL_UI ?? 'http://127.0.0.1:8233'];
  const server = createCodecServer({ codec: new AesGcmCodec(keyring), token: tokenFromEnv(), origins, log: (line) => err(line) });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new UsageError(`cannot listen on 127.0.0.1:${port}: ${e.message}`)));
    server.listen(port, '127.0.0.1', resolve);
  });
  err(`rekey codec server on http://127.0.0.1:${port} (keys: ${[...keyring.keys.keys()].join(', ')}; active ${keyring.activeId}; UI origins ${origins.join(', ')})`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  server.close();
  return EXIT.ok;
}
