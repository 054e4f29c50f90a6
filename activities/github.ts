// The GitHub connection the GitHub providers share (consumers github-actions-secret and
// github-webhook, target github-deploy-key). The token or the App's private key is read from the
// store inside the activity that needs it, never carried by a workflow input or a manifest, and
// every failure GitHub answers is turned into a message that names the repository and the
// permission, without the request (its body may hold a secret) riding along.
import { createAppAuth } from '@octokit/auth-app';
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { RequestError } from '@octokit/request-error';
import { Octokit } from '@octokit/rest';
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import Bottleneck from 'bottleneck';
import { z } from 'zod';
import { textOf } from './provider';
import { describeStore, readCurrent, storeSchema, type StoreSpec } from './stores';

/** A value read from a store when it is needed: a field of the stored JSON value. */
const storedValueSchema = (defaultField: string) =>
  z
    .object({
      store: storeSchema,
      field: z.string().min(1).max(200).default(defaultField),
    })
    .strict();

const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);

export const githubConnectionSchema = z
  .object({
    /** The REST API: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server. */
    baseUrl: z
      .url()
      .default('https://api.github.com')
      // The token travels in every request: only loopback (a local proxy) may be plain http.
      .refine((url) => !URL.canParse(url) || new URL(url).protocol === 'https:' || (new URL(url).protocol === 'http:' && LOOPBACK.has(new URL(url).hostname)), {
        message: 'must be https (plain http only to a loopback address)',
      })
      .refine((url) => !URL.canParse(url) || (!new URL(url).username && !new URL(url).password), { message: 'must not carry a user name or password' }),
    auth: z.union([
      z.object({ token: storedValueSchema('token') }).strict(),
      z
        .object({
          app: z
            .object({
              appId: z.number().int().positive(),
              installationId: z.number().int().positive(),
              /** The App's PEM private key (RS256), as GitHub let you download it. */
              privateKey: storedValueSchema('privateKey'),
            })
            .strict(),
        })
        .strict(),
    ]),
  })
  .strict();
export type GitHubConnection = z.infer<typeof githubConnectionSchema>;

/** A repository as `owner/name`. */
export const repositorySchema = z
  .string()
  .max(200)
  .regex(/^[A-Za-z0-9-]{1,39}\/[A-Za-z0-9._-]{1,100}$/, 'must be owner/name')
  .refine((name) => !name.endsWith('/.') && !name.endsWith('/..'), 'must be owner/name');
export const organizationSchema = z.string().regex(/^[A-Za-z0-9-]{1,39}$/, 'must be an organisation login');

export function splitRepository(fullName: string): { owner: string; repo: string } {
  const [owner, repo] = fullName.split('/');
  return { owner, repo };
}

/** The stores a GitHub connection reads from, with their manifest path (for the one-store-per-secret check). */
export function githubStores(connection: GitHubConnection): { path: string; store: StoreSpec }[] {
  return 'token' in connection.auth
    ? [{ path: 'github.auth.token.store', store: connection.auth.token.store }]
    : [{ path: 'github.auth.app.privateKey.store', store: connection.auth.app.privateKey.store }];
}

export interface GitHubClientSettings {
  /**
   * Time between two writes (GitHub asks integrators to space requests that create content).
   * Shared by every client of the worker, as the throttling plugin shares it. Tests set 0.
   */
  writeSpacingMs: number;
  /** Retries Octokit makes itself (server errors, rate limits); Temporal retries the activity after that. */
  retries: number;
  /** A rate-limit wait longer than this fails the call instead, and Temporal retries the activity later. */
  maxRateLimitWaitSeconds: number;
  /** One request's time limit. */
  requestTimeoutMs: number;
  /** How often something GitHub does later (a ping's delivery, a workflow run) is looked at. */
  pollMs: number;
}

let settings: GitHubClientSettings = { writeSpacingMs: 1_000, retries: 1, maxRateLimitWaitSeconds: 60, requestTimeoutMs: 30_000, pollMs: 2_000 };
let writeGroup: Bottleneck.Group | undefined;

/** Set by the worker (createActivities' `github` option). */
export function configureGitHubClients(overrides: Partial<GitHubClientSettings>): void {
  settings = { ...settings, ...overrides };
  writeGroup = undefined;
}

const GitHubOctokit = Octokit.plugin(throttling, retry);
export type GitHubClient = InstanceType<typeof GitHubOctokit>;

