// Manifests: the one schema that types, validates and documents what a team declares in git.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { consumerEnvironment, consumerSchema, signsForOthers } from '../activities/consumers';
import { generatorSchema } from '../activities/generators';
import { notifySchema } from '../activities/notify';
import { storeIdentity, storeSchema } from '../activities/stores';
import { targetAccounts, targetGenerator, targetIssues, targetSchema, targetStores } from '../activities/targets';
import { canonicalJson } from './canonical';
import { parseDuration } from './duration';
import { durationBetween } from './schema';
import type { Person } from './signed';
import { parsePublicKey } from './sshsig';
import { PASSKEY_ALGORITHMS, parsePasskeyKey, type RelyingParty } from './webauthn';

export const API_VERSION = 'rekey.dev/v1';

/** A group's decision lists every member's pending version in one signed document (at most 4 KiB). */
export const MAX_GROUP_MEMBERS = 20;

const name = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/, 'must be lower-case letters, digits, "-" or ".", at most 63 characters');

const metadataSchema = z
  .object({
    name,
    labels: z.record(z.string(), z.string()).default({}),
    annotations: z.record(z.string(), z.string()).default({}),
  })
  .strict();

const timeoutsSchema = z
  .object({
    generate: durationBetween('1s', '24h').default('1m'),
    prepare: durationBetween('1s', '24h').default('2m'),
    deploy: durationBetween('1s', '24h').default('2m'),
    verify: durationBetween('1s', '24h').default('2m'),
    revoke: durationBetween('1s', '24h').default('2m'),
    /** How long rollback keeps retrying a step before it gives up and reports what is left (rollback-incomplete). */
    rollback: durationBetween('1s', '24h').default('10m'),
  })
  .strict();

/** A person's name is a label for people to read; their keys are what rekey trusts. */
const personName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._@-]{0,62}$/, 'must be lower-case letters, digits, ".", "_", "@" or "-" (no spaces), at most 63 characters');

/** "ssh-ed25519 AAAA... [comment]", as in git's allowed_signers files; stored without the comment. */
const publicKeyText = z.string().transform((text, ctx) => {
  try {
    return parsePublicKey(text).text;
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** A WebAuthn credential, as `rekey approvals enroll` prints it: trusted only once reviewed here. */
export const passkeySchema = z
  .object({
    credentialId: z.string().regex(/^[A-Za-z0-9_-]{16,1366}$/, 'must be the credential id in base64url (what rekey approvals enroll prints)'),
    publicKey: z.string().max(200),
    algorithm: z.enum(PASSKEY_ALGORITHMS),
  })
  .strict()
  .superRefine((passkey, ctx) => {
    try {
      parsePasskeyKey(passkey.algorithm, passkey.publicKey);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['publicKey'], message: (err as Error).message });
    }
  });

export const personSchema = z
  .object({
    name: personName,
    keys: z.array(publicKeyText).max(20).default([]),
    /** Passkeys that sign decisions from a phone (rekey approvals-server); need Settings spec.passkeys. */
    passkeys: z.array(passkeySchema).max(20).optional(),
  })
  .strict()
  .refine((person) => person.keys.length > 0 || (person.passkeys?.length ?? 0) > 0, {
    path: ['keys'],
    message: 'must list at least one key ("ssh-ed25519 AAAA...") or passkey',
  });

export const approvalSchema = z
  .object({
    required: z.boolean().default(false),
    /**
     * Who may decide: names of people declared in a Settings manifest, or {name, keys} inline.
     * A decision counts only when signed by one of their keys; the requester's keys never count.
     */
    approvers: z.array(z.union([personName, personSchema])).max(100).default([]),
    minApprovals: z.number().int().min(1).default(1),
    /**
     * Refuse a rotation whose request is not signed (rekey rotate --key), so the two-person rule
     * always knows who asked. Scheduled runs of such a secret are refused too: they have no requester.
     */
    requireSignedRequest: z.boolean().default(false),
    /** How long to wait for a decision before onTimeout applies. */
    timeout: durationBetween('1s', '30d').default('1h'),
    /** abort: roll back. escalate: alert and keep waiting until escalationLimit, then roll back. */
    onTimeout: z.enum(['abort', 'escalate']).default('abort'),
    escalationLimit: durationBetween('1s', '90d').default('24h'),
  })
  .strict()
  .superRefine((approval, ctx) => {
    if (approval.required && approval.approvers.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['approvers'], message: 'must name at least one approver when approval is required' });
    }
    if (approval.required && approval.minApprovals > approval.approvers.length) {
      ctx.addIssue({ code: 'custom', path: ['minApprovals'], message: `is ${approval.minApprovals} but only ${approval.approvers.length} approver(s) are listed` });
    }
  });

