// The approvals server: a small mobile-first page listing the runs waiting for a decision, where an
// approver signs the decision document with a passkey, and one-time passkey enrolment links.
// The server is not trusted with anything that matters: it cannot sign (the passkey does, over the
// document the page shows), and what it forwards is checked by the workflow's `decide` validator
// and again by the worker before promote, against the reviewed manifests. It still refuses requests
// from other sites (Origin and Host checks, a per-page token), so nobody can make a logged-in
// browser tap through decisions it did not ask for.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { WorkflowUpdateFailedError, type Client, type WorkflowExecutionInfo } from '@temporalio/client';
import { HttpError, readBody } from '../lib/http';
import { loadManifests, type ManifestSet } from '../lib/manifest';
import { documentText, type DecisionDocument } from '../lib/signed';
import { readRegistration, type RelyingParty } from '../lib/webauthn';
import { WAITING_FOR_DECISION, decideUpdate, groupProgressQuery, progressQuery } from '../workflows/messages';
import { findEnrolment, useEnrolment } from './enrolment';
import { SCRIPT, SECURITY_HEADERS, STYLE, enrolPage, listPage, messagePage } from './page';
import { groupWaiting, rotationWaiting, type Waiting } from './waiting';

export const MAX_REQUEST_BYTES = 64 * 1024;
const PAGE_TOKEN_MS = 60 * 60_000;
const MAX_PAGE_TOKENS = 10_000;
const QUERY_DEADLINE_MS = 5000;

export interface ApprovalsServerOptions {
  client: Client;
  namespace: string;
  /** The reviewed manifests: the relying party (Settings spec.passkeys) and the specs people sign for. Read on every request. */
  manifestDir: string;
  /** Where one-time enrolment records are (rekey approvals enroll writes them). */
  dataDir: string;
  log?: (line: string) => void;
  now?: () => number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const withDeadline = <T>(p: Promise<T>): Promise<T | undefined> =>
  Promise.race([p.catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), QUERY_DEADLINE_MS).unref())]);

/** The innermost message of a failure: the validator's own words. */
function rootMessage(e: unknown): string {
  let cause = e as { cause?: unknown; message?: string };
  while (cause && isObject(cause.cause)) cause = cause.cause as typeof cause;
  return String(cause?.message ?? e).slice(0, 500);
}

/**
 * One run, as the page shows it: a rotation, or a group (its progress query, its members'
 * versions as the decision's pendingVersionId), in the same Waiting shape; the page, the challenge
 * and the decide call are the same for both.
 */
export async function describeWaiting(client: Client, namespace: string, set: ManifestSet, workflowId: string, runId: string): Promise<Waiting | undefined> {
  const handle = client.workflow.getHandle(workflowId, runId);
  if (workflowId.startsWith('rotation/')) {
    const progress = await withDeadline(handle.query(progressQuery));
    if (!progress) return undefined;
    return rotationWaiting(namespace, workflowId, runId, progress, set.secrets.get(String(progress.secret))?.specHash);
  }
  if (workflowId.startsWith('group/')) {
    const progress = await withDeadline(handle.query(groupProgressQuery));
    if (!progress) return undefined;
    return groupWaiting(namespace, workflowId, runId, progress, set.groups.get(String(progress.group))?.specHash);
  }
  return undefined;
}

