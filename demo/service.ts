// The demo's stand-ins for real services that use a database credential kept in the store.
// They read values from the store themselves: rekey only tells them which version to use.
import { createServer, type Server } from 'node:http';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { Client, Pool } from 'pg';

const sm = new SecretsManagerClient({ region: process.env.AWS_REGION ?? 'us-east-1' });
const AUTH_FAILURES = new Set(['28P01', '28000']);

interface Credential {
  host: string;
  port: string;
  dbname: string;
  username: string;
  password: string;
}

async function readVersion(secretId: string, versionId?: string): Promise<{ versionId: string; credential: Credential }> {
  // The stage is named explicitly: moto answers an unqualified read with the version last *written*,
  // not the one labelled AWSCURRENT as AWS does.
  const got = await sm.send(new GetSecretValueCommand({ SecretId: secretId, ...(versionId ? { VersionId: versionId } : { VersionStage: 'AWSCURRENT' }) }));
  return { versionId: got.VersionId!, credential: JSON.parse(got.SecretString!) };
}

export interface Traffic {
  served: number;
  failed: number;
  authFailures: number;
  lastError?: string;
}

/**
 * A client that opens a fresh connection for every request with whatever the store says is
 * current (AWSCURRENT): the strictest consumer there is, since it notices the instant a
 * credential it was just handed stops working.
 */
export class StoreFollowingClient {
  readonly traffic: Traffic = { served: 0, failed: 0, authFailures: 0 };
  private running = false;
  private loop?: Promise<void>;

  constructor(private readonly secretId: string, private readonly pauseMs = 50) {}

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        await this.requestOnce();
        await new Promise((r) => setTimeout(r, this.pauseMs));
      }
    })();
  }

  async stop(): Promise<Traffic> {
    this.running = false;
    await this.loop;
    return this.traffic;
  }

  private async requestOnce(): Promise<void> {
    let db: Client | undefined;
    try {
      const { credential } = await readVersion(this.secretId);
      db = new Client({ host: credential.host, port: Number(credential.port), database: credential.dbname, user: credential.username, password: credential.password });
      await db.connect();
      await db.query('SELECT 1');
      this.traffic.served++;
    } catch (err) {
      this.traffic.failed++;
      if (AUTH_FAILURES.has((err as { code?: string }).code ?? '')) this.traffic.authFailures++;
      this.traffic.lastError = (err as Error).message;
      if (process.env.REKEY_DEMO_DEBUG) console.error(new Date().toISOString(), 'client failure', (err as Error).message);
    } finally {
      await db?.end().catch(() => undefined);
    }
  }
}

/**
 * An HTTP service in the shape rekey's `http` consumer expects: POST /reload {versionId} makes it
 * fetch that version from the store and swap its connection pool; GET /health answers with the
 * version in use once a query on the new pool succeeds. It keeps serving queries all along.
 */
export class PooledService {
  readonly traffic: Traffic = { served: 0, failed: 0, authFailures: 0 };
  private pool?: Pool;
  private versionId?: string;
  private server?: Server;
  private ticker?: NodeJS.Timeout;

  constructor(private readonly secretId: string) {}

  /** Listens on `port` (0: any free one); resolves to the port it listens on. */
  async start(port: number): Promise<number> {
    await this.use(await readVersion(this.secretId));
    this.ticker = setInterval(() => void this.query(), 50);
    this.server = createServer((req, res) => void this.handle(req.method ?? 'GET', req.url ?? '/', req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, '127.0.0.1', resolve);
    });
    return (this.server.address() as { port: number }).port;
  }

  async stop(): Promise<Traffic> {
    clearInterval(this.ticker);
    await new Promise((r) => this.server?.close(r));
    await this.pool?.end();
    return this.traffic;
  }

  private async use({ versionId, credential }: { versionId: string; credential: Credential }): Promise<void> {
    const next = new Pool({ host: credential.host, port: Number(credential.port), database: credential.dbname, user: credential.username, password: credential.password, max: 2 });
    await next.query('SELECT 1'); // refuse a version that does not work instead of swapping to it
    const old = this.pool;
    this.pool = next;
    this.versionId = versionId;
    await old?.end();
  }

  private async query(): Promise<boolean> {
    try {
      await this.pool!.query('SELECT 1');
      this.traffic.served++;
      return true;
    } catch (err) {
      this.traffic.failed++;
      if (AUTH_FAILURES.has((err as { code?: string }).code ?? '')) this.traffic.authFailures++;
      this.traffic.lastError = (err as Error).message;
      return false;
    }
  }

  private async handle(method: string, url: string, req: NodeJS.ReadableStream, res: import('node:http').ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    try {
      if (method === 'POST' && url === '/reload') {
        let raw = '';
        for await (const chunk of req) raw += chunk;
        const { versionId } = JSON.parse(raw || '{}') as { versionId?: string };
        if (!versionId) return reply(400, { error: 'versionId is required' });
        await this.use(await readVersion(this.secretId, versionId));
        return reply(200, { version: this.versionId });
      }
      if (method === 'GET' && url === '/health') {
        const ok = await this.query();
        return reply(ok ? 200 : 503, { ok, version: this.versionId });
      }
      if (method === 'GET' && url === '/stats') return reply(200, { ...this.traffic, version: this.versionId });
      reply(404, { error: 'not found' });
    } catch (err) {
      reply(500, { error: (err as Error).message });
    }
  }
}
