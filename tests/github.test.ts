// GitHub through Octokit, against the GitHub stand-in (tests/github/standin.ts, every request and
// response checked against GitHub's OpenAPI description) and the real stack for the rest. Each
// test names the GitHub behaviour it relies on.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand, PutSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { sshEd25519 } from '../activities/generators/ssh-ed25519';
import type { BreakGlassDocument } from '../lib/signed';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { emergencyWorkflowId, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { forgedAbort, forgedPendingVersion } from './forged-workflows';
import { startGitHubStandin, type GitHubStandin, type Permissions } from './github/standin';
import { newKey, people, sign, validFor } from './keys';
import { workerLog } from './setup';
import { allText, canLogin, databaseFixture, decodedPayloadText, failureOf, killAndFinish, labelled, postgresSpec, spawnWorker, manifests, settled, sm, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

const ROOT = join(__dirname, '..');
/** No write spacing and quick polls: GitHub's pacing would make the suite ten times slower. */
const FAST = { github: { writeSpacingMs: 0, pollMs: 100 } };

let gh: GitHubStandin;
before(async () => {
  gh = await startGitHubStandin();
});
after(() => gh.close());
// Every request rekey made and every answer the stand-in gave matched GitHub's description.
afterEach(() => gh.assertNoViolations());

/** The armour line of an OpenSSH private key, spelt in parts so that no key-shaped literal sits in the repository. */
const OPENSSH_BEGIN = ['-----BEGIN', 'OPENSSH', 'PRIVATE', 'KEY-----'].join(' ');

/** A recognisable value, so a leak scan can look for it. */
const testValue = () => `rekey-test-value-${randomBytes(12).toString('hex')}`;

async function storeSecret(name: string, value: object) {
  const secretId = `rekey-test/${name}`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify(value) }));
  return { type: 'aws-secrets-manager', secretId };
}

/** A GitHub connection whose token (kept in the store) has these permissions. */
async function connection(id: string, permissions: Permissions, scope: { repositories?: string[]; organizations?: string[] } = {}) {
  const token = gh.addToken({ permissions, ...scope });
  return { baseUrl: gh.url, auth: { token: { store: await storeSecret(`${id}/github-token`, { token }) } } };
}

async function rotate(secret: string, spec: object): Promise<{ report?: RotationReport; failure?: string }> {
  const trusted = await manifests({ [secret]: spec });
  return withWorker(
    async (taskQueue) =>
      settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret, { requestedBy: 'test' })] })),
    { manifestDirs: [trusted.dir], ...FAST },
  );
}

async function historyOf(secret: string) {
  return (await (await temporalClient()).workflow.getHandle(rotationWorkflowId(secret)).fetchHistory()).events ?? [];
}

/** Attempts of each activity type, from the rotation's history. */
async function attempts(secret: string, activity: string): Promise<number[]> {
  const events = await historyOf(secret);
  const scheduled = new Map(events.filter((e) => e.activityTaskScheduledEventAttributes).map((e) => [String(e.eventId), e.activityTaskScheduledEventAttributes!.activityType?.name]));
  return events
    .filter((e) => e.activityTaskStartedEventAttributes && scheduled.get(String(e.activityTaskStartedEventAttributes.scheduledEventId)) === activity)
    .map((e) => e.activityTaskStartedEventAttributes!.attempt ?? 1);
}

/** No value in the rotation's history or the worker log; none in any request but the hook-config ones that must carry it. */
async function assertNoLeak(secret: string, values: string[], logStart: number, allowedInRequest: (r: { method: string; path: string }) => boolean = () => false) {
  const history = await decodedPayloadText(await historyOf(secret));
  const log = allText(workerLog.slice(logStart));
  const requests = gh.requests.filter((r) => !allowedInRequest(r)).map((r) => `${r.method} ${r.path} ${r.requestBody} ${r.responseBody}`).join('\n');
  for (const value of values) {
    assert.ok(value.length > 16);
    assert.ok(!history.includes(value), 'a secret value is in the rotation history');
    assert.ok(!log.includes(value), 'a secret value is in the worker log');
    assert.ok(!requests.includes(value), 'a secret value travelled to GitHub in clear');
  }
}

