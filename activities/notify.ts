// Notifications: a secret's policy `notify:` tells people when a rotation needs them (rolled back,
// failed, escalated, approval requested, emergency), by webhook (Slack-compatible JSON, signed with
// HMAC-SHA256) and by e-mail (SMTP through nodemailer). Where messages go and with which
// credentials comes from the worker's own manifests alone; the workflow only says which event of
// which of its own rotations happened. A message names the secret, the event, the stage and the
// version ids and links to the Temporal UI: never a value. Each channel retries on its own,
// bounded, and writes what became of it to the audit trail itself; nothing here can fail a rotation.
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Context, heartbeat, log, sleep } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { createTransport } from 'nodemailer';
import { z } from 'zod';
import { parseDuration } from '../lib/duration';
import { durationBetween } from '../lib/schema';
import { STAGES, emergencyWorkflowId, isGroupWorkflowId, rotationWorkflowId } from '../workflows/messages';
import { claimId, type AuditContext } from './audit';
import type { WorkerManifests } from './manifests';
import { describeStore, readCurrent, storeSchema } from './stores';

export const NOTIFY_EVENTS = ['rolled-back', 'failed', 'escalated', 'approval-requested', 'emergency'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

const LOOPBACK = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);

/** A webhook body or an e-mail is at most this big: a notice is a few names, not a report. */
const MAX_MESSAGE = 4096;
/** A receiver's answer is read to here at most, then dropped: only its status matters. */
const MAX_ANSWER = 4096;

// --- the schema -------------------------------------------------------------------------------

/** A value read from a store when a message is sent, so it never sits in a manifest or a workflow. */
const storedValueSchema = z.object({ store: storeSchema, field: z.string().min(1) }).strict();

/** A credential: only ever a store reference. The error for an inline one names the field, not the value. */
const storedCredential = (what: string) =>
  z
    .object(
      { store: storeSchema, field: z.string().min(1) },
      { error: (issue) => (issue.code === 'invalid_type' ? `${what} must be a store reference ({store, field}), never written inline` : undefined) },
    )
    .strict();

/** Problems with a webhook URL, or none: https, or http to a loopback host; no credentials or fragment in it. */
export function webhookUrlProblems(value: string): string[] {
  if (!URL.canParse(value)) return ['is not a URL'];
  const url = new URL(value);
  const problems: string[] = [];
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
    problems.push('must be https (plain http is only allowed for loopback hosts)');
  }
  if (url.username || url.password) problems.push('must not carry a user name or password');
  if (url.hash) problems.push('must not have a fragment');
  return problems;
}

const webhookUrl = z.string().superRefine((value, ctx) => {
  for (const message of webhookUrlProblems(value)) ctx.addIssue({ code: 'custom', message });
});

const channelName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be lower-case letters, digits, ".", "_" or "-", at most 63 characters');
const eventsSchema = z.array(z.enum(NOTIFY_EVENTS)).min(1).max(NOTIFY_EVENTS.length);

export const webhookChannelSchema = z
  .object({
    /** What the audit trail names the channel by (never its URL). */
    name: channelName,
    /**
     * Where the JSON is POSTed: https (http only to loopback). A URL that is itself a credential
     * (Slack's incoming webhooks) belongs in the store: give {store, field} instead.
     */
    url: z.union([webhookUrl, storedValueSchema]),
    /** The HMAC-SHA256 key of the X-Rekey-Signature header, read from the store; never inline. */
    signingKey: storedCredential('signingKey'),
    /** For an https receiver on a private CA: a PEM file of the CA its certificate must chain to. */
    ca: z.string().min(1).optional(),
    /** Only these events go to this channel (default: the policy's `events`). */
    events: eventsSchema.optional(),
    timeout: durationBetween('100ms', '1m').default('10s'),
  })
  .strict();

const address = z.string().max(254).regex(/^[^\s<>@,;"]+@[^\s<>@,;"]+$/, 'must be a plain e-mail address (name@host)');