export const policySchema = z
  .object({
    /** How long old and new both work after promote, while old connections drain. */
    overlap: durationBetween('0s', '7d').default('30s'),
    /** Oldest the current version may get before it counts as overdue. */
    maxAge: durationBetween('1s', '3650d').optional(),
    /** How many consumers are deployed and verified at once. */
    maxParallelConsumers: z.number().int().min(1).max(64).default(4),
    timeouts: timeoutsSchema.default(timeoutsSchema.parse({})),
    approval: approvalSchema.default(approvalSchema.parse({})),
    /** Who hears of a rotation that needs people (rolled back, failed, escalated, approval requested, emergency). */
    notify: notifySchema.optional(),
  })
  .strict();

export const secretSpecSchema = z
  .object({
    description: z.string().optional(),
    store: storeSchema,
    /** How the new value is made; omitted only where the target mints it itself (an IAM access key). */
    generator: generatorSchema.optional(),
    /** The system that checks the credential; omit it for values only consumers use. */
    target: targetSchema.optional(),
    consumers: z.array(consumerSchema).max(64).default([]),
    policy: policySchema.default(policySchema.parse({})),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const seen = new Set<string>();
    spec.consumers.forEach((consumer, i) => {
      if (seen.has(consumer.name)) {
        ctx.addIssue({ code: 'custom', path: ['consumers', i, 'name'], message: `duplicate consumer name "${consumer.name}"` });
      }
      seen.add(consumer.name);
    });
    // Until a producer switches (at promote), what it sends is signed with the current version:
    // every consumer that verifies it must accept both, or it fails from deploy to promote.
    const producer = spec.consumers.find(signsForOthers);
    if (producer) {
      spec.consumers.forEach((consumer, i) => {
        if ('keys' in consumer && consumer.keys !== 'current-and-previous') {
          ctx.addIssue({ code: 'custom', path: ['consumers', i, 'keys'], message: `must be current-and-previous: ${producer.name} switches to the new version only at promote, so until then ${consumer.name} must accept both` });
        }
      });
    }
    const issues = spec.target !== undefined && targetIssues(spec.target);
    if (issues && spec.generator) {
      ctx.addIssue({ code: 'custom', path: ['generator'], message: `target ${spec.target!.type} mints the credential itself: remove generator` });
    } else if (!issues && !spec.generator) {
      ctx.addIssue({ code: 'custom', path: ['generator'], message: 'is required (how the new value is made), e.g. {type: password}' });
    }
    const generator = spec.target && targetGenerator(spec.target);
    if (generator && spec.generator && spec.generator.type !== generator) {
      ctx.addIssue({ code: 'custom', path: ['generator', 'type'], message: `target ${spec.target!.type} needs generator ${generator}` });
    }
  });

export const secretManifestSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('Secret'),
    metadata: metadataSchema,
    spec: secretSpecSchema,
  })
  .strict();

const DAYS = ['SUNDAY', 'MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY'] as const;

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Five cron fields, each *, a number, a range, a list or a step: what Temporal's cron accepts. */
const CRON_FIELD = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$/;
const CRON_WORDS = /^[A-Za-z]{3}(-[A-Za-z]{3})?(,[A-Za-z]{3}(-[A-Za-z]{3})?)*$/;

export const scheduleSpecSchema = z
  .object({
    description: z.string().optional(),
    /** Exactly one of cron, calendar, every. */
    cron: z
      .string()
      .refine((c) => c.trim().split(/\s+/).length === 5 && c.trim().split(/\s+/).every((f) => CRON_FIELD.test(f) || CRON_WORDS.test(f)), {
        message: 'expected five cron fields (minute hour day-of-month month day-of-week), e.g. "0 2 * * SUN"',
      })
      .optional(),
    calendar: z
      .object({
        dayOfWeek: z.enum(DAYS).optional(),
        dayOfMonth: z.number().int().min(1).max(31).optional(),
        hour: z.number().int().min(0).max(23).default(0),
        minute: z.number().int().min(0).max(59).default(0),
      })
      .strict()
      .optional(),
    every: durationBetween('1m', '365d').optional(),
    timezone: z.string().default('UTC').refine(isTimeZone, { message: 'is not an IANA time zone (e.g. Asia/Tokyo, Europe/Berlin, UTC)' }),
    /** Each run starts up to this much later, so many schedules do not hit the same minute. */
    jitter: durationBetween('0s', '7d').optional(),
    /** Runs missed while Temporal was unavailable are made up within this window. */
    catchupWindow: durationBetween('1s', '365d').default('1h'),
    overlap: z.enum(['skip', 'buffer-one', 'buffer-all', 'cancel-other', 'terminate-other', 'allow-all']).default('skip'),
    pauseOnFailure: z.boolean().default(false),
    paused: z.boolean().default(false),
    /** Which secrets a run rotates: names, labels (all must match), and optionally only overdue ones. */
    select: z
      .object({
        names: z.array(z.string()).max(20_000).default([]),
        labels: z.record(z.string(), z.string()).default({}),
        overdueOnly: z.boolean().default(false),
      })
      .strict()
      .refine((sel) => sel.names.length > 0 || Object.keys(sel.labels).length > 0, { message: 'must name secrets or labels (select: {labels: {team: payments}})' })
      .optional(),
    /** Instead of select: the name of a RotationGroup, rotated all or nothing. */
    group: name.optional(),
    maxParallel: z.number().int().min(1).max(100).default(2),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const given = (['cron', 'calendar', 'every'] as const).filter((k) => spec[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({ code: 'custom', path: given.length ? [given[1]] : ['cron'], message: `give exactly one of cron, calendar, every (got ${given.join(', ') || 'none'})` });
    }
    if ((spec.select === undefined) === (spec.group === undefined)) {
      ctx.addIssue({ code: 'custom', path: spec.group ? ['group'] : ['select'], message: 'give exactly one of select (secrets by name or label) and group (a RotationGroup)' });
    }
    if (spec.calendar && spec.calendar.dayOfWeek && spec.calendar.dayOfMonth) {
      ctx.addIssue({ code: 'custom', path: ['calendar'], message: 'give dayOfWeek or dayOfMonth, not both' });
    }
  });

export const scheduleManifestSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('Schedule'),
    metadata: metadataSchema,
    spec: scheduleSpecSchema,
  })
  .strict();