describe('GitHub Actions secrets (github-actions-secret)', () => {
  /** A repository with an environment, an organisation, and a consumer writing a secret to each. */
  async function fixture(permissions: Permissions) {
    const id = uniqueId();
    const [org, repository] = [`org-${id}`, `org-${id}/app`];
    gh.addOrganization(org);
    const repo = gh.addRepository(repository);
    gh.addEnvironment(repository, 'production');
    const initial = testValue();
    const store = await storeSecret(`${id}/ci-token`, { value: initial });
    const targets = [
      { repository, name: 'DEPLOY_TOKEN' },
      { repository, environment: 'production', name: 'DEPLOY_TOKEN' },
      { organization: org, name: 'SHARED_DEPLOY_TOKEN', visibility: 'selected', selectedRepositories: [repository] },
    ];
    for (const t of targets) gh.setSecret('organization' in t ? { organization: org } : t, t.name, initial, 'organization' in t ? { visibility: 'selected', selectedRepositoryIds: [repo.id] } : {});
    const spec = {
      store,
      generator: { type: 'random-bytes', size: 32 },
      consumers: [{ type: 'github-actions-secret', name: 'ci', github: await connection(id, permissions, { repositories: [repository], organizations: [org] }), targets }],
      policy: { overlap: '0s' },
    };
    const held = () => [gh.secret({ repository }, 'DEPLOY_TOKEN'), gh.secret({ repository, environment: 'production' }, 'DEPLOY_TOKEN'), gh.secret({ organization: org }, 'SHARED_DEPLOY_TOKEN')];
    return { id, org, repository, repoId: repo.id, initial, store, spec, held };
  }
  const ALL = { secrets: 'write', environments: 'write', organization_secrets: 'write', actions: 'write' } as const;

  it('writes the new value to repository, environment and organisation secrets (sealed with each key), proves it with the verify workflow, and leaks nothing', async () => {
    const fx = await fixture(ALL);
    (fx.spec.consumers[0] as Record<string, unknown>).verifyWorkflow = { repository: fx.repository, workflow: 'rekey-verify.yml' };
    // The probe workflow sees the repository's secrets as a run would, and the version it was dispatched for.
    const seen: { value?: string; version?: string } = {};
    gh.addWorkflow(fx.repository, 'rekey-verify.yml', ({ inputs, secrets }) => {
      Object.assign(seen, { value: secrets.DEPLOY_TOKEN, version: inputs.rekey_version_id });
      return 'success';
    });
    const logStart = workerLog.length;

    const { report, failure } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.store.secretId, 'AWSCURRENT'))!;
    assert.notEqual(current.value.value, fx.initial);
    // https://docs.github.com/en/rest/guides/encrypting-secrets-for-the-rest-api: GitHub opens the sealed box.
    for (const held of fx.held()) assert.equal(held?.value === current.value.value, true, 'GitHub holds the new value');
    // https://docs.github.com/en/rest/actions/secrets#create-or-update-an-organization-secret: visibility is re-sent.
    assert.equal(fx.held()[2]?.visibility, 'selected');
    assert.deepEqual(fx.held()[2]?.selectedRepositoryIds, [fx.repoId]);
    assert.equal(seen.value === current.value.value, true, 'the verify workflow ran with the new value');
    assert.equal(seen.version, current.versionId);
    await assertNoLeak(fx.id, [fx.initial, current.value.value], logStart);
  });

  it('a verify workflow that fails rolls back: every secret holds the old value again', async () => {
    const fx = await fixture(ALL);
    (fx.spec.consumers[0] as Record<string, unknown>).verifyWorkflow = { repository: fx.repository, workflow: 'rekey-verify.yml' };
    gh.addWorkflow(fx.repository, 'rekey-verify.yml', () => 'failure');

    const { report } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.equal(report?.failure?.consumer, 'ci');
    assert.match(report!.failure!.message, /verify workflow run \d+ concluded failure/);
    for (const held of fx.held()) assert.equal(held?.value === fx.initial, true, 'GitHub holds the old value again');
    assert.equal((await labelled(fx.store.secretId, 'AWSCURRENT'))!.value.value, fx.initial);
    assert.equal(await labelled(fx.store.secretId, 'AWSPENDING'), undefined);
  });

  it('a token without permission to write secrets: refused at once (not retried), naming the repository and the permission', async () => {
    const fx = await fixture({ secrets: 'read', environments: 'read', organization_secrets: 'read' });

    const { report, failure } = await rotate(fx.id, fx.spec);

    // GitHub answers 403 with X-Accepted-GitHub-Permissions:
    // https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#resource-not-accessible
    const message = `${failure ?? ''} ${report?.failure?.message ?? ''}`;
    assert.match(message, new RegExp(`GitHub denied write of ${fx.repository} secret DEPLOY_TOKEN on ${fx.repository} \\(403 [^)]*\\): the token needs secrets=write`));
    assert.deepEqual(await attempts(fx.id, 'deployToConsumer'), [1, 1], 'deploy and its rollback, each tried once');
    for (const held of fx.held()) assert.equal(held?.value === fx.initial, true, 'nothing changed at GitHub');
    assert.equal((await labelled(fx.store.secretId, 'AWSCURRENT'))!.value.value, fx.initial);
  });

  it('as a GitHub App: each activity mints an installation token from the stored private key, which never leaves the worker', async () => {
    const fx = await fixture(ALL);
    const app = gh.addApp({ permissions: { secrets: 'write', environments: 'write', organization_secrets: 'write' }, repositories: [fx.repository], organizations: [fx.org] });
    const privateKey = await storeSecret(`${fx.id}/github-app`, { privateKey: app.privateKey });
    const consumer = fx.spec.consumers[0] as Record<string, unknown>;
    consumer.github = { baseUrl: gh.url, auth: { app: { appId: app.appId, installationId: app.installationId, privateKey: { store: privateKey } } } };
    const from = gh.requests.length;
    const logStart = workerLog.length;

    const { report, failure } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.store.secretId, 'AWSCURRENT'))!;
    for (const held of fx.held()) assert.equal(held?.value === current.value.value, true);
    // https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation
    const minted = gh.requests.slice(from).filter((r) => r.method === 'POST' && r.path === `/app/installations/${app.installationId}/access_tokens`);
    assert.ok(minted.length >= 2 && minted.every((r) => r.status === 201), 'deploy and verify each minted a token');
    const pem = app.privateKey.split('\n').filter((l) => l && !l.startsWith('-----'));
    await assertNoLeak(fx.id, [fx.initial, current.value.value, pem[1], pem[pem.length - 2]], logStart);
  });

  it('a 404 on a secret whose scope the token cannot see is a refusal naming the permission, not a secret that is missing', async () => {
    const fx = await fixture(ALL);
    // After deploy, the token loses sight of the repository (GitHub then answers 404 everywhere in it).
    let hidden = false;
    const notFound = { status: 404, body: { message: 'Not Found', documentation_url: 'https://docs.github.com/rest', status: '404' } };
    const hide = gh.intercept({ method: 'GET', path: new RegExp(`/repos/${fx.repository}/actions/secrets/`) }, (req) => {
      hidden ||= req.path.endsWith('/DEPLOY_TOKEN');
      return hidden ? notFound : undefined;
    });

    const { report, failure } = await rotate(fx.id, fx.spec).finally(hide);

    const message = `${failure ?? ''} ${report?.failure?.message ?? ''}`;
    assert.match(message, new RegExp(`GitHub found no ${fx.repository} for read of ${fx.repository} secret DEPLOY_TOKEN \\(404\\): it does not exist, or the token needs secrets=write to see it`));
    assert.doesNotMatch(message, /does not exist$/);
  });

  it('a secondary rate limit is waited out as advertised (retry-after) by Octokit, inside the same activity attempt', async () => {
    const fx = await fixture(ALL);
    const writes = /\/actions\/secrets\/DEPLOY_TOKEN$/;
    // https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits
    gh.secondaryRateLimit({ count: 1, retryAfterSeconds: 1, match: { method: 'PUT', path: writes } });
    const from = gh.requests.length;

    const { report, failure } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const puts = gh.requests.slice(from).filter((r) => r.method === 'PUT' && writes.test(r.path));
    assert.deepEqual(puts.slice(0, 2).map((r) => r.status), [403, 204]);
    assert.ok(Date.parse(puts[1].at) - Date.parse(puts[0].at) >= 1000, 'the retry waited for retry-after');
    assert.deepEqual(await attempts(fx.id, 'deployToConsumer'), [1]);
  });
});