export const emailChannelSchema = z
  .object({
    name: channelName,
    host: z.string().min(1).max(253),
    port: z.number().int().min(1).max(65535).default(587),
    /**
     * implicit: TLS from the first byte (port 465). starttls (default): the server must offer
     * STARTTLS, or nothing is sent. none: plain text, only to a loopback relay.
     */
    tls: z
      .object({ mode: z.enum(['implicit', 'starttls', 'none']).default('starttls'), ca: z.string().min(1).optional() })
      .strict()
      .default({ mode: 'starttls' }),
    /** SMTP AUTH: the password is read from the store when a message is sent. */
    auth: z
      .object({ user: z.string().min(1).max(254), password: storedCredential('auth.password') })
      .strict()
      .optional(),
    from: address,
    to: z.array(address).min(1).max(20),
    events: eventsSchema.optional(),
    timeout: durationBetween('1s', '2m').default('20s'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.tls.mode === 'none' && !LOOPBACK.has(spec.host)) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'mode'], message: `none sends mail${spec.auth ? ' and the SMTP password' : ''} in the open to ${spec.host}: only allowed for loopback hosts` });
    }
    if (spec.tls.ca && spec.tls.mode === 'none') ctx.addIssue({ code: 'custom', path: ['tls', 'ca'], message: 'applies to implicit or starttls only' });
  });

export const notifySchema = z
  .object({
    /** Which events are sent (default: all of them). */
    events: eventsSchema.default([...NOTIFY_EVENTS]),
    webhooks: z.array(webhookChannelSchema).max(5).default([]),
    email: z.array(emailChannelSchema).max(5).default([]),
  })
  .strict()
  .superRefine((notify, ctx) => {
    const seen = new Set<string>();
    [...notify.webhooks.map((c, i) => ['webhooks', i, c.name] as const), ...notify.email.map((c, i) => ['email', i, c.name] as const)].forEach(([list, i, name]) => {
      if (seen.has(name)) ctx.addIssue({ code: 'custom', path: [list, i, 'name'], message: `duplicate channel name "${name}"` });
      seen.add(name);
    });
  });
export type NotifySpec = z.output<typeof notifySchema>;
type WebhookSpec = z.output<typeof webhookChannelSchema>;
type EmailSpec = z.output<typeof emailChannelSchema>;

// --- what is sent -----------------------------------------------------------------------------

/** What a workflow asks for: an event of its own rotation. Untrusted, checked by the activity. */
export interface NoticeRequest {
  /** rotation id + "#notice-n": the same on every replay, so a retry sends (and audits) once per channel. */
  id: string;
  /** For an emergency: the break-glass document the rotation claimed; the worker finds its own record of the claim. */
  document?: string;
  secret: string;
  event: NotifyEvent;
  stage?: string;
  versions?: { current?: string; pending?: string };
}

/** The message as every channel renders it: names, ids, stage, outcome and a link, nothing else. */
export interface Notice {
  delivery: string;
  event: NotifyEvent;
  secret: string;
  workflowId: string;
  runId: string;
  stage?: string;
  versions: { current?: string; pending?: string };
  link?: string;
  at: string;
}

const HEADLINE: Record<NotifyEvent, string> = {
  'rolled-back': 'rolled back',
  failed: 'failed',
  escalated: 'is waiting for approval past its timeout (escalated)',
  'approval-requested': 'is waiting for approval',
  emergency: 'is an emergency rotation (break-glass)',
};

export function noticeText(notice: Notice): string {
  const stage = notice.stage && notice.event !== 'approval-requested' && notice.event !== 'escalated' ? ` at ${notice.stage}` : '';
  const versions = [notice.versions.current && `current ${notice.versions.current}`, notice.versions.pending && `pending ${notice.versions.pending}`].filter(Boolean).join(', ');
  return [`rekey: the rotation of ${notice.secret} ${HEADLINE[notice.event]}${stage}.`, versions && `Versions: ${versions}.`, `Workflow: ${notice.workflowId} (run ${notice.runId})`, notice.link].filter(Boolean).join('\n');
}