/**
 * The worker's own credentials and keys: never readable by `${}` and never passed to a command,
 * whatever a manifest lists.
 */
export const WORKER_CREDENTIALS = /^(REKEY_AUDIT_|REKEY_CODEC_|AWS_SECRET_ACCESS_KEY$|AWS_SESSION_TOKEN$|TEMPORAL_API_KEY$|TEMPORAL_TLS_)/;

const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
  .refine((name) => !WORKER_CREDENTIALS.test(name), { message: "is one of the worker's own credentials; manifests and commands never see it" });

/** A WebAuthn origin: scheme, host and port only; https, or http on localhost (a browser's secure context). */
const webOrigin = z.string().refine(
  (text) => {
    try {
      const url = new URL(text);
      return url.origin === text && (url.protocol === 'https:' || (url.protocol === 'http:' && url.hostname === 'localhost'));
    } catch {
      return false;
    }
  },
  { message: 'must be an origin like https://approve.example.com (no path; http only for localhost)' },
);

export const relyingPartySchema = z
  .object({
    rpId: z.string().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, 'must be a lower-case domain name (no scheme, no port), e.g. approve.example.com'),
    origins: z.array(webOrigin).min(1).max(10),
  })
  .strict()
  .superRefine((rp, ctx) => {
    rp.origins.forEach((origin, i) => {
      const host = new URL(origin).hostname;
      // WebAuthn: the rpId must be the origin's host or a registrable suffix of it.
      if (host !== rp.rpId && !host.endsWith(`.${rp.rpId}`)) {
        ctx.addIssue({ code: 'custom', path: ['origins', i], message: `${origin} is not on ${rp.rpId} or a subdomain of it` });
      }
    });
  });

/**
 * What the whole manifest set shares: the environment variables manifests may refer to, the people
 * who decide (with their SSH public keys) and who may break the glass. Never expanded: the trust
 * configuration is read exactly as reviewed.
 */
export const settingsSpecSchema = z
  .object({
    /** Variables `${NAME}` may use, besides REKEY_*. Everything else in the worker's environment stays out. */
    env: z.array(envName).max(200).default([]),
    people: z.array(personSchema).max(1000).default([]),
    /** Names of people whose signature authorises an emergency rotation (rekey revoke --emergency). */
    breakGlass: z.array(personName).max(100).default([]),
    /**
     * The WebAuthn relying party passkeys are valid for: the approvals server's domain (rpId) and
     * the exact origins its pages are served from. An assertion made anywhere else is refused.
     */
    passkeys: relyingPartySchema.optional(),
  })
  .strict();

export const settingsManifestSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('Settings'),
    metadata: metadataSchema,
    spec: settingsSpecSchema,
  })
  .strict();

/**
 * Secrets that must change together (seed 004: one database password in several repositories):
 * every member is prepared and verified, one decision covers them all, then all promote; any
 * member failing before that rolls every member back.
 */
