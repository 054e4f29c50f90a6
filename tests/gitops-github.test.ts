// The GitHub variant of the GitOps consumer (gitops-github) against the GitHub stand-in (every
// request and answer checked against GitHub's OpenAPI description), the real Temporal dev server
// and moto. The configuration refers to the version; the value never reaches GitHub.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { Octokit } from '@octokit/rest';
import { ApplicationFailure } from '@temporalio/common';
import { branchFor } from '../activities/consumers/gitops';
import { gitopsGithubConsumerSchema } from '../activities/consumers/gitops-github';
import { versionTokenFor } from '../lib/version-token';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { startGitHubStandin, type CiHandler, type GitHubStandin, type Permissions } from './github/standin';
import { workerLog } from './setup';
import { allText, decodedPayloadText, labelled, manifests, settled, sm, temporalClient, uniqueId, withWorker, type WorkerOptions } from './helpers';

/** No write spacing and quick polls: GitHub's pacing would make the suite ten times slower. */
const FAST = { github: { writeSpacingMs: 0, pollMs: 100 } };
const ALL: Permissions = { contents: 'write', pull_requests: 'write', checks: 'read', statuses: 'read' };
const PATH = 'deploy/values.yaml';

const VALUES = `# Billing service (owned by the billing team; rekey edits the password reference only)
service:
  name: billing
  env:
    - name: DB_HOST
      value: db.internal   # the primary
    - name: DB_PASSWORD_REF
      value: 'aws-secrets-manager:rekey/none#none'
replicas: 3
`;

let gh: GitHubStandin;
before(async () => {
  gh = await startGitHubStandin();
});
after(() => gh.close());
afterEach(() => gh.assertNoViolations());

/** A repository whose main holds deploy/values.yaml, protected by a required "ci" check that CI reports on every push. */
async function fixture(options: { permissions?: Permissions; ci?: CiHandler; strict?: boolean; checks?: (string | { context: string; appId?: number })[]; consumer?: Record<string, unknown> } = {}) {
  const id = uniqueId();
  const repository = `octo-${id}/config`;
  gh.addRepository(repository);
  gh.pushFiles(repository, 'main', { [PATH]: VALUES }, { message: 'payments config' });
  gh.protectBranch(repository, 'main', { checks: options.checks ?? ['ci'], strict: options.strict ?? true });
  gh.addCi(repository, 'ci', options.ci ?? (() => 'success'));
  const initial = `rekey-test-value-${randomBytes(12).toString('hex')}`;
  const secretId = `rekey-test/${id}/db-password`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ value: initial }) }));
  const token = gh.addToken({ permissions: options.permissions ?? ALL, repositories: [repository] });
  const tokenId = `rekey-test/${id}/github-token`;
  await sm.send(new CreateSecretCommand({ Name: tokenId, SecretString: JSON.stringify({ token }) }));
  const consumer = {
    type: 'gitops-github',
    name: 'payments-config',
    github: { baseUrl: gh.url, auth: { token: { store: { type: 'aws-secrets-manager', secretId: tokenId } } } },
    repository,
    path: PATH,
    set: { 'service.env[1].value': '${secretId}#${versionId}' },
    ...options.consumer,
  };
  const spec = { store: { type: 'aws-secrets-manager', secretId }, generator: { type: 'random-bytes', size: 32 }, consumers: [consumer], policy: { overlap: '0s', timeouts: { verify: '20s' } } };
  const mainBefore = gh.head(repository, 'main')!;
  return { id, repository, secretId, initial, token, spec, mainBefore };
}

async function rotate(secret: string, spec: object, options: WorkerOptions = {}): Promise<{ report?: RotationReport; failure?: string }> {
  const trusted = await manifests({ [secret]: spec });
  return withWorker(
    async (taskQueue) => settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret, { requestedBy: 'test' })] })),
    { manifestDirs: [trusted.dir], ...FAST, ...options },
  );
}

/** The worker's activities, with `before` (what someone does at GitHub meanwhile) run just before each commit. */
type Real = Parameters<NonNullable<WorkerOptions['activities']>>[0];
type CommitStep = Parameters<Real['commitConsumer']>[0];
const beforeCommit = (before: (step: CommitStep) => unknown) => (real: Real) => ({
  ...real,
  async commitConsumer(step: CommitStep) {
    await before(step);
    return real.commitConsumer(step);
  },
});

