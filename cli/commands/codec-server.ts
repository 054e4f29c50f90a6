import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Payload } from '@temporalio/common';
import { AesGcmCodec, loadKeyring } from '../../lib/codec';
import { EXIT, UsageError, err, parse } from '../common';

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

function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

export interface CodecServerOptions {
  codec: AesGcmCodec;
  token: string;
  origins: string[];
  log?: (line: string) => void;
}

/**
 * Temporal's remote codec endpoints (POST /encode, POST /decode) for the Web UI and the temporal CLI.
 * Callers prove themselves with `Authorization: Bearer <token>` (the temporal CLI's --codec-auth), or,
 * for a browser, with the cookie set once by visiting /login?token=<token>: the Temporal UI cannot add
 * a bearer token of ours, but sends cookies when its codec setting "include cross-origin credentials"
 * is on. Logs name the route and the outcome, never a payload.
 */
export function createCodecServer({ codec, token, origins, log = () => undefined }: CodecServerOptions): Server {
  return createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const origin = req.headers.origin;
    if (origin && origins.includes(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
      res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
      res.setHeader('Access-Control-Allow-Headers', 'content-type, authorization, x-namespace');
      res.setHeader('Vary', 'Origin');
    }
    const url = new URL(req.url ?? '/', 'http://codec');
    const reply = (status: number, body?: unknown) => {
      log(`${req.method} ${url.pathname} ${status}`);
      res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (req.method === 'OPTIONS') return reply(204);
    if (req.method === 'GET' && url.pathname === '/login') {
      if (!sameSecret(url.searchParams.get('token') ?? undefined, token)) return reply(401, { error: 'wrong token' });
      res.setHeader('Set-Cookie', `rekey_codec=${encodeURIComponent(token)}; HttpOnly; SameSite=Lax; Path=/`);
      return reply(200, { ok: true, note: 'this browser may now decode payloads in the Temporal UI' });
    }
    if (req.method !== 'POST' || !['/encode', '/decode'].includes(url.pathname)) return reply(404, { error: 'POST /encode or /decode' });
    const bearer = req.headers.authorization?.match(/^Bearer (.+)$/)?.[1];
    if (!sameSecret(bearer, token) && !sameSecret(cookie(req, 'rekey_codec'), token)) return reply(401, { error: 'a bearer token is required' });
    try {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const { payloads } = JSON.parse(raw) as { payloads?: JsonPayload[] };
      if (!Array.isArray(payloads)) return reply(400, { error: 'body must be {"payloads": [...]}' });
      const input = payloads.map(toPayload);
      const output = url.pathname === '/encode' ? await codec.encode(input) : await codec.decode(input);
      return reply(200, { payloads: output.map(toJson) });
    } catch (e) {
      return reply(400, { error: (e as Error).message });
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
