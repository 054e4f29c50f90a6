// Manifests: the one schema that types, validates and documents what a team declares in git.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { consumerSchema } from '../activities/consumers';
import { generatorSchema } from '../activities/generators';
import { storeSchema } from '../activities/stores';
import { targetSchema } from '../activities/targets';
import { durationSchema } from './schema';

export const API_VERSION = 'rekey.dev/v1';

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
    generate: durationSchema.default('1m'),
    prepare: durationSchema.default('2m'),
    deploy: durationSchema.default('2m'),
    verify: durationSchema.default('2m'),
    revoke: durationSchema.default('2m'),
  })
  .strict();

export const approvalSchema = z
  .object({
    required: z.boolean().default(false),
    /** Who may decide. The person who requested the rotation never counts (two-person rule). */
    approvers: z.array(z.string().min(1)).default([]),
    minApprovals: z.number().int().min(1).default(1),
    /** How long to wait for a decision before onTimeout applies. */
    timeout: durationSchema.default('1h'),
    /** abort: roll back. escalate: alert and keep waiting until escalationLimit, then roll back. */
    onTimeout: z.enum(['abort', 'escalate']).default('abort'),
    escalationLimit: durationSchema.default('24h'),
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
    overlap: durationSchema.default('30s'),
    /** Oldest the current version may get before it counts as overdue. */
    maxAge: durationSchema.optional(),
    /** How many consumers are deployed and verified at once. */
    maxParallelConsumers: z.number().int().min(1).max(64).default(4),
    timeouts: timeoutsSchema.default(timeoutsSchema.parse({})),
    approval: approvalSchema.default(approvalSchema.parse({})),
  })
  .strict();

