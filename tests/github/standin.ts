/**
 * A local, stateful stand-in for the GitHub REST API, for tests only (github.com is out of reach).
 *
 * It is kept honest by GitHub's own published description: every request it receives and every
 * response it sends is validated against tests/github/openapi-extract.json (an extract of
 * @octokit/openapi's api.github.com.json; see scripts/github-openapi-extract.ts). A mismatch, or a
 * request to a route the extract does not describe, is recorded in `violations`; tests call
 * `assertNoViolations()` so a stand-in that drifts from GitHub (or a client that sends what GitHub
 * would refuse) fails the suite instead of passing against a fiction.
 *
 *   const gh = await startGitHubStandin();
 *   gh.addRepository('octo/app');
 *   const token = gh.addToken({ permissions: { secrets: 'write' }, repositories: ['octo/app'] });
 *   const octokit = new Octokit({ auth: token, baseUrl: gh.url });
 *   ... gh.secret({ repository: 'octo/app' }, 'API_KEY')?.value ...
 *   gh.assertNoViolations(); await gh.close();
 *
 * API (all names are GitHub's: 'owner/repo' full names, organization logins, hook ids):
 *   url                                   the Octokit baseUrl, http://127.0.0.1:<port>
 *   close()                               stops the server after in-flight deliveries and workflow runs
 *   addRepository(fullName)               -> { id }; its owner need not be an added organization
 *   addOrganization(org)                  -> { id }
 *   addEnvironment(fullName, environment)
 *   addToken({ permissions, repositories?, organizations?, actor? })      -> a fine-grained PAT
 *   addApp({ permissions, repositories?, organizations?, slug? })         -> { appId, installationId, privateKey (PKCS#1 PEM) }
 *   secret(scope, name)                   -> { value, createdAt, updatedAt, visibility?, selectedRepositoryIds? } | undefined (decrypted)
 *   setSecret(scope, name, value, { visibility?, selectedRepositoryIds? }?)  seeds one
 *   publicKey(scope)                      -> { keyId, key } (base64), what GET .../public-key answers
 *   rotatePublicKey(scope)                a new key pair; PUTs naming the old key_id then get 422
 *   addHook(scope, { url, secret?, contentType?, events?, insecureSsl?, active? })  -> { id }
 *   hook(scope, id)                       -> the real config including the secret (test view)
 *   deliver(scope, hookId, event, payload?)          -> Promise<Delivery>, a real signed POST, recorded
 *   deliverContinuously(scope, hookId, intervalMs, event?) -> { stop(): Promise<{ delivered, failed }> }
 *   deliveries(scope, hookId)             -> Delivery[], newest first (what the API lists)
 *   deployKeys(fullName) / addDeployKey(fullName, { key, title?, readOnly? }) -> { id }
 *   addWorkflow(fullName, file, handler, { environment? }?)  handler(run) -> 'success' | 'failure'
 *   runs(fullName)                        -> the workflow runs, oldest first
 *   secondaryRateLimit({ count?, retryAfterSeconds?, match? })
 *   intercept(match, handler)             -> remover; handler may delay or replace an answer
 *   corruptNextResponse(match, corrupt?)  the next matching answer is deliberately malformed
 *   dropNextResponse(match)               the next matching request is done, but its answer is lost (connection cut)
 *   pushFiles(fullName, branch, files, { message?, author?, from? }) -> sha: someone pushes a commit
 *   setBranch(fullName, branch, sha)      someone force-pushes a branch to an existing commit
 *   file(fullName, ref, path) / branches(fullName) / head(fullName, branch) / commit(fullName, sha) / log(fullName, branch)
 *   protectBranch(fullName, branch, { checks: (name | { context, appId })[], strict? })  required status checks
 *   addCi(fullName, name, handler, { appId?, appSlug?, delayMs? })  a check run on every new branch head
 *   addCheckRun(fullName, sha, { name, conclusion, appId? }) / setStatus(fullName, sha, context, state)
 *   pulls(fullName) -> PullView[] / openPull(fullName, { head, base?, title?, headRepo?, user? }) -> number
 *   requests: RequestRecord[]; violations: string[]; assertNoViolations()
 *
 * Scopes: { repository: 'o/r' } | { repository: 'o/r', environment: 'prod' } | { organization: 'o' }.
 * A `match` is { method?: 'GET', path?: /regex on the path without query/ }.
 *
 * What the description cannot say: it lists every success status of an operation but rarely the
 * errors GitHub can return from any endpoint (401 bad credentials, 403 missing permission or a
 * secondary rate limit, 404 hidden or missing, 422 invalid input, 5xx). An undeclared status in
 * UNIVERSAL_ERRORS is accepted if its body is GitHub's error shape (`basic-error`); any other
 * undeclared status is a violation. Git is modelled for what the GitOps consumer uses: blobs, flat
 * trees (path -> blob, no sub-trees), commits hashed in git's format, refs; pull requests with
 * merge/squash/rebase and a three-way merge of files; branch protection's required checks; check
 * runs and commit statuses. A workflow dispatch accepts any ref.
 */
import { createHash, createHmac, createPublicKey, generateKeyPairSync, randomBytes, randomUUID, verify as verifySignature } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import sodium from 'libsodium-wrappers';

// ---------------------------------------------------------------------------------------------
// Public types

export type Access = 'read' | 'write';
export type Permissions = Record<string, Access>;
export type RepoScope = { repository: string; environment?: string };
export type OrgScope = { organization: string };
export type SecretScope = RepoScope | OrgScope;
export type HookScope = { repository: string } | { organization: string };
export type Match = { method?: string; path?: RegExp };
export type Conclusion = 'success' | 'failure';
export type WorkflowHandler = (run: { inputs: Record<string, string>; secrets: Record<string, string>; ref: string; runId: number }) => Conclusion | Promise<Conclusion>;
export type CheckConclusion = 'success' | 'failure' | 'neutral' | 'cancelled' | 'skipped' | 'timed_out' | 'action_required';
/** CI for a repository: sees each new branch head and concludes a check run of its name. */
export type CiHandler = (commit: { sha: string; file(path: string): string | undefined }) => CheckConclusion | Promise<CheckConclusion>;
export interface PullView { number: number; title: string; body?: string; head: string; headRepo: string; base: string; state: 'open' | 'closed'; merged: boolean; mergeMethod?: string; user: string; mergeCommitSha: string | null }
export interface CommitView { sha: string; message: string; parents: string[]; author: { name: string; email: string; date: string }; committer: { name: string; email: string; date: string } }
export type Replacement = { status: number; body?: unknown; headers?: Record<string, string> };
export type InterceptHandler = (req: { method: string; path: string; body: unknown }) => Promise<Replacement | void> | Replacement | void;

export interface SecretView { value: string; createdAt: string; updatedAt: string; visibility?: 'all' | 'private' | 'selected'; selectedRepositoryIds?: number[] }
export interface HookView { id: number; url: string; secret?: string; contentType: 'json' | 'form'; insecureSsl: '0' | '1'; events: string[]; active: boolean }
export interface DeployKeyView { id: number; key: string; title: string; readOnly: boolean; addedBy?: string; createdAt: string }

/** One webhook delivery as GitHub records it (and as GET .../deliveries/{id} shows it). */
export interface Delivery {
  id: number;
  guid: string;
  event: string;
  action: string | null;
  deliveredAt: string;
  /** Seconds, as GitHub reports it. */
  duration: number;
  /** "OK", "Invalid HTTP Response: 401", "failed to connect to host" or "timed out". */
  status: string;
  /** The receiver's HTTP status; 0 when there was no HTTP answer. */
  statusCode: number;
  redelivery: boolean;
  url: string;
  requestHeaders: Record<string, string>;
  requestBody: string;
  responseHeaders: Record<string, string>;
  responseBody: string;
}

export interface RequestRecord {
  method: string;
  /** Path and query as sent. */
  path: string;
  operationId?: string;
  status: number;
  requestBody: string;
  responseBody: string;
  at: string;
}

export interface GitHubStandin {
  url: string;
  close(): Promise<void>;
  addRepository(fullName: string): { id: number };
  addOrganization(org: string): { id: number };
  addEnvironment(fullName: string, environment: string): void;
  addToken(options: { permissions: Permissions; repositories?: string[]; organizations?: string[]; actor?: string }): string;
  addApp(options: { permissions: Permissions; repositories?: string[]; organizations?: string[]; slug?: string }): { appId: number; installationId: number; privateKey: string };
  secret(scope: SecretScope, name: string): SecretView | undefined;
  setSecret(scope: SecretScope, name: string, value: string, options?: { visibility?: 'all' | 'private' | 'selected'; selectedRepositoryIds?: number[] }): void;
  publicKey(scope: SecretScope): { keyId: string; key: string };
  rotatePublicKey(scope: SecretScope): void;
  addHook(scope: HookScope, options: { url: string; secret?: string; contentType?: 'json' | 'form'; events?: string[]; insecureSsl?: '0' | '1'; active?: boolean }): { id: number };
  hook(scope: HookScope, id: number): HookView;
  deliver(scope: HookScope, hookId: number, event: string, payload?: Record<string, unknown>): Promise<Delivery>;
  deliverContinuously(scope: HookScope, hookId: number, intervalMs: number, event?: string): { stop(): Promise<{ delivered: number; failed: Delivery[] }> };
  deliveries(scope: HookScope, hookId: number): Delivery[];
  deployKeys(fullName: string): DeployKeyView[];
  addDeployKey(fullName: string, key: { key: string; title?: string; readOnly?: boolean; addedBy?: string }): { id: number };
  addWorkflow(fullName: string, file: string, handler: WorkflowHandler, options?: { environment?: string }): { id: number };
  runs(fullName: string): { id: number; workflow: string; status: string; conclusion: string | null; inputs: Record<string, string>; ref: string }[];
  /** Someone pushes a commit changing `files` (null deletes) on `branch` (created from `from`, default main, if missing); bypasses protection. */
  pushFiles(fullName: string, branch: string, files: Record<string, string | null>, options?: { message?: string; author?: { name: string; email: string; date?: string }; from?: string }): string;
  /** Someone force-pushes `branch` to an existing commit (creating the branch if missing). */
  setBranch(fullName: string, branch: string, sha: string): void;
  file(fullName: string, ref: string, path: string): string | undefined;
  branches(fullName: string): string[];
  head(fullName: string, branch: string): string | undefined;
  commit(fullName: string, sha: string): CommitView | undefined;
  /** First-parent history of a branch, newest first. */
  log(fullName: string, branch: string): CommitView[];
  /** Branch protection requiring these checks (a name, or a name pinned to the app that must report it). */
  protectBranch(fullName: string, branch: string, options: { checks: (string | { context: string; appId?: number })[]; strict?: boolean }): void;
  /** CI reporting check run `name` on every new branch head; appId defaults to GitHub Actions' (15368). */
  addCi(fullName: string, name: string, handler: CiHandler, options?: { appId?: number; appSlug?: string; delayMs?: number }): void;
  addCheckRun(fullName: string, sha: string, run: { name: string; conclusion: CheckConclusion | null; appId?: number; appSlug?: string }): void;
  setStatus(fullName: string, sha: string, context: string, state: 'error' | 'failure' | 'pending' | 'success'): void;
  pulls(fullName: string): PullView[];
  /** A pull request someone else opened (from `headRepo`, default the repository itself). */
  openPull(fullName: string, pull: { head: string; base?: string; title?: string; headRepo?: string; user?: string }): number;
  secondaryRateLimit(options?: { count?: number; retryAfterSeconds?: number; match?: Match }): void;
  intercept(match: Match, handler: InterceptHandler): () => void;
  corruptNextResponse(match: Match, corrupt?: (body: unknown) => unknown): void;
  /** The next matching request is carried out, then its connection is cut before the answer (a lost answer). */
  dropNextResponse(match: Match): void;
  readonly requests: RequestRecord[];
  readonly violations: string[];
  assertNoViolations(): void;
}

// ---------------------------------------------------------------------------------------------
// The description and its validators

const EXTRACT_PATH = join(__dirname, 'openapi-extract.json');
/** Errors GitHub can answer on any endpoint whether or not the description lists them. */
const UNIVERSAL_ERRORS = new Set([400, 401, 403, 404, 422, 429, 500, 502, 503, 504]);
const GITHUB_DESCRIPTION_ID = 'https://api.github.com/openapi-extract.json';

/** The description is untyped JSON. */
type Json = Record<string, any>;
interface Operation { method: string; template: string; operationId: string; literalSegments: number; regex: RegExp; paramNames: string[]; op: Json }