/** The Temporal UI's page of the run, when REKEY_TEMPORAL_UI says where the UI is. */
export function runLink(base: string | undefined, namespace: string, workflowId: string, runId: string): string | undefined {
  if (!base || !/^https?:\/\//.test(base)) return undefined;
  return `${base.replace(/\/+$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}/${encodeURIComponent(runId)}`;
}

// --- the channels -----------------------------------------------------------------------------

/** A send that retrying cannot fix (a 4xx answer, a refused login): the channel stops at once. */
class Permanent extends Error {}

/** One way a notice leaves the worker. Errors say what went wrong without the channel's secrets. */
interface Channel {
  /** "webhook ops", "email oncall": what the audit trail calls it. */
  readonly label: string;
  readonly events: readonly NotifyEvent[];
  /** Sends once; resolves with what the receiver said, throws (Permanent when not worth retrying). */
  send(notice: Notice): Promise<string>;
}

async function storedText(ref: z.output<typeof storedValueSchema>, what: string): Promise<string> {
  const value = (await readCurrent(ref.store))[ref.field];
  if (typeof value !== 'string' || !value) throw new Permanent(`${what}: ${describeStore(ref.store)} has no text field ${ref.field}`);
  return value;
}

/** "t=<unix seconds>,v1=<hex HMAC-SHA256 of `${t}.${body}`>": a receiver checks it and refuses old timestamps. */
export function webhookSignature(key: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', key).update(`${timestamp}.${body}`).digest('hex')}`;
}

export function webhookBody(notice: Notice): string {
  const text = noticeText(notice);
  const body = (t: string) => JSON.stringify({ text: t, rekey: { version: 1, ...notice } });
  const full = body(text);
  return Buffer.byteLength(full) <= MAX_MESSAGE ? full : body(text.slice(0, Math.max(0, text.length - (Buffer.byteLength(full) - MAX_MESSAGE) - 1)) + '…');
}

function webhookSender(spec: WebhookSpec, label: string): Channel['send'] {
  const timeoutMs = parseDuration(spec.timeout);
  return async (notice) => {
    const url = typeof spec.url === 'string' ? spec.url : await storedText(spec.url, `${label}: url`);
    // A URL read from the store was never reviewed by the schema: the same rules apply here.
    const problems = webhookUrlProblems(url);
    if (problems.length) throw new Permanent(`${label}: the url ${problems.join('; ')}`);
    const key = await storedText(spec.signingKey, `${label}: signingKey`);
    const body = webhookBody(notice);
    const headers = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'user-agent': 'rekey',
      'x-rekey-event': notice.event,
      'x-rekey-delivery': notice.delivery,
      'x-rekey-signature': webhookSignature(key, Math.floor(Date.now() / 1000), body),
    };
    const target = new URL(url);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const ca = spec.ca && target.protocol === 'https:' ? { ca: readFileSync(spec.ca) } : {};
    // node:http never follows a redirect; a 3xx is a failure, not a hop to wherever it points.
    const status = await new Promise<number>((resolve, reject) => {
      const req = send(target, { method: 'POST', headers, signal: AbortSignal.timeout(timeoutMs), ...ca }, (res) => {
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER) res.destroy();
        });
        res.on('close', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(res.statusCode ?? 0));
      });
      // Only the code: a message could repeat the URL, whose path may be the credential.
      req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(`${label}: not sent (${err.code ?? err.name})`)));
      req.end(body);
    });
    if (status >= 200 && status < 300) return `HTTP ${status}`;
    if (status >= 300 && status < 400) throw new Permanent(`${label}: answered with a redirect (HTTP ${status}), which rekey does not follow`);
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) throw new Permanent(`${label}: answered HTTP ${status}`);
    throw new Error(`${label}: answered HTTP ${status}`);
  };
}