async function storedText(ref: { store: StoreSpec; field: string }, what: string): Promise<string> {
  const value = textOf(await readCurrent(ref.store), ref.field);
  if (!value) throw ApplicationFailure.nonRetryable(`${what}: ${describeStore(ref.store)} has no text field ${ref.field}`, 'GitHubRefused');
  return value;
}

/** An Octokit for one activity, authenticated with what the store holds now. */
export async function githubClient(connection: GitHubConnection, signal?: AbortSignal): Promise<GitHubClient> {
  writeGroup ??= new Bottleneck.Group({ maxConcurrent: 1, minTime: settings.writeSpacingMs });
  const wait = (kind: string) => (retryAfter: number, options: { method?: string; url?: string }, _octokit: unknown, retryCount: number) => {
    const again = retryCount < settings.retries && retryAfter <= settings.maxRateLimitWaitSeconds;
    log.warn(`GitHub ${kind}`, { request: `${options.method} ${options.url}`, retryAfterSeconds: retryAfter, retrying: again });
    return again;
  };
  const auth =
    'token' in connection.auth
      ? { auth: await storedText(connection.auth.token, 'github.auth.token') }
      : {
          authStrategy: createAppAuth,
          auth: {
            appId: connection.auth.app.appId,
            installationId: connection.auth.app.installationId,
            privateKey: await storedText(connection.auth.app.privateKey, 'github.auth.app.privateKey'),
          },
        };
  const timeoutMs = settings.requestTimeoutMs;
  return new GitHubOctokit({
    ...auth,
    baseUrl: connection.baseUrl.replace(/\/+$/, ''),
    userAgent: 'rekey',
    // Octokit's own logging would print request details; rekey logs what it decides instead.
    log: { debug() {}, info() {}, warn() {}, error() {} },
    request: {
      retries: settings.retries,
      fetch: (url: string, init: RequestInit) =>
        fetch(url, { ...init, signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs) }),
    },
    retry: { retries: settings.retries },
    throttle: { write: writeGroup, onRateLimit: wait('rate limit'), onSecondaryRateLimit: wait('secondary rate limit') },
  });
}

/** Failure type for answers retrying cannot change: bad credentials, a missing permission, nothing there. */
export const GITHUB_REFUSED = 'GitHubRefused';

/**
 * Call GitHub for `what` on `where`; a failure says which permission is missing (GitHub's
 * X-Accepted-GitHub-Permissions header, or what rekey knows the call `needs`). 401, 403 (other than
 * a rate limit) and 404 are not retried: the token will not gain a permission by asking again.
 */
export async function onGitHub<T>(what: string, where: string, needs: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw explain(err, what, where, needs);
  }
}

function explain(err: unknown, what: string, where: string, needs: string): Error {
  if (err instanceof ApplicationFailure) return err;
  if (!(err instanceof RequestError)) return new Error(`GitHub ${what} on ${where}: ${(err as Error).message}`);
  const headers = err.response?.headers ?? {};
  const said = String((err.response?.data as { message?: unknown } | undefined)?.message ?? '').slice(0, 200);
  const accepted = headers['x-accepted-github-permissions'];
  const permission = accepted ? `the token needs ${accepted}` : `the token needs ${needs}`;
  const rateLimited = headers['x-ratelimit-remaining'] === '0' || /rate limit/i.test(said);
  const status = err.status;
  const fail = (message: string, nonRetryable: boolean) => ApplicationFailure.create({ message, type: nonRetryable ? GITHUB_REFUSED : 'GitHubUnavailable', nonRetryable, details: [status] });
  if (status === 401) return fail(`GitHub rejected the credential (401 ${said}) for ${what} on ${where}: check the token or App key in the store`, true);
  if (status === 403 && !rateLimited) return fail(`GitHub denied ${what} on ${where} (403 ${said}): ${permission}`, true);
  if (status === 404) return fail(`GitHub found no ${where} for ${what} (404): it does not exist, or ${permission} to see it`, true);
  return fail(`GitHub ${what} on ${where} answered ${status}${said ? ` (${said})` : ''}`, false);
}

/**
 * Look at something GitHub does after answering (a ping's delivery, a workflow run) until `look`
 * finds it; undefined once `timeoutMs` has passed.
 */
export async function waitFor<T>(timeoutMs: number, signal: AbortSignal | undefined, look: () => Promise<T | undefined>): Promise<T | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = await look();
    if (found !== undefined) return found;
    if (Date.now() > until) return undefined;
    if (signal?.aborted) throw new Error('cancelled');
    await new Promise((r) => setTimeout(r, settings.pollMs));
  }
}
