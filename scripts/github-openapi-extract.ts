// Regenerates tests/github/openapi-extract.json: the part of GitHub's published REST description
// that the GitHub stand-in (tests/github/standin.ts) serves and validates against.
//
// GitHub publishes its description in the npm package @octokit/openapi. The tests never touch the
// network, so the extract is a checked-in file; regenerate it (network needed once) with:
//
//   cd "$(mktemp -d)" && npm pack @octokit/openapi@23.0.2
//   cd /path/to/rekey && npx tsx scripts/github-openapi-extract.ts /tmp/…/octokit-openapi-23.0.2.tgz
//
// (or pass package/generated/api.github.com.json of the unpacked tarball). The input is the
// non-dereferenced api.github.com.json (OpenAPI 3.0.3, ~13 MB). The output keeps only the
// operations in OPERATIONS plus every component they reference, transitively; it drops what does
// not affect validation and bloats the file (examples, operation prose, x-github* and x-octokit
// annotations) and keeps every schema exactly as published.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The operations the stand-in implements, by operationId. */
export const OPERATIONS = [
  'repos/get',
  'actions/get-repo-public-key',
  'actions/get-repo-secret',
  'actions/create-or-update-repo-secret',
  'actions/delete-repo-secret',
  'actions/get-environment-public-key',
  'actions/get-environment-secret',
  'actions/create-or-update-environment-secret',
  'actions/get-org-public-key',
  'actions/get-org-secret',
  'actions/create-or-update-org-secret',
  'actions/list-selected-repos-for-org-secret',
  'repos/list-webhooks',
  'repos/get-webhook',
  'repos/get-webhook-config-for-repo',
  'repos/update-webhook-config-for-repo',
  'repos/ping-webhook',
  'repos/list-webhook-deliveries',
  'repos/get-webhook-delivery',
  'orgs/list-webhooks',
  'orgs/get-webhook',
  'orgs/get-webhook-config-for-org',
  'orgs/update-webhook-config-for-org',
  'orgs/ping-webhook',
  'orgs/list-webhook-deliveries',
  'orgs/get-webhook-delivery',
  'repos/list-deploy-keys',
  'repos/create-deploy-key',
  'repos/get-deploy-key',
  'repos/delete-deploy-key',
  'actions/create-workflow-dispatch',
  'actions/get-workflow-run',
  'actions/list-workflow-runs',
  'apps/create-installation-access-token',
  'rate-limit/get',
  'repos/get-branch',
  'repos/get-content',
  'git/get-ref',
  'git/list-matching-refs',
  'git/create-ref',
  'git/update-ref',
  'git/delete-ref',
  'git/get-commit',
  'git/create-blob',
  'git/create-tree',
  'git/create-commit',
  'pulls/list',
  'pulls/get',
  'pulls/create',
  'pulls/update',
  'pulls/merge',
  'checks/list-for-ref',
  'repos/get-combined-status-for-ref',
] as const;

export const SOURCE_PACKAGE = '@octokit/openapi@23.0.2';
const OUTPUT = join(__dirname, '../tests/github/openapi-extract.json');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** The description, from the JSON file or straight out of the npm tarball. */
function readDescription(input: string): JsonObject {
  const text = input.endsWith('.tgz')
    ? execFileSync('tar', ['-xzOf', input, 'package/generated/api.github.com.json'], { maxBuffer: 1 << 30, encoding: 'utf8' })
    : readFileSync(input, 'utf8');
  return JSON.parse(text) as JsonObject;
}

/**
 * A copy without what validation never reads. Keys under `properties` (and `patternProperties`)
 * are property names, not keywords, so a property called `example` or `description` survives.
 */
function clean(node: Json, keepDescription: boolean, namesHere = false): Json {
  if (Array.isArray(node)) return node.map((n) => clean(n, keepDescription));
  if (!node || typeof node !== 'object') return node;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (!namesHere) {
      if (key === 'examples' || key === 'example' || key.startsWith('x-github') || key === 'x-octokit') continue;
      if (!keepDescription && (key === 'description' || key === 'summary')) continue;
    }
    out[key] = clean(value, keepDescription, !namesHere && (key === 'properties' || key === 'patternProperties'));
  }
  return out;
}