/** The extract, compiled lazily: one ajv for every schema, a validator cached per schema. */
class Description {
  readonly operations: Operation[] = [];
  private readonly doc: Json;
  private readonly ajv: Ajv;
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(doc: Json) {
    doc = Description.typedNullables(doc);
    this.doc = doc;
    // strict: false because GitHub's schemas carry OpenAPI-only keywords (example, deprecated);
    // `nullable` is OpenAPI 3.0 and ajv implements it natively.
    this.ajv = new Ajv({ strict: false, allErrors: true, logger: false });
    addFormats(this.ajv);
    // GitHub-specific formats (e.g. x-ratelimit-reset's "timestamp") constrain nothing.
    this.ajv.addFormat('timestamp', true);
    this.ajv.addSchema({ $id: GITHUB_DESCRIPTION_ID, components: doc.components });
    for (const [template, item] of Object.entries<Json>(doc.paths)) {
      for (const [method, op] of Object.entries<Json>(item)) {
        if (!op || typeof op !== 'object' || !op.operationId) continue;
        const paramNames: string[] = [];
        const segments = template.split('/');
        // A parameter marked x-multi-segment (a file path in .../contents/{path}) spans slashes.
        const multi = new Set([...(item.parameters ?? []), ...(op.parameters ?? [])].map((p: Json) => (p.$ref ? doc.components.parameters[p.$ref.split('/').pop()] : p)).filter((p: Json) => p?.['x-multi-segment']).map((p: Json) => p.name));
        const pattern = segments.map((s) => (/^\{.+\}$/.test(s) ? (paramNames.push(s.slice(1, -1)), multi.has(s.slice(1, -1)) ? '(.+)' : '([^/]+)') : s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/');
        this.operations.push({ method: method.toUpperCase(), template, operationId: op.operationId, op, paramNames, regex: new RegExp(`^${pattern}$`), literalSegments: segments.filter((s) => !s.startsWith('{')).length });
      }
    }
  }

  /**
   * OpenAPI 3.0 allows `nullable: true` beside oneOf/allOf without a `type` (GitHub's `commit`
   * schema has `author: { nullable, oneOf }`); ajv needs a type for it, so such a schema becomes
   * "anyOf: [the schema, null]", which means the same. A nullable enum gets null among its values.
   */
  private static typedNullables(node: Json): Json {
    if (Array.isArray(node)) return node.map((n) => Description.typedNullables(n));
    if (!node || typeof node !== 'object') return node;
    const out: Json = Object.fromEntries(Object.entries(node).map(([k, v]) => [k, Description.typedNullables(v)]));
    // "nullable: true" adds null to the allowed values (OpenAPI 3.0.3), an enum's too: GitHub
    // answers `conclusion: null` for a check run in progress, which ajv would otherwise refuse.
    if (out.nullable === true && Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (out.nullable === true && out.type === undefined && !out.$ref) {
      const { nullable: _nullable, ...rest } = out;
      return { anyOf: [rest, { type: 'null' }] };
    }
    return out;
  }

  /** The operation for a request; a literal segment beats a parameter (".../secrets/public-key"). */
  match(method: string, pathname: string): { operation: Operation; params: Record<string, string> } | undefined {
    let best: { operation: Operation; params: Record<string, string> } | undefined;
    for (const operation of this.operations) {
      if (operation.method !== method) continue;
      const m = operation.regex.exec(pathname);
      if (!m || (best && best.operation.literalSegments >= operation.literalSegments)) continue;
      const params: Record<string, string> = {};
      operation.paramNames.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1])));
      best = { operation, params };
    }
    return best;
  }

  /** Follows one "#/components/..." reference. */
  deref<T = Json>(node: Json): T {
    if (!node?.$ref) return node as T;
    const [, , kind, name] = (node.$ref as string).split('/');
    return this.doc.components[kind][name] as T;
  }

  /** A cached validator for a schema that lives in the description (its refs resolve there). */
  private validator(key: string, schema: Json): ValidateFunction {
    let v = this.cache.get(key);
    if (!v) {
      const rebased = JSON.parse(JSON.stringify(schema).replace(/"\$ref":"#\//g, `"$ref":"${GITHUB_DESCRIPTION_ID}#/`));
      v = this.ajv.compile(rebased);
      this.cache.set(key, v);
    }
    return v;
  }

  private static text(errors: ErrorObject[] | null | undefined, what: string): string {
    return (errors ?? []).slice(0, 5).map((e) => `${what}${e.instancePath} ${e.message}${e.params && 'additionalProperty' in e.params ? ` (${e.params.additionalProperty})` : ''}`).join('; ');
  }

  /**
   * Problems with a request: path and query parameters (strings on the wire, so a value counts
   * if it validates as given or as the number or boolean it spells) and the JSON body.
   */
  requestProblems(operation: Operation, params: Record<string, string>, query: URLSearchParams, body: { text: string; json?: unknown; parseError?: string }): { problems: string[]; bodyProblems: ErrorObject[] } {
    const problems: string[] = [];
    const declared = [...(this.doc.paths[operation.template].parameters ?? []), ...(operation.op.parameters ?? [])].map((p: Json) => this.deref(p));
    for (const p of declared) {
      if (p.in !== 'path' && p.in !== 'query') continue;
      const raw = p.in === 'path' ? params[p.name] : query.get(p.name) ?? undefined;
      if (raw === undefined) {
        if (p.required) problems.push(`${p.in} parameter ${p.name} is required`);
        continue;
      }
      const v = this.validator(`${operation.operationId} param ${p.name}`, p.schema ?? {});
      const candidates: unknown[] = [raw];
      if (raw.trim() !== '' && !Number.isNaN(Number(raw))) candidates.push(Number(raw));
      if (raw === 'true' || raw === 'false') candidates.push(raw === 'true');
      if (!candidates.some((c) => v(c))) problems.push(`${p.in} parameter ${p.name}=${JSON.stringify(raw)}: ${Description.text(v.errors, p.name)}`);
    }
    let bodyProblems: ErrorObject[] = [];
    const requestBody = this.deref(operation.op.requestBody ?? {});
    const schema = requestBody.content?.['application/json']?.schema;
    if (body.text.length === 0) {
      if (requestBody.required) problems.push('a JSON request body is required');
    } else if (!schema) {
      problems.push('the operation takes no request body');
    } else if (body.parseError) {
      problems.push(`the request body is not JSON: ${body.parseError}`);
    } else {
      const v = this.validator(`${operation.operationId} request`, schema);
      if (!v(body.json)) {
        bodyProblems = [...(v.errors ?? [])];
        problems.push(`request body: ${Description.text(v.errors, 'body')}`);
      }
    }
    return { problems, bodyProblems };
  }

  /** Problems with a response: an undeclared status, a body where none is declared, a body off its schema. */
  responseProblems(operation: Operation, status: number, bodyText: string): string[] {
    const responses: Json = operation.op.responses ?? {};
    const declared = responses[String(status)] ?? responses[`${String(status)[0]}XX`] ?? responses.default;
    let schema: Json | undefined;
    if (declared) {
      const response = this.deref(declared);
      schema = response.content?.['application/json']?.schema;
      if (!response.content && bodyText.length) return [`response ${status} has a body but the description declares none`];
    } else if (UNIVERSAL_ERRORS.has(status)) {
      schema = { $ref: '#/components/schemas/basic-error' };
    } else {
      return [`response status ${status} is not declared (declared: ${Object.keys(responses).join(', ')})`];
    }
    if (!schema) return [];
    if (!bodyText.length) return [`response ${status} has no body but the description declares one`];
    let json: unknown;
    try {
      json = JSON.parse(bodyText);
    } catch (e) {
      return [`response ${status} body is not JSON: ${(e as Error).message}`];
    }
    const v = this.validator(`${operation.operationId} response ${declared ? status : 'error'}`, schema);
    return v(json) ? [] : [`response ${status} body: ${Description.text(v.errors, 'body')}`];
  }
}

let loaded: { description: Description; loadMs: number } | undefined;
/** The extract, parsed once per process (a test file may start many stand-ins). */
export function githubDescription(): { description: Description; loadMs: number } {
  if (!loaded) {
    const start = performance.now();
    const description = new Description(JSON.parse(readFileSync(EXTRACT_PATH, 'utf8')));
    loaded = { description, loadMs: performance.now() - start };
  }
  return loaded;
}

// ---------------------------------------------------------------------------------------------
// State

/** GitHub's timestamps have seconds precision: "2026-11-23T16:00:00Z". */
const isoSeconds = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lower = (s: string) => s.toLowerCase();

interface KeyPair { keyId: string; publicKey: Uint8Array; privateKey: Uint8Array }
interface StoredSecret { value: string; createdAt: string; updatedAt: string; visibility?: 'all' | 'private' | 'selected'; selectedRepositoryIds?: number[] }
interface SecretStore { keyPair: KeyPair; secrets: Map<string, StoredSecret> }
interface Hook { id: number; url: string; secret?: string; contentType: 'json' | 'form'; insecureSsl: '0' | '1'; events: string[]; active: boolean; createdAt: string; updatedAt: string; lastResponse: { code: number | null; status: string; message: string | null }; deliveries: Delivery[] }
interface DeployKey { id: number; key: string; title: string; readOnly: boolean; addedBy?: string; createdAt: string }
interface Workflow { id: number; file: string; handler: WorkflowHandler; environment?: string; runNumber: number }
interface Run { id: number; workflow: Workflow; runNumber: number; status: 'queued' | 'in_progress' | 'completed'; conclusion: Conclusion | null; inputs: Record<string, string>; ref: string; actor: string; createdAt: string; updatedAt: string; startedAt: string }
interface Repository {
  id: number; owner: string; name: string; fullName: string; createdAt: string; headSha: string; store: SecretStore; environments: Map<string, SecretStore>; hooks: Map<number, Hook>;
  deployKeys: Map<number, DeployKey>; workflows: Map<string, Workflow>; runs: Map<number, Run>;
  git: { blobs: Map<string, Buffer>; trees: Map<string, Map<string, string>>; commits: Map<string, GitCommit>; refs: Map<string, string> };
  pulls: Map<number, Pull>; lastIssue: number; protection: Map<string, { checks: { context: string; appId?: number }[]; strict: boolean }>;
  ci: { name: string; appId: number; appSlug: string; delayMs: number; handler: CiHandler }[]; checkRuns: CheckRun[]; statuses: CommitStatus[];
}
interface GitPerson { name: string; email: string; date: string }
interface GitCommit { sha: string; tree: string; parents: string[]; author: GitPerson; committer: GitPerson; message: string }
interface Pull { number: number; title: string; body?: string; head: string; headRepo: string; headSha: string; base: string; state: 'open' | 'closed'; user: string; createdAt: string; updatedAt: string; closedAt: string | null; mergedAt: string | null; mergeCommitSha: string | null; mergedBy?: string; mergeMethod?: string }
interface CheckRun { id: number; headSha: string; name: string; appId: number; appSlug: string; status: 'queued' | 'in_progress' | 'completed'; conclusion: CheckConclusion | null; startedAt: string; completedAt: string | null }
interface CommitStatus { id: number; sha: string; context: string; state: 'error' | 'failure' | 'pending' | 'success'; at: string }
interface Organization { id: number; login: string; store: SecretStore; hooks: Map<number, Hook> }
interface Grant { kind: 'personal' | 'installation'; permissions: Permissions; repositories?: Set<string>; organizations?: Set<string>; actor: string; expiresAt?: number; used: number; resetAt: number }
interface App { id: number; slug: string; publicKey: ReturnType<typeof createPublicKey>; installationId: number; permissions: Permissions; repositories?: Set<string>; organizations?: Set<string> }

/**
 * The fine-grained permissions each operation needs: alternatives, each a set all required.
 * From https://docs.github.com/en/rest/authentication/permissions-required-for-fine-grained-personal-access-tokens
 * ("metadata=read" is implicit in every token, as GitHub grants it automatically).
 */
const REQUIRED: Record<string, string[][] | 'app-jwt' | 'none'> = {
  'repos/get': [['metadata=read']],
  'actions/get-repo-public-key': [['secrets=read']],
  'actions/get-repo-secret': [['secrets=read']],
  'actions/create-or-update-repo-secret': [['secrets=write']],
  'actions/delete-repo-secret': [['secrets=write']],
  'actions/get-environment-public-key': [['environments=read', 'secrets=read']],
  'actions/get-environment-secret': [['environments=read', 'secrets=read']],
  'actions/create-or-update-environment-secret': [['environments=write', 'secrets=write']],
  'actions/get-org-public-key': [['organization_secrets=read']],
  'actions/get-org-secret': [['organization_secrets=read']],
  'actions/create-or-update-org-secret': [['organization_secrets=write']],
  'actions/list-selected-repos-for-org-secret': [['organization_secrets=read']],
  'repos/list-webhooks': [['repository_hooks=read']],
  'repos/get-webhook': [['repository_hooks=read']],
  'repos/get-webhook-config-for-repo': [['repository_hooks=read']],
  'repos/update-webhook-config-for-repo': [['repository_hooks=write']],
  'repos/ping-webhook': [['repository_hooks=read']],
  'repos/list-webhook-deliveries': [['repository_hooks=read']],
  'repos/get-webhook-delivery': [['repository_hooks=read']],
  'orgs/list-webhooks': [['organization_hooks=read']],
  'orgs/get-webhook': [['organization_hooks=read']],
  'orgs/get-webhook-config-for-org': [['organization_hooks=read']],
  'orgs/update-webhook-config-for-org': [['organization_hooks=write']],
  'orgs/ping-webhook': [['organization_hooks=read']],
  'orgs/list-webhook-deliveries': [['organization_hooks=read']],
  'orgs/get-webhook-delivery': [['organization_hooks=read']],
  'repos/list-deploy-keys': [['administration=read']],
  'repos/create-deploy-key': [['administration=write']],
  'repos/get-deploy-key': [['administration=read']],
  'repos/delete-deploy-key': [['administration=write']],
  'actions/create-workflow-dispatch': [['actions=write']],
  'actions/get-workflow-run': [['actions=read']],
  'actions/list-workflow-runs': [['actions=read']],
  'apps/create-installation-access-token': 'app-jwt',
  // "Accessing this endpoint does not count against your REST API rate limit" and needs no permission.
  'rate-limit/get': 'none',
  // https://docs.github.com/en/rest/authentication/permissions-required-for-fine-grained-personal-access-tokens
  'repos/get-branch': [['metadata=read']],
  'repos/get-content': [['contents=read']],
  'git/get-ref': [['contents=read']],
  'git/list-matching-refs': [['contents=read']],
  'git/create-ref': [['contents=write']],
  'git/update-ref': [['contents=write']],
  'git/delete-ref': [['contents=write']],
  'git/get-commit': [['contents=read']],
  'git/create-blob': [['contents=write']],
  'git/create-tree': [['contents=write']],
  'git/create-commit': [['contents=write']],
  'pulls/list': [['pull_requests=read']],
  'pulls/get': [['pull_requests=read']],
  'pulls/create': [['pull_requests=write']],
  'pulls/update': [['pull_requests=write']],
  'pulls/merge': [['contents=write']],
  'checks/list-for-ref': [['checks=read']],
  'repos/get-combined-status-for-ref': [['statuses=read']],
};

/** An answer from a handler, before it is serialised, validated and recorded. */
class Answer {
  constructor(
    readonly status: number,
    readonly body?: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

const DOCS = 'https://docs.github.com/rest';
const error = (status: number, message: string, documentationUrl = DOCS, headers: Record<string, string> = {}) =>
  new Answer(status, { message, documentation_url: documentationUrl, status: String(status) }, headers);
const notFound = () => error(404, 'Not Found', DOCS);
/** GitHub's answer when a JSON-schema check of the input fails ("Invalid request.\n\n..."). */
const invalidRequest = (detail: string) => error(422, `Invalid request.\n\n${detail}`, DOCS);
const validationFailed = (resource: string, field: string, message: string, documentationUrl = DOCS) =>
  new Answer(422, { message: 'Validation Failed', errors: [{ resource, code: 'custom', field, message }], documentation_url: documentationUrl, status: '422' });

class StandinError extends Error {
  constructor(readonly answer: Answer) {
    super(String((answer.body as Json)?.message ?? answer.status));
  }
}
const fail = (answer: Answer): never => {
  throw new StandinError(answer);
};

// ---------------------------------------------------------------------------------------------
// The server

export async function startGitHubStandin(): Promise<GitHubStandin> {
  await sodium.ready;
  const { description } = githubDescription();
  const repositories = new Map<string, Repository>(); // by lower-case full name: GitHub names are case-insensitive
  const organizations = new Map<string, Organization>();
  const tokens = new Map<string, Grant>();
  const apps = new Map<number, App>();
  const installations = new Map<number, App>();
  const usedDeployKeys = new Map<string, number>(); // "type base64" -> key id, across the whole stand-in
  const requests: RequestRecord[] = [];
  const violations: string[] = [];
  const pending = new Set<Promise<unknown>>();
  const continuous = new Set<() => void>(); // stops for deliverContinuously loops, so close() cannot hang on one
  const intercepts: { match: Match; handler: InterceptHandler }[] = [];
  const corruptions: { match: Match; corrupt: (body: unknown) => unknown }[] = [];
  const drops: Match[] = [];
  const secondaryLimits: { remaining: number; retryAfterSeconds: number; match: Match }[] = [];
  let nextId = 1000;
  const newId = () => ++nextId;
  let baseUrl = '';

  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p);
    p.finally(() => pending.delete(p)).catch(() => {});
    return p;
  };

  const newKeyPair = (): KeyPair => {
    const { publicKey, privateKey } = sodium.crypto_box_keypair();
    // GitHub's key ids are long decimal strings, e.g. "568250167242549743".
    return { keyId: String(BigInt(`0x${randomBytes(7).toString('hex')}`)), publicKey, privateKey };
  };
  const newStore = (): SecretStore => ({ keyPair: newKeyPair(), secrets: new Map() });

  const repoOf = (fullName: string): Repository => repositories.get(lower(fullName)) ?? fail(notFound());
  const orgOf = (login: string): Organization => organizations.get(lower(login)) ?? fail(notFound());
  const storeOf = (scope: SecretScope): SecretStore => {
    if ('organization' in scope) return orgOf(scope.organization).store;
    const repo = repoOf(scope.repository);
    return scope.environment === undefined ? repo.store : repo.environments.get(scope.environment) ?? fail(notFound());
  };
  const hooksOf = (scope: HookScope) => ('organization' in scope ? orgOf(scope.organization).hooks : repoOf(scope.repository).hooks);
  const hookOf = (scope: HookScope, id: number) => hooksOf(scope).get(id) ?? fail(notFound());
  const unwrap = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof StandinError) throw new Error(`GitHub stand-in: ${e.message}`);
      throw e;
    }
  };

  // -- JSON shapes (only what the schemas require plus what clients read) --------------------

  const userJson = (login: string, type = 'User') => ({
    login, id: 1 + (Array.from(login).reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % 1_000_000), node_id: Buffer.from(`U_${login}`).toString('base64'),
    avatar_url: `https://avatars.githubusercontent.com/${login}`, gravatar_id: '', url: `${baseUrl}/users/${login}`, html_url: `https://github.com/${login}`,
    followers_url: `${baseUrl}/users/${login}/followers`, following_url: `${baseUrl}/users/${login}/following{/other_user}`, gists_url: `${baseUrl}/users/${login}/gists{/gist_id}`,
    starred_url: `${baseUrl}/users/${login}/starred{/owner}{/repo}`, subscriptions_url: `${baseUrl}/users/${login}/subscriptions`, organizations_url: `${baseUrl}/users/${login}/orgs`,
    repos_url: `${baseUrl}/users/${login}/repos`, events_url: `${baseUrl}/users/${login}/events{/privacy}`, received_events_url: `${baseUrl}/users/${login}/received_events`,
    type: organizations.has(lower(login)) ? 'Organization' : type, site_admin: false,
  });

  const repoJson = (repo: Repository) => {
    const api = `${baseUrl}/repos/${repo.fullName}`;
    const urls = Object.fromEntries(
      ['archive_url:/{archive_format}{/ref}', 'assignees_url:/assignees{/user}', 'blobs_url:/git/blobs{/sha}', 'branches_url:/branches{/branch}', 'collaborators_url:/collaborators{/collaborator}',
        'comments_url:/comments{/number}', 'commits_url:/commits{/sha}', 'compare_url:/compare/{base}...{head}', 'contents_url:/contents/{+path}', 'contributors_url:/contributors',
        'deployments_url:/deployments', 'downloads_url:/downloads', 'events_url:/events', 'forks_url:/forks', 'git_commits_url:/git/commits{/sha}', 'git_refs_url:/git/refs{/sha}',
        'git_tags_url:/git/tags{/sha}', 'issue_comment_url:/issues/comments{/number}', 'issue_events_url:/issues/events{/number}', 'issues_url:/issues{/number}', 'keys_url:/keys{/key_id}',
        'labels_url:/labels{/name}', 'languages_url:/languages', 'merges_url:/merges', 'milestones_url:/milestones{/number}', 'notifications_url:/notifications{?since,all,participating}',
        'pulls_url:/pulls{/number}', 'releases_url:/releases{/id}', 'stargazers_url:/stargazers', 'statuses_url:/statuses/{sha}', 'subscribers_url:/subscribers', 'subscription_url:/subscription',
        'tags_url:/tags', 'teams_url:/teams', 'trees_url:/git/trees{/sha}', 'hooks_url:/hooks'].map((e) => {
        const i = e.indexOf(':');
        return [e.slice(0, i), api + e.slice(i + 1)];
      }),
    );
    return {
      id: repo.id, node_id: Buffer.from(`R_${repo.id}`).toString('base64'), name: repo.name, full_name: repo.fullName, owner: userJson(repo.owner), private: true,
      html_url: `https://github.com/${repo.fullName}`, description: null, fork: false, url: api, ...urls,
      git_url: `git://github.com/${repo.fullName}.git`, ssh_url: `git@github.com:${repo.fullName}.git`, clone_url: `https://github.com/${repo.fullName}.git`,
      svn_url: `https://github.com/${repo.fullName}`, mirror_url: null, homepage: null, language: null, forks_count: 0, forks: 0, stargazers_count: 0, watchers_count: 0, watchers: 0,
      size: 0, default_branch: 'main', open_issues_count: 0, open_issues: 0, is_template: false, topics: [], has_issues: true, has_projects: false, has_wiki: false, has_pages: false,
      has_downloads: true, has_discussions: false, archived: false, disabled: false, visibility: 'private', license: null,
      pushed_at: repo.createdAt, created_at: repo.createdAt, updated_at: repo.createdAt, network_count: 0, subscribers_count: 0,
      permissions: { admin: true, maintain: true, push: true, triage: true, pull: true }, allow_forking: false, web_commit_signoff_required: false,
    };
  };

  const hookJson = (scope: HookScope, hook: Hook) => {
    const api = 'organization' in scope ? `${baseUrl}/orgs/${orgOf(scope.organization).login}/hooks/${hook.id}` : `${baseUrl}/repos/${repoOf(scope.repository).fullName}/hooks/${hook.id}`;
    return {
      type: 'organization' in scope ? 'Organization' : 'Repository', id: hook.id, name: 'web', active: hook.active, events: hook.events, config: configJson(hook),
      updated_at: isoSeconds(Date.parse(hook.updatedAt)), created_at: hook.createdAt, url: api, ...('organization' in scope ? {} : { test_url: `${api}/test` }),
      ping_url: `${api}/pings`, deliveries_url: `${api}/deliveries`, last_response: hook.lastResponse,
    };
  };
  /** GitHub never shows a hook's secret, only that there is one. */
  const configJson = (hook: Hook) => ({ url: hook.url, content_type: hook.contentType, insecure_ssl: hook.insecureSsl, ...(hook.secret ? { secret: '********' } : {}) });

  const deliveryItemJson = (d: Delivery, repositoryId: number | null) => ({
    id: d.id, guid: d.guid, delivered_at: d.deliveredAt, redelivery: d.redelivery, duration: d.duration, status: d.status, status_code: d.statusCode,
    event: d.event, action: d.action, installation_id: null, repository_id: repositoryId,
  });

  const deployKeyJson = (repo: Repository, k: DeployKey) => ({
    id: k.id, key: k.key, url: `${baseUrl}/repos/${repo.fullName}/keys/${k.id}`, title: k.title, verified: true, created_at: k.createdAt, read_only: k.readOnly,
    added_by: k.addedBy ?? null, last_used: null, enabled: true,
  });

  const runJson = (repo: Repository, run: Run) => {
    const api = `${baseUrl}/repos/${repo.fullName}/actions/runs/${run.id}`;
    return {
      id: run.id, name: run.workflow.file.replace(/\.ya?ml$/, ''), node_id: Buffer.from(`WFR_${run.id}`).toString('base64'), check_suite_id: run.id + 1, head_branch: run.ref.replace(/^refs\/(heads|tags)\//, ''),
      head_sha: repo.headSha, path: `.github/workflows/${run.workflow.file}`, run_number: run.runNumber, run_attempt: 1, event: 'workflow_dispatch', status: run.status, conclusion: run.conclusion,
      workflow_id: run.workflow.id, url: api, html_url: `https://github.com/${repo.fullName}/actions/runs/${run.id}`, pull_requests: [], created_at: run.createdAt, updated_at: run.updatedAt,
      actor: userJson(run.actor), triggering_actor: userJson(run.actor), run_started_at: run.startedAt, jobs_url: `${api}/jobs`, logs_url: `${api}/logs`,
      check_suite_url: `${baseUrl}/repos/${repo.fullName}/check-suites/${run.id + 1}`, artifacts_url: `${api}/artifacts`, cancel_url: `${api}/cancel`, rerun_url: `${api}/rerun`,
      previous_attempt_url: null, workflow_url: `${baseUrl}/repos/${repo.fullName}/actions/workflows/${run.workflow.id}`,
      head_commit: { id: repo.headSha, tree_id: repo.headSha.split('').reverse().join(''), message: 'Initial commit', timestamp: repo.createdAt, author: { name: 'octo', email: 'octo@example.com' }, committer: { name: 'GitHub', email: 'noreply@github.com' } },
      repository: repoJson(repo), head_repository: repoJson(repo), display_title: run.workflow.file.replace(/\.ya?ml$/, ''),
    };
  };

  /** page/per_page pagination with GitHub's Link header (https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api). */
  const paginate = <T>(items: T[], query: URLSearchParams, path: string) => {
    const perPage = Math.min(Number(query.get('per_page') ?? 30) || 30, 100);
    const page = Math.max(Number(query.get('page') ?? 1) || 1, 1);
    const last = Math.max(Math.ceil(items.length / perPage), 1);
    const link = (p: number, rel: string) => `<${baseUrl}${path}?per_page=${perPage}&page=${p}>; rel="${rel}"`;
    const links = [...(page < last ? [link(page + 1, 'next'), link(last, 'last')] : []), ...(page > 1 ? [link(1, 'first'), link(page - 1, 'prev')] : [])];
    const headers: Record<string, string> = links.length ? { link: links.join(', ') } : {};
    return { items: items.slice((page - 1) * perPage, page * perPage), headers };
  };

  // -- Secrets ---------------------------------------------------------------------------------

  /**
   * Secret names: alphanumerics or underscores, not starting with GITHUB_ or a digit; not case
   * sensitive and shown upper-case. https://docs.github.com/en/actions/security-guides/using-secrets-in-github-actions#naming-your-secrets
   */
  const secretName = (name: string) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || /^GITHUB_/i.test(name))
      fail(error(422, 'Failed to add secret. Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_). Spaces are not allowed. Must start with a letter ([a-z], [A-Z]) or underscores (_).'));
    return name.toUpperCase();
  };

  /**
   * PUT .../secrets/{name}: GitHub opens the sealed box with the scope's private key; a key_id
   * that is not the current key's, or a value that does not open, is refused with 422.
   * https://docs.github.com/en/rest/guides/encrypting-secrets-for-the-rest-api
   * 201 on create, 204 on update: https://docs.github.com/en/rest/actions/secrets#create-or-update-a-repository-secret
   */
  const putSecret = (store: SecretStore, rawName: string, body: Json, org?: boolean): Answer => {
    const name = secretName(rawName);
    if (body.key_id !== store.keyPair.keyId) return error(422, 'Bad request - invalid key_id.', `${DOCS}/actions/secrets`);
    let value: string;
    try {
      value = Buffer.from(sodium.crypto_box_seal_open(Buffer.from(body.encrypted_value, 'base64'), store.keyPair.publicKey, store.keyPair.privateKey)).toString('utf8');
    } catch {
      return error(422, 'Bad request - could not decrypt encrypted_value with the key named by key_id.', `${DOCS}/actions/secrets`);
    }
    // "Secrets are limited to 48 KB in size." https://docs.github.com/en/actions/security-guides/using-secrets-in-github-actions#limits-for-secrets
    if (Buffer.byteLength(value) > 48 * 1024) return error(422, 'Secret value is too large; secrets are limited to 48 KB.');
    const now = isoSeconds();
    const existing = store.secrets.get(name);
    const stored: StoredSecret = { value, createdAt: existing?.createdAt ?? now, updatedAt: now };
    if (org) {
      // "You can only provide a list of repository ids when the visibility is set to selected."
      if (body.selected_repository_ids && body.visibility !== 'selected') return error(422, 'selected_repository_ids can only be given when visibility is selected.');
      stored.visibility = body.visibility;
      if (body.visibility === 'selected') stored.selectedRepositoryIds = (body.selected_repository_ids ?? []).map(Number);
    }
    store.secrets.set(name, stored);
    return existing ? new Answer(204) : new Answer(201, {});
  };

  /** The secrets a workflow run in `repo` sees: org secrets it may use, overridden by the repository's, then the environment's. */
  const secretsForRun = (repo: Repository, environment?: string): Record<string, string> => {
    const out: Record<string, string> = {};
    const org = organizations.get(lower(repo.owner));
    // "If a secret with the same name exists at multiple levels, the secret at the lowest level takes precedence."
    // https://docs.github.com/en/actions/security-guides/using-secrets-in-github-actions#naming-your-secrets
    for (const [name, s] of org?.store.secrets ?? []) if (s.visibility !== 'selected' || s.selectedRepositoryIds?.includes(repo.id)) out[name] = s.value;
    for (const [name, s] of repo.store.secrets) out[name] = s.value;
    if (environment) for (const [name, s] of repo.environments.get(environment)?.secrets ?? []) out[name] = s.value;
    return out;
  };

  // -- Webhook deliveries ----------------------------------------------------------------------

  /**
   * A real POST of a delivery, signed as GitHub signs it: X-Hub-Signature-256 is "sha256=" and the
   * hex HMAC-SHA256 of the exact body with the hook's secret (X-Hub-Signature the same with SHA-1).
   * https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
   * https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers
   * Form hooks send payload=<url-encoded JSON>. GitHub waits 10 s for an answer:
   * https://docs.github.com/en/webhooks/using-webhooks/handling-webhook-deliveries#respond-within-10-seconds
   */
  const deliver = async (scope: HookScope, hook: Hook, event: string, payload: Record<string, unknown>): Promise<Delivery> => {
    const repo = 'repository' in scope ? repoOf(scope.repository) : undefined;
    const org = 'organization' in scope ? orgOf(scope.organization) : undefined;
    const full = { ...payload, ...(repo ? { repository: repoJson(repo) } : {}), ...(org ? { organization: { login: org.login, id: org.id, url: `${baseUrl}/orgs/${org.login}` } } : {}), sender: userJson('octocat') };
    const json = JSON.stringify(full);
    const body = hook.contentType === 'form' ? `payload=${encodeURIComponent(json)}` : json;
    const guid = randomUUID();
    const headers: Record<string, string> = {
      Accept: '*/*',
      'Content-Type': hook.contentType === 'form' ? 'application/x-www-form-urlencoded' : 'application/json',
      'User-Agent': 'GitHub-Hookshot/7b6a4e5',
      'X-GitHub-Delivery': guid,
      'X-GitHub-Event': event,
      'X-GitHub-Hook-ID': String(hook.id),
      'X-GitHub-Hook-Installation-Target-ID': String(repo?.id ?? org!.id),
      'X-GitHub-Hook-Installation-Target-Type': repo ? 'repository' : 'organization',
      ...(hook.secret
        ? { 'X-Hub-Signature': `sha1=${createHmac('sha1', hook.secret).update(body).digest('hex')}`, 'X-Hub-Signature-256': `sha256=${createHmac('sha256', hook.secret).update(body).digest('hex')}` }
        : {}),
    };
    const started = Date.now();
    let statusCode = 0;
    let status: string;
    let responseHeaders: Record<string, string> = {};
    let responseBody = '';
    try {
      const res = await fetch(hook.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000), redirect: 'manual' });
      statusCode = res.status;
      responseHeaders = Object.fromEntries(res.headers);
      responseBody = await res.text();
      // The Recent Deliveries view shows "OK" for a 2xx and "Invalid HTTP Response: <code>" otherwise.
      status = res.ok ? 'OK' : `Invalid HTTP Response: ${res.status}`;
    } catch (e) {
      status = (e as Error).name === 'TimeoutError' ? 'timed out' : 'failed to connect to host';
    }
    const delivery: Delivery = {
      id: newId() * 1000 + Math.floor(Math.random() * 1000), guid, event, action: typeof payload.action === 'string' ? payload.action : null, deliveredAt: isoSeconds(started),
      duration: (Date.now() - started) / 1000, status, statusCode, redelivery: false, url: hook.url, requestHeaders: headers, requestBody: body, responseHeaders, responseBody,
    };
    hook.deliveries.unshift(delivery);
    hook.lastResponse = { code: statusCode || null, status: statusCode >= 200 && statusCode < 300 ? 'active' : 'misconfigured', message: status };
    return delivery;
  };

  /** The ping event's payload. https://docs.github.com/en/webhooks/webhook-events-and-payloads#ping */
  const pingPayload = (scope: HookScope, hook: Hook) => ({ zen: 'Keep it logically awesome.', hook_id: hook.id, hook: hookJson(scope, hook) });

  // -- Authentication --------------------------------------------------------------------------

  /**
   * The app JWT: RS256, iss = app id, iat in the past (60 s of clock drift allowed), exp at most
   * 10 minutes after now. https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
   */
  const verifyAppJwt = (jwt: string): App => {
    const bad = (message: string) => fail(error(401, message, `${DOCS}`));
    const parts = jwt.split('.');
    if (parts.length !== 3) return bad('A JSON web token could not be decoded');
    let header: Json, claims: Json;
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    } catch {
      return bad('A JSON web token could not be decoded');
    }
    const app = apps.get(Number(claims.iss));
    if (header.alg !== 'RS256' || !app) return bad('A JSON web token could not be decoded');
    if (!verifySignature('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), app.publicKey, Buffer.from(parts[2], 'base64url'))) return bad('A JSON web token could not be decoded');
    const now = Math.floor(Date.now() / 1000);
    if (!Number.isInteger(claims.iat) || claims.iat > now + 60) return bad("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued");
    if (!Number.isInteger(claims.exp) || claims.exp <= now) return bad("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires");
    if (claims.exp > now + 600 + 30) return bad("'Expiration time' claim ('exp') is too far in the future");
    return app;
  };

  const bearer = (req: IncomingMessage) => /^(?:token|bearer)\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];

  const grantFor = (req: IncomingMessage): Grant => {
    const token = bearer(req);
    const grant = token ? tokens.get(token) : undefined;
    // https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#bad-credentials
    if (!grant || (grant.expiresAt && grant.expiresAt < Date.now())) return fail(error(401, 'Bad credentials', DOCS));
    return grant;
  };

  const has = (grant: Grant, permission: string) => {
    const [name, level] = permission.split('=');
    const granted = name === 'metadata' ? grant.permissions[name] ?? 'read' : grant.permissions[name];
    return granted === 'write' || (granted === 'read' && level === 'read');
  };

  /**
   * A token that cannot see a repository gets 404, so existence is not revealed; one that can see
   * it but lacks the permission gets 403 naming what is needed in X-Accepted-GitHub-Permissions
   * (sets separated by ";", permissions within a set by ","):
   * https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#resource-not-accessible
   */
  const authorize = (grant: Grant, operationId: string, params: Record<string, string>) => {
    if (params.owner && params.repo) {
      const repo = repoOf(`${params.owner}/${params.repo}`);
      if (grant.repositories && !grant.repositories.has(lower(repo.fullName))) fail(notFound());
      if (!grant.repositories && grant.organizations && !grant.organizations.has(lower(repo.owner))) fail(notFound());
    }
    if (params.org) {
      const org = orgOf(params.org);
      if (grant.organizations && !grant.organizations.has(lower(org.login))) fail(notFound());
    }
    const required = REQUIRED[operationId];
    if (!Array.isArray(required) || required.some((set) => set.every((p) => has(grant, p)))) return;
    const who = grant.kind === 'installation' ? 'integration' : 'personal access token';
    fail(error(403, `Resource not accessible by ${who}`, `${DOCS}/overview/permissions-required-for-fine-grained-personal-access-tokens`, { 'x-accepted-github-permissions': required.map((s) => s.join(',')).join('; ') }));
  };

  // -- Operations ------------------------------------------------------------------------------

  type Ctx = { params: Record<string, string>; query: URLSearchParams; body: Json; grant?: Grant; req: IncomingMessage; path: string };
  const repoIn = (c: Ctx) => repoOf(`${c.params.owner}/${c.params.repo}`);
  const hookIn = (c: Ctx): { scope: HookScope; hook: Hook } => {
    const scope: HookScope = c.params.org ? { organization: c.params.org } : { repository: `${c.params.owner}/${c.params.repo}` };
    return { scope, hook: hookOf(scope, Number(c.params.hook_id)) };
  };
  const publicKeyAnswer = (store: SecretStore) => new Answer(200, { key_id: store.keyPair.keyId, key: Buffer.from(store.keyPair.publicKey).toString('base64') });
  const secretAnswer = (store: SecretStore, name: string, org?: string) => {
    const s = store.secrets.get(name.toUpperCase()) ?? fail(notFound());
    return new Answer(200, {
      name: name.toUpperCase(), created_at: s.createdAt, updated_at: s.updatedAt,
      ...(org ? { visibility: s.visibility, ...(s.visibility === 'selected' ? { selected_repositories_url: `${baseUrl}/orgs/${org}/actions/secrets/${name.toUpperCase()}/repositories` } : {}) } : {}),
    });
  };
  const envStore = (c: Ctx) => repoIn(c).environments.get(c.params.environment_name) ?? fail(notFound());

  /**
   * PATCH .../hooks/{id}/config changes only the fields given; the others, the secret included,
   * stay (unlike PATCH .../hooks/{id}, where "if you previously had a secret set, you must provide
   * the same secret or set a new secret or the secret will be removed"). An empty secret removes it.
   * https://docs.github.com/en/rest/repos/webhooks#update-a-webhook-configuration-for-a-repository
   * https://docs.github.com/en/rest/repos/webhooks#update-a-repository-webhook
   */
  const patchConfig = (c: Ctx) => {
    const { scope, hook } = hookIn(c);
    if (c.body.url !== undefined) hook.url = c.body.url;
    if (c.body.content_type !== undefined) hook.contentType = c.body.content_type === 'form' ? 'form' : 'json';
    if (c.body.insecure_ssl !== undefined) hook.insecureSsl = String(c.body.insecure_ssl) === '1' ? '1' : '0';
    if (c.body.secret !== undefined) hook.secret = c.body.secret || undefined;
    hook.updatedAt = new Date().toISOString();
    return new Answer(200, configJson(hookOf(scope, hook.id)));
  };

  /** Ping answers 204 at once; the ping event is delivered just after. https://docs.github.com/en/rest/repos/webhooks#ping-a-repository-webhook */
  const ping = (c: Ctx) => {
    const { scope, hook } = hookIn(c);
    track(sleep(5).then(() => deliver(scope, hook, 'ping', pingPayload(scope, hook))));
    return new Answer(204);
  };

  /** Newest first, paged by an opaque cursor announced in the Link header. https://docs.github.com/en/rest/repos/webhooks#list-deliveries-for-a-repository-webhook */
  const listDeliveries = (c: Ctx) => {
    const { scope, hook } = hookIn(c);
    const perPage = Math.min(Number(c.query.get('per_page') ?? 30) || 30, 100);
    const cursor = c.query.get('cursor');
    let items = hook.deliveries;
    if (c.query.get('status')) items = items.filter((d) => (c.query.get('status') === 'success') === (d.status === 'OK'));
    const start = cursor ? items.findIndex((d) => String(d.id) === cursor) : 0;
    if (start < 0) return error(422, 'Invalid cursor');
    const page = items.slice(start, start + perPage);
    const next = items[start + perPage];
    const repositoryId = 'repository' in scope ? repoOf(scope.repository).id : null;
    return new Answer(200, page.map((d) => deliveryItemJson(d, repositoryId)), next ? { link: `<${baseUrl}${c.path}?per_page=${perPage}&cursor=${next.id}>; rel="next"` } : {});
  };

  const getDelivery = (c: Ctx) => {
    const { scope, hook } = hookIn(c);
    const d = hook.deliveries.find((x) => x.id === Number(c.params.delivery_id)) ?? fail(notFound());
    let payload: unknown;
    try {
      payload = JSON.parse(d.requestBody.startsWith('payload=') ? decodeURIComponent(d.requestBody.slice(8)) : d.requestBody);
    } catch {
      payload = {};
    }
    return new Answer(200, {
      ...deliveryItemJson(d, 'repository' in scope ? repoOf(scope.repository).id : null), url: d.url,
      request: { headers: d.requestHeaders, payload }, response: { headers: d.responseHeaders, payload: d.responseBody },
    });
  };

  /**
   * The key as GitHub stores it: "<type> <base64>", comment dropped; unique across all of GitHub.
   * https://docs.github.com/en/authentication/troubleshooting-ssh/error-key-already-in-use
   */
  const normaliseKey = (text: string): string | undefined => {
    const [type, b64] = text.trim().split(/\s+/);
    if (!type || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return undefined;
    const blob = Buffer.from(b64, 'base64');
    const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
    const ok = ['ssh-rsa', 'ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com'].includes(type);
    return ok && len > 0 && blob.subarray(4, 4 + len).toString() === type ? `${type} ${b64}` : undefined;
  };
  const addKey = (repo: Repository, key: string, title: string, readOnly: boolean, addedBy?: string): DeployKey | Answer => {
    const docs = `${DOCS}/deploy-keys/deploy-keys#create-a-deploy-key`;
    const normal = normaliseKey(key);
    if (!normal) return validationFailed('PublicKey', 'key', 'key is invalid. You must supply a key in OpenSSH public key format', docs);
    if (usedDeployKeys.has(normal)) return validationFailed('PublicKey', 'key', 'key is already in use', docs);
    const k: DeployKey = { id: newId(), key: normal, title, readOnly, addedBy, createdAt: isoSeconds() };
    repo.deployKeys.set(k.id, k);
    usedDeployKeys.set(normal, k.id);
    return k;
  };

  const workflowIn = (c: Ctx) => {
    const repo = repoIn(c);
    const id = c.params.workflow_id;
    const wf = repo.workflows.get(id) ?? [...repo.workflows.values()].find((w) => String(w.id) === id) ?? fail(notFound());
    return { repo, wf };
  };

  /**
   * Dispatch creates a run that goes queued -> in_progress -> completed on its own; with
   * return_run_details it answers 200 with the run's id and URLs, else 204.
   * https://docs.github.com/en/rest/actions/workflows#create-a-workflow-dispatch-event
   */
  const dispatch = (c: Ctx) => {
    const { repo, wf } = workflowIn(c);
    const now = isoSeconds();
    const inputs = Object.fromEntries(Object.entries<unknown>(c.body.inputs ?? {}).map(([k, v]) => [k, String(v)]));
    const run: Run = { id: newId() * 10, workflow: wf, runNumber: ++wf.runNumber, status: 'queued', conclusion: null, inputs, ref: c.body.ref, actor: c.grant?.actor ?? 'octocat', createdAt: now, updatedAt: now, startedAt: now };
    repo.runs.set(run.id, run);
    track(
      (async () => {
        await sleep(10);
        Object.assign(run, { status: 'in_progress', updatedAt: isoSeconds() });
        let conclusion: Conclusion;
        try {
          conclusion = await wf.handler({ inputs, secrets: secretsForRun(repo, wf.environment), ref: run.ref, runId: run.id });
        } catch {
          conclusion = 'failure';
        }
        Object.assign(run, { status: 'completed', conclusion: conclusion === 'success' ? 'success' : 'failure', updatedAt: isoSeconds() });
      })(),
    );
    if (c.body.return_run_details !== true) return new Answer(204);
    const run_url = `${baseUrl}/repos/${repo.fullName}/actions/runs/${run.id}`;
    return new Answer(200, { workflow_run_id: run.id, run_url, html_url: `https://github.com/${repo.fullName}/actions/runs/${run.id}` });
  };

  /**
   * An installation token carries the installation's permissions (or the subset asked for) and
   * expires after an hour. https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
   */
  const installationToken = (c: Ctx) => {
    const token = bearer(c.req);
    if (!token) return error(401, 'A JSON web token could not be decoded');
    const app = verifyAppJwt(token);
    const installation = installations.get(Number(c.params.installation_id));
    if (!installation || installation !== app) return notFound();
    const permissions: Permissions = { ...(c.body.permissions ?? installation.permissions) };
    for (const [name, level] of Object.entries(permissions)) {
      const has = installation.permissions[name];
      if (!(has === 'write' || (has === 'read' && level === 'read'))) return error(422, 'The permissions requested are not granted to this installation.');
    }
    let repos = installation.repositories;
    if (c.body.repositories || c.body.repository_ids) {
      const wanted = [
        ...(c.body.repositories ?? []).map((n: string) => (n.includes('/') ? n : `${[...(installation.organizations ?? [])][0] ?? ''}/${n}`)),
        ...(c.body.repository_ids ?? []).map((id: number) => [...repositories.values()].find((r) => r.id === id)?.fullName ?? `#${id}`),
      ].map(lower);
      if (wanted.some((w: string) => !repositories.has(w) || (installation.repositories && !installation.repositories.has(w)))) return error(422, 'There is at least one repository that does not exist or is not accessible to the parent installation.');
      repos = new Set(wanted);
    }
    const value = `ghs_${randomBytes(27).toString('base64url').slice(0, 36)}`;
    const expiresAt = Date.now() + 3600_000;
    tokens.set(value, { kind: 'installation', permissions: { metadata: 'read', ...permissions }, repositories: repos, organizations: installation.organizations, actor: `${installation.slug}[bot]`, expiresAt, used: 0, resetAt: Date.now() + 3600_000 });
    return new Answer(201, { token: value, expires_at: isoSeconds(expiresAt), permissions: { metadata: 'read', ...permissions }, repository_selection: repos ? 'selected' : 'all' });
  };

  const rateLimitAnswer = (grant: Grant | undefined) => {
    const core = { limit: 5000, used: grant?.used ?? 0, remaining: 5000 - (grant?.used ?? 0), reset: Math.floor((grant?.resetAt ?? Date.now() + 3600_000) / 1000) };
    const idle = (limit: number) => ({ limit, used: 0, remaining: limit, reset: core.reset });
    return new Answer(200, { resources: { core, search: idle(30), graphql: idle(5000), integration_manifest: idle(5000), code_search: idle(10) }, rate: core });
  };

  // -- Git: blobs, trees, commits, refs; pull requests; branch protection; checks and statuses --

  /**
   * Objects are content-addressed as git addresses them: the same blob, tree or commit (same
   * parents, author, committer, dates and message) is the same sha, so creating it twice is a
   * no-op. Blobs and commits are hashed in git's own object format; a tree here is flat (path ->
   * blob sha, no sub-trees), hashed from its sorted entries.
   * https://docs.github.com/en/rest/git/commits#create-a-commit
   */
  const gitHash = (kind: string, body: Buffer) => createHash('sha1').update(Buffer.concat([Buffer.from(`${kind} ${body.length}\0`), body])).digest('hex');
  const putBlob = (repo: Repository, content: Buffer) => {
    const sha = gitHash('blob', content);
    repo.git.blobs.set(sha, content);
    return sha;
  };
  const putTree = (repo: Repository, files: Map<string, string>) => {
    const sorted = new Map([...files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const sha = gitHash('tree', Buffer.from([...sorted].map(([p, s]) => `100644 ${p}\0${s}`).join('')));
    repo.git.trees.set(sha, sorted);
    return sha;
  };
  const gitDate = (iso: string) => `${Math.floor(Date.parse(iso) / 1000)} +0000`;
  const putCommit = (repo: Repository, c: Omit<GitCommit, 'sha'>) => {
    const text = [`tree ${c.tree}`, ...c.parents.map((p) => `parent ${p}`), `author ${c.author.name} <${c.author.email}> ${gitDate(c.author.date)}`, `committer ${c.committer.name} <${c.committer.email}> ${gitDate(c.committer.date)}`, '', c.message].join('\n');
    const sha = gitHash('commit', Buffer.from(text));
    if (!repo.git.commits.has(sha)) repo.git.commits.set(sha, { ...c, sha });
    return sha;
  };
  const commitOf = (repo: Repository, sha: string) => repo.git.commits.get(sha);
  const filesAt = (repo: Repository, sha: string) => repo.git.trees.get(commitOf(repo, sha)!.tree)!;
  /** A branch, a full sha, or "heads/x"/"refs/heads/x". */
  const resolve = (repo: Repository, ref: string): string | undefined => {
    if (/^[0-9a-f]{40}$/.test(ref) && repo.git.commits.has(ref)) return ref;
    const name = ref.replace(/^refs\//, '');
    return repo.git.refs.get(name) ?? repo.git.refs.get(`heads/${name}`);
  };
  const ancestors = (repo: Repository, sha: string): Set<string> => {
    const seen = new Set<string>();
    const todo = [sha];
    while (todo.length) {
      const s = todo.pop()!;
      if (seen.has(s)) continue;
      seen.add(s);
      todo.push(...(commitOf(repo, s)?.parents ?? []));
    }
    return seen;
  };
  const commitUrl = (repo: Repository, sha: string) => `${baseUrl}/repos/${repo.fullName}/git/commits/${sha}`;
  const gitCommitJson = (repo: Repository, c: GitCommit) => ({
    sha: c.sha, node_id: Buffer.from(`C_${c.sha}`).toString('base64'), url: commitUrl(repo, c.sha), html_url: `https://github.com/${repo.fullName}/commit/${c.sha}`,
    author: c.author, committer: c.committer, message: c.message, tree: { sha: c.tree, url: `${baseUrl}/repos/${repo.fullName}/git/trees/${c.tree}` },
    parents: c.parents.map((p) => ({ sha: p, url: commitUrl(repo, p), html_url: `https://github.com/${repo.fullName}/commit/${p}` })),
    verification: { verified: false, reason: 'unsigned', signature: null, payload: null, verified_at: null },
  });
  /** The `commit` shape (GET .../branches/{branch} and others). */
  const commitJson = (repo: Repository, c: GitCommit) => ({
    url: `${baseUrl}/repos/${repo.fullName}/commits/${c.sha}`, sha: c.sha, node_id: Buffer.from(`C_${c.sha}`).toString('base64'), html_url: `https://github.com/${repo.fullName}/commit/${c.sha}`,
    comments_url: `${baseUrl}/repos/${repo.fullName}/commits/${c.sha}/comments`,
    commit: { url: commitUrl(repo, c.sha), author: c.author, committer: c.committer, message: c.message, comment_count: 0, tree: { sha: c.tree, url: `${baseUrl}/repos/${repo.fullName}/git/trees/${c.tree}` } },
    author: null, committer: null, parents: c.parents.map((p) => ({ sha: p, url: `${baseUrl}/repos/${repo.fullName}/commits/${p}`, html_url: `https://github.com/${repo.fullName}/commit/${p}` })),
  });
  const refJson = (repo: Repository, name: string, sha: string) => ({
    ref: `refs/${name}`, node_id: Buffer.from(`REF_${repo.id}_${name}`).toString('base64'), url: `${baseUrl}/repos/${repo.fullName}/git/refs/${name}`,
    object: { type: 'commit', sha, url: commitUrl(repo, sha) },
  });

  /** Moves a ref and lets the repository's CI see a new branch head (as a push would). */
  const setRef = (repo: Repository, name: string, sha: string) => {
    repo.git.refs.set(name, sha);
    if (name.startsWith('heads/')) runChecks(repo, sha);
  };

  /** CI that reports on every new branch head: queued at once, completed just after, like GitHub Actions after a push. */
  const runChecks = (repo: Repository, sha: string) => {
    for (const ci of repo.ci) {
      if (repo.checkRuns.some((r) => r.headSha === sha && r.name === ci.name && r.appId === ci.appId)) continue;
      const run: CheckRun = { id: newId(), headSha: sha, name: ci.name, appId: ci.appId, appSlug: ci.appSlug, status: 'queued', conclusion: null, startedAt: isoSeconds(), completedAt: null };
      repo.checkRuns.push(run);
      track(
        (async () => {
          await sleep(ci.delayMs);
          Object.assign(run, { status: 'in_progress' });
          let conclusion: CheckConclusion;
          try {
            conclusion = await ci.handler({ sha, file: (path) => fileAt(repo, sha, path) });
          } catch {
            conclusion = 'failure';
          }
          Object.assign(run, { status: 'completed', conclusion, completedAt: isoSeconds() });
        })(),
      );
    }
  };
  const fileAt = (repo: Repository, ref: string, path: string) => {
    const sha = resolve(repo, ref);
    const blob = sha && filesAt(repo, sha).get(path);
    return blob ? repo.git.blobs.get(blob)!.toString('utf8') : undefined;
  };

  /**
   * Is each required check green on `sha`? A check run counts only from the app a protection rule
   * names (app_id), a commit status from anyone; success, neutral and skipped pass.
   * https://docs.github.com/en/repositories/configuring-branches-and-merges-in-your-repository/managing-protected-branches/troubleshooting-required-status-checks
   */
  const missingCheck = (repo: Repository, branch: string, sha: string): string | undefined => {
    const rule = repo.protection.get(branch);
    for (const { context, appId } of rule?.checks ?? []) {
      const runs = repo.checkRuns.filter((r) => r.headSha === sha && r.name === context && (appId === undefined || appId === r.appId));
      const latest = runs.sort((a, b) => b.id - a.id)[0];
      const status = latestStatuses(repo, sha).find((s) => s.context === context);
      const ok = (latest?.status === 'completed' && ['success', 'neutral', 'skipped'].includes(latest.conclusion ?? '')) || (appId === undefined && status?.state === 'success');
      if (!ok) return context;
    }
    return undefined;
  };
  const latestStatuses = (repo: Repository, sha: string) => {
    const byContext = new Map<string, CommitStatus>();
    for (const s of repo.statuses.filter((x) => x.sha === sha).sort((a, b) => b.id - a.id)) if (!byContext.has(s.context)) byContext.set(s.context, s);
    return [...byContext.values()];
  };

  const appJson = (id: number, slug: string) => ({
    id, slug, node_id: Buffer.from(`A_${id}`).toString('base64'), owner: userJson('github'), name: slug, description: null, external_url: `https://github.com/apps/${slug}`,
    html_url: `https://github.com/apps/${slug}`, created_at: '2020-01-01T00:00:00Z', updated_at: '2020-01-01T00:00:00Z', permissions: { checks: 'write', metadata: 'read' }, events: [],
  });
  const checkRunJson = (repo: Repository, r: CheckRun) => ({
    id: r.id, head_sha: r.headSha, node_id: Buffer.from(`CR_${r.id}`).toString('base64'), external_id: null, url: `${baseUrl}/repos/${repo.fullName}/check-runs/${r.id}`,
    html_url: `https://github.com/${repo.fullName}/runs/${r.id}`, details_url: null, status: r.status, conclusion: r.conclusion, started_at: r.startedAt, completed_at: r.completedAt,
    output: { title: null, summary: null, text: null, annotations_count: 0, annotations_url: `${baseUrl}/repos/${repo.fullName}/check-runs/${r.id}/annotations` },
    name: r.name, check_suite: { id: r.id + 1 }, app: appJson(r.appId, r.appSlug), pull_requests: [],
  });
  const statusJson = (repo: Repository, s: CommitStatus) => ({
    description: null, id: s.id, node_id: Buffer.from(`ST_${s.id}`).toString('base64'), state: s.state, context: s.context, target_url: null, avatar_url: null,
    url: `${baseUrl}/repos/${repo.fullName}/statuses/${s.sha}`, created_at: s.at, updated_at: s.at,
  });

  const pullJson = (repo: Repository, pr: Pull, full: boolean) => {
    const api = `${baseUrl}/repos/${repo.fullName}/pulls/${pr.number}`;
    const issue = `${baseUrl}/repos/${repo.fullName}/issues/${pr.number}`;
    const headRepo = repositories.get(lower(pr.headRepo)) ?? repo;
    const headSha = resolve(headRepo, `heads/${pr.head}`) ?? pr.headSha;
    const side = (r: Repository, ref: string, sha: string) => ({ label: `${r.owner}:${ref}`, ref, repo: repoJson(r), sha, user: userJson(r.owner) });
    const link = (href: string) => ({ href });
    return {
      url: api, id: pr.number * 7919, node_id: Buffer.from(`PR_${repo.id}_${pr.number}`).toString('base64'), html_url: `https://github.com/${repo.fullName}/pull/${pr.number}`,
      diff_url: `https://github.com/${repo.fullName}/pull/${pr.number}.diff`, patch_url: `https://github.com/${repo.fullName}/pull/${pr.number}.patch`, issue_url: issue,
      commits_url: `${api}/commits`, review_comments_url: `${api}/comments`, review_comment_url: `${baseUrl}/repos/${repo.fullName}/pulls/comments{/number}`, comments_url: `${issue}/comments`,
      statuses_url: `${baseUrl}/repos/${repo.fullName}/statuses/${headSha}`, number: pr.number, state: pr.state, locked: false, title: pr.title, user: userJson(pr.user),
      body: pr.body ?? null, labels: [], milestone: null, created_at: pr.createdAt, updated_at: pr.updatedAt, closed_at: pr.closedAt, merged_at: pr.mergedAt,
      merge_commit_sha: pr.mergeCommitSha, assignee: null, assignees: [], requested_reviewers: [], requested_teams: [],
      head: side(headRepo, pr.head, headSha), base: side(repo, pr.base, resolve(repo, `heads/${pr.base}`) ?? pr.headSha),
      _links: { self: link(api), html: link(`https://github.com/${repo.fullName}/pull/${pr.number}`), issue: link(issue), comments: link(`${issue}/comments`), review_comments: link(`${api}/comments`), review_comment: link(`${baseUrl}/repos/${repo.fullName}/pulls/comments{/number}`), commits: link(`${api}/commits`), statuses: link(`${baseUrl}/repos/${repo.fullName}/statuses/${headSha}`) },
      author_association: 'MEMBER', auto_merge: null, draft: false,
      ...(full
        ? { merged: pr.mergedAt !== null, mergeable: pr.state === 'open' ? true : null, rebaseable: pr.state === 'open' ? true : null, mergeable_state: pr.state === 'open' ? 'clean' : 'unknown', merged_by: pr.mergedBy ? userJson(pr.mergedBy) : null,
            comments: 0, review_comments: 0, maintainer_can_modify: false, commits: 1, additions: 1, deletions: 1, changed_files: 1 }
        : {}),
    };
  };

  /** A three-way merge of flat trees; undefined on a conflict (both sides changed a file differently). */
  const mergeFiles = (base: Map<string, string>, ours: Map<string, string>, theirs: Map<string, string>): Map<string, string> | undefined => {
    const out = new Map<string, string>();
    for (const path of new Set([...base.keys(), ...ours.keys(), ...theirs.keys()])) {
      const [b, o, t] = [base.get(path), ours.get(path), theirs.get(path)];
      const pick = o === t ? o : o === b ? t : t === b ? o : null;
      if (pick === null) return undefined;
      if (pick !== undefined) out.set(path, pick);
    }
    return out;
  };
  const mergeBase = (repo: Repository, a: string, b: string) => {
    const ofA = ancestors(repo, a);
    // Breadth-first from b: the first commit that is also an ancestor of a.
    const queue = [b];
    const seen = new Set<string>();
    while (queue.length) {
      const s = queue.shift()!;
      if (ofA.has(s)) return s;
      if (seen.has(s)) continue;
      seen.add(s);
      queue.push(...(commitOf(repo, s)?.parents ?? []));
    }
    return undefined;
  };

  /**
   * PUT .../pulls/{n}/merge: 409 when `sha` is not the head; 405 when the PR is closed, conflicts,
   * misses a required check, or (strict protection) is behind its base.
   * https://docs.github.com/en/rest/pulls/pulls#merge-a-pull-request
   */
  const mergePull = (c: Ctx) => {
    const repo = repoIn(c);
    const pr = repo.pulls.get(Number(c.params.pull_number)) ?? fail(notFound());
    const notAllowed = (message: string) => new Answer(405, { message, documentation_url: `${DOCS}/pulls/pulls#merge-a-pull-request` });
    if (pr.state !== 'open') return notAllowed('Pull Request is not mergeable');
    const head = resolve(repo, `heads/${pr.head}`);
    const base = resolve(repo, `heads/${pr.base}`);
    if (!head || !base) return notAllowed('Pull Request is not mergeable');
    if (c.body.sha !== undefined && c.body.sha !== head) return new Answer(409, { message: 'Head branch was modified. Review and try the merge again.', documentation_url: `${DOCS}/pulls/pulls#merge-a-pull-request` });
    const rule = repo.protection.get(pr.base);
    const missing = missingCheck(repo, pr.base, head);
    if (missing) return notAllowed(`Required status check "${missing}" is expected.`);
    if (rule?.strict && !ancestors(repo, head).has(base)) return notAllowed('Head branch is not up to date with the base branch.');
    const files = mergeFiles(filesAt(repo, mergeBase(repo, head, base)!), filesAt(repo, base), filesAt(repo, head));
    if (!files) return notAllowed('Pull Request is not mergeable');
    const method = c.body.merge_method ?? 'merge';
    const now = isoSeconds();
    const merger = { name: 'GitHub', email: 'noreply@github.com', date: now };
    const headCommit = commitOf(repo, head)!;
    const title = c.body.commit_title ?? (method === 'merge' ? `Merge pull request #${pr.number} from ${repo.owner}/${pr.head}` : `${pr.title} (#${pr.number})`);
    const message = c.body.commit_message !== undefined ? `${title}\n\n${c.body.commit_message}` : title;
    const tree = putTree(repo, files);
    const sha =
      method === 'merge'
        ? putCommit(repo, { tree, parents: [base, head], author: merger, committer: merger, message })
        : method === 'squash'
          ? putCommit(repo, { tree, parents: [base], author: headCommit.author, committer: merger, message })
          : putCommit(repo, { tree, parents: [base], author: headCommit.author, committer: merger, message: headCommit.message });
    setRef(repo, `heads/${pr.base}`, sha);
    Object.assign(pr, { state: 'closed', mergedAt: now, closedAt: now, updatedAt: now, mergeCommitSha: sha, mergedBy: c.grant?.actor ?? 'octocat', mergeMethod: method, headSha: head });
    return new Answer(200, { sha, merged: true, message: 'Pull Request successfully merged' });
  };

  const createPull = (c: Ctx) => {
    const repo = repoIn(c);
    const [headOwner, headRef] = String(c.body.head ?? '').includes(':') ? String(c.body.head).split(':') : [repo.owner, String(c.body.head ?? '')];
    const headRepo = lower(headOwner) === lower(repo.owner) ? repo : [...repositories.values()].find((r) => lower(r.owner) === lower(headOwner) && r.name === repo.name);
    const invalid = (field: string, message?: string) => new Answer(422, { message: 'Validation Failed', errors: [{ resource: 'PullRequest', code: message ? 'custom' : 'invalid', field, ...(message ? { message } : {}) }], documentation_url: `${DOCS}/pulls/pulls#create-a-pull-request`, status: '422' });
    const head = headRepo && resolve(headRepo, `heads/${headRef}`);
    if (!headRepo || !head) return invalid('head');
    const base = resolve(repo, `heads/${c.body.base}`);
    if (!base) return invalid('base');
    if (ancestors(repo, base).has(head)) return invalid('', `No commits between ${c.body.base} and ${headRef}`);
    if ([...repo.pulls.values()].some((p) => p.state === 'open' && p.head === headRef && lower(p.headRepo) === lower(headRepo.fullName) && p.base === c.body.base))
      return invalid('', `A pull request already exists for ${headRepo.owner}:${headRef}.`);
    const now = isoSeconds();
    const pr: Pull = { number: ++repo.lastIssue, title: c.body.title ?? headRef, body: c.body.body, head: headRef, headRepo: headRepo.fullName, headSha: head, base: c.body.base, state: 'open', user: c.grant?.actor ?? 'octocat', createdAt: now, updatedAt: now, closedAt: null, mergedAt: null, mergeCommitSha: null };
    repo.pulls.set(pr.number, pr);
    return new Answer(201, pullJson(repo, pr, true), { location: `${baseUrl}/repos/${repo.fullName}/pulls/${pr.number}` });
  };

  /** The ref parameter of .../git/ref/{ref} and friends: "heads/x", never "refs/heads/x". */
  const refParam = (c: Ctx) => c.params.ref.replace(/^refs\//, '');

  const gitHandlers: Record<string, (c: Ctx) => Answer> = {
    'repos/get-branch': (c) => {
      const repo = repoIn(c);
      const sha = repo.git.refs.get(`heads/${c.params.branch}`) ?? fail(error(404, 'Branch not found'));
      const rule = repo.protection.get(c.params.branch);
      const api = `${baseUrl}/repos/${repo.fullName}/branches/${c.params.branch}`;
      const checks = (rule?.checks ?? []).map((k) => ({ context: k.context, app_id: k.appId ?? null }));
      return new Answer(200, {
        name: c.params.branch, commit: commitJson(repo, commitOf(repo, sha)!), _links: { html: `https://github.com/${repo.fullName}/tree/${c.params.branch}`, self: api }, protected: !!rule,
        protection: rule
          ? { enabled: true, required_status_checks: { enforcement_level: 'non_admins', contexts: checks.map((k) => k.context), checks, strict: rule.strict } }
          : { enabled: false, required_status_checks: { enforcement_level: 'off', contexts: [], checks: [] } },
        protection_url: `${api}/protection`,
      });
    },
    'repos/get-content': (c) => {
      const repo = repoIn(c);
      const sha = resolve(repo, c.query.get('ref') ?? 'main') ?? fail(error(404, `No commit found for the ref ${c.query.get('ref')}`));
      const blob = filesAt(repo, sha).get(c.params.path) ?? fail(notFound());
      const content = repo.git.blobs.get(blob)!;
      const url = `${baseUrl}/repos/${repo.fullName}/contents/${c.params.path}?ref=${c.query.get('ref') ?? 'main'}`;
      const git = `${baseUrl}/repos/${repo.fullName}/git/blobs/${blob}`;
      const html = `https://github.com/${repo.fullName}/blob/${c.query.get('ref') ?? 'main'}/${c.params.path}`;
      // GitHub wraps the base64 at 60 characters.
      const b64 = content.toString('base64').replace(/.{60}/g, '$&\n');
      return new Answer(200, { type: 'file', encoding: 'base64', size: content.length, name: c.params.path.split('/').pop(), path: c.params.path, content: b64, sha: blob, url, git_url: git, html_url: html, download_url: null, _links: { git, html, self: url } });
    },
    'git/get-ref': (c) => {
      const repo = repoIn(c);
      const sha = repo.git.refs.get(refParam(c)) ?? fail(notFound());
      return new Answer(200, refJson(repo, refParam(c), sha));
    },
    'git/list-matching-refs': (c) => {
      const repo = repoIn(c);
      const prefix = refParam(c);
      return new Answer(200, [...repo.git.refs].filter(([name]) => name.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, sha]) => refJson(repo, name, sha)));
    },
    'git/create-ref': (c) => {
      const repo = repoIn(c);
      const ref = String(c.body.ref);
      if (!/^refs\/[^/]+\/.+/.test(ref)) return error(422, 'Reference name must start with \'refs/\' and have at least two slashes.');
      const name = ref.slice('refs/'.length);
      if (repo.git.refs.has(name)) return error(422, 'Reference already exists');
      if (!repo.git.commits.has(c.body.sha)) return error(422, 'Object does not exist');
      setRef(repo, name, c.body.sha);
      return new Answer(201, refJson(repo, name, c.body.sha), { location: `${baseUrl}/repos/${repo.fullName}/git/refs/${name}` });
    },
    'git/update-ref': (c) => {
      const repo = repoIn(c);
      const name = refParam(c);
      const now = repo.git.refs.get(name) ?? fail(error(422, 'Reference does not exist'));
      if (!repo.git.commits.has(c.body.sha)) return error(422, 'Object does not exist');
      if (c.body.force !== true && !ancestors(repo, c.body.sha).has(now)) return error(422, 'Update is not a fast forward');
      // A branch that requires status checks takes changes through pull requests only.
      const branch = name.startsWith('heads/') ? name.slice('heads/'.length) : undefined;
      if (branch && repo.protection.get(branch)?.checks.length) return error(422, `Protected branch update failed for refs/${name}.`);
      setRef(repo, name, c.body.sha);
      return new Answer(200, refJson(repo, name, c.body.sha));
    },
    'git/delete-ref': (c) => {
      const repo = repoIn(c);
      const name = refParam(c);
      // The description declares no body for this 422.
      if (!repo.git.refs.has(name) || name === 'heads/main') return new Answer(422);
      repo.git.refs.delete(name);
      return new Answer(204);
    },
    'git/get-commit': (c) => {
      const repo = repoIn(c);
      return new Answer(200, gitCommitJson(repo, commitOf(repo, c.params.commit_sha) ?? fail(notFound())));
    },
    'git/create-blob': (c) => {
      const repo = repoIn(c);
      const content = c.body.encoding === 'base64' ? Buffer.from(String(c.body.content), 'base64') : Buffer.from(String(c.body.content), 'utf8');
      const sha = putBlob(repo, content);
      return new Answer(201, { url: `${baseUrl}/repos/${repo.fullName}/git/blobs/${sha}`, sha }, { location: `${baseUrl}/repos/${repo.fullName}/git/blobs/${sha}` });
    },
    'git/create-tree': (c) => {
      const repo = repoIn(c);
      const files = new Map(c.body.base_tree ? repo.git.trees.get(c.body.base_tree) ?? fail(error(422, 'base_tree is not a valid tree oid')) : []);
      for (const e of c.body.tree as Json[]) {
        if (e.type !== 'blob') return error(422, 'only blobs are modelled by the stand-in');
        if (e.sha === null) files.delete(e.path);
        else if (e.content !== undefined) files.set(e.path, putBlob(repo, Buffer.from(String(e.content))));
        else if (repo.git.blobs.has(e.sha)) files.set(e.path, e.sha);
        else return error(422, `tree.sha ${e.sha} is not a valid blob`);
      }
      const sha = putTree(repo, files);
      const tree = [...files].map(([path, blob]) => ({ path, mode: '100644', type: 'blob', sha: blob, size: repo.git.blobs.get(blob)!.length, url: `${baseUrl}/repos/${repo.fullName}/git/blobs/${blob}` }));
      return new Answer(201, { sha, url: `${baseUrl}/repos/${repo.fullName}/git/trees/${sha}`, tree, truncated: false }, { location: `${baseUrl}/repos/${repo.fullName}/git/trees/${sha}` });
    },
    'git/create-commit': (c) => {
      const repo = repoIn(c);
      if (!repo.git.trees.has(c.body.tree)) return error(422, 'Tree SHA does not exist');
      const parents: string[] = c.body.parents ?? [];
      if (parents.some((p) => !repo.git.commits.has(p))) return error(422, 'Parent SHA does not exist or is not a commit object');
      const now = isoSeconds();
      const who = (w: Json | undefined, fallback: Json) => ({ name: w?.name ?? fallback.name, email: w?.email ?? fallback.email, date: w?.date ? isoSeconds(Date.parse(w.date)) : now });
      const author = who(c.body.author, { name: c.grant?.actor ?? 'octocat', email: `${c.grant?.actor ?? 'octocat'}@users.noreply.github.com` });
      const committer = who(c.body.committer ?? c.body.author, author);
      const sha = putCommit(repo, { tree: c.body.tree, parents, author, committer, message: String(c.body.message) });
      return new Answer(201, gitCommitJson(repo, commitOf(repo, sha)!), { location: commitUrl(repo, sha) });
    },
    'pulls/list': (c) => {
      const repo = repoIn(c);
      const state = c.query.get('state') ?? 'open';
      const head = c.query.get('head');
      const base = c.query.get('base');
      // head=owner:branch filters by the head repository's owner and the branch name.
      const pulls = [...repo.pulls.values()]
        .filter((p) => (state === 'all' || p.state === state) && (!base || p.base === base) && (!head || lower(head) === lower(`${repositories.get(lower(p.headRepo))?.owner ?? ''}:${p.head}`)))
        .reverse();
      const page = paginate(pulls, c.query, c.path);
      return new Answer(200, page.items.map((p) => pullJson(repo, p, false)), page.headers);
    },
    'pulls/get': (c) => {
      const repo = repoIn(c);
      return new Answer(200, pullJson(repo, repo.pulls.get(Number(c.params.pull_number)) ?? fail(notFound()), true));
    },
    'pulls/create': createPull,
    'pulls/update': (c) => {
      const repo = repoIn(c);
      const pr = repo.pulls.get(Number(c.params.pull_number)) ?? fail(notFound());
      const now = isoSeconds();
      if (c.body.title !== undefined) pr.title = c.body.title;
      if (c.body.body !== undefined) pr.body = c.body.body;
      // "The name of the branch you want your changes pulled into": an open pull request may be retargeted.
      if (c.body.base !== undefined) {
        if (pr.state !== 'open' || !repo.git.refs.has(`heads/${c.body.base}`)) return invalidRequest(`base ${c.body.base} is not a branch of ${repo.fullName}`);
        pr.base = c.body.base;
      }
      if (c.body.state === 'closed' && pr.state === 'open') Object.assign(pr, { state: 'closed', closedAt: now });
      if (c.body.state === 'open' && pr.state === 'closed') {
        if (pr.mergedAt) return error(422, 'Cannot reopen a merged pull request');
        Object.assign(pr, { state: 'open', closedAt: null });
      }
      pr.updatedAt = now;
      return new Answer(200, pullJson(repo, pr, true));
    },
    'pulls/merge': mergePull,
    'checks/list-for-ref': (c) => {
      const repo = repoIn(c);
      const sha = resolve(repo, c.params.ref) ?? fail(notFound());
      const name = c.query.get('check_name');
      const appId = c.query.get('app_id');
      let runs = repo.checkRuns.filter((r) => r.headSha === sha && (!name || r.name === name) && (!appId || String(r.appId) === appId)).sort((a, b) => b.id - a.id);
      // filter=latest (the default): the newest run of each name from each app.
      if ((c.query.get('filter') ?? 'latest') === 'latest') runs = runs.filter((r, i) => runs.findIndex((x) => x.name === r.name && x.appId === r.appId) === i);
      const page = paginate(runs, c.query, c.path);
      return new Answer(200, { total_count: runs.length, check_runs: page.items.map((r) => checkRunJson(repo, r)) }, page.headers);
    },
    'repos/get-combined-status-for-ref': (c) => {
      const repo = repoIn(c);
      const sha = resolve(repo, c.params.ref) ?? fail(notFound());
      const statuses = latestStatuses(repo, sha);
      // "failure if any of the contexts report as error or failure; pending if there are no statuses or a context is pending; success otherwise"
      const state = statuses.some((s) => s.state === 'failure' || s.state === 'error') ? 'failure' : !statuses.length || statuses.some((s) => s.state === 'pending') ? 'pending' : 'success';
      const page = paginate(statuses, c.query, c.path);
      return new Answer(200, { state, sha, total_count: statuses.length, statuses: page.items.map((s) => statusJson(repo, s)), repository: repoJson(repo), commit_url: `${baseUrl}/repos/${repo.fullName}/commits/${sha}`, url: `${baseUrl}/repos/${repo.fullName}/commits/${sha}/status` }, page.headers);
    },
  };

  const handlers: Record<string, (c: Ctx) => Answer> = {
    ...gitHandlers,
    'repos/get': (c) => new Answer(200, repoJson(repoIn(c))),
    'actions/get-repo-public-key': (c) => publicKeyAnswer(repoIn(c).store),
    'actions/get-repo-secret': (c) => secretAnswer(repoIn(c).store, c.params.secret_name),
    'actions/create-or-update-repo-secret': (c) => putSecret(repoIn(c).store, c.params.secret_name, c.body),
    'actions/delete-repo-secret': (c) => (repoIn(c).store.secrets.delete(c.params.secret_name.toUpperCase()) ? new Answer(204) : notFound()),
    'actions/get-environment-public-key': (c) => publicKeyAnswer(envStore(c)),
    'actions/get-environment-secret': (c) => secretAnswer(envStore(c), c.params.secret_name),
    'actions/create-or-update-environment-secret': (c) => putSecret(envStore(c), c.params.secret_name, c.body),
    'actions/get-org-public-key': (c) => publicKeyAnswer(orgOf(c.params.org).store),
    'actions/get-org-secret': (c) => secretAnswer(orgOf(c.params.org).store, c.params.secret_name, orgOf(c.params.org).login),
    'actions/create-or-update-org-secret': (c) => putSecret(orgOf(c.params.org).store, c.params.secret_name, c.body, true),
    'actions/list-selected-repos-for-org-secret': (c) => {
      const s = orgOf(c.params.org).store.secrets.get(c.params.secret_name.toUpperCase()) ?? fail(notFound());
      // Only meaningful for visibility "selected"; GitHub answers 409 otherwise, which the description does not declare: answer empty.
      const repos = [...repositories.values()].filter((r) => s.selectedRepositoryIds?.includes(r.id));
      const page = paginate(repos, c.query, c.path);
      return new Answer(200, { total_count: repos.length, repositories: page.items.map(repoJson) }, page.headers);
    },
    'repos/list-webhooks': (c) => {
      const page = paginate([...repoIn(c).hooks.values()], c.query, c.path);
      return new Answer(200, page.items.map((h) => hookJson({ repository: repoIn(c).fullName }, h)), page.headers);
    },
    'orgs/list-webhooks': (c) => {
      const page = paginate([...orgOf(c.params.org).hooks.values()], c.query, c.path);
      return new Answer(200, page.items.map((h) => hookJson({ organization: c.params.org }, h)), page.headers);
    },
    'repos/get-webhook': (c) => new Answer(200, hookJson(hookIn(c).scope, hookIn(c).hook)),
    'orgs/get-webhook': (c) => new Answer(200, hookJson(hookIn(c).scope, hookIn(c).hook)),
    'repos/get-webhook-config-for-repo': (c) => new Answer(200, configJson(hookIn(c).hook)),
    'orgs/get-webhook-config-for-org': (c) => new Answer(200, configJson(hookIn(c).hook)),
    'repos/update-webhook-config-for-repo': patchConfig,
    'orgs/update-webhook-config-for-org': patchConfig,
    'repos/ping-webhook': ping,
    'orgs/ping-webhook': ping,
    'repos/list-webhook-deliveries': listDeliveries,
    'orgs/list-webhook-deliveries': listDeliveries,
    'repos/get-webhook-delivery': getDelivery,
    'orgs/get-webhook-delivery': getDelivery,
    'repos/list-deploy-keys': (c) => {
      const repo = repoIn(c);
      const page = paginate([...repo.deployKeys.values()], c.query, c.path);
      return new Answer(200, page.items.map((k) => deployKeyJson(repo, k)), page.headers);
    },
    'repos/create-deploy-key': (c) => {
      const repo = repoIn(c);
      const k = addKey(repo, c.body.key, c.body.title ?? '', c.body.read_only ?? false, c.grant?.actor);
      return k instanceof Answer ? k : new Answer(201, deployKeyJson(repo, k));
    },
    'repos/get-deploy-key': (c) => {
      const repo = repoIn(c);
      return new Answer(200, deployKeyJson(repo, repo.deployKeys.get(Number(c.params.key_id)) ?? fail(notFound())));
    },
    'repos/delete-deploy-key': (c) => {
      const repo = repoIn(c);
      const k = repo.deployKeys.get(Number(c.params.key_id)) ?? fail(notFound());
      repo.deployKeys.delete(k.id);
      usedDeployKeys.delete(k.key);
      return new Answer(204);
    },
    'actions/create-workflow-dispatch': dispatch,
    'actions/get-workflow-run': (c) => {
      const repo = repoIn(c);
      return new Answer(200, runJson(repo, repo.runs.get(Number(c.params.run_id)) ?? fail(notFound())));
    },
    'actions/list-workflow-runs': (c) => {
      const { repo, wf } = workflowIn(c);
      const status = c.query.get('status');
      const runs = [...repo.runs.values()].filter((r) => r.workflow === wf && (!status || r.status === status || r.conclusion === status)).reverse();
      const page = paginate(runs, c.query, c.path);
      return new Answer(200, { total_count: runs.length, workflow_runs: page.items.map((r) => runJson(repo, r)) }, page.headers);
    },
    'apps/create-installation-access-token': installationToken,
    'rate-limit/get': (c) => rateLimitAnswer(c.grant),
  };

  // -- The HTTP front: validate, intercept, authenticate, handle, validate, record -------------

  const matches = (m: Match, method: string, pathname: string) => (!m.method || m.method.toUpperCase() === method) && (!m.path || m.path.test(pathname));
  const requestId = () => [4, 4, 6, 6, 8].map((n) => randomBytes(n / 2).toString('hex').toUpperCase()).join(':');

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://standin');
    const pathname = url.pathname.replace(/\/+$/, '') || '/';
    const reqId = requestId();
    let json: unknown;
    let parseError: string | undefined;
    if (text.length) {
      try {
        json = JSON.parse(text);
      } catch (e) {
        parseError = (e as Error).message;
      }
    }
    const matched = description.match(method, pathname);
    const label = `${method} ${url.pathname}${matched ? ` (${matched.operation.operationId})` : ''}`;

    let answer: Answer | undefined;
    let grant: Grant | undefined;
    try {
      if (!matched) {
        violations.push(`${label}: no operation in the description matches this request`);
        answer = notFound();
      } else {
        const { problems, bodyProblems } = description.requestProblems(matched.operation, matched.params, url.searchParams, { text, json, parseError });
        for (const p of problems) violations.push(`${label}: request: ${p}`);
        // GitHub refuses what its schema refuses: 400 for unparsable JSON, 422 for the rest.
        // https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#validation-failed
        if (parseError) answer = error(400, 'Problems parsing JSON');
        else if (problems.length) {
          const missing = bodyProblems.find((e) => e.keyword === 'required');
          answer = invalidRequest(missing ? `"${(missing.params as { missingProperty: string }).missingProperty}" wasn't supplied.` : problems.join('\n'));
        }
      }
      for (const { match, handler } of intercepts) {
        if (answer || !matches(match, method, pathname)) continue;
        const replaced = await handler({ method, path: url.pathname + url.search, body: json ?? (text || undefined) });
        if (replaced) answer = new Answer(replaced.status, replaced.body, replaced.headers ?? {});
      }
      const limit = secondaryLimits.find((l) => l.remaining > 0 && matches(l.match, method, pathname));
      if (!answer && limit) {
        limit.remaining--;
        // https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits
        answer = error(
          403,
          `You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID ${reqId}.`,
          'https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits',
          { 'retry-after': String(limit.retryAfterSeconds) },
        );
      }
      if (!answer && matched) {
        const operationId = matched.operation.operationId;
        const mode = REQUIRED[operationId];
        if (mode !== 'app-jwt' && (mode !== 'none' || bearer(req))) {
          grant = grantFor(req);
          grant.used++;
          authorize(grant, operationId, matched.params);
        }
        answer = handlers[operationId]({ params: matched.params, query: url.searchParams, body: (json ?? {}) as Json, grant, req, path: url.pathname });
      }
    } catch (e) {
      if (!(e instanceof StandinError)) throw e;
      answer = e.answer;
    }
    answer ??= notFound();

    let body = answer.body;
    const corruption = corruptions.findIndex((c) => matches(c.match, method, pathname));
    if (corruption >= 0) body = corruptions.splice(corruption, 1)[0].corrupt(body);
    const bodyText = body === undefined ? '' : JSON.stringify(body);
    if (matched) for (const p of description.responseProblems(matched.operation, answer.status, bodyText)) violations.push(`${label}: ${p}`);

    // Every answer carries the rate-limit headers and a request id.
    // https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit
    const used = grant?.used ?? 0;
    const headers: Record<string, string> = {
      'x-github-request-id': reqId,
      'x-github-api-version-selected': '2022-11-28',
      'x-ratelimit-limit': '5000',
      'x-ratelimit-remaining': String(5000 - used),
      'x-ratelimit-used': String(used),
      'x-ratelimit-reset': String(Math.floor((grant?.resetAt ?? Date.now() + 3600_000) / 1000)),
      'x-ratelimit-resource': 'core',
      ...(bodyText ? { 'content-type': 'application/json; charset=utf-8' } : {}),
      ...answer.headers,
    };
    const drop = drops.findIndex((m) => matches(m, method, pathname));
    if (drop >= 0) {
      drops.splice(drop, 1);
      requests.push({ method, path: url.pathname + url.search, operationId: matched?.operation.operationId, status: answer.status, requestBody: text, responseBody: '(dropped)', at: new Date().toISOString() });
      req.socket.destroy();
      return;
    }
    res.writeHead(answer.status, headers);
    res.end(bodyText);
    requests.push({ method, path: url.pathname + url.search, operationId: matched?.operation.operationId, status: answer.status, requestBody: text, responseBody: bodyText, at: new Date().toISOString() });
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      violations.push(`${req.method} ${req.url}: the stand-in failed: ${(e as Error).stack}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'Server Error' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  // -- The test-facing API ---------------------------------------------------------------------

  const standin: GitHubStandin = {
    url: baseUrl,
    requests,
    violations,

    async close() {
      for (const stop of continuous) stop();
      while (pending.size) await Promise.allSettled([...pending]);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },

    addRepository(fullName) {
      const [owner, name] = fullName.split('/');
      if (!owner || !name) throw new Error(`GitHub stand-in: "${fullName}" is not owner/name`);
      const repo: Repository = {
        id: newId(), owner, name, fullName, createdAt: isoSeconds(), headSha: '', store: newStore(), environments: new Map(),
        hooks: new Map(), deployKeys: new Map(), workflows: new Map(), runs: new Map(),
        git: { blobs: new Map(), trees: new Map(), commits: new Map(), refs: new Map() }, pulls: new Map(), lastIssue: 0, protection: new Map(), ci: [], checkRuns: [], statuses: [],
      };
      // main starts with one commit (of README.md), as "Initialize this repository with a README" does.
      const who = { name: 'octo', email: 'octo@example.com', date: repo.createdAt };
      repo.headSha = putCommit(repo, { tree: putTree(repo, new Map([['README.md', putBlob(repo, Buffer.from(`# ${name}\n`))]])), parents: [], author: who, committer: who, message: `Initial commit ${randomBytes(4).toString('hex')}` });
      repo.git.refs.set('heads/main', repo.headSha);
      repositories.set(lower(fullName), repo);
      return { id: repo.id };
    },
    addOrganization(login) {
      const org: Organization = { id: newId(), login, store: newStore(), hooks: new Map() };
      organizations.set(lower(login), org);
      return { id: org.id };
    },
    addEnvironment(fullName, environment) {
      unwrap(() => repoOf(fullName)).environments.set(environment, newStore());
    },

    addToken({ permissions, repositories: repos, organizations: orgs, actor = 'rekey-bot' }) {
      // Fine-grained PATs look like github_pat_<82 characters>.
      const value = `github_pat_${randomBytes(62).toString('base64url').slice(0, 82)}`;
      tokens.set(value, { kind: 'personal', permissions: { ...permissions }, repositories: repos && new Set(repos.map(lower)), organizations: orgs && new Set(orgs.map(lower)), actor, used: 0, resetAt: Date.now() + 3600_000 });
      return value;
    },
    addApp({ permissions, repositories: repos, organizations: orgs, slug }) {
      // GitHub hands out PKCS#1 PEM private keys ("BEGIN RSA PRIVATE KEY").
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs1', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
      const appId = newId();
      const app: App = { id: appId, slug: slug ?? `rekey-app-${appId}`, publicKey: createPublicKey(publicKey), installationId: newId() * 10, permissions: { ...permissions }, repositories: repos && new Set(repos.map(lower)), organizations: orgs && new Set(orgs.map(lower)) };
      apps.set(appId, app);
      installations.set(app.installationId, app);
      return { appId, installationId: app.installationId, privateKey };
    },

    secret(scope, name) {
      const s = unwrap(() => storeOf(scope)).secrets.get(name.toUpperCase());
      return s && { ...s, ...(s.selectedRepositoryIds ? { selectedRepositoryIds: [...s.selectedRepositoryIds] } : {}) };
    },
    setSecret(scope, name, value, options = {}) {
      const store = unwrap(() => storeOf(scope));
      const now = isoSeconds();
      const org = 'organization' in scope;
      store.secrets.set(name.toUpperCase(), { value, createdAt: now, updatedAt: now, ...(org ? { visibility: options.visibility ?? 'private', selectedRepositoryIds: options.selectedRepositoryIds } : {}) });
    },
    publicKey(scope) {
      const { keyPair } = unwrap(() => storeOf(scope));
      return { keyId: keyPair.keyId, key: Buffer.from(keyPair.publicKey).toString('base64') };
    },
    rotatePublicKey(scope) {
      unwrap(() => storeOf(scope)).keyPair = newKeyPair();
    },

    addHook(scope, { url, secret, contentType = 'json', events = ['push'], insecureSsl = '0', active = true }) {
      const now = new Date().toISOString();
      const hook: Hook = { id: newId(), url, secret: secret || undefined, contentType, insecureSsl, events, active, createdAt: isoSeconds(), updatedAt: now, lastResponse: { code: null, status: 'unused', message: null }, deliveries: [] };
      unwrap(() => hooksOf(scope)).set(hook.id, hook);
      return { id: hook.id };
    },
    hook(scope, id) {
      const h = unwrap(() => hookOf(scope, id));
      return { id: h.id, url: h.url, secret: h.secret, contentType: h.contentType, insecureSsl: h.insecureSsl, events: [...h.events], active: h.active };
    },
    deliver(scope, hookId, event, payload) {
      const hook = unwrap(() => hookOf(scope, hookId));
      return track(deliver(scope, hook, event, payload ?? (event === 'ping' ? pingPayload(scope, hook) : {})));
    },
    deliverContinuously(scope, hookId, intervalMs, event = 'push') {
      const hook = unwrap(() => hookOf(scope, hookId));
      let stopped = false;
      let delivered = 0;
      const failed: Delivery[] = [];
      const halt = () => (stopped = true);
      continuous.add(halt);
      const loop = track(
        (async () => {
          while (!stopped) {
            const d = await deliver(scope, hook, event, { ref: 'refs/heads/main' });
            delivered++;
            if (d.status !== 'OK') failed.push(d);
            if (!stopped) await sleep(intervalMs);
          }
        })(),
      );
      return {
        async stop() {
          halt();
          continuous.delete(halt);
          await loop;
          return { delivered, failed };
        },
      };
    },
    deliveries(scope, hookId) {
      return [...unwrap(() => hookOf(scope, hookId)).deliveries];
    },

    deployKeys(fullName) {
      return [...unwrap(() => repoOf(fullName)).deployKeys.values()].map((k) => ({ ...k }));
    },
    addDeployKey(fullName, { key, title = '', readOnly = true, addedBy = 'octocat' }) {
      const k = addKey(unwrap(() => repoOf(fullName)), key, title, readOnly, addedBy);
      if (k instanceof Answer) throw new Error(`GitHub stand-in: ${JSON.stringify(k.body)}`);
      return { id: k.id };
    },

    addWorkflow(fullName, file, handler, options = {}) {
      const wf: Workflow = { id: newId(), file, handler, environment: options.environment, runNumber: 0 };
      unwrap(() => repoOf(fullName)).workflows.set(file, wf);
      return { id: wf.id };
    },
    pushFiles(fullName, branch, files, { message = 'an edit', author, from = 'main' } = {}) {
      const repo = unwrap(() => repoOf(fullName));
      const parent = repo.git.refs.get(`heads/${branch}`) ?? repo.git.refs.get(`heads/${from}`);
      if (!parent) throw new Error(`GitHub stand-in: no branch ${from} in ${fullName}`);
      const tree = new Map(filesAt(repo, parent));
      for (const [path, text] of Object.entries(files)) text === null ? tree.delete(path) : tree.set(path, putBlob(repo, Buffer.from(text)));
      const who = { name: author?.name ?? 'octo', email: author?.email ?? 'octo@example.com', date: author?.date ?? isoSeconds() };
      const sha = putCommit(repo, { tree: putTree(repo, tree), parents: [parent], author: who, committer: who, message });
      setRef(repo, `heads/${branch}`, sha);
      return sha;
    },
    setBranch(fullName, branch, sha) {
      const repo = unwrap(() => repoOf(fullName));
      if (!repo.git.commits.has(sha)) throw new Error(`GitHub stand-in: no commit ${sha} in ${fullName}`);
      setRef(repo, `heads/${branch}`, sha);
    },
    file(fullName, ref, path) {
      return fileAt(unwrap(() => repoOf(fullName)), ref, path);
    },
    branches(fullName) {
      return [...unwrap(() => repoOf(fullName)).git.refs.keys()].filter((r) => r.startsWith('heads/')).map((r) => r.slice('heads/'.length)).sort();
    },
    head(fullName, branch) {
      return unwrap(() => repoOf(fullName)).git.refs.get(`heads/${branch}`);
    },
    commit(fullName, sha) {
      const c = commitOf(unwrap(() => repoOf(fullName)), sha);
      return c && { sha: c.sha, message: c.message, parents: [...c.parents], author: { ...c.author }, committer: { ...c.committer } };
    },
    log(fullName, branch) {
      const out: CommitView[] = [];
      for (let sha = standin.head(fullName, branch); sha; sha = standin.commit(fullName, sha)?.parents[0]) out.push(standin.commit(fullName, sha)!);
      return out;
    },
    protectBranch(fullName, branch, { checks, strict = false }) {
      unwrap(() => repoOf(fullName)).protection.set(branch, { checks: checks.map((k) => (typeof k === 'string' ? { context: k } : k)), strict });
    },
    addCi(fullName, name, handler, { appId = 15368, appSlug = 'github-actions', delayMs = 20 } = {}) {
      unwrap(() => repoOf(fullName)).ci.push({ name, appId, appSlug, delayMs, handler });
    },
    addCheckRun(fullName, sha, { name, conclusion, appId = 15368, appSlug = 'github-actions' }) {
      const now = isoSeconds();
      unwrap(() => repoOf(fullName)).checkRuns.push({ id: newId(), headSha: sha, name, appId, appSlug, status: conclusion ? 'completed' : 'in_progress', conclusion, startedAt: now, completedAt: conclusion ? now : null });
    },
    setStatus(fullName, sha, context, state) {
      unwrap(() => repoOf(fullName)).statuses.push({ id: newId(), sha, context, state, at: isoSeconds() });
    },
    pulls(fullName) {
      return [...unwrap(() => repoOf(fullName)).pulls.values()].map((p) => ({ number: p.number, title: p.title, body: p.body, head: p.head, headRepo: p.headRepo, base: p.base, state: p.state, merged: p.mergedAt !== null, mergeMethod: p.mergeMethod, user: p.user, mergeCommitSha: p.mergeCommitSha }));
    },
    openPull(fullName, { head, base = 'main', title = head, headRepo = fullName, user = 'octocat' }) {
      const repo = unwrap(() => repoOf(fullName));
      const from = unwrap(() => repoOf(headRepo));
      const headSha = from.git.refs.get(`heads/${head}`);
      if (!headSha) throw new Error(`GitHub stand-in: no branch ${head} in ${headRepo}`);
      const now = isoSeconds();
      const pr: Pull = { number: ++repo.lastIssue, title, head, headRepo: from.fullName, headSha, base, state: 'open', user, createdAt: now, updatedAt: now, closedAt: null, mergedAt: null, mergeCommitSha: null };
      repo.pulls.set(pr.number, pr);
      return pr.number;
    },

    runs(fullName) {
      return [...unwrap(() => repoOf(fullName)).runs.values()].map((r) => ({ id: r.id, workflow: r.workflow.file, status: r.status, conclusion: r.conclusion, inputs: { ...r.inputs }, ref: r.ref }));
    },

    secondaryRateLimit({ count = 1, retryAfterSeconds = 1, match = {} } = {}) {
      secondaryLimits.push({ remaining: count, retryAfterSeconds, match });
    },
    intercept(match, handler) {
      const entry = { match, handler };
      intercepts.push(entry);
      return () => {
        const i = intercepts.indexOf(entry);
        if (i >= 0) intercepts.splice(i, 1);
      };
    },
    /**
     * By default an object loses its first property (usually a required one) and gains an
     * undeclared type elsewhere; an array becomes an object; an empty answer gains a body.
     */
    corruptNextResponse(match, corrupt = defaultCorruption) {
      corruptions.push({ match, corrupt });
    },
    dropNextResponse(match) {
      drops.push(match);
    },
    assertNoViolations() {
      if (violations.length) throw new Error(`the GitHub stand-in saw ${violations.length} OpenAPI violation(s):\n  ${violations.join('\n  ')}`);
    },
  };
  return standin;
}

function defaultCorruption(body: unknown): unknown {
  if (body === undefined) return { unexpected: true };
  if (Array.isArray(body)) return { items: body };
  if (body && typeof body === 'object') {
    const [first, ...rest] = Object.entries(body);
    return Object.fromEntries(rest.length ? rest : [[first?.[0] ?? 'x', { corrupted: true }]]);
  }
  return [body];
}