/** Requests to the repository, as "METHOD path status". */
const calls = (repository: string, from = 0) => gh.requests.slice(from).filter((r) => r.path.startsWith(`/repos/${repository}/`)).map((r) => `${r.method} ${r.path.slice(`/repos/${repository}`.length)} ${r.status}`);

describe('gitops-github consumer (GitHub stand-in)', () => {
  it('prepares rekey\'s commit on its own branch, waits for the required check, opens and merges the pull request only at promote (squash), keeps comments, deletes the branch, and leaks nothing', async () => {
    const fx = await fixture({ ci: ({ file }) => (/#[0-9a-f-]{36}'/.test(file(PATH) ?? '') ? 'success' : 'failure') });
    const atCommit: { pulls?: number; main?: string; branches?: string[] } = {};
    const logStart = workerLog.length;

    const { report, failure } = await rotate(fx.id, fx.spec, {
      // What GitHub holds just before the commit: the branch, no pull request, main untouched.
      activities: beforeCommit(() => {
        Object.assign(atCommit, { pulls: gh.pulls(fx.repository).length, main: gh.head(fx.repository, 'main'), branches: gh.branches(fx.repository) });
      }),
    });

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    assert.deepEqual(atCommit, { pulls: 0, main: fx.mainBefore, branches: ['main', branchFor(fx.id, current.versionId)] }, 'before promote: a branch, no pull request, main untouched');
    assert.equal(gh.file(fx.repository, 'main', PATH), VALUES.replace('aws-secrets-manager:rekey/none#none', `aws-secrets-manager:${fx.secretId}#${current.versionId}`), 'only the field changed; comments and layout kept');
    const pulls = gh.pulls(fx.repository);
    assert.equal(pulls.length, 1);
    assert.deepEqual({ state: pulls[0].state, merged: pulls[0].merged, method: pulls[0].mergeMethod, head: pulls[0].head, base: pulls[0].base }, { state: 'closed', merged: true, method: 'squash', head: branchFor(fx.id, current.versionId), base: 'main' });
    assert.deepEqual(gh.branches(fx.repository), ['main'], 'the branch is gone');
    const landed = gh.log(fx.repository, 'main')[0];
    assert.equal(landed.parents[0], fx.mainBefore, 'one squashed commit on top of main');
    assert.match(landed.message, new RegExp(`^rekey: ${fx.id} uses ${current.versionId} \\(#${pulls[0].number}\\)`));
    // No value in history, the worker log, or anything sent to or answered by GitHub.
    const history = await decodedPayloadText((await (await temporalClient()).workflow.getHandle(rotationWorkflowId(fx.id)).fetchHistory()).events);
    const sent = gh.requests.map((r) => `${r.path} ${r.requestBody} ${r.responseBody}`).join('\n');
    const logs = allText(workerLog.slice(logStart));
    for (const value of [fx.initial, current.value.value]) {
      assert.ok(!history.includes(value) && !logs.includes(value) && !sent.includes(value), 'a secret value leaked');
    }
    assert.ok(!history.includes(fx.token) && !logs.includes(fx.token), 'the GitHub token leaked');
  });

  it('a required check that fails at verify rolls back: named in the failure, no pull request, the branch deleted, main and the store untouched', async () => {
    const fx = await fixture({ ci: () => 'failure' });

    const { report } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /required check "ci" concluded failure on rekey\//);
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
    assert.deepEqual(gh.branches(fx.repository), ['main']);
    assert.deepEqual(gh.pulls(fx.repository), []);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.value.value, fx.initial);
    assert.equal(await labelled(fx.secretId, 'AWSPENDING'), undefined);
  });

  it('openPullRequest: at-deploy opens the pull request before verify (for checks that run on pull requests only); a failing check closes it unmerged', async () => {
    let repository = '';
    // CI that reports only once a pull request is open, as GitHub Actions "on: pull_request" does.
    const fx = await fixture({
      consumer: { openPullRequest: 'at-deploy' },
      ci: async () => {
        for (let i = 0; i < 200 && !gh.pulls(repository).some((p) => p.state === 'open'); i++) await new Promise((r) => setTimeout(r, 25));
        return gh.pulls(repository).some((p) => p.state === 'open') ? 'failure' : 'cancelled';
      },
    });
    repository = fx.repository;

    const { report } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /required check "ci" concluded failure/, 'the check ran with the pull request open');
    assert.deepEqual(gh.pulls(fx.repository).map((p) => [p.state, p.merged]), [['closed', false]]);
    assert.deepEqual(gh.branches(fx.repository), ['main']);
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
  });

  it('main moved just before the merge (strict protection refuses a stale head): the edit is made again on the new main, checked again, and lands without losing the other commit', async () => {
    const fx = await fixture({ strict: true });
    let moved = false;
    const stop = gh.intercept({ method: 'PUT', path: /\/pulls\/\d+\/merge$/ }, () => {
      if (moved) return;
      moved = true;
      gh.pushFiles(fx.repository, 'main', { [PATH]: gh.file(fx.repository, 'main', PATH)!.replace('replicas: 3', 'replicas: 5') }, { message: 'scale out' });
    });

    const { report, failure } = await rotate(fx.id, fx.spec).finally(stop);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    const main = gh.file(fx.repository, 'main', PATH)!;
    assert.match(main, /replicas: 5/);
    assert.match(main, new RegExp(`#${current.versionId}'`));
    assert.deepEqual(gh.log(fx.repository, 'main').slice(0, 2).map((c) => c.message.split('\n')[0]), [`rekey: ${fx.id} uses ${current.versionId} (#1)`, 'scale out']);
    const merges = calls(fx.repository).filter((c) => c.startsWith('PUT /pulls/1/merge'));
    // (Octokit itself asks again once after a 405 before rekey makes the edit again.)
    assert.ok(merges.length >= 2 && merges.slice(0, -1).every((c) => c.endsWith(' 405')) && merges.at(-1)!.endsWith(' 200'), `refused (stale head), then merged after the edit was made again: ${merges.join(', ')}`);
    assert.deepEqual(gh.branches(fx.repository), ['main']);
  });

  it('main moved before the merge and the edit made again fails its check: rolled back, the pull request closed, the branch deleted, main keeps only the other commit', async () => {
    const fx = await fixture({ strict: true, ci: ({ file }) => (/replicas: 5/.test(file(PATH) ?? '') ? 'failure' : 'success') });
    let moved = false;
    const stop = gh.intercept({ method: 'PUT', path: /\/pulls\/\d+\/merge$/ }, () => {
      if (moved) return;
      moved = true;
      gh.pushFiles(fx.repository, 'main', { [PATH]: gh.file(fx.repository, 'main', PATH)!.replace('replicas: 3', 'replicas: 5') }, { message: 'scale out' });
    });

    const { report } = await rotate(fx.id, fx.spec).finally(stop);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /required check "ci" concluded failure/);
    assert.deepEqual(gh.pulls(fx.repository).map((p) => [p.state, p.merged]), [['closed', false]], 'the pull request is closed, not merged');
    assert.deepEqual(gh.branches(fx.repository), ['main']);
    assert.deepEqual(gh.log(fx.repository, 'main').map((c) => c.message.split('\n')[0]).slice(0, 2), ['scale out', 'payments config']);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.value.value, fx.initial);
  });

  it('promote fails after the merge: rollback puts main back on the current version through a pull request of its own (main requires checks), and deletes both branches', async () => {
    const fx = await fixture();
    const { report } = await rotate(fx.id, fx.spec, {
      activities: (real) => ({
        ...real,
        async promoteVersion() {
          throw ApplicationFailure.nonRetryable('the store is read-only today', 'PromoteRefused');
        },
      }),
    });

    assert.equal(report?.outcome, 'rolled-back', JSON.stringify(report));
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    assert.equal(current.value.value, fx.initial);
    assert.match(gh.file(fx.repository, 'main', PATH)!, new RegExp(`value: 'aws-secrets-manager:${fx.secretId}#${current.versionId}'`), 'main refers to the current version again');
    const pulls = gh.pulls(fx.repository);
    assert.deepEqual(pulls.map((p) => [p.title.replace(/[0-9a-f-]{36}/, 'V'), p.merged]), [[`rekey: ${fx.id} uses V`, true], [`rekey: ${fx.id} back to V`, true]]);
    assert.deepEqual(gh.branches(fx.repository), ['main']);
  });

  it('retries: a deploy done twice and answers lost after GitHub created the branch, opened the pull request and merged it make one branch, one commit and one pull request', async () => {
    const fx = await fixture();
    // GitHub creates them, and the answer never arrives: the client (or Temporal) asks again.
    gh.dropNextResponse({ method: 'POST', path: new RegExp(`^/repos/${fx.repository}/git/refs$`) });
    gh.dropNextResponse({ method: 'POST', path: new RegExp(`^/repos/${fx.repository}/pulls$`) });
    gh.dropNextResponse({ method: 'PUT', path: new RegExp(`^/repos/${fx.repository}/pulls/\\d+/merge$`) });
    const from = gh.requests.length;

    const { report, failure } = await rotate(fx.id, fx.spec, {
      activities: (real) => ({
        ...real,
        async deployToConsumer(step: Parameters<typeof real.deployToConsumer>[0]) {
          await real.deployToConsumer(step);
          return real.deployToConsumer(step);
        },
      }),
    });

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const made = calls(fx.repository, from);
    assert.equal(made.filter((c) => /^POST \/git\/refs 201/.test(c)).length, 1, 'the branch was created once');
    assert.ok(made.some((c) => /^POST \/git\/refs 422/.test(c)), 'the retried create found the branch there');
    assert.ok(!made.some((c) => c.startsWith('PATCH /git/refs')), 'the branch was never reset: the retried deploy made the same commit');
    assert.equal(made.filter((c) => /^POST \/pulls 201/.test(c)).length, 1);
    assert.equal(made.filter((c) => /^PUT \/pulls\/1\/merge 200/.test(c)).length, 1, 'merged once; asking again found it merged');
    assert.equal(gh.pulls(fx.repository).length, 1, 'one pull request');
    assert.deepEqual(gh.log(fx.repository, 'main').map((c) => c.message.split('\n')[0]).length, 3, 'one commit on main');
    assert.deepEqual(gh.branches(fx.repository), ['main']);
  });

  it('a token without contents=write: refused naming the permission, nothing changed at GitHub or in the store', async () => {
    const fx = await fixture({ permissions: { contents: 'read', pull_requests: 'write', checks: 'read', statuses: 'read' } });

    const { report, failure } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back', failure);
    assert.match(report!.failure!.message, new RegExp(`GitHub denied commit of ${PATH} on ${fx.repository} \\(403 [^)]*\\): the token needs contents=write`));
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
    assert.deepEqual(gh.branches(fx.repository), ['main']);
    assert.deepEqual(gh.pulls(fx.repository), []);
    assert.equal((await labelled(fx.secretId, 'AWSCURRENT'))!.value.value, fx.initial);
  });

  it('a token without checks=read: verify is refused naming the permission, and the branch is deleted', async () => {
    const fx = await fixture({ permissions: { contents: 'write', pull_requests: 'write', statuses: 'read' } });

    const { report, failure } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back', failure);
    assert.match(report!.failure!.message, /the token needs checks=read/);
    assert.deepEqual(gh.branches(fx.repository), ['main']);
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
  });

  it('no check required anywhere: refused at verify unless the manifest says allowNoChecks', async () => {
    const fx = await fixture({ checks: [] });
    const { report } = await rotate(fx.id, fx.spec);
    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /no check is required on main.*allowNoChecks: true merges anyway/);
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);

    const allowed = await fixture({ checks: [], consumer: { allowNoChecks: true, mergeMethod: 'merge' } });
    const second = await rotate(allowed.id, allowed.spec);
    assert.equal(second.report?.outcome, 'rotated', second.failure ?? JSON.stringify(second.report?.failure));
    assert.equal(gh.log(allowed.repository, 'main')[0].parents.length, 2, 'mergeMethod merge makes a merge commit');
  });

  it('manifest errors name the field', () => {
    const base = { type: 'gitops-github', name: 'c', github: { auth: { token: { store: { type: 'aws-secrets-manager', secretId: 'x' } } } }, repository: 'octo/config', path: PATH, set: { 'a.b': '${versionId}' } };
    const issue = (extra: object) => gitopsGithubConsumerSchema.safeParse({ ...base, ...extra }).error?.issues[0];
    assert.deepEqual(issue({ repository: 'https://github.com/octo/config' })?.path, ['repository']);
    assert.deepEqual(issue({ mergeMethod: 'fast-forward' })?.path, ['mergeMethod']);
    assert.deepEqual(issue({ path: '../etc/passwd' })?.path, ['path']);
    assert.deepEqual(issue({ branch: 'main..x' })?.path, ['branch']);
    assert.deepEqual(issue({ checks: [{ name: 'ci', appId: -1 }] })?.path, ['checks', 0, 'appId']);
    assert.equal(gitopsGithubConsumerSchema.parse(base).mergeMethod, 'squash');
  });
});