/** Every "#/components/<kind>/<name>" reference anywhere under node. */
function refsIn(node: Json, found: Set<string>): Set<string> {
  if (Array.isArray(node)) node.forEach((n) => refsIn(n, found));
  else if (node && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string') found.add(value);
      else refsIn(value, found);
    }
  }
  return found;
}

export function extract(description: JsonObject): JsonObject {
  const paths = description.paths as Record<string, JsonObject>;
  const components = description.components as Record<string, JsonObject>;
  const wanted = new Set<string>(OPERATIONS);
  const outPaths: Record<string, JsonObject> = {};

  for (const path of Object.keys(paths).sort()) {
    const item = paths[path];
    for (const method of METHODS) {
      const op = item[method] as JsonObject | undefined;
      if (!op || !wanted.has(op.operationId as string)) continue;
      wanted.delete(op.operationId as string);
      // The operation's prose is long and says nothing a validator reads; its summary and docs
      // link stay so a violation can name the operation a reader can look up.
      const { description: _prose, ...rest } = op;
      const kept = clean(rest, true) as JsonObject;
      kept.summary = op.summary;
      outPaths[path] = { ...(outPaths[path] ?? {}), [method]: kept };
    }
    // Path-level parameters apply to every operation of the path.
    if (outPaths[path] && item.parameters) outPaths[path].parameters = clean(item.parameters, true);
  }
  if (wanted.size) throw new Error(`operations not in the description: ${[...wanted].join(', ')}`);

  // Follow references from the operations, then from each component reached, to a fixed point.
  const reached = new Set<string>();
  const queue = [...refsIn(outPaths, new Set())];
  while (queue.length) {
    const ref = queue.pop()!;
    if (reached.has(ref)) continue;
    const m = /^#\/components\/([^/]+)\/([^/]+)$/.exec(ref);
    if (!m) throw new Error(`unsupported reference ${ref}`);
    const target = components[m[1]]?.[m[2]];
    if (target === undefined) throw new Error(`dangling reference ${ref}`);
    reached.add(ref);
    queue.push(...refsIn(clean(target, true), new Set()));
  }
  const outComponents: Record<string, JsonObject> = {};
  for (const ref of [...reached].sort()) {
    const [, , kind, name] = ref.split('/');
    (outComponents[kind] ??= {})[name] = clean(components[kind][name], true);
  }
  const sortedComponents: JsonObject = {};
  for (const kind of Object.keys(outComponents).sort()) sortedComponents[kind] = outComponents[kind];

  const info = description.info as JsonObject;
  return {
    openapi: description.openapi,
    info: { title: info.title, version: info.version, description: `Extract of ${SOURCE_PACKAGE} (generated/api.github.com.json) made by scripts/github-openapi-extract.ts; do not edit.` },
    servers: description.servers,
    paths: outPaths,
    components: sortedComponents,
  };
}

/**
 * JSON with two-space indentation, but an object or array that fits in `width` columns stays on
 * one line: a diff of a regenerated extract stays readable without the file tripling in size.
 */
export function compactJson(value: Json, width = 110, indent = ''): string {
  const flat = JSON.stringify(value);
  if (flat.length + indent.length <= width || value === null || typeof value !== 'object') return flat;
  const inner = `${indent}  `;
  if (Array.isArray(value)) return `[\n${value.map((v) => inner + compactJson(v, width, inner)).join(',\n')}\n${indent}]`;
  const entries = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${compactJson(v, width, inner)}`);
  return `{\n${entries.join(',\n')}\n${indent}}`;
}

if (require.main === module) {
  const input = process.argv[2];
  if (!input) {
    console.error(`usage: tsx scripts/github-openapi-extract.ts <api.github.com.json | octokit-openapi-*.tgz>  (from ${SOURCE_PACKAGE})`);
    process.exit(2);
  }
  const out = extract(readDescription(input));
  const text = `${compactJson(out)}\n`;
  writeFileSync(OUTPUT, text);
  console.log(`wrote ${OUTPUT}: ${Object.keys(out.paths as JsonObject).length} paths, ${(text.length / 1024).toFixed(0)} KiB`);
}