export const groupSpecSchema = z
  .object({
    description: z.string().optional(),
    /** Names of Secret manifests; each runs as its usual rotation/<name>, held before promote. */
    secrets: z.array(name).min(2, 'a group needs at least two secrets').max(MAX_GROUP_MEMBERS, `a group holds at most ${MAX_GROUP_MEMBERS} secrets`),
    /** How many members prepare at once; a member waiting for the group's decision does not count. Default: all. */
    maxParallel: z.number().int().min(1).max(MAX_GROUP_MEMBERS).optional(),
    /** One decision for the whole group, signed like a rotation's (rekey approve --group NAME). */
    approval: approvalSchema.default(approvalSchema.parse({})),
    /**
     * How long a prepared member waits for the group's decision before it gives up and aborts on
     * its own (if the group has not decided by then, it never will: the abort is written first).
     */
    holdTimeout: durationBetween('1m', '90d').default('24h'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    spec.secrets.forEach((secret, i) => {
      if (spec.secrets.indexOf(secret) !== i) ctx.addIssue({ code: 'custom', path: ['secrets', i], message: `"${secret}" is listed twice` });
    });
    if (spec.approval.requireSignedRequest) {
      ctx.addIssue({ code: 'custom', path: ['approval', 'requireSignedRequest'], message: 'groups do not take signed requests yet; members that require one cannot be grouped' });
    }
    const waits = parseDuration(spec.approval.onTimeout === 'escalate' ? spec.approval.escalationLimit : spec.approval.timeout);
    if (spec.approval.required && parseDuration(spec.holdTimeout) <= waits) {
      ctx.addIssue({ code: 'custom', path: ['holdTimeout'], message: `must be longer than the group's approval wait (${spec.approval.onTimeout === 'escalate' ? spec.approval.escalationLimit : spec.approval.timeout}), or members give up before people decide` });
    }
  });

export const groupManifestSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('RotationGroup'),
    metadata: metadataSchema,
    spec: groupSpecSchema,
  })
  .strict();

export type ScheduleSpec = z.output<typeof scheduleSpecSchema>;
export type ScheduleManifest = z.output<typeof scheduleManifestSchema>;
export type SecretSpec = z.output<typeof secretSpecSchema>;
export type SecretManifest = z.output<typeof secretManifestSchema>;
export type PolicySpec = z.output<typeof policySchema>;
export type ApprovalPolicy = z.output<typeof approvalSchema>;
export type SettingsManifest = z.output<typeof settingsManifestSchema>;
/** A person as written: passkeys not yet bound to the relying party. */
type DeclaredPerson = z.output<typeof personSchema>;

export type GroupManifest = z.output<typeof groupManifestSchema>;

export const KINDS = ['Secret', 'Schedule', 'Settings', 'RotationGroup'] as const;

/** A Secret as the worker and the CLI use it: validated, expanded, with its approvers resolved. */
export interface SecretEntry extends SecretManifest {
  source: string;
  /** sha256 of the spec as written (before `${}` expansion): what a requester reviews and names. */
  specHash: string;
  /** policy.approval.approvers with their keys. */
  approvers: Person[];
}

/** A RotationGroup as the worker and the CLI use it. */
export interface GroupEntry extends GroupManifest {
  source: string;
  /** sha256 of the group's spec as written and of every member's spec hash: what is reviewed and signed for. */
  specHash: string;
  approvers: Person[];
}

export interface ManifestSet {
  secrets: Map<string, SecretEntry>;
  groups: Map<string, GroupEntry>;
  schedules: Map<string, ScheduleManifest & { source: string }>;
  settings: { env: string[]; people: Map<string, Person>; breakGlass: Person[]; passkeys?: RelyingParty };
}

export interface ManifestIssue {
  source: string;
  path: string;
  message: string;
}

