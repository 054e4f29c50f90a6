// Self-tests of the GitHub stand-in (tests/github/standin.ts): it behaves as GitHub does for what
// rekey uses, and its OpenAPI validator really catches a response or request off the description.
// Needs no local stack: no Temporal, moto or Postgres.
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAppAuth } from '@octokit/auth-app';
import { throttling } from '@octokit/plugin-throttling';
import { Octokit } from '@octokit/rest';
import sodium from 'libsodium-wrappers';
import { githubDescription, startGitHubStandin, type GitHubStandin } from './github/standin';
import { OPERATIONS } from '../scripts/github-openapi-extract';

const REPO = { owner: 'octo', repo: 'app' };
const ALL_REPO_PERMISSIONS = { secrets: 'write', environments: 'write', administration: 'write', actions: 'write', repository_hooks: 'write' } as const;

/** What a client does: seal the value for the scope's public key with libsodium. */
async function seal(value: string, publicKeyB64: string): Promise<string> {
  await sodium.ready;
  return Buffer.from(sodium.crypto_box_seal(Buffer.from(value), Buffer.from(publicKeyB64, 'base64'))).toString('base64');
}

/** A fresh OpenSSH ed25519 public key line. */
function sshPublicKey(comment = 'dev@laptop'): string {
  const raw = Buffer.from(generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const field = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([field(Buffer.from('ssh-ed25519')), field(raw)]).toString('base64')} ${comment}`;
}

/** A webhook receiver that accepts only deliveries signed with `secret.current`. */
async function receiver(secret: { current: string }): Promise<{ url: string; bodies: string[]; server: Server }> {
  const bodies: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const expected = Buffer.from(`sha256=${createHmac('sha256', secret.current).update(body).digest('hex')}`);
      const given = Buffer.from(String(req.headers['x-hub-signature-256'] ?? ''));
      const ok = given.length === expected.length && timingSafeEqual(given, expected);
      if (ok) bodies.push(body.toString());
      res.writeHead(ok ? 200 : 401).end(ok ? 'thanks' : 'bad signature');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies, server };
}

async function until<T>(f: () => T | Promise<T>, what: string, ms = 5000): Promise<Exclude<T, false | null | undefined>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v as Exclude<T, false | null | undefined>;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Octokit's request log would print every expected 4xx; the assertions say what matters. */
const quiet = { debug() {}, info() {}, warn: console.warn, error() {} };
const client = (baseUrl: string, auth: string) => new Octokit({ auth, baseUrl, log: quiet });

describe('GitHub stand-in', () => {
  let gh: GitHubStandin;
  let octokit: Octokit;

  beforeEach(async () => {
    gh = await startGitHubStandin();
    gh.addRepository('octo/app');
    octokit = client(gh.url, gh.addToken({ permissions: { ...ALL_REPO_PERMISSIONS }, repositories: ['octo/app'] }));
  });
  afterEach(async () => {
    await gh.close();
    gh.assertNoViolations();
  });

  it('opens a sealed box with the repository key: 201 on create, 204 on update, and GET never shows the value', async () => {
    const { data: key } = await octokit.actions.getRepoPublicKey(REPO);
    const created = await octokit.actions.createOrUpdateRepoSecret({ ...REPO, secret_name: 'api_key', encrypted_value: await seal('s3cr3t-1', key.key), key_id: key.key_id });
    assert.equal(created.status, 201);
    assert.equal(gh.secret({ repository: 'octo/app' }, 'API_KEY')?.value, 's3cr3t-1');
    assert.match(gh.secret({ repository: 'octo/app' }, 'API_KEY')!.updatedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    const updated = await octokit.actions.createOrUpdateRepoSecret({ ...REPO, secret_name: 'API_KEY', encrypted_value: await seal('s3cr3t-2', key.key), key_id: key.key_id });
    assert.equal(updated.status, 204);
    assert.equal(gh.secret({ repository: 'octo/app' }, 'API_KEY')?.value, 's3cr3t-2');

    const { data: shown } = await octokit.actions.getRepoSecret({ ...REPO, secret_name: 'API_KEY' });
    assert.deepEqual(Object.keys(shown).sort(), ['created_at', 'name', 'updated_at']);
    assert.ok(!gh.requests.some((r) => r.responseBody.includes('s3cr3t')), 'no answer carries the value');
  });

  it('refuses a value sealed for a key_id that is no longer current (422), and one that does not open', async () => {
    const { data: old } = await octokit.actions.getRepoPublicKey(REPO);
    gh.rotatePublicKey({ repository: 'octo/app' });
    await assert.rejects(octokit.actions.createOrUpdateRepoSecret({ ...REPO, secret_name: 'API_KEY', encrypted_value: await seal('x', old.key), key_id: old.key_id }), { status: 422 });

    const { data: current } = await octokit.actions.getRepoPublicKey(REPO);
    assert.notEqual(current.key_id, old.key_id);
    await assert.rejects(octokit.actions.createOrUpdateRepoSecret({ ...REPO, secret_name: 'API_KEY', encrypted_value: await seal('x', old.key), key_id: current.key_id }), { status: 422 });
    assert.equal(gh.secret({ repository: 'octo/app' }, 'API_KEY'), undefined);
  });

  it('keeps environment and organization secrets apart, with the organization visibility and selected repositories', async () => {
    gh.addEnvironment('octo/app', 'production');
    const { data: envKey } = await octokit.actions.getEnvironmentPublicKey({ ...REPO, environment_name: 'production' });
    await octokit.actions.createOrUpdateEnvironmentSecret({ ...REPO, environment_name: 'production', secret_name: 'DB', encrypted_value: await seal('env-value', envKey.key), key_id: envKey.key_id });
    assert.equal(gh.secret({ repository: 'octo/app', environment: 'production' }, 'DB')?.value, 'env-value');
    assert.equal(gh.secret({ repository: 'octo/app' }, 'DB'), undefined);

    gh.addOrganization('octo');
    const repoId = (await octokit.repos.get(REPO)).data.id;
    const org = client(gh.url, gh.addToken({ permissions: { organization_secrets: 'write' }, organizations: ['octo'] }));
    const { data: orgKey } = await org.actions.getOrgPublicKey({ org: 'octo' });
    await org.actions.createOrUpdateOrgSecret({ org: 'octo', secret_name: 'SHARED', encrypted_value: await seal('org-value', orgKey.key), key_id: orgKey.key_id, visibility: 'selected', selected_repository_ids: [repoId] });
    const stored = gh.secret({ organization: 'octo' }, 'SHARED')!;
    assert.deepEqual([stored.value, stored.visibility, stored.selectedRepositoryIds], ['org-value', 'selected', [repoId]]);
    const { data: selected } = await org.actions.listSelectedReposForOrgSecret({ org: 'octo', secret_name: 'SHARED' });
    assert.deepEqual(selected.repositories.map((r) => r.full_name), ['octo/app']);
    assert.equal((await org.actions.getOrgSecret({ org: 'octo', secret_name: 'SHARED' })).data.visibility, 'selected');
  });

  it('signs each webhook delivery with the current secret; a receiver still on the old one answers 401 and the delivery records it', async () => {
    const expected = { current: 'hook-secret-1' };
    const rx = await receiver(expected);
    try {
      const { id } = gh.addHook({ repository: 'octo/app' }, { url: rx.url, secret: 'hook-secret-1', events: ['push'] });
      const ok = await gh.deliver({ repository: 'octo/app' }, id, 'push', { ref: 'refs/heads/main' });
      assert.equal(ok.status, 'OK');
      assert.equal(ok.statusCode, 200);
      assert.equal(JSON.parse(rx.bodies[0]).ref, 'refs/heads/main');
      assert.match(ok.requestHeaders['X-Hub-Signature'], /^sha1=[0-9a-f]{40}$/);
      assert.equal(ok.requestHeaders['X-GitHub-Event'], 'push');

      await octokit.repos.updateWebhookConfigForRepo({ ...REPO, hook_id: id, secret: 'hook-secret-2' });
      const failed = await gh.deliver({ repository: 'octo/app' }, id, 'push');
      assert.equal(failed.status, 'Invalid HTTP Response: 401');
      assert.equal(failed.statusCode, 401);
      expected.current = 'hook-secret-2';
      assert.equal((await gh.deliver({ repository: 'octo/app' }, id, 'push')).status, 'OK');
    } finally {
      rx.server.close();
    }
  });

  it('delivers continuously until stopped; once the secret changes, a receiver still checking the old one refuses, and stop() reports those failures', async () => {
    const accepted = { current: 'one' };
    const rx = await receiver(accepted);
    try {
      const { id } = gh.addHook({ repository: 'octo/app' }, { url: rx.url, secret: 'one' });
      const stream = gh.deliverContinuously({ repository: 'octo/app' }, id, 5);
      await until(() => rx.bodies.length >= 3, 'a few deliveries');
      await octokit.repos.updateWebhookConfigForRepo({ ...REPO, hook_id: id, secret: 'two' });
      await until(() => gh.deliveries({ repository: 'octo/app' }, id).some((d) => d.statusCode === 401), 'a delivery signed with the new secret');
      const { delivered, failed } = await stream.stop();
      assert.ok(delivered > failed.length && failed.length > 0);
      assert.ok(failed.every((d) => d.status === 'Invalid HTTP Response: 401'));
    } finally {
      rx.server.close();
    }
  });

  it('intercept can hold a request back and replace an answer; the replacement is validated like any other', async () => {
    let release!: () => void;
    let arrived = false;
    const held = new Promise<void>((r) => (release = r));
    const remove = gh.intercept({ method: 'GET', path: /^\/repos\/octo\/app$/ }, async () => {
      arrived = true;
      await held;
      return { status: 502, body: { message: 'Server Error' } };
    });
    const pending = octokit.repos.get(REPO).catch((e) => e);
    await until(() => arrived, 'the request reaches the stand-in');
    assert.equal(gh.requests.length, 0, 'and is held there');
    release();
    assert.equal((await pending).status, 502);
    remove();
    assert.equal((await octokit.repos.get(REPO)).status, 200);
  });

  it('organization webhooks work the same way: list, get, config, ping and deliveries, under organization_hooks', async () => {
    gh.addOrganization('octo');
    const rx = await receiver({ current: 'org-secret' });
    try {
      const { id } = gh.addHook({ organization: 'octo' }, { url: rx.url, secret: 'org-secret', events: ['repository'] });
      const orgAdmin = client(gh.url, gh.addToken({ permissions: { organization_hooks: 'write' }, organizations: ['octo'] }));
      assert.deepEqual((await orgAdmin.orgs.listWebhooks({ org: 'octo' })).data.map((h) => [h.id, h.config.secret]), [[id, '********']]);
      assert.equal((await orgAdmin.orgs.getWebhook({ org: 'octo', hook_id: id })).data.type, 'Organization');
      await orgAdmin.orgs.updateWebhookConfigForOrg({ org: 'octo', hook_id: id, insecure_ssl: '0' });
      assert.equal((await orgAdmin.orgs.getWebhookConfigForOrg({ org: 'octo', hook_id: id })).data.url, rx.url);
      await orgAdmin.orgs.pingWebhook({ org: 'octo', hook_id: id });
      const [ping] = await until(async () => {
        const { data } = await orgAdmin.orgs.listWebhookDeliveries({ org: 'octo', hook_id: id });
        return data.length > 0 && data;
      }, 'the ping is delivered');
      assert.equal(ping.status, 'OK');
      assert.equal((await orgAdmin.orgs.getWebhookDelivery({ org: 'octo', hook_id: id, delivery_id: ping.id })).data.response.payload, 'thanks');
      const refused = await octokit.orgs.listWebhooks({ org: 'octo' }).catch((e) => e);
      assert.equal(refused.response.headers['x-accepted-github-permissions'], 'organization_hooks=read');
    } finally {
      rx.server.close();
    }
  });

  it('PATCH config changes only what it is given: url and content_type stay, and GET shows the secret as ********', async () => {
    const { id } = gh.addHook({ repository: 'octo/app' }, { url: 'http://127.0.0.1:9/hook', secret: 'old', contentType: 'form' });
    const { data } = await octokit.repos.updateWebhookConfigForRepo({ ...REPO, hook_id: id, secret: 'new' });
    assert.deepEqual(data, { url: 'http://127.0.0.1:9/hook', content_type: 'form', insecure_ssl: '0', secret: '********' });
    assert.equal(gh.hook({ repository: 'octo/app' }, id).secret, 'new');
    assert.equal((await octokit.repos.getWebhookConfigForRepo({ ...REPO, hook_id: id })).data.secret, '********');
  });

  it('a ping answers 204 at once; the ping delivery then shows in the deliveries, newest first, with its headers and payload', async () => {
    const rx = await receiver({ current: 's' });
    try {
      const { id } = gh.addHook({ repository: 'octo/app' }, { url: rx.url, secret: 's' });
      await gh.deliver({ repository: 'octo/app' }, id, 'push');
      assert.equal((await octokit.repos.pingWebhook({ ...REPO, hook_id: id })).status, 204);
      const list = await until(async () => {
        const { data } = await octokit.repos.listWebhookDeliveries({ ...REPO, hook_id: id });
        return data.length === 2 && data;
      }, 'the ping is delivered');
      assert.deepEqual(list.map((d) => d.event), ['ping', 'push']);
      const { data: one } = await octokit.repos.getWebhookDelivery({ ...REPO, hook_id: id, delivery_id: list[0].id });
      assert.equal((one.request.headers as Record<string, string>)['X-GitHub-Event'], 'ping');
      assert.equal((one.request.payload as { hook_id: number }).hook_id, id);
      assert.ok(!JSON.stringify(one).includes('"s"'), 'the delivery view does not show the secret');

      const firstPage = await octokit.repos.listWebhookDeliveries({ ...REPO, hook_id: id, per_page: 1 });
      const cursor = /cursor=(\d+)/.exec(firstPage.headers.link ?? '')?.[1];
      assert.ok(cursor);
      assert.deepEqual((await octokit.repos.listWebhookDeliveries({ ...REPO, hook_id: id, per_page: 1, cursor })).data.map((d) => d.event), ['push']);
    } finally {
      rx.server.close();
    }
  });

  it('a secondary rate limit is a 403 with retry-after that @octokit/plugin-throttling waits out and retries', async () => {
    const token = gh.addToken({ permissions: { secrets: 'read' } });
    const seen: number[] = [];
    const Throttled = Octokit.plugin(throttling);
    const client = new Throttled({
      auth: token,
      baseUrl: gh.url,
      log: quiet,
      throttle: {
        onSecondaryRateLimit: (retryAfter: number, _options: unknown, _o: unknown, retryCount: number) => (seen.push(retryAfter), retryCount < 1),
        onRateLimit: () => false,
      },
    });
    gh.secondaryRateLimit({ count: 1, retryAfterSeconds: 1, match: { method: 'GET', path: /public-key$/ } });
    const started = Date.now();
    const { status } = await client.actions.getRepoPublicKey(REPO);
    assert.equal(status, 200);
    assert.deepEqual(seen, [1]);
    assert.ok(Date.now() - started >= 1000, 'waited retry-after seconds');
    assert.deepEqual(gh.requests.filter((r) => r.path.endsWith('public-key')).map((r) => r.status), [403, 200]);
  });

  it('answers 401 to a bad token, 404 for a repository the token cannot see, 403 with X-Accepted-GitHub-Permissions for a missing permission', async () => {
    gh.addRepository('octo/other');
    await assert.rejects(client(gh.url, 'nope').repos.get(REPO), (e: { status: number; response: { data: { message: string } } }) => e.status === 401 && e.response.data.message === 'Bad credentials');
    await assert.rejects(octokit.repos.get({ owner: 'octo', repo: 'other' }), { status: 404 });
    await assert.rejects(octokit.repos.get({ owner: 'octo', repo: 'missing' }), { status: 404 });

    const readOnly = client(gh.url, gh.addToken({ permissions: { secrets: 'read' } }));
    const { data: key } = await readOnly.actions.getRepoPublicKey(REPO);
    const refused = await readOnly.actions.createOrUpdateRepoSecret({ ...REPO, secret_name: 'X', encrypted_value: await seal('x', key.key), key_id: key.key_id }).catch((e) => e);
    assert.equal(refused.status, 403);
    assert.equal(refused.response.data.message, 'Resource not accessible by personal access token');
    assert.equal(refused.response.headers['x-accepted-github-permissions'], 'secrets=write');
    assert.equal((await octokit.rateLimit.get()).data.resources.core.limit, 5000);
    for (const h of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-used', 'x-ratelimit-reset', 'x-ratelimit-resource', 'x-github-request-id']) assert.ok(refused.response.headers[h], h);
  });

  it('a deploy key is stored without its comment and can be in use only once across GitHub (422 "key is already in use")', async () => {
    gh.addRepository('octo/other');
    const key = sshPublicKey('laptop');
    const { data: added } = await octokit.repos.createDeployKey({ ...REPO, key, title: 'ci', read_only: true });
    assert.equal(added.key, key.split(' ').slice(0, 2).join(' '));
    assert.deepEqual(gh.deployKeys('octo/app').map((k) => [k.id, k.readOnly]), [[added.id, true]]);

    const other = client(gh.url, gh.addToken({ permissions: { administration: 'write' } }));
    const again = await other.repos.createDeployKey({ owner: 'octo', repo: 'other', key: key.replace('laptop', 'other-comment') }).catch((e) => e);
    assert.equal(again.status, 422);
    assert.equal(again.response.data.errors[0].message, 'key is already in use');

    await octokit.repos.deleteDeployKey({ ...REPO, key_id: added.id });
    assert.equal((await other.repos.createDeployKey({ owner: 'octo', repo: 'other', key })).status, 201);
  });

  it('a workflow dispatch with return_run_details answers 200 with the run, which sees the decrypted secrets and completes with the handler conclusion', async () => {
    gh.setSecret({ repository: 'octo/app' }, 'API_KEY', 'seeded');
    gh.addWorkflow('octo/app', 'verify.yml', ({ inputs, secrets }) => (secrets.API_KEY === inputs.expected ? 'success' : 'failure'));
    const { status, data } = await octokit.actions.createWorkflowDispatch({ ...REPO, workflow_id: 'verify.yml', ref: 'main', inputs: { expected: 'seeded' }, return_run_details: true } as Parameters<typeof octokit.actions.createWorkflowDispatch>[0]);
    assert.equal(status, 200);
    const runId = (data as unknown as { workflow_run_id: number }).workflow_run_id;
    const run = await until(async () => {
      const { data: r } = await octokit.actions.getWorkflowRun({ ...REPO, run_id: runId });
      return r.status === 'completed' && r;
    }, 'the run completes');
    assert.equal(run.conclusion, 'success');

    assert.equal((await octokit.actions.createWorkflowDispatch({ ...REPO, workflow_id: 'verify.yml', ref: 'main', inputs: { expected: 'other' } })).status, 204);
    await until(() => gh.runs('octo/app').every((r) => r.status === 'completed'), 'both runs complete');
    const { data: runs } = await octokit.actions.listWorkflowRuns({ ...REPO, workflow_id: 'verify.yml' });
    assert.deepEqual(runs.workflow_runs.map((r) => r.conclusion), ['failure', 'success']);
  });

  it('mints an installation token for a verified app JWT, with the installation permissions; a JWT signed by another key is refused', async () => {
    const app = gh.addApp({ permissions: { secrets: 'write' }, repositories: ['octo/app'] });
    const installed = new Octokit({ authStrategy: createAppAuth, auth: { appId: app.appId, privateKey: app.privateKey, installationId: app.installationId }, baseUrl: gh.url, log: quiet });
    assert.equal((await installed.actions.getRepoPublicKey(REPO)).status, 200);
    await assert.rejects(installed.repos.listDeployKeys(REPO), (e: { status: number; response: { data: { message: string } } }) => e.status === 403 && e.response.data.message === 'Resource not accessible by integration');

    const impostor = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs1', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } }).privateKey;
    const forged = new Octokit({ authStrategy: createAppAuth, auth: { appId: app.appId, privateKey: impostor, installationId: app.installationId }, baseUrl: gh.url, log: quiet });
    await assert.rejects(forged.actions.getRepoPublicKey(REPO), { status: 401 });
  });

  it('the validator catches a response off the description (a public key without its required key_id)', async () => {
    gh.corruptNextResponse({ method: 'GET', path: /secrets\/public-key$/ });
    const { data } = await octokit.actions.getRepoPublicKey(REPO);
    assert.equal('key_id' in data, false);
    assert.equal(gh.violations.length, 1);
    assert.match(gh.violations[0], /actions\/get-repo-public-key.*response 200 body: body must have required property 'key_id'/);
    assert.throws(() => gh.assertNoViolations(), /1 OpenAPI violation/);
    gh.violations.length = 0;
  });

  it('the validator catches a request off the description: a secret PUT without key_id is a violation and GitHub\'s 422', async () => {
    const refused = await octokit.request('PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}', { ...REPO, secret_name: 'X', encrypted_value: 'AAAA' } as never).catch((e) => e);
    assert.equal(refused.status, 422);
    assert.equal(refused.response.data.message, 'Invalid request.\n\n"key_id" wasn\'t supplied.');
    await assert.rejects(octokit.request('GET /repos/{owner}/{repo}/not-in-the-extract', REPO), { status: 404 });
    assert.equal(gh.violations.length, 2);
    assert.match(gh.violations[0], /create-or-update-repo-secret.*request body: body must have required property 'key_id'/);
    assert.match(gh.violations[1], /no operation in the description matches/);
    gh.violations.length = 0;
  });

  describe('git data, pull requests, branch protection and checks', () => {
    const GIT = { contents: 'write', pull_requests: 'write', checks: 'read', statuses: 'read' } as const;
    let git: Octokit;
    beforeEach(() => {
      git = client(gh.url, gh.addToken({ permissions: { ...GIT }, repositories: ['octo/app'] }));
      gh.pushFiles('octo/app', 'main', { 'deploy/values.yaml': 'a: 1\n' }, { message: 'config' });
    });

    /** A commit on main changing deploy/values.yaml to `text`, made with the git data API, dated so it is reproducible. */
    async function commitOnMain(text: string) {
      const main = (await git.git.getRef({ ...REPO, ref: 'heads/main' })).data.object.sha;
      const blob = (await git.git.createBlob({ ...REPO, content: Buffer.from(text).toString('base64'), encoding: 'base64' })).data;
      const parent = (await git.git.getCommit({ ...REPO, commit_sha: main })).data;
      const tree = (await git.git.createTree({ ...REPO, base_tree: parent.tree.sha, tree: [{ path: 'deploy/values.yaml', mode: '100644', type: 'blob', sha: blob.sha }] })).data;
      const who = { name: 'rekey', email: 'rekey@localhost', date: '2026-11-23T10:00:00Z' };
      return { main, commit: (await git.git.createCommit({ ...REPO, message: 'edit', tree: tree.sha, parents: [main], author: who, committer: who })).data };
    }

    it('git objects are content-addressed: the same commit twice is one sha; refs create (422 when there), fast-forward, force, list by prefix and delete', async () => {
      const first = await commitOnMain('a: 2\n');
      const again = await commitOnMain('a: 2\n');
      assert.equal(again.commit.sha, first.commit.sha, 'same parent, tree, people, dates and message: same commit');
      assert.deepEqual(first.commit.parents.map((p) => p.sha), [first.main]);

      await git.git.createRef({ ...REPO, ref: 'refs/heads/rekey/s/v1', sha: first.commit.sha });
      await assert.rejects(git.git.createRef({ ...REPO, ref: 'refs/heads/rekey/s/v1', sha: first.main }), (e: { status: number; response: { data: { message: string } } }) => e.status === 422 && e.response.data.message === 'Reference already exists');
      const content = (await git.repos.getContent({ ...REPO, path: 'deploy/values.yaml', ref: 'rekey/s/v1' })).data as { content: string; type: string };
      assert.equal(Buffer.from(content.content, 'base64').toString(), 'a: 2\n');
      await assert.rejects(git.git.updateRef({ ...REPO, ref: 'heads/rekey/s/v1', sha: first.main }), { status: 422 }, 'not a fast-forward without force');
      await git.git.updateRef({ ...REPO, ref: 'heads/rekey/s/v1', sha: first.main, force: true });
      assert.equal(gh.head('octo/app', 'rekey/s/v1'), first.main);
      assert.deepEqual((await git.git.listMatchingRefs({ ...REPO, ref: 'heads/rekey/s/' })).data.map((r) => r.ref), ['refs/heads/rekey/s/v1']);
      await git.git.deleteRef({ ...REPO, ref: 'heads/rekey/s/v1' });
      await assert.rejects(git.git.getRef({ ...REPO, ref: 'heads/rekey/s/v1' }), { status: 404 });
    });

    it('a pull request merges only with its required checks green, from the pinned head, and with the chosen method', async () => {
      gh.protectBranch('octo/app', 'main', { checks: [{ context: 'ci', appId: 15368 }], strict: true });
      const { commit } = await commitOnMain('a: 3\n');
      await git.git.createRef({ ...REPO, ref: 'refs/heads/feature', sha: commit.sha });
      const { data: pr } = await git.pulls.create({ ...REPO, head: 'feature', base: 'main', title: 'feature' });
      await assert.rejects(git.pulls.create({ ...REPO, head: 'feature', base: 'main', title: 'again' }), { status: 422 }, 'one open pull request per head and base');
      assert.deepEqual((await git.pulls.list({ ...REPO, head: 'octo:feature', state: 'all' })).data.map((p) => p.number), [pr.number]);

      // The branch requires "ci" from GitHub Actions: another app's success does not count.
      gh.addCheckRun('octo/app', commit.sha, { name: 'ci', conclusion: 'success', appId: 999 });
      await assert.rejects(git.pulls.merge({ ...REPO, pull_number: pr.number, sha: commit.sha }), (e: { status: number; response: { data: { message: string } } }) => e.status === 405 && /Required status check "ci"/.test(e.response.data.message));
      gh.addCheckRun('octo/app', commit.sha, { name: 'ci', conclusion: 'success' });
      const runs = (await git.checks.listForRef({ ...REPO, ref: commit.sha })).data.check_runs;
      assert.deepEqual(runs.map((r) => [r.name, r.app?.id, r.conclusion]).sort(), [['ci', 15368, 'success'], ['ci', 999, 'success']]);
      await assert.rejects(git.pulls.merge({ ...REPO, pull_number: pr.number, sha: 'f'.repeat(40) }), { status: 409 }, 'a head other than the pinned sha');

      const { data: merged } = await git.pulls.merge({ ...REPO, pull_number: pr.number, sha: commit.sha, merge_method: 'squash', commit_title: 'squashed' });
      assert.equal(merged.merged, true);
      assert.deepEqual(gh.commit('octo/app', gh.head('octo/app', 'main')!)!.parents.length, 1, 'squash: one parent');
      assert.equal(gh.file('octo/app', 'main', 'deploy/values.yaml'), 'a: 3\n');
      const { data: after } = await git.pulls.get({ ...REPO, pull_number: pr.number });
      assert.deepEqual([after.state, after.merged, after.merge_commit_sha], ['closed', true, merged.sha]);
    });

    it('branch protection, statuses and closing: what rekey reads and does', async () => {
      gh.protectBranch('octo/app', 'main', { checks: ['ci', { context: 'lint', appId: 15368 }] });
      const { data: branch } = await git.repos.getBranch({ ...REPO, branch: 'main' });
      assert.equal(branch.protected, true);
      assert.deepEqual(branch.protection.required_status_checks?.checks, [{ context: 'ci', app_id: null }, { context: 'lint', app_id: 15368 }]);
      const sha = gh.head('octo/app', 'main')!;
      gh.setStatus('octo/app', sha, 'ci', 'pending');
      gh.setStatus('octo/app', sha, 'ci', 'failure');
      const { data: combined } = await git.repos.getCombinedStatusForRef({ ...REPO, ref: sha });
      assert.deepEqual([combined.state, combined.statuses.map((s) => s.state)], ['failure', ['failure']], 'the latest status of each context');
      // A direct push to a branch that requires checks is refused.
      const { commit } = await commitOnMain('a: 4\n');
      await assert.rejects(git.git.updateRef({ ...REPO, ref: 'heads/main', sha: commit.sha }), { status: 422 });

      await git.git.createRef({ ...REPO, ref: 'refs/heads/feature', sha: commit.sha });
      const { data: pr } = await git.pulls.create({ ...REPO, head: 'feature', base: 'main', title: 'feature' });
      await git.pulls.update({ ...REPO, pull_number: pr.number, state: 'closed' });
      assert.deepEqual(gh.pulls('octo/app').map((p) => [p.state, p.merged]), [['closed', false]]);
    });

    it('each new operation needs its permission: 403 naming it in X-Accepted-GitHub-Permissions', async () => {
      const reader = client(gh.url, gh.addToken({ permissions: { contents: 'read' }, repositories: ['octo/app'] }));
      const refused = await reader.git.createBlob({ ...REPO, content: 'x' }).catch((e) => e);
      assert.equal(refused.status, 403);
      assert.equal(refused.response.headers['x-accepted-github-permissions'], 'contents=write');
      const checks = await reader.checks.listForRef({ ...REPO, ref: 'main' }).catch((e) => e);
      assert.equal(checks.response.headers['x-accepted-github-permissions'], 'checks=read');
      const pulls = await reader.pulls.list(REPO).catch((e) => e);
      assert.equal(pulls.response.headers['x-accepted-github-permissions'], 'pull_requests=read');
    });

    it('the validator catches a malformed answer of a new operation (a ref without its object, a pull request without its head)', async () => {
      gh.corruptNextResponse({ method: 'GET', path: /\/git\/ref\// }, (body) => ({ ...(body as object), object: undefined }));
      await git.git.getRef({ ...REPO, ref: 'heads/main' });
      await git.git.createRef({ ...REPO, ref: 'refs/heads/feature', sha: (await commitOnMain('a: 5\n')).commit.sha });
      gh.corruptNextResponse({ method: 'POST', path: /\/pulls$/ }, (body) => ({ ...(body as object), head: { ref: 'feature' } }));
      await git.pulls.create({ ...REPO, head: 'feature', base: 'main', title: 'x' });
      assert.equal(gh.violations.length, 2, gh.violations.join('\n'));
      assert.match(gh.violations[0], /git\/get-ref.*response 200 body: body must have required property 'object'/);
      assert.match(gh.violations[1], /pulls\/create.*response 201 body: body\/head must have required property/);
      gh.violations.length = 0;
    });

    it('a dropped answer: the request is carried out, the client sees the connection cut', async () => {
      const { commit } = await commitOnMain('a: 6\n');
      gh.dropNextResponse({ method: 'POST', path: /\/git\/refs$/ });
      const bare = new Octokit({ auth: gh.addToken({ permissions: { ...GIT }, repositories: ['octo/app'] }), baseUrl: gh.url, log: quiet });
      await assert.rejects(bare.git.createRef({ ...REPO, ref: 'refs/heads/feature', sha: commit.sha }));
      assert.equal(gh.head('octo/app', 'feature'), commit.sha, 'GitHub made the branch all the same');
    });
  });

  it('loads the extract once, quickly', () => {
    const { loadMs, description } = githubDescription();
    assert.equal(description.operations.length, OPERATIONS.length, 'every operation of the extract script, no more');
    assert.ok(loadMs < 1000, `loaded in ${loadMs} ms`);
  });
});