export function createApprovalsServer(options: ApprovalsServerOptions): Server {
  const { client, namespace, manifestDir, dataDir, log = () => undefined, now = Date.now } = options;
  /** Per-page tokens: a POST must carry one this server handed out on a page, recently. */
  const pageTokens = new Map<string, number>();
  /** Enrolment challenges by token hash: the page opened for the link, and what it must sign. */
  const enrolments = new Map<string, { challenge: string; userId: string; expires: number }>();

  const newPageToken = () => {
    for (const [t, exp] of pageTokens) if (exp <= now()) pageTokens.delete(t);
    if (pageTokens.size >= MAX_PAGE_TOKENS) pageTokens.delete(pageTokens.keys().next().value!);
    const token = randomBytes(24).toString('base64url');
    pageTokens.set(token, now() + PAGE_TOKEN_MS);
    return token;
  };

  const relyingParty = (set: ManifestSet): RelyingParty => {
    if (!set.settings.passkeys) throw new HttpError(500, 'the manifests declare no passkey relying party (Settings spec.passkeys {rpId, origins})');
    return set.settings.passkeys;
  };

  const waitingNow = async (set: ManifestSet): Promise<{ waiting: Waiting[]; problems: string[] }> => {
    const found: WorkflowExecutionInfo[] = [];
    for await (const wf of client.workflow.list({ query: WAITING_FOR_DECISION })) {
      found.push(wf);
      if (found.length >= 200) break;
    }
    const described = await Promise.all(found.map((wf) => describeWaiting(client, namespace, set, wf.workflowId, wf.runId)));
    const problems = found.filter((_, i) => !described[i]).map((wf) => `${wf.workflowId}: waits for a decision, but no worker answered`);
    return { waiting: described.filter((w): w is Waiting => w !== undefined), problems };
  };

  /** The checks every POST passes: same origin as a configured one, JSON, and a token from one of our pages. */
  const checkPost = async (req: IncomingMessage, rp: RelyingParty): Promise<Record<string, unknown>> => {
    const origin = req.headers.origin;
    if (typeof origin !== 'string' || !rp.origins.includes(origin)) throw new HttpError(403, 'requests must come from this server\'s own page (Origin)');
    if (!/^application\/json(;|$)/.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'send JSON');
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req, MAX_REQUEST_BYTES));
    } catch (e) {
      if (e instanceof HttpError) throw e;
      throw new HttpError(400, 'the body is not JSON');
    }
    if (!isObject(body)) throw new HttpError(400, 'the body must be a JSON object');
    const csrf = body.csrf;
    const expires = typeof csrf === 'string' ? pageTokens.get(csrf) : undefined;
    if (expires === undefined || expires <= now()) throw new HttpError(403, 'this page is too old or not ours: reload it');
    return body;
  };

  const routes = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const set = await loadManifests(manifestDir);
    const rp = relyingParty(set);
    // DNS rebinding: a page on another name that resolves here must not read or drive this one.
    const hosts = rp.origins.map((o) => new URL(o).host);
    if (!hosts.includes(req.headers.host ?? '')) throw new HttpError(421, `this server answers only for ${hosts.join(', ')}`);

    const html = (status: number, body: string) => {
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
      res.end(body);
    };
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };

    if (req.method === 'GET' && path === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      return void res.end(SCRIPT);
    }
    if (req.method === 'GET' && path === '/app.css') {
      res.writeHead(200, { 'content-type': 'text/css; charset=utf-8' });
      return void res.end(STYLE);
    }
    if (req.method === 'GET' && path === '/') {
      const { waiting, problems } = await waitingNow(set);
      return html(200, listPage(waiting, newPageToken(), problems));
    }
    const enrolPath = /^\/enroll\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    if (req.method === 'GET' && enrolPath) {
      const token = enrolPath[1];
      const enrolment = await findEnrolment(dataDir, token, now());
      if (!enrolment) return html(404, messagePage('rekey: enrolment', 'This enrolment link is unknown, used or expired: ask for a new one (rekey approvals enroll).'));
      const key = createHash('sha256').update(token).digest('hex');
      const open = enrolments.get(key);
      const state = open && open.expires > now() ? open : { challenge: randomBytes(32).toString('base64url'), userId: randomBytes(16).toString('base64url'), expires: Date.parse(enrolment.expiresAt) };
      enrolments.set(key, state);
      return html(200, enrolPage(enrolment.person, { rpId: rp.rpId, challenge: state.challenge, userId: state.userId, token }, newPageToken()));
    }
    if (req.method !== 'POST') return json(404, { error: 'not found' });

    const body = await checkPost(req, rp);
    const enrolPost = /^\/api\/enroll\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    if (enrolPost) {
      const token = enrolPost[1];
      const key = createHash('sha256').update(token).digest('hex');
      const state = enrolments.get(key);
      if (!state || state.expires <= now() || !(await findEnrolment(dataDir, token, now()))) throw new HttpError(404, 'this enrolment link is unknown, used or expired');
      const read = readRegistration({ clientDataJSON: body.clientDataJSON, attestationObject: body.attestationObject }, state.challenge, rp);
      if (!read.ok) throw new HttpError(400, read.reason);
      // Single use: of two valid registrations for one link, only the first is printed.
      const used = await useEnrolment(dataDir, token, now());
      enrolments.delete(key);
      if (!used) throw new HttpError(404, 'this enrolment link is unknown, used or expired');
      const snippet = [
        `# passkey of ${used.person}, enrolled ${new Date(now()).toISOString()} (${read.fingerprint}).`,
        `# It counts only once this is added, reviewed, under ${used.person}'s entry in a Settings manifest's people:`,
        'passkeys:',
        `  - credentialId: ${read.passkey.credentialId}`,
        `    publicKey: ${read.passkey.publicKey}`,
        `    algorithm: ${read.passkey.algorithm}`,
      ].join('\n');
      log(`enrolled a passkey for ${used.person} (${read.fingerprint}); add it to the manifests to use it:\n${snippet}`);
      return json(200, { snippet, person: used.person, passkey: read.passkey });
    }
    if (path === '/api/challenge') {
      const { workflowId, runId, decision, comment } = body;
      if (typeof workflowId !== 'string' || typeof runId !== 'string' || workflowId.length > 300 || runId.length > 100) throw new HttpError(400, 'workflowId and runId must be strings');
      if (decision !== 'approve' && decision !== 'reject') throw new HttpError(400, 'decision must be "approve" or "reject"');
      if (comment !== undefined && (typeof comment !== 'string' || comment.length > 500)) throw new HttpError(400, 'comment must be a string of at most 500 characters');
      const waiting = await describeWaiting(client, namespace, set, workflowId, runId);
      if (!waiting) throw new HttpError(404, `${workflowId} did not answer`);
      if (!waiting.document) throw new HttpError(409, `not offered for a decision: ${waiting.problems.join('; ')}`);
      const document = documentText(waiting.document(decision, comment || undefined, now()));
      return json(200, { document, rpId: rp.rpId });
    }
    if (path === '/api/decide') {
      const { document, passkey } = body;
      if (typeof document !== 'string' || document.length > 4096) throw new HttpError(400, 'document must be a string of at most 4096 characters');
      let doc: Partial<DecisionDocument>;
      try {
        doc = JSON.parse(document);
      } catch {
        throw new HttpError(400, 'document is not JSON');
      }
      if (typeof doc?.workflowId !== 'string' || typeof doc.runId !== 'string') throw new HttpError(400, 'document names no run');
      if (!isObject(passkey)) throw new HttpError(400, 'passkey must be the assertion {credentialId, authenticatorData, clientDataJSON, signature}');
      // Only to a run this page offers, for the very binding it offers: the server's Temporal
      // identity is not a relay for updates to any workflow someone names. The workflow checks the rest.
      const waiting = await describeWaiting(client, namespace, set, doc.workflowId, doc.runId);
      const offered = waiting?.document?.(doc.decision === 'reject' ? 'reject' : 'approve', undefined, now());
      const differs = offered && (['namespace', 'workflowId', 'runId', 'secret', 'pendingVersionId', 'specHash'] as const).find((f) => offered[f] !== doc[f]);
      if (!offered || differs) throw new HttpError(409, `not offered for a decision here${differs ? ` (${differs} differs)` : waiting ? `: ${waiting.problems.join('; ')}` : ''}`);
      try {
        const result = await client.workflow.getHandle(doc.workflowId, doc.runId).executeUpdate(decideUpdate, { args: [{ document, passkey: passkey as never }] });
        const verb = doc.decision === 'reject' ? 'rejected' : 'approved';
        const message =
          result.outcome === 'waiting'
            ? `${verb} by ${result.approver}: ${result.approvals} of ${result.needed} approvals, still waiting`
            : result.outcome === 'approved'
              ? `${verb} by ${result.approver}: ${result.approvals} of ${result.needed}, the rotation proceeds`
              : `${verb} by ${result.approver}: the rotation rolls back`;
        log(`decision on ${doc.workflowId} (run ${doc.runId}): ${message}`);
        return json(200, { ...result, message });
      } catch (e) {
        if (e instanceof WorkflowUpdateFailedError) {
          log(`decision on ${doc.workflowId} (run ${doc.runId}) refused: ${rootMessage(e)}`);
          throw new HttpError(409, rootMessage(e));
        }
        throw new HttpError(502, `the run did not take the decision: ${rootMessage(e)}`);
      }
    }
    return json(404, { error: 'not found' });
  };

  return createServer(async (req, res) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    let path = '(malformed)';
    try {
      path = new URL(req.url ?? '/', 'http://approvals').pathname;
      await routes(req, res, path);
      log(`${req.method} ${path.startsWith('/enroll/') || path.startsWith('/api/enroll/') ? path.replace(/[^/]+$/, '…') : path} ${res.statusCode}`);
    } catch (e) {
      const status = e instanceof HttpError ? e.status : 500;
      const message = e instanceof HttpError ? e.message : String((e as Error)?.message ?? e).slice(0, 1000);
      log(`${req.method} ${path.replace(/enroll\/[^/]+$/, 'enroll/…')} ${status}: ${message.split('\n')[0]}`);
      if (res.headersSent) return void res.destroy();
      if (status === 413) res.setHeader('connection', 'close');
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: message }));
    }
  });
}