export class ManifestError extends Error {
  constructor(readonly issues: ManifestIssue[]) {
    super(issues.map((i) => `${i.source}: ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n'));
    this.name = 'ManifestError';
  }
}

function formatPath(path: PropertyKey[]): string {
  return path.reduce<string>(
    (out, key) => (typeof key === 'number' ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)),
    '',
  );
}

/** zod's wording, made specific where its defaults say little ("Invalid input"). */
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_union' && 'discriminator' in issue && issue.discriminator) {
    return `unknown or missing "${issue.discriminator}"`;
  }
  if (issue.code === 'unrecognized_keys') return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  if (issue.code === 'invalid_type') {
    // A schema's own message (a store reference where a value was written inline) says more.
    if (!issue.message.startsWith('Invalid input')) return issue.message;
    // zod reports what it received in its message only ("..., received string").
    const got = /received (\w+)/.exec(issue.message)?.[1];
    return got === undefined || got === 'undefined' ? `is required (expected ${issue.expected})` : `expected ${issue.expected}, got ${got}`;
  }
  if (issue.code === 'invalid_value') return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return issue.message;
}

/**
 * A union's failure names the branch the value was meant for: the one whose problems are not about
 * the value's type ("approvers[0]" is an object, so the name-string branch is not the one).
 */
function specific(issue: z.core.$ZodIssue): z.core.$ZodIssue[] {
  if (issue.code !== 'invalid_union' || ('discriminator' in issue && issue.discriminator) || !('errors' in issue)) return [issue];
  const branch = issue.errors.find((issues) => issues.length > 0 && issues.some((i) => i.code !== 'invalid_type' || i.path.length > 0));
  if (!branch) return [issue];
  return branch.flatMap((inner) => specific({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue));
}

function issuesOf(source: string, error: z.ZodError): ManifestIssue[] {
  return error.issues.flatMap(specific).map((issue) => ({ source, path: formatPath(issue.path), message: describeIssue(issue) }));
}

type AnyManifest = SecretManifest | ScheduleManifest | SettingsManifest | GroupManifest;

const SCHEMAS = { Secret: secretManifestSchema, Schedule: scheduleManifestSchema, Settings: settingsManifestSchema, RotationGroup: groupManifestSchema } as const;

/** Validate one parsed document; `source` names it in errors (file, and document number if several). */
export function parseManifest(source: string, doc: unknown): AnyManifest {
  const kind = (doc as { kind?: unknown } | null)?.kind;
  if (!doc || typeof doc !== 'object') throw new ManifestError([{ source, path: '', message: 'expected a YAML mapping' }]);
  if (!KINDS.includes(kind as (typeof KINDS)[number])) {
    throw new ManifestError([{ source, path: 'kind', message: `expected one of ${KINDS.join(', ')}, got ${JSON.stringify(kind)}` }]);
  }
  const parsed = SCHEMAS[kind as (typeof KINDS)[number]].safeParse(doc);
  if (!parsed.success) throw new ManifestError(issuesOf(source, parsed.error));
  return parsed.data;
}

export async function yamlFiles(path: string): Promise<string[]> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ManifestError([{ source: path, path: '', message: 'no such file or directory' }]);
  if (info.isFile()) return [path];
  const out: string[] = [];
  for (const entry of (await readdir(path, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) out.push(...(await yamlFiles(full)));
    else if (/\.ya?ml$/.test(entry.name)) out.push(full);
  }
  return out;
}

/** Manifests are reviewed text: 4 MiB holds thousands of secrets, and bounds what a typo can cost. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;

/** The hash a requester names: sha256 of the spec's canonical JSON, as written in the manifest. */
export function specHashOf(rawSpec: unknown): string {
  return `sha256:${createHash('sha256').update(canonicalJson(rawSpec)).digest('hex')}`;
}

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
/** `${versionId}`, `${secretId}` and `${secret}` stay as written: consumers fill them for each rotation. */
const ROTATION_REFERENCES = new Set(['versionId', 'secretId', 'secret']);

/**
 * `${NAME}` and `${NAME:-default}` inside string values, filled after the YAML is parsed, so a
 * value can never add a field or a document (a newline in it stays in that one string). Only names
 * the set allows (its Settings `env:` list, or REKEY_*) are read: manifests cannot pull the worker's
 * credentials out of its environment. A value that is one whole reference to a number or boolean
 * becomes that number or boolean (`port: ${REKEY_PG_PORT}`).
 */
export function expandReferences(
  value: unknown,
  allowed: (name: string) => boolean,
  env: NodeJS.ProcessEnv = process.env,
  path: PropertyKey[] = [],
): { value: unknown; issues: { path: string; message: string }[] } {
  const issues: { path: string; message: string }[] = [];
  const walk = (v: unknown, at: PropertyKey[]): unknown => {
    if (Array.isArray(v)) return v.map((item, i) => walk(item, [...at, i]));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, walk(item, [...at, k])]));
    if (typeof v !== 'string' || !v.includes('${')) return v;
    const expanded = v.replace(REFERENCE, (match: string, name: string, fallback?: string) => {
      // Filled by rekey per rotation in a gitops consumer's `set` values, never from the environment.
      if (ROTATION_REFERENCES.has(name) && fallback === undefined && at[1] === 'consumers' && at[3] === 'set') return match;
      if (WORKER_CREDENTIALS.test(name)) {
        issues.push({ path: formatPath(at), message: `\${${name}} is one of the worker's own credentials; manifests never read it` });
        return '';
      }
      if (!allowed(name)) {
        issues.push({ path: formatPath(at), message: `\${${name}} is not allowed: add ${name} to a Settings manifest's env list (or use a REKEY_* variable)` });
        return '';
      }
      const found = env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      issues.push({ path: formatPath(at), message: `environment variable ${name} is not set and has no default (write \${${name}:-default})` });
      return '';
    });
    const whole = /^\$\{[^}]*\}$/.test(v);
    if (whole && /^-?\d{1,15}$/.test(expanded)) return Number(expanded);
    if (whole && (expanded === 'true' || expanded === 'false')) return expanded === 'true';
    return expanded;
  };
  return { value: walk(value, path), issues };
}

interface RawDocument {
  source: string;
  value: Record<string, unknown>;
}