/** The example receiver, verifying X-Hub-Signature-256 against every key in its key file. */
async function startReceiver(keyFile: string): Promise<{ url: string; process: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'examples/webhook-receiver/receiver.ts'), '--port', '0', '--keys', keyFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      const found = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (found) resolve(found[1]);
    });
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
  });
  return { url, process: child };
}

describe('webhook signing secrets with overlapping keys (github-webhook + keys: current-and-previous)', () => {
  const receivers: ChildProcess[] = [];
  afterEach(() => receivers.splice(0).forEach((r) => r.kill('SIGTERM')));

  /**
   * Two receivers, each behind its own repository hook that signs with the current key. `lagging`
   * names a receiver that keeps reading a key file rekey never writes: it never learns the new key.
   */
  async function fixture(options: { lagging?: 'b' } = {}) {
    const id = uniqueId();
    const repository = `octo-${id}/app`;
    gh.addRepository(repository);
    const initial = testValue();
    const store = await storeSecret(`${id}/webhook-signing`, { value: initial });
    const currentVersion = (await labelled(store.secretId, 'AWSCURRENT'))!.versionId;
    const dir = await tempDir();
    const sides = await Promise.all(
      (['a', 'b'] as const).map(async (name) => {
        const deployed = join(dir, `${name}.json`);
        const read = options.lagging === name ? join(dir, `${name}-stale.json`) : deployed;
        await writeFile(read, JSON.stringify({ value: initial, rekey_version_id: currentVersion }), { mode: 0o600 });
        const receiver = await startReceiver(read);
        receivers.push(receiver.process);
        const hook = gh.addHook({ repository }, { url: `${receiver.url}/github`, secret: initial, contentType: 'json', events: ['push'] });
        return { name, deployed, url: receiver.url, hookId: hook.id };
      }),
    );
    const spec = {
      store,
      generator: { type: 'random-bytes', size: 32 },
      consumers: [
        ...sides.map((s) => ({
          type: 'command',
          name: `receiver-${s.name}`,
          file: s.deployed,
          keys: 'current-and-previous',
          // The receiver itself says which versions it holds.
          health: options.lagging === s.name ? 'grep -q "$REKEY_VERSION_ID" "$REKEY_FILE"' : `curl -fsS ${s.url}/health | grep -q "\\"$REKEY_VERSION_ID\\""`,
        })),
        {
          type: 'github-webhook',
          name: 'github',
          github: await connection(id, { repository_hooks: 'write' }, { repositories: [repository] }),
          hooks: sides.map((s) => ({ repository, id: s.hookId })),
          pingTimeout: '10s',
        },
      ],
      policy: { overlap: '1s' },
    };
    return { id, repository, initial, store, spec, sides, currentVersion };
  }

  it('receivers get both keys, the hook switches at promote with a ping every receiver accepts, then receivers keep the new key alone; no delivery fails meanwhile', async () => {
    const fx = await fixture();
    // GitHub signs each delivery with the hook's secret as X-Hub-Signature-256:
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    const streams = fx.sides.map((s) => gh.deliverContinuously({ repository: fx.repository }, s.hookId, 50));
    const logStart = workerLog.length;

    const { report, failure } = await rotate(fx.id, fx.spec);
    const delivered = await Promise.all(streams.map((s) => s.stop()));

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.store.secretId, 'AWSCURRENT'))!;
    for (const [i, side] of fx.sides.entries()) {
      assert.equal(gh.hook({ repository: fx.repository }, side.hookId).secret === current.value.value, true, 'the hook signs with the new key');
      assert.deepEqual(delivered[i].failed, [], `no failed delivery to receiver ${side.name}`);
      assert.ok(delivered[i].delivered > 5, 'deliveries kept flowing through the rotation');
      const file = JSON.parse(await readFile(side.deployed, 'utf8'));
      assert.equal(file.value === current.value.value, true);
      assert.equal(file.rekey_version_id, current.versionId);
      assert.equal(file.previous, undefined, 'after revoke the receiver holds the new key alone');
      // https://docs.github.com/en/rest/repos/webhooks#ping-a-repository-webhook: a ping is a delivery like any other.
      const pings = gh.deliveries({ repository: fx.repository }, side.hookId).filter((d) => d.event === 'ping');
      assert.deepEqual(pings.map((d) => d.statusCode), [204]);
    }
    assert.deepEqual(
      report!.consumers.map((c) => [c.name, c.state]),
      [['receiver-a', 'finalized'], ['receiver-b', 'finalized'], ['github', 'committed']],
    );
    // Each phase is its own activity, named in the UI's timeline.
    const summaries = (await historyOf(fx.id)).map((e) => e.userMetadata?.summary && String((e.activityTaskScheduledEventAttributes?.activityType?.name ?? '') + ' ' + Buffer.from(e.userMetadata.summary.data ?? []).toString()));
    const named = (activity: string) => summaries.filter((x) => x?.startsWith(activity)).length;
    assert.deepEqual([named('commitConsumer'), named('finalizeConsumer')], [1, 2]);
    // The hook's secret goes to GitHub in clear by design (a config PATCH); nothing else carries a value.
    await assertNoLeak(fx.id, [fx.initial, current.value.value], logStart, (r) => r.method === 'PATCH' && /\/hooks\/\d+\/config$/.test(r.path));
  });

  it('a receiver that does not accept the new key: its ping fails, the hook is switched back, every receiver holds the old key alone', async () => {
    const fx = await fixture({ lagging: 'b' });

    const { report } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.equal(report?.failure?.consumer, 'github');
    assert.match(report!.failure!.message, /the receiver of .* hook \d+ answered 401 .* to a ping signed with the new key/);
    for (const side of fx.sides) {
      assert.equal(gh.hook({ repository: fx.repository }, side.hookId).secret === fx.initial, true, 'the hook signs with the old key again');
      const file = JSON.parse(await readFile(side.deployed, 'utf8'));
      assert.equal(file.value === fx.initial, true);
      assert.equal(file.previous, undefined);
      assert.equal(file.rekey_version_id, fx.currentVersion);
    }
    // A delivery signed now reaches both receivers.
    for (const side of fx.sides) assert.equal((await gh.deliver({ repository: fx.repository }, side.hookId, 'push')).statusCode, 204);
    assert.equal((await labelled(fx.store.secretId, 'AWSCURRENT'))!.value.value, fx.initial);
  });

  it('an organisation hook named by its URL switches like a repository one; a token without organization_hooks is refused by name', async () => {
    const id = uniqueId();
    const org = `org-${id}`;
    gh.addOrganization(org);
    const initial = testValue();
    const store = await storeSecret(`${id}/org-webhook`, { value: initial });
    const dir = await tempDir();
    const file = join(dir, 'keys.json');
    await writeFile(file, JSON.stringify({ value: initial, rekey_version_id: (await labelled(store.secretId, 'AWSCURRENT'))!.versionId }), { mode: 0o600 });
    const receiver = await startReceiver(file);
    receivers.push(receiver.process);
    const hookUrl = `${receiver.url}/org-events`;
    gh.addHook({ organization: org }, { url: `${receiver.url}/other` });
    const hook = gh.addHook({ organization: org }, { url: hookUrl, secret: initial });
    const spec = (permissions: Permissions) => async () => ({
      store,
      generator: { type: 'random-bytes', size: 32 },
      consumers: [
        { type: 'command', name: 'receiver', file, keys: 'current-and-previous', health: `curl -fsS ${receiver.url}/health | grep -q "\\"$REKEY_VERSION_ID\\""` },
        { type: 'github-webhook', name: 'github', github: await connection(`${id}-${Object.keys(permissions).join()}`, permissions, { organizations: [org] }), hooks: [{ organization: org, url: hookUrl }], pingTimeout: '10s' },
      ],
      policy: { overlap: '0s' },
    });

    const denied = await rotate(id, await spec({ repository_hooks: 'write' })());
    assert.equal(denied.report?.outcome, 'rolled-back');
    assert.match(denied.report!.failure!.message, new RegExp(`GitHub denied hook list on organisation ${org} \\(403 [^)]*\\): the token needs organization_hooks=read`));

    const { report, failure } = await rotate(id, await spec({ organization_hooks: 'write' })());
    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(store.secretId, 'AWSCURRENT'))!;
    assert.equal(gh.hook({ organization: org }, hook.id).secret === current.value.value, true);
    assert.equal(gh.hook({ organization: org }, hook.id).url, hookUrl, 'the URL was not touched');
    assert.equal((await gh.deliver({ organization: org }, hook.id, 'push')).statusCode, 204);
  });

  it('a hook that cannot be switched back: every consumer is left as it is (receivers keep both keys), and deliveries keep working', async () => {
    const fx = await fixture({ lagging: 'b' });
    // Hook a switches and its ping passes; hook b's ping fails; then GitHub refuses every further config change.
    let patches = 0;
    const hooks = new RegExp(`/repos/${fx.repository}/hooks/\\d+/config$`);
    const refuse = gh.intercept({ method: 'PATCH', path: hooks }, () => (++patches > 2 ? { status: 403, body: { message: 'Resource not accessible by personal access token', documentation_url: 'https://docs.github.com/rest', status: '403' } } : undefined));

    const { report, failure } = await rotate(fx.id, fx.spec).finally(refuse);

    assert.equal(report?.outcome, 'rollback-incomplete');
    assert.match(failure!, /github could not be switched back .*every consumer was left as it is/);
    const a = JSON.parse(await readFile(fx.sides[0].deployed, 'utf8'));
    assert.equal(a.previous?.rekey_version_id, fx.currentVersion, 'receiver a still accepts the old key beside the new');
    assert.equal((await gh.deliver({ repository: fx.repository }, fx.sides[0].hookId, 'push')).statusCode, 204, 'hook a (on the new key) still reaches its receiver');
  });

  it('a ping someone sent before the switch (signed with the old key) is not taken as proof of the new key', async () => {
    const fx = await fixture({ lagging: 'b' });
    const hookB = fx.sides[1].hookId;
    // Just before hook b switches, a ping signed with the old key reaches receiver b, which accepts it.
    const remove = gh.intercept({ method: 'PATCH', path: new RegExp(`/hooks/${hookB}/config$`) }, async () => {
      remove();
      assert.equal((await gh.deliver({ repository: fx.repository }, hookB, 'ping')).statusCode, 204);
    });

    const { report } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, new RegExp(`hook ${hookB} answered 401`));
  });

  it('a delivery listed without a numeric status code is not a 2xx', async () => {
    const fx = await fixture();
    const hookA = fx.sides[0].hookId;
    // GitHub's answers are read, not trusted: once hook a's ping is recorded, its list comes back without status codes.
    const corrupt = gh.intercept({ method: 'GET', path: new RegExp(`/hooks/${hookA}/deliveries`) }, async () => {
      if (!gh.deliveries({ repository: fx.repository }, hookA).some((d) => d.event === 'ping')) return;
      gh.corruptNextResponse({ method: 'GET', path: new RegExp(`/hooks/${hookA}/deliveries`) }, (body) => (body as object[]).map((d) => ({ ...d, status_code: undefined })));
    });

    const { report } = await rotate(fx.id, fx.spec).finally(corrupt);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /answered undefined/);
    // The malformed answers were this test's doing.
    gh.violations.splice(0);
  });

  it('another workflow on the task queue cannot switch a hook back, nor write a pending version that makes the real rotation look abandoned', async () => {
    const fx = await fixture();
    const trusted = await manifests({ [fx.id]: fx.spec });
    const specHash = trusted.input(fx.id).specHash!;
    const from = gh.requests.length;

    const [abort, takeover] = await withWorker(
      async (taskQueue) => {
        const client = await temporalClient();
        const run = (workflow: typeof forgedAbort | typeof forgedPendingVersion, arg: never) => failureOf(client.workflow.execute(workflow, { taskQueue, workflowId: uniqueId('forged-'), args: [arg] }));
        return [
          await run(forgedAbort, { secret: fx.id, specHash, consumer: 'github', versionId: fx.currentVersion } as never),
          await run(forgedPendingVersion, { secret: fx.id, specHash } as never),
        ];
      },
      { manifestDirs: [trusted.dir], forgedWorkflows: true, ...FAST },
    );

    for (const message of [abort, takeover]) assert.match(message, new RegExp(`only the workflow rotation/${fx.id} may act on ${fx.id}, not forged-`));
    assert.deepEqual(gh.requests.slice(from).filter((r) => r.method !== 'GET'), [], 'nothing was changed at GitHub');
    assert.equal(await labelled(fx.store.secretId, 'AWSPENDING'), undefined, 'no pending version was written');
  });

  it('a revoke-first emergency switches the hook too, so receivers that drop the leaked key still get deliveries', async () => {
    const fx = await fixture();
    const oncall = await newKey('oncall');
    const trusted = await manifests({ [fx.id]: fx.spec }, people([oncall], ['oncall']));
    const document: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: fx.id, revokeFirst: true, reason: 'signing key posted in a public repo', ...validFor(600_000) };

    const report: RotationReport = await withWorker(
      async (taskQueue) =>
        (await temporalClient()).workflow.execute(emergencyRevoke, {
          taskQueue,
          workflowId: emergencyWorkflowId(fx.id),
          args: [{ secret: fx.id, requestedBy: 'oncall', reason: 'leak', authorization: await sign(oncall, document) }],
        }),
      { manifestDirs: [trusted.dir], ...FAST },
    );

    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const current = (await labelled(fx.store.secretId, 'AWSCURRENT'))!;
    for (const side of fx.sides) {
      assert.equal(gh.hook({ repository: fx.repository }, side.hookId).secret === current.value.value, true, 'the hook no longer signs with the leaked key');
      assert.equal(JSON.parse(await readFile(side.deployed, 'utf8')).previous, undefined, 'the receiver dropped the leaked key');
      assert.equal((await gh.deliver({ repository: fx.repository }, side.hookId, 'push')).statusCode, 204);
    }
  });

  it('a consumer that cannot hold the new version alone: the report warns and post-verify names it as still accepting the old one', async () => {
    const id = uniqueId();
    const store = await storeSecret(`${id}/two-keys`, { value: testValue() });
    const file = join(await tempDir(), 'keys.json');
    // Healthy only while it holds two keys: after revoke, finalize cannot make it healthy on the new one alone.
    const spec = { store, generator: { type: 'random-bytes', size: 32 }, consumers: [{ type: 'command', name: 'receiver', file, keys: 'current-and-previous', health: 'grep -q previous "$REKEY_FILE"' }], policy: { overlap: '0s', timeouts: { verify: '3s' } } };

    const { report, failure } = await rotate(id, spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.match(report!.warnings!.join('\n'), /finalize receiver: .*it still accepts the previous version/);
    assert.deepEqual(report!.postVerify && [report!.postVerify.oldRejected, report!.postVerify.detail], [false, 'OLD VERSION STILL ACCEPTED BY receiver']);
  });

  it('a consumer holding two versions gets the one this rotation replaces, never one someone else made current meanwhile', async () => {
    const id = uniqueId();
    const store = await storeSecret(`${id}/two-keys`, { value: testValue() });
    const file = join(await tempDir(), 'keys.json');
    const spec = { store, generator: { type: 'random-bytes', size: 32 }, consumers: [{ type: 'command', name: 'receiver', file, keys: 'current-and-previous' }], policy: { overlap: '0s' } };
    const trusted = await manifests({ [id]: spec });
    const meddled = testValue();
    // Between generate and deploy, another tool writes a version of its own and makes it current.
    const { report } = await withWorker(
      async (taskQueue) => settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(id), args: [trusted.input(id)] })),
      {
        manifestDirs: [trusted.dir],
        ...FAST,
        activities: (real) => ({
          ...real,
          async prepareTarget(pair: Parameters<typeof real.prepareTarget>[0]) {
            await sm.send(new PutSecretValueCommand({ SecretId: store.secretId, SecretString: JSON.stringify({ value: meddled }), VersionStages: ['AWSCURRENT'] }));
            return real.prepareTarget(pair);
          },
        }),
      },
    );

    assert.match(report!.failure!.message, /deploy to receiver: version .* this rotation replaces is no longer the current version/);
    // Rolling back to a version that is no longer current is not rekey's to do either: a person decides.
    assert.equal(report!.outcome, 'rollback-incomplete');
    assert.ok(!(await readFile(file, 'utf8').catch(() => '')).includes(meddled), 'the receiver never got the other tool\'s version');
  });

  it('producers that cannot be switched back leave a single-user target as it is: every consumer holds the new credential, so undoing it would lock them all out', async () => {
    const fx = await databaseFixture('single-user');
    const repository = `octo-${fx.id}/app`;
    gh.addRepository(repository);
    const dir = await tempDir();
    // A receiver that never learns the new key, so the ping fails; then GitHub refuses to switch back.
    const stale = join(dir, 'stale.json');
    await writeFile(stale, JSON.stringify({ value: 'not-the-new-key', rekey_version_id: 'none' }), { mode: 0o600 });
    const receiver = await startReceiver(stale);
    receivers.push(receiver.process);
    const hook = gh.addHook({ repository }, { url: `${receiver.url}/github`, secret: fx.initialPassword });
    let patches = 0;
    const refuse = gh.intercept({ method: 'PATCH', path: new RegExp(`/repos/${repository}/hooks/\\d+/config$`) }, () =>
      ++patches > 2 ? { status: 403, body: { message: 'Resource not accessible by personal access token', documentation_url: 'https://docs.github.com/rest', status: '403' } } : undefined,
    );
    const spec = postgresSpec(fx, 'single-user', {
      consumers: [
        { type: 'command', name: 'app', file: join(dir, 'db.json'), keys: 'current-and-previous' },
        { type: 'github-webhook', name: 'github', field: 'password', github: await connection(fx.id, { repository_hooks: 'write' }, { repositories: [repository] }), hooks: [{ repository, id: hook.id }], pingTimeout: '10s' },
      ],
    });

    const { report } = await rotate(fx.id, spec).finally(refuse);

    assert.equal(report?.outcome, 'rollback-incomplete');
    assert.match(report!.warnings!.join('\n'), /the target and the pending version .* were left as they are/);
    const pending = (await labelled(fx.secretId, 'AWSPENDING'))!;
    assert.equal(await canLogin(fx.users[0], pending.value.password), true, 'the credential every consumer holds still works');
  });

  it('a worker killed with SIGKILL between switching the hook and its ping: the next worker switches and pings again, and the rotation completes', async () => {
    const fx = await fixture();
    const trusted = await manifests({ [fx.id]: fx.spec });
    const taskQueue = uniqueId('rekey-github-crash-');
    // The first ping is held until the worker that sent it is dead.
    let pinged!: () => void;
    const pingArrived = new Promise<void>((resolve) => (pinged = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const remove = gh.intercept({ method: 'POST', path: /\/hooks\/\d+\/pings$/ }, async () => {
      remove();
      pinged();
      await released;
      return { status: 502, body: { message: 'Server Error' } };
    });
    const first = spawnWorker(taskQueue, trusted.dir);
    const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(fx.id), args: [trusted.input(fx.id)] });
    await pingArrived;
    const switched = gh.hook({ repository: fx.repository }, fx.sides[0].hookId).secret;
    assert.notEqual(switched, fx.initial, 'the hook was switched before the worker died');
    const report = await killAndFinish(first, taskQueue, trusted.dir, handle.result(), release);
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const current = (await labelled(fx.store.secretId, 'AWSCURRENT'))!;
    for (const side of fx.sides) assert.equal(gh.hook({ repository: fx.repository }, side.hookId).secret === current.value.value, true);
    assert.ok((await attempts(fx.id, 'commitConsumer')).some((a) => a > 1), 'the commit was retried on the new worker');
  });
});