/**
 * The notification until webhooks and e-mail land: a log line with the page's link for each run
 * that starts waiting for a decision. Returns a stop function.
 */
export function announceWaiting(options: ApprovalsServerOptions & { pageUrl: string; everyMs: number }): () => void {
  const { client, namespace, manifestDir, pageUrl, everyMs, log = () => undefined } = options;
  const seen = new Set<string>();
  let stopped = false;
  const tick = async () => {
    try {
      const set = await loadManifests(manifestDir);
      const current = new Set<string>();
      for await (const wf of client.workflow.list({ query: WAITING_FOR_DECISION })) {
        const id = `${wf.workflowId}/${wf.runId}`;
        current.add(id);
        if (seen.has(id)) continue;
        const waiting = await describeWaiting(client, namespace, set, wf.workflowId, wf.runId);
        if (!waiting) continue;
        seen.add(id);
        log(`approval needed: ${waiting.kind} ${JSON.stringify(waiting.title)} (${wf.workflowId}, run ${wf.runId}) waits for a decision: ${pageUrl}`);
        if (current.size >= 200) break;
      }
      for (const id of seen) if (!current.has(id)) seen.delete(id);
    } catch (e) {
      log(`approvals: cannot list waiting runs: ${rootMessage(e)}`);
    }
    if (!stopped) timer = setTimeout(tick, everyMs);
  };
  let timer = setTimeout(tick, 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