/** Load every manifest under `paths`; all problems are collected and reported together. */
export async function loadManifests(...paths: string[]): Promise<ManifestSet> {
  const issues: ManifestIssue[] = [];
  const docs: RawDocument[] = [];
  for (const root of paths) {
    const files = await yamlFiles(root);
    if (files.length === 0) issues.push({ source: root, path: '', message: 'no .yaml or .yml files found' });
    for (const file of files) {
      const shown = relative(process.cwd(), file) || file;
      const size = (await stat(file)).size;
      if (size > MAX_FILE_BYTES) {
        issues.push({ source: shown, path: '', message: `is ${size} bytes; a manifest file may be at most ${MAX_FILE_BYTES} (split it)` });
        continue;
      }
      const text = await readFile(file, 'utf8');
      const parsed = parseAllDocuments(text);
      const list = Array.isArray(parsed) ? parsed : [parsed];
      list.forEach((doc, i) => {
        const source = list.length > 1 ? `${shown} (document ${i + 1})` : shown;
        if (doc.errors.length) {
          const message = doc.errors[0].message.split('\n')[0];
          // ${...} is read after parsing: inside {...} it must be quoted, or YAML sees a flow map.
          const hint = /flow-map/.test(message) && text.includes('${') ? ' (quote values that use ${...} inside {...})' : '';
          issues.push({ source, path: '', message: `invalid YAML: ${message}${hint}` });
          return;
        }
        let value: unknown;
        try {
          // yaml refuses alias bombs ("billion laughs") here; that is a bad manifest like any other.
          value = doc.toJS({ maxAliasCount: 1000 });
        } catch (err) {
          issues.push({ source, path: '', message: `invalid YAML: ${(err as Error).message}` });
          return;
        }
        if (value === null || value === undefined) return;
        docs.push({ source, value: value as Record<string, unknown> });
      });
    }
  }
  const set: ManifestSet = { secrets: new Map(), groups: new Map(), schedules: new Map(), settings: { env: [], people: new Map(), breakGlass: [] } };
  const collect = (work: () => void) => {
    try {
      work();
    } catch (err) {
      if (err instanceof ManifestError) issues.push(...err.issues);
      else throw err;
    }
  };

  // Settings first: they say which variables the others may use, and who the people are.
  const breakGlass: { source: string; index: number; name: string }[] = [];
  const declared: { source: string; path: string; person: DeclaredPerson }[] = [];
  for (const { source, value } of docs.filter((d) => d.value?.kind === 'Settings')) {
    collect(() => {
      const settings = parseManifest(source, value) as SettingsManifest;
      set.settings.env.push(...settings.spec.env);
      settings.spec.people.forEach((person, i) => declared.push({ source, path: `spec.people[${i}]`, person }));
      settings.spec.breakGlass.forEach((name, index) => breakGlass.push({ source, index, name }));
      if (settings.spec.passkeys) {
        if (set.settings.passkeys) issues.push({ source, path: 'spec.passkeys', message: 'the passkey relying party is declared twice (one Settings manifest declares it)' });
        else set.settings.passkeys = settings.spec.passkeys;
      }
    });
  }
  // People once the relying party is known: a passkey is trusted only for it.
  const credentials = new Map<string, string>();
  for (const { source, path, person } of declared) {
    if (set.settings.people.has(person.name)) issues.push({ source, path: `${path}.name`, message: `person "${person.name}" is declared twice` });
    else set.settings.people.set(person.name, trustPasskeys(person, set.settings.passkeys, credentials, source, path, issues));
  }
  for (const { source, index, name } of breakGlass) {
    const person = set.settings.people.get(name);
    if (person) set.settings.breakGlass.push(person);
    else issues.push({ source, path: `spec.breakGlass[${index}]`, message: `"${name}" is not declared in people` });
  }

  const allowedEnv = new Set(set.settings.env);
  const allowed = (name: string) => name.startsWith('REKEY_') || allowedEnv.has(name);
  const owners = new Map<string, SecretEntry>();
  const accountHolders = new Map<string, { entry: SecretEntry; path: string }>();
  for (const { source, value } of docs.filter((d) => d.value?.kind !== 'Settings')) {
    // Only the spec is filled in: kind, apiVersion and names are what they say.
    const spec = expandReferences((value as { spec?: unknown }).spec, allowed, process.env, ['spec']);
    issues.push(...spec.issues.map((i) => ({ source, ...i })));
    collect(() => {
      const manifest = parseManifest(source, { ...value, ...(spec.value !== undefined ? { spec: spec.value } : {}) }) as SecretManifest | ScheduleManifest | GroupManifest;
      const name = manifest.metadata.name;
      if (manifest.kind === 'RotationGroup') {
        const previous = set.groups.get(name);
        if (previous) issues.push({ source, path: 'metadata.name', message: `group "${name}" is also defined in ${previous.source}` });
        else {
          const approvers = resolveApprovers(manifest.spec.approval, 'spec.approval', set.settings.people, source, issues, (person, path) => trustPasskeys(person, set.settings.passkeys, credentials, source, path, issues));
          set.groups.set(name, { ...manifest, source, specHash: specHashOf((value as { spec?: unknown }).spec), approvers });
        }
        return;
      }
      if (manifest.kind === 'Schedule') {
        if (manifest.spec.group !== undefined && !docs.some((d) => d.value?.kind === 'RotationGroup' && (d.value.metadata as { name?: unknown } | undefined)?.name === manifest.spec.group)) {
          issues.push({ source, path: 'spec.group', message: `no RotationGroup named "${manifest.spec.group}" in the manifest set` });
        }
        const previous = set.schedules.get(name);
        if (previous) issues.push({ source, path: 'metadata.name', message: `schedule "${name}" is also defined in ${previous.source}` });
        else set.schedules.set(name, { ...manifest, source });
        return;
      }
      const previous = set.secrets.get(name);
      if (previous) {
        issues.push({ source, path: 'metadata.name', message: `secret "${name}" is also defined in ${previous.source}` });
        return;
      }
      const approvers = resolveApprovers(manifest.spec.policy.approval, 'spec.policy.approval', set.settings.people, source, issues, (person, path) => trustPasskeys(person, set.settings.passkeys, credentials, source, path, issues));
      // What a consumer passes from the worker's environment must be listed where reviewers look.
      manifest.spec.consumers.forEach((consumer, i) => {
        consumerEnvironment(consumer).forEach((name, j) => {
          if (!allowedEnv.has(name)) {
            issues.push({ source, path: `spec.consumers[${i}].env[${j}]`, message: `${name} is not in a Settings manifest's env list; list it there to pass it to commands` });
          }
        });
      });
      const entry: SecretEntry = { ...manifest, source, specHash: specHashOf((value as { spec?: unknown }).spec), approvers };
      // One manifest per stored secret: two would discard each other's pending versions.
      const identity = storeIdentity(manifest.spec.store);
      const owner = owners.get(identity);
      if (owner) {
        issues.push({ source, path: 'spec.store', message: `${identity} is already rotated by secret "${owner.metadata.name}" (${owner.source}); a stored secret belongs to exactly one manifest` });
        return;
      }
      // A target whose admin login is the secret itself would change the credential it logs in with.
      for (const { path, store } of manifest.spec.target ? targetStores(manifest.spec.target) : []) {
        if (storeIdentity(store) === identity) {
          issues.push({ source, path: `spec.target.${path}`, message: "is the secret's own store: the admin credential must be a different secret, or a failed rotation locks rekey out" });
        }
      }
      // One manifest per account at a target: two would each revoke what the other just deployed.
      for (const { path, account } of manifest.spec.target ? targetAccounts(manifest.spec.target) : []) {
        const holder = accountHolders.get(account);
        if (holder && holder.entry !== entry) {
          issues.push({ source, path: `spec.target.${path}`, message: `${account} is already rotated by secret "${holder.entry.metadata.name}" (${holder.entry.source}, spec.target.${holder.path}); an account belongs to exactly one manifest` });
        } else accountHolders.set(account, { entry, path });
      }
      owners.set(identity, entry);
      set.secrets.set(name, entry);
    });
  }
  checkGroups(set, issues);
  if (issues.length) throw new ManifestError(issues);
  return set;
}