describe('gitops-github consumer: hostile repository, pull requests and checks', () => {
  it('a check run named like the required one from another app does not count when protection pins the app', async () => {
    // The real CI (GitHub Actions, app 15368) fails; another app reports "ci" success just after it.
    const fx = await fixture({ checks: [{ context: 'ci', appId: 15368 }], ci: () => 'failure' });
    gh.addCi(fx.repository, 'ci', () => 'success', { appId: 4242, appSlug: 'evil-app', delayMs: 60 });

    const { report } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /required check "ci" concluded failure/);
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
  });

  it('someone pushes to rekey\'s branch before the merge, even as "rekey": only the commit rekey made is merged', async () => {
    const fx = await fixture();
    const { report, failure } = await rotate(fx.id, fx.spec, {
      activities: beforeCommit((step) => {
        const branch = branchFor(fx.id, step.pendingVersionId);
        const head = gh.commit(fx.repository, gh.head(fx.repository, branch)!)!;
        // A commit that passes for rekey's (same author, same message) adding a workflow.
        gh.pushFiles(fx.repository, branch, { '.github/workflows/exfiltrate.yml': 'on: push\n' }, { message: head.message, author: head.author });
      }),
    });

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.equal(gh.file(fx.repository, 'main', '.github/workflows/exfiltrate.yml'), undefined, 'the pushed file never reached main');
    assert.match(gh.file(fx.repository, 'main', PATH)!, /#[0-9a-f-]{36}'/);
  });

  it('someone else\'s commit on rekey\'s branch (their author) fails the rotation instead of being merged or reset', async () => {
    const fx = await fixture();
    const { report } = await rotate(fx.id, fx.spec, {
      activities: beforeCommit((step) => {
        gh.pushFiles(fx.repository, branchFor(fx.id, step.pendingVersionId), { 'notes.md': 'mine\n' }, { message: 'my work' });
      }),
    });

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /is not a commit of rekey's/);
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
    assert.deepEqual(gh.pulls(fx.repository), []);
  });

  it('a branch of rekey\'s name that someone else created before deploy is refused, not reused, and left as it is', async () => {
    const fx = await fixture();
    let theirs: string | undefined;
    const { report } = await rotate(fx.id, fx.spec, {
      activities: (real) => ({
        ...real,
        async deployToConsumer(step: Parameters<typeof real.deployToConsumer>[0]) {
          if (!step.rollback) theirs = gh.pushFiles(fx.repository, branchFor(fx.id, step.versionId), { 'notes.md': 'mine\n' }, { message: 'my work' });
          return real.deployToConsumer(step);
        },
      }),
    });

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /exists and its head [0-9a-f]{12} is not a commit of rekey's/);
    const pending = report!.failure!.message.match(/rekey\/[^/]+\/([0-9a-f-]{36})/)![1];
    assert.equal(gh.head(fx.repository, branchFor(fx.id, pending)), theirs, 'their branch is untouched');
    assert.equal(gh.head(fx.repository, 'main'), fx.mainBefore);
  });

  it('a pull request from a fork with rekey\'s branch name is neither merged nor closed; rekey opens its own', async () => {
    const fx = await fixture();
    const fork = `evil-${fx.id}/config`;
    gh.addRepository(fork);
    let forked: number | undefined;
    const { report, failure } = await rotate(fx.id, fx.spec, {
      activities: beforeCommit((step) => {
        const branch = branchFor(fx.id, step.pendingVersionId);
        gh.pushFiles(fork, branch, { [PATH]: VALUES.replace('rekey/none#none', 'attacker') }, { message: 'rekey' });
        forked = gh.openPull(fx.repository, { head: branch, headRepo: fork, title: 'rekey', user: 'evil' });
      }),
    });

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const pulls = gh.pulls(fx.repository);
    assert.deepEqual(pulls.find((p) => p.number === forked)!.state, 'open', 'the fork\'s pull request is left alone');
    assert.ok(pulls.some((p) => p.number !== forked && p.merged && p.headRepo === fx.repository));
    assert.doesNotMatch(gh.file(fx.repository, 'main', PATH)!, /attacker/);
  });

  it('a pull request retargeted to another branch just before the merge: rekey sees main lacks the change and lands it by a new pull request', async () => {
    const fx = await fixture();
    gh.pushFiles(fx.repository, 'release', {}, { message: 'cut release' });
    const [owner, repo] = fx.repository.split('/');
    const someone = new Octokit({ auth: gh.addToken({ permissions: { pull_requests: 'write' }, repositories: [fx.repository] }), baseUrl: gh.url });
    let retargeted = false;
    const stop = gh.intercept({ method: 'PUT', path: /\/pulls\/\d+\/merge$/ }, async (req) => {
      if (retargeted) return;
      retargeted = true;
      await someone.pulls.update({ owner, repo, pull_number: Number(/pulls\/(\d+)/.exec(req.path)![1]), base: 'release' });
    });

    const { report, failure } = await rotate(fx.id, fx.spec).finally(stop);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    assert.match(gh.file(fx.repository, 'main', PATH)!, new RegExp(`#${current.versionId}'`), 'main refers to the new version');
    assert.deepEqual(gh.pulls(fx.repository).map((p) => [p.base, p.merged]), [['release', true], ['main', true]]);
  });

  it('a merged pull request is no proof: after main was force-pushed back, a retried commit lands the change again', async () => {
    const fx = await fixture();
    const { report, failure } = await rotate(fx.id, fx.spec, {
      activities: (real) => ({
        ...real,
        async commitConsumer(step: CommitStep) {
          await real.commitConsumer(step);
          // Someone force-pushes main back to before the merge; the activity runs again (a retry).
          gh.setBranch(fx.repository, 'main', fx.mainBefore);
          return real.commitConsumer(step);
        },
      }),
    });

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    assert.match(gh.file(fx.repository, 'main', PATH)!, new RegExp(`#${current.versionId}'`), 'main refers to the new version');
    assert.deepEqual(gh.pulls(fx.repository).map((p) => p.merged), [true, true]);
  });

  it('at the next rotation, a branch an abandoned rotation left is deleted; a branch named like rekey\'s with someone else\'s commit is left', async () => {
    const fx = await fixture();
    // An abandoned rotation's branch (rekey's commit on it) and someone's branch that only looks like one.
    const abandoned = branchFor(fx.id, versionTokenFor(`rotation/${fx.id}/abandoned`));
    const lookalike = branchFor(fx.id, versionTokenFor(`rotation/${fx.id}/lookalike`));
    gh.pushFiles(fx.repository, abandoned, { [PATH]: VALUES.replace('rekey/none#none', 'x#y') }, { message: `rekey: ${fx.id} uses ${abandoned.split('/')[2]}\n\nMade by rekey`, author: { name: 'rekey', email: 'rekey@localhost' } });
    gh.openPull(fx.repository, { head: abandoned, title: 'rekey', user: 'rekey-bot' });
    gh.pushFiles(fx.repository, lookalike, { 'notes.md': 'mine\n' }, { message: 'my work' });

    const { report, failure } = await rotate(fx.id, fx.spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    assert.deepEqual(gh.branches(fx.repository), ['main', lookalike].sort());
    assert.equal(gh.pulls(fx.repository).find((p) => p.head === abandoned)?.state, 'closed');
  });
});