function emailSender(spec: EmailSpec, label: string): Channel['send'] {
  const timeoutMs = parseDuration(spec.timeout);
  return async (notice) => {
    const pass = spec.auth ? await storedText(spec.auth.password, `${label}: auth.password`) : undefined;
    const transport = createTransport({
      host: spec.host,
      port: spec.port,
      secure: spec.tls.mode === 'implicit',
      requireTLS: spec.tls.mode === 'starttls',
      ignoreTLS: spec.tls.mode === 'none',
      tls: { rejectUnauthorized: true, minVersion: 'TLSv1.2', ...(spec.tls.ca ? { ca: readFileSync(spec.tls.ca) } : {}) },
      ...(spec.auth ? { auth: { user: spec.auth.user, pass } } : {}),
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
      // The message is built here from names and ids; it must never pull in a file or a URL.
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    try {
      const text = noticeText(notice).slice(0, MAX_MESSAGE);
      const info = await transport.sendMail({
        from: spec.from,
        to: spec.to,
        subject: text.split('\n')[0].slice(0, 200),
        text,
        headers: { 'X-Rekey-Event': notice.event, 'X-Rekey-Delivery': notice.delivery },
      });
      return `accepted by ${spec.host}:${spec.port} for ${info.accepted.length} recipient(s)`;
    } catch (err) {
      const { code, responseCode } = err as { code?: string; responseCode?: number };
      const why = `${label}: not sent (${[code, responseCode].filter(Boolean).join(' ') || (err as Error).name})`;
      if (code === 'EAUTH' || (responseCode !== undefined && responseCode >= 500)) throw new Permanent(why);
      throw new Error(why);
    } finally {
      transport.close();
    }
  };
}

export function channelsOf(spec: NotifySpec): Channel[] {
  const channel = <S extends { name: string; events?: NotifyEvent[] }>(kind: string, sender: (s: S, label: string) => Channel['send']) => (s: S): Channel => {
    const label = `${kind} ${s.name}`;
    return { label, events: s.events ?? spec.events, send: sender(s, label) };
  };
  return [...spec.webhooks.map(channel('webhook', webhookSender)), ...spec.email.map(channel('email', emailSender))];
}

// --- the activity -----------------------------------------------------------------------------

export interface NotifySettings {
  /** Tries per channel and notice (default 10). */
  attempts: number;
  /** Backoff before the second try, doubled each time up to maxBackoffMs (defaults 1s and 30s). */
  backoffMs: number;
  maxBackoffMs: number;
  /** The Temporal UI, for the link in each message (default: REKEY_TEMPORAL_UI). */
  temporalUi?: string;
}

const DEFAULTS: NotifySettings = { attempts: 10, backoffMs: 1_000, maxBackoffMs: 30_000 };

const VERSION_ID = /^[A-Za-z0-9._:-]{1,100}$/;

function refused(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, 'NotAuthorized');
}

/** A rotation sends at most this many notices: a forged run cannot turn the worker into a pager flood. */
const MAX_NOTICES = 20;
/** One notice's sending, every channel and retry included, ends within this (the activity allows 10 minutes). */
const NOTICE_BUDGET_MS = 4 * 60_000;

/** Only what a notice may carry, each part checked: the request comes from a workflow and is untrusted. */
function checkRequest(request: NoticeRequest, workflowId: string, rotationId: string): NoticeRequest {
  const { id, secret, event, stage, versions, document } = (request ?? {}) as Partial<NoticeRequest>;
  const n = typeof id === 'string' && id.startsWith(`${rotationId}#notice-`) ? Number(id.slice(rotationId.length + 8)) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_NOTICES || id !== `${rotationId}#notice-${n}`) throw refused(`notify: a workflow notifies of its own events only, at most ${MAX_NOTICES} (ids ${rotationId}#notice-n)`);
  if (typeof secret !== 'string' || (workflowId !== rotationWorkflowId(secret) && workflowId !== emergencyWorkflowId(secret))) {
    throw refused(`notify: workflow ${workflowId} does not notify of ${String(secret).slice(0, 63)}`);
  }
  if (!NOTIFY_EVENTS.includes(event as NotifyEvent)) throw refused(`notify: ${String(event).slice(0, 40)} is not an event rekey notifies of`);
  const versionOf = (v: unknown) => (typeof v === 'string' && VERSION_ID.test(v) ? v : undefined);
  if (document !== undefined && (typeof document !== 'string' || document.length > 20_000)) throw refused('notify: document: expected the signed break-glass document');
  return {
    id,
    document,
    secret,
    event: event as NotifyEvent,
    stage: (STAGES as readonly string[]).includes(stage as string) ? stage : undefined,
    versions: { current: versionOf(versions?.current), pending: versionOf(versions?.pending) },
  };
}