/** A group's members exist, and its one decision is at least what each member's policy asks. */
function checkGroups(set: ManifestSet, issues: ManifestIssue[]): void {
  for (const group of set.groups.values()) {
    const { source } = group;
    // Audit records of a group carry its name where a rotation's carry the secret's.
    if (set.secrets.has(group.metadata.name)) issues.push({ source, path: 'metadata.name', message: `"${group.metadata.name}" is also a Secret's name; name the group differently` });
    group.spec.secrets.forEach((secret, i) => {
      const path = `spec.secrets[${i}]`;
      const member = set.secrets.get(secret);
      if (!member) {
        issues.push({ source, path, message: `no Secret named "${secret}" in the manifest set` });
        return;
      }
      const asked = member.spec.policy.approval;
      if (asked.requireSignedRequest) issues.push({ source, path, message: `"${secret}" requires a signed request, which groups do not take yet` });
      if (asked.required && !group.spec.approval.required) {
        issues.push({ source, path: 'spec.approval.required', message: `"${secret}" requires approval, so the group must too (its decision stands in for the member's)` });
      } else if (asked.required && group.spec.approval.minApprovals < asked.minApprovals) {
        issues.push({ source, path: 'spec.approval.minApprovals', message: `"${secret}" requires ${asked.minApprovals} approvals; the group asks for ${group.spec.approval.minApprovals}` });
      } else if (asked.required) {
        // Anyone who may approve the group must be someone who may approve the member.
        const theirs = new Set(member.approvers.map((p) => p.name));
        group.approvers.forEach((approver, j) => {
          if (!theirs.has(approver.name)) issues.push({ source, path: `spec.approval.approvers[${j}]`, message: `${approver.name} may not approve "${secret}" (not among its approvers), so cannot approve the group` });
        });
      }
    });
    // What a requester reviews and approvers sign for: the group and the spec of every member, so
    // a member's manifest changing changes the group's hash too.
    const members = group.spec.secrets.map((secret) => [secret, set.secrets.get(secret)?.specHash ?? 'missing']);
    group.specHash = specHashOf({ group: group.specHash, members });
    if (group.spec.maxParallel !== undefined && group.spec.maxParallel > group.spec.secrets.length) {
      issues.push({ source, path: 'spec.maxParallel', message: `is ${group.spec.maxParallel} but the group has ${group.spec.secrets.length} secrets` });
    }
  }
}