describe('deploy keys (github-deploy-key target, ssh-ed25519 generator)', () => {
  /**
   * A repository whose current deploy key (stored with its public key) was added under the title
   * `title(id)`, and the Secret spec that rotates it.
   * https://docs.github.com/en/rest/deploy-keys/deploy-keys: several keys per repository, each key on one repository only.
   */
  async function deployKeyFixture(title: (id: string) => string) {
    const id = uniqueId();
    const repository = `octo-${id}/infra`;
    gh.addRepository(repository);
    const initial = sshEd25519({ type: 'ssh-ed25519' }).generate();
    const store = await storeSecret(`${id}/deploy-key`, { value: initial.value, publicKey: initial.beside!.publicKey });
    gh.addDeployKey(repository, { key: initial.beside!.publicKey, title: title(id), readOnly: true });
    const spec = {
      store,
      generator: { type: 'ssh-ed25519', comment: 'rekey' },
      target: { type: 'github-deploy-key', github: await connection(id, { administration: 'write' }, { repositories: [repository] }), repository, readOnly: true },
      policy: { overlap: '0s' },
    };
    return { id, repository, initial, store, spec };
  }

  it('rekey validate --check-targets says, without changing anything, whether the token may manage the keys and the current key is there', async () => {
    const id = uniqueId();
    const repository = `octo-${id}/infra`;
    gh.addRepository(repository);
    const key = (name: string) => sshEd25519({ type: 'ssh-ed25519' }).generate().beside!.publicKey + ` ${name}`;
    const secrets: Record<string, object> = {};
    for (const [name, permissions, listed] of [['ready', { administration: 'write' }, true], ['unlisted', { administration: 'write' }, false], ['no-permission', { contents: 'read' }, true]] as const) {
      const publicKey = key(name);
      if (listed) gh.addDeployKey(repository, { key: publicKey, title: name, readOnly: true });
      secrets[`${id}-${name}`] = {
        store: await storeSecret(`${id}/${name}`, { value: 'not-a-real-private-key', publicKey }),
        generator: { type: 'ssh-ed25519' },
        target: { type: 'github-deploy-key', github: await connection(`${id}-${name}`, permissions, { repositories: [repository] }), repository },
      };
    }
    const trusted = await manifests(secrets);
    const from = gh.requests.length;

    const { code, out } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'validate', '-f', trusted.dir, '--check-targets'], { cwd: ROOT }).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
    );

    assert.equal(code, 1);
    assert.match(out, new RegExp(`${id}-ready: target ready`));
    assert.match(out, new RegExp(`${id}-unlisted: 1 problem\\(s\\) a rotation would meet:\\n  the current key is not a deploy key of ${repository}`));
    assert.match(out, new RegExp(`${id}-no-permission: 1 problem\\(s\\) a rotation would meet:\\n  GitHub denied deploy key list on ${repository} \\(403 [^)]*\\): the token needs administration=read`));
    assert.deepEqual(gh.requests.slice(from).filter((r) => r.method !== 'GET'), [], 'nothing was changed');
  });

  it('a create whose answer was lost is not a refusal: the retried create finds its own key; keys a terminated rotation left are swept at revoke', async () => {
    const { id, repository, store, spec } = await deployKeyFixture((id) => `rekey ${id} 00000000-0000-4000-8000-000000000000`);
    // A version a terminated rotation wrote (its label since dropped) and the key it added for it;
    // and a key titled for a version this store never had (another installation's): left alone.
    const abandoned = await sm.send(new PutSecretValueCommand({ SecretId: store.secretId, SecretString: '{}', VersionStages: ['rekey-test-abandoned'] }));
    gh.addDeployKey(repository, { key: sshEd25519({ type: 'ssh-ed25519' }).generate().beside!.publicKey, title: `rekey ${id} ${abandoned.VersionId}`, readOnly: true });
    const foreign = `rekey ${id} 11111111-1111-4111-8111-111111111111`;
    gh.addDeployKey(repository, { key: sshEd25519({ type: 'ssh-ed25519' }).generate().beside!.publicKey, title: foreign, readOnly: true });
    // GitHub creates the key, but the answer never arrives (a proxy answers 502); Octokit sends it again.
    const remove = gh.intercept({ method: 'POST', path: /\/keys$/ }, (req) => {
      remove();
      const body = req.body as { key: string; title: string; read_only: boolean };
      gh.addDeployKey(repository, { key: body.key, title: body.title, readOnly: body.read_only });
      return { status: 502, body: { message: 'Server Error', documentation_url: 'https://docs.github.com/rest', status: '502' } };
    });

    const { report, failure } = await rotate(id, spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(store.secretId, 'AWSCURRENT'))!;
    assert.deepEqual(gh.deployKeys(repository).map((k) => k.title), [foreign, `rekey ${id} ${current.versionId}`], 'the old key and the leftover are gone, the new key is there once');
  });

  it('adds the new key beside the old, deletes only keys rekey added, and says so when the old one was a person\'s', async () => {
    const { id, repository, initial, store, spec } = await deployKeyFixture(() => "alice's laptop");
    const bare = (line: string) => line.split(' ').slice(0, 2).join(' ');

    const first = await rotate(id, spec);
    assert.equal(first.report?.outcome, 'rotated', first.failure ?? JSON.stringify(first.report?.failure));
    const afterFirst = (await labelled(store.secretId, 'AWSCURRENT'))!;
    assert.match(afterFirst.value.value, new RegExp(`^${OPENSSH_BEGIN}\n`));
    assert.deepEqual(
      gh.deployKeys(repository).map((k) => [k.title, k.key === bare(initial.beside!.publicKey) ? 'old' : k.key === bare(afterFirst.value.publicKey) ? 'new' : '?']),
      [["alice's laptop", 'old'], [`rekey ${id} ${afterFirst.versionId}`, 'new']],
    );
    assert.match(first.report!.warnings!.join('\n'), /was not added by rekey, so it was left in place/);
    assert.equal(first.report!.postVerify!.oldRejected, false, 'post-verify says the old key still works');

    const second = await rotate(id, spec);
    assert.equal(second.report?.outcome, 'rotated');
    const afterSecond = (await labelled(store.secretId, 'AWSCURRENT'))!;
    assert.deepEqual(
      gh.deployKeys(repository).map((k) => k.title),
      ["alice's laptop", `rekey ${id} ${afterSecond.versionId}`],
      "rekey's own previous key is deleted; the person's is untouched",
    );
    assert.deepEqual(second.report!.postVerify && [second.report!.postVerify.oldRejected, second.report!.postVerify.newAccepted], [true, true]);
  });
});