export function createNotifyActivities(deps: { manifests: WorkerManifests; audit: AuditContext; settings?: Partial<NotifySettings> }) {
  const settings = { ...DEFAULTS, temporalUi: process.env.REKEY_TEMPORAL_UI, ...deps.settings };

  /** Tries one channel until it sends, fails for good, or runs out of attempts; heartbeats while waiting. */
  async function deliver(channel: Channel, notice: Notice): Promise<{ sent: boolean; detail: string; attempts: number }> {
    let wait = settings.backoffMs;
    const giveUpAt = Date.now() + NOTICE_BUDGET_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        return { sent: true, detail: await channel.send(notice), attempts: attempt };
      } catch (err) {
        const message = (err as Error).message.slice(0, 300);
        if (err instanceof Permanent || attempt >= settings.attempts || Date.now() + wait >= giveUpAt) return { sent: false, detail: message, attempts: attempt };
        log.warn('notification not sent; retrying', { channel: channel.label, attempt, error: message });
        await sleep(wait);
        wait = Math.min(wait * 2, settings.maxBackoffMs);
      }
    }
  }

  return {
    /**
     * Sends one event of the calling rotation to every channel its secret's policy lists for it.
     * Each channel's outcome is written to the audit trail under an id per notice and channel: a
     * channel already recorded is not sent again when this activity is retried.
     */
    async sendNotifications(request: NoticeRequest): Promise<{ sent: string[]; failed: string[] }> {
      const info = Context.current().info;
      const execution = info.workflowExecution;
      if (!execution) throw refused('notify: runs only as part of a rotation workflow');
      const rotationId = `${execution.workflowId}/${execution.runId}`;
      const result = { sent: [] as string[], failed: [] as string[] };
      // A group's approvals come through here too; a group has no channels of its own (yet).
      if (typeof request?.secret === 'string' && isGroupWorkflowId(execution.workflowId, request.secret)) return result;
      const req = checkRequest(request, execution.workflowId, rotationId);
      // "Emergency" is the one event people act on at once: only with the worker's own record
      // that this run claimed a break-glass authorisation it verified. The other events are the
      // run's word about itself, like its audit records, and say which run they come from.
      if (req.event === 'emergency') {
        const claim = req.document === undefined ? undefined : await (await deps.audit.trail()).find(claimId(req.document));
        if (claim?.event !== 'break-glass' || claim.rotationId !== rotationId) throw refused('notify: emergency: this run claimed no break-glass authorisation');
      }
      const entry = (await deps.manifests.set()).secrets.get(req.secret);
      const spec = entry?.spec.policy.notify;
      const channels = spec ? channelsOf(spec).filter((c) => c.events.includes(req.event)) : [];
      if (channels.length === 0) return result;
      const notice: Notice = {
        delivery: req.id,
        event: req.event,
        secret: req.secret,
        workflowId: execution.workflowId,
        runId: execution.runId,
        stage: req.stage,
        versions: req.versions ?? {},
        link: runLink(settings.temporalUi, info.workflowNamespace ?? info.activityNamespace, execution.workflowId, execution.runId),
        at: new Date().toISOString(),
      };
      const trail = await deps.audit.trail();
      // A slow SMTP exchange can outlast the heartbeat timeout on its own: beat while it runs.
      const beat = setInterval(() => heartbeat(), 5_000);
      try {
        await Promise.all(
          channels.map(async (channel) => {
            const id = `notify/${req.id}/${channel.label.replace(' ', ':')}`;
            if (await trail.find(id)) return;
            const outcome = await deliver(channel, notice);
            (outcome.sent ? result.sent : result.failed).push(channel.label);
            if (!outcome.sent) log.error('notification failed', { channel: channel.label, secret: req.secret, event: req.event, error: outcome.detail });
            await trail.append({
              id,
              rotationId,
              secret: req.secret,
              event: outcome.sent ? 'notified' : 'notify-failed',
              actor: 'rekey',
              at: new Date().toISOString(),
              versions: notice.versions,
              detail: `${channel.label}: ${req.event}${outcome.sent ? '' : ' not sent'} after ${outcome.attempts} attempt(s): ${outcome.detail}`.slice(0, 500),
            });
          }),
        );
      } finally {
        clearInterval(beat);
      }
      return result;
    },
  };
}