/**
 * `trust` binds an inline approver's passkeys to the relying party; without it (a caller that has
 * none at hand) inline passkeys are refused, never taken unbound.
 */
function resolveApprovers(
  approval: ApprovalPolicy,
  at: string,
  people: Map<string, Person>,
  source: string,
  issues: ManifestIssue[],
  trust: (person: DeclaredPerson, path: string) => Person = ({ passkeys, ...person }, path) => {
    if (passkeys) issues.push({ source, path: `${path}.passkeys`, message: 'declare people with passkeys in a Settings manifest and name them here' });
    return person;
  },
): Person[] {
  const out: Person[] = [];
  approval.approvers.forEach((approver, i) => {
    const path = `${at}.approvers[${i}]`;
    const person = typeof approver === 'string' ? people.get(approver) : trust(approver, path);
    if (!person) {
      issues.push({ source, path, message: `"${approver}" is not declared in the people of a Settings manifest (or write {name, keys} here)` });
    } else if (typeof approver !== 'string' && people.has(approver.name)) {
      issues.push({ source, path: `${path}.name`, message: `"${approver.name}" is declared in people; name them instead of repeating their keys` });
    } else if (out.some((p) => p.name === person.name)) {
      issues.push({ source, path, message: `"${person.name}" is listed twice` });
    } else {
      out.push({ name: person.name, keys: person.keys, ...(person.passkeys ? { passkeys: person.passkeys } : {}) });
    }
  });
  return out;
}

/**
 * A person's passkeys with the relying party they are valid for (Settings spec.passkeys). A
 * credential id belongs to one person only: otherwise one passkey could count as two people.
 */
function trustPasskeys(person: DeclaredPerson, rp: RelyingParty | undefined, seen: Map<string, string>, source: string, path: string, issues: ManifestIssue[]): Person {
  const { passkeys, ...rest } = person;
  // A key is one person: the same SSH key or passkey under two names would count one signature twice.
  const claim = (identity: string, at: string) => {
    const owner = seen.get(identity);
    if (owner !== undefined && owner !== person.name) issues.push({ source, path: at, message: `is also ${owner}'s key: a key belongs to one person` });
    seen.set(identity, person.name);
  };
  person.keys?.forEach((key, j) => claim(`ssh:${key}`, `${path}.keys[${j}]`));
  passkeys?.forEach((passkey, j) => claim(`passkey:${passkey.publicKey}`, `${path}.passkeys[${j}].publicKey`));
  if (!passkeys) return rest;
  if (!rp) {
    issues.push({ source, path: `${path}.passkeys`, message: 'passkeys need the relying party: declare spec.passkeys {rpId, origins} in a Settings manifest' });
    return rest;
  }
  passkeys.forEach((passkey, j) => {
    const owner = seen.get(passkey.credentialId);
    if (owner !== undefined && owner !== person.name) {
      issues.push({ source, path: `${path}.passkeys[${j}].credentialId`, message: `is also listed for ${owner}: a passkey belongs to one person` });
    }
    seen.set(passkey.credentialId, person.name);
  });
  return { ...rest, passkeys: passkeys.map((p) => ({ credentialId: p.credentialId, publicKey: p.publicKey, algorithm: p.algorithm, rpId: rp.rpId, origins: [...rp.origins] })) };
}

/** JSON Schema for editors, generated from the same zod schema that validates. */
export function secretJsonSchema(): unknown {
  return z.toJSONSchema(secretManifestSchema, { io: 'input', unrepresentable: 'any' });
}

export function scheduleJsonSchema(): unknown {
  return z.toJSONSchema(scheduleManifestSchema, { io: 'input', unrepresentable: 'any' });
}

export function groupJsonSchema(): unknown {
  return z.toJSONSchema(groupManifestSchema, { io: 'input', unrepresentable: 'any' });
}

export function settingsJsonSchema(): unknown {
  return z.toJSONSchema(settingsManifestSchema, { io: 'input', unrepresentable: 'any' });
}

/** The secrets a schedule (or `rekey rotate --selector`) selects, in name order. */
export function selectSecrets(set: ManifestSet, select: { names?: string[]; labels?: Record<string, string> }): string[] {
  const names = new Set(select.names ?? []);
  const labels = Object.entries(select.labels ?? {});
  return [...set.secrets.values()]
    .filter((s) => names.has(s.metadata.name) || (labels.length > 0 && labels.every(([k, v]) => s.metadata.labels[k] === v)))
    .map((s) => s.metadata.name)
    .sort();
}

/** The secrets a schedule rotates: a group's members, or what its selector selects. */
export function scheduledSecrets(set: ManifestSet, schedule: ScheduleManifest): string[] {
  if (schedule.spec.group !== undefined) return [...(set.groups.get(schedule.spec.group)?.spec.secrets ?? [])].sort();
  return selectSecrets(set, schedule.spec.select ?? {});
}
