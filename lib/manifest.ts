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

export type SecretSpec = z.output<typeof secretSpecSchema>;
export type SecretManifest = z.output<typeof secretManifestSchema>;
export type PolicySpec = z.output<typeof policySchema>;
export type ApprovalPolicy = z.output<typeof approvalSchema>;

export const KINDS = ['Secret'] as const;

export interface ManifestSet {
  secrets: Map<string, SecretManifest & { source: string }>;
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
export function parseManifest(source: string, doc: unknown): SecretManifest {
  const kind = (doc as { kind?: unknown } | null)?.kind;
  if (!doc || typeof doc !== 'object') throw new ManifestError([{ source, path: '', message: 'expected a YAML mapping' }]);
  if (!KINDS.includes(kind as (typeof KINDS)[number])) {
    throw new ManifestError([{ source, path: 'kind', message: `expected one of ${KINDS.join(', ')}, got ${JSON.stringify(kind)}` }]);
  }
  const parsed = secretManifestSchema.safeParse(doc);
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
  const set: ManifestSet = { secrets: new Map() };
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
          const previous = set.secrets.get(manifest.metadata.name);
          if (previous) {
            issues.push({ source, path: 'metadata.name', message: `secret "${manifest.metadata.name}" is also defined in ${previous.source}` });
          } else {
            set.secrets.set(manifest.metadata.name, { ...manifest, source });
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