export const secretSpecSchema = z
  .object({
    description: z.string().optional(),
    store: storeSchema,
    generator: generatorSchema,
    /** The system that checks the credential; omit it for values only consumers use. */
    target: targetSchema.optional(),
    consumers: z.array(consumerSchema).default([]),
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
    every: durationSchema.optional(),
    timezone: z.string().default('UTC').refine(isTimeZone, { message: 'is not an IANA time zone (e.g. Asia/Tokyo, Europe/Berlin, UTC)' }),
    /** Each run starts up to this much later, so many schedules do not hit the same minute. */
    jitter: durationSchema.optional(),
    /** Runs missed while Temporal was unavailable are made up within this window. */
    catchupWindow: durationSchema.default('1h'),
    overlap: z.enum(['skip', 'buffer-one', 'buffer-all', 'cancel-other', 'terminate-other', 'allow-all']).default('skip'),
    pauseOnFailure: z.boolean().default(false),
    paused: z.boolean().default(false),
    /** Which secrets a run rotates: names, labels (all must match), and optionally only overdue ones. */
    select: z
      .object({
        names: z.array(z.string()).default([]),
        labels: z.record(z.string(), z.string()).default({}),
        overdueOnly: z.boolean().default(false),
      })
      .strict()
      .refine((sel) => sel.names.length > 0 || Object.keys(sel.labels).length > 0, { message: 'must name secrets or labels (select: {labels: {team: payments}})' }),
    maxParallel: z.number().int().min(1).max(100).default(2),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const given = (['cron', 'calendar', 'every'] as const).filter((k) => spec[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({ code: 'custom', path: given.length ? [given[1]] : ['cron'], message: `give exactly one of cron, calendar, every (got ${given.join(', ') || 'none'})` });
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

export type ScheduleSpec = z.output<typeof scheduleSpecSchema>;
export type ScheduleManifest = z.output<typeof scheduleManifestSchema>;
export type SecretSpec = z.output<typeof secretSpecSchema>;
export type SecretManifest = z.output<typeof secretManifestSchema>;
export type PolicySpec = z.output<typeof policySchema>;
export type ApprovalPolicy = z.output<typeof approvalSchema>;

export const KINDS = ['Secret', 'Schedule'] as const;

export interface ManifestSet {
  secrets: Map<string, SecretManifest & { source: string }>;
  schedules: Map<string, ScheduleManifest & { source: string }>;
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
  if (issue.code === 'invalid_type' && issue.input === undefined) return `is required (expected ${issue.expected})`;
  if (issue.code === 'invalid_value') return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return issue.message;
}

function issuesOf(source: string, error: z.ZodError): ManifestIssue[] {
  return error.issues.map((issue) => ({ source, path: formatPath(issue.path), message: describeIssue(issue) }));
}

/** Validate one parsed document; `source` names it in errors (file, and document number if several). */
export function parseManifest(source: string, doc: unknown): SecretManifest | ScheduleManifest {
  const kind = (doc as { kind?: unknown } | null)?.kind;
  if (!doc || typeof doc !== 'object') throw new ManifestError([{ source, path: '', message: 'expected a YAML mapping' }]);
  if (!KINDS.includes(kind as (typeof KINDS)[number])) {
    throw new ManifestError([{ source, path: 'kind', message: `expected one of ${KINDS.join(', ')}, got ${JSON.stringify(kind)}` }]);
  }
  const parsed = kind === 'Schedule' ? scheduleManifestSchema.safeParse(doc) : secretManifestSchema.safeParse(doc);
  if (!parsed.success) throw new ManifestError(issuesOf(source, parsed.error));
  return parsed.data;
}

async function yamlFiles(path: string): Promise<string[]> {
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

/**
 * `${NAME}` and `${NAME:-default}` are replaced from the environment before parsing, so one
 * manifest set serves several environments (ports, hosts, endpoints). Only references belong
 * there: specs are not secret.
 */
export function expandEnv(text: string, source: string, env: NodeJS.ProcessEnv = process.env): { text: string; issues: ManifestIssue[] } {
  const issues: ManifestIssue[] = [];
  const expanded = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_, name: string, fallback?: string) => {
    const value = env[name];
    if (value !== undefined && value !== '') return value;
    if (fallback !== undefined) return fallback;
    issues.push({ source, path: '', message: `environment variable ${name} is not set and has no default (write \${${name}:-default})` });
    return '';
  });
  return { text: expanded, issues };
}

/** Load every manifest under `paths`; all problems are collected and reported together. */
export async function loadManifests(...paths: string[]): Promise<ManifestSet> {
  const issues: ManifestIssue[] = [];
  const set: ManifestSet = { secrets: new Map(), schedules: new Map() };
  for (const root of paths) {
    const files = await yamlFiles(root);
    if (files.length === 0) issues.push({ source: root, path: '', message: 'no .yaml or .yml files found' });
    for (const file of files) {
      const shown = relative(process.cwd(), file) || file;
      const expanded = expandEnv(await readFile(file, 'utf8'), shown);
      issues.push(...expanded.issues);
      const docs = parseAllDocuments(expanded.text);
      const list = Array.isArray(docs) ? docs : [docs];
      list.forEach((doc, i) => {
        const source = list.length > 1 ? `${shown} (document ${i + 1})` : shown;
        if (doc.errors.length) {
          issues.push({ source, path: '', message: `invalid YAML: ${doc.errors[0].message.split('\n')[0]}` });
          return;
        }
        const value = doc.toJS();
        if (value === null || value === undefined) return;
        try {
          const manifest = parseManifest(source, value);
          const map = (manifest.kind === 'Secret' ? set.secrets : set.schedules) as Map<string, typeof manifest & { source: string }>;
          const previous = map.get(manifest.metadata.name);
          if (previous) {
            issues.push({ source, path: 'metadata.name', message: `${manifest.kind.toLowerCase()} "${manifest.metadata.name}" is also defined in ${previous.source}` });
          } else {
            map.set(manifest.metadata.name, { ...manifest, source });
          }
        } catch (err) {
          if (err instanceof ManifestError) issues.push(...err.issues);
          else throw err;
        }
      });
    }
  }
  if (issues.length) throw new ManifestError(issues);
  return set;
}

/** JSON Schema for editors, generated from the same zod schema that validates. */
export function secretJsonSchema(): unknown {
  return z.toJSONSchema(secretManifestSchema, { io: 'input', unrepresentable: 'any' });
}

export function scheduleJsonSchema(): unknown {
  return z.toJSONSchema(scheduleManifestSchema, { io: 'input', unrepresentable: 'any' });
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
