// The gitops consumer against real git: bare repositories on disk (file://) and served by a real
// `git daemon` (git://). The configuration refers to the version; the value never enters git.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { gitopsConsumer, type GitopsConsumerSpec } from '../activities/consumers/gitops';
import { sshEd25519 } from '../activities/generators/ssh-ed25519';
import { versionTokenFor } from '../lib/version-token';
import { gitopsConsumerSchema } from '../activities/consumers/gitops';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import type { BreakGlassDocument } from '../lib/signed';
import { emergencyRevoke } from '../workflows/emergencyRevoke';
import { emergencyWorkflowId } from '../workflows/messages';
import { newKey, people, sign, validFor } from './keys';
import { VALUES, configConsumer, git, gitEnv, repository, storeSecret } from './git-fixtures';
import { canLogin, databaseFixture, killAndFinish, labelled, manifests, postgresSpec, settled, spawnWorker, sm, tempDir, temporalClient, uniqueId, withWorker } from './helpers';

const run = promisify(execFile);

async function rotate(secret: string, spec: object, options: Parameters<typeof withWorker>[1] = {}): Promise<{ report?: RotationReport; failure?: string }> {
  const trusted = await manifests({ [secret]: spec });
  return withWorker(
    async (taskQueue) => settled((await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(secret), args: [trusted.input(secret)] })),
    { manifestDirs: [trusted.dir], ...options },
  );
}

const consumer = configConsumer;

describe('gitops consumer (real git)', () => {
  it('prepares a branch, verifies it, lands the change on main at promote keeping comments, and deletes the branch; the value never enters git', async () => {
    const repo = await repository();
    const id = uniqueId();
    const { store, value } = await storeSecret(id);
    // The verify command runs in a clone of the prepared branch and sees the version it is for.
    const spec = { store, generator: { type: 'random-bytes', size: 32 }, consumers: [consumer(`file://${repo.bare}`, { verify: 'grep -q "#$REKEY_VERSION_ID\\"" deploy/values.yaml' })], policy: { overlap: '0s' } };

    const { report, failure } = await rotate(id, spec);

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(store.secretId, 'AWSCURRENT'))!;
    const main = await repo.show('main');
    assert.equal(main, VALUES.replace('aws-secrets-manager:rekey/none#none', `aws-secrets-manager:${store.secretId}#${current.versionId}`), 'only the field changed; comments and layout kept');
    assert.deepEqual(await repo.branches(), ['main'], 'the prepared branch is gone');
    const everything = await git(repo.bare, 'log', '--all', '-p');
    for (const secret of [value, current.value.value]) assert.ok(!everything.includes(secret), 'a secret value is in git');
    assert.match(await git(repo.bare, 'log', '-1', '--format=%an <%ae> %s', 'main'), new RegExp(`^rekey <rekey@localhost> rekey: ${id} uses ${current.versionId}`));
  });

  it('a verify that fails rolls back: main is untouched and the branch is deleted', async () => {
    const repo = await repository();
    const id = uniqueId();
    const { store } = await storeSecret(id);
    const before = await git(repo.bare, 'rev-parse', 'main');
    const spec = { store, generator: { type: 'random-bytes', size: 32 }, consumers: [consumer(`file://${repo.bare}`, { verify: 'exit 3' })], policy: { overlap: '0s', timeouts: { verify: '3s' } } };

    const { report } = await rotate(id, spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.match(report!.failure!.message, /verify exited with status 3 on rekey\//);
    assert.equal(await git(repo.bare, 'rev-parse', 'main'), before);
    assert.deepEqual(await repo.branches(), ['main']);
  });

  it('two repositories: both are prepared before either commits; one failing verify leaves both mains untouched and deletes both branches', async () => {
    const [first, second] = [await repository(), await repository()];
    const id = uniqueId();
    const { store } = await storeSecret(id);
    const heads = [await git(first.bare, 'rev-parse', 'main'), await git(second.bare, 'rev-parse', 'main')];
    const spec = {
      store,
      generator: { type: 'random-bytes', size: 32 },
      consumers: [
        { ...consumer(`file://${first.bare}`), name: 'payments-config' },
        { ...consumer(`file://${second.bare}`), name: 'billing-config', verify: 'exit 1' },
      ],
      policy: { overlap: '0s', timeouts: { verify: '3s' } },
    };

    const { report } = await rotate(id, spec);

    assert.equal(report?.outcome, 'rolled-back');
    assert.equal(report?.failure?.consumer, 'billing-config');
    assert.deepEqual([await git(first.bare, 'rev-parse', 'main'), await git(second.bare, 'rev-parse', 'main')], heads, 'neither main moved');
    assert.deepEqual([await first.branches(), await second.branches()], [['main'], ['main']], 'both prepared branches are gone');
    assert.equal(await labelled(store.secretId, 'AWSPENDING'), undefined);
  });

  it('a worker killed with SIGKILL after main took the change but before the branch was deleted: the next worker finishes the commit without a second change', async () => {
    const repo = await repository();
    const id = uniqueId();
    const { store } = await storeSecret(id);
    // The server holds the first push to main open for a while after updating it (a slow post-receive hook, the server's own).
    const marker = join(repo.dir, 'main-updated');
    await writeFile(join(repo.bare, 'hooks/post-receive'), `#!/bin/sh\ngrep -q refs/heads/main && [ ! -e "${marker}" ] && touch "${marker}" && sleep 5\nexit 0\n`, { mode: 0o755 });
    const spec = { store, generator: { type: 'random-bytes', size: 32 }, consumers: [consumer(`file://${repo.bare}`)], policy: { overlap: '0s' } };
    const trusted = await manifests({ [id]: spec });
    const taskQueue = uniqueId('rekey-gitops-crash-');

    const first = spawnWorker(taskQueue, trusted.dir);
    const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(id), args: [trusted.input(id)] });
    for (let i = 0; i < 600 && !(await readFile(marker).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
    const report = await killAndFinish(first, taskQueue, trusted.dir, handle.result());
    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    const current = (await labelled(store.secretId, 'AWSCURRENT'))!;
    assert.deepEqual((await git(repo.bare, 'log', '--format=%s', 'main')).trim().split('\n'), [`rekey: ${id} uses ${current.versionId}`, 'initial'], 'one change, not two');
    assert.deepEqual(await repo.branches(), ['main']);
  });

  it('main moved between prepare and promote: the change is made again on top, nothing of the other commit is lost', async () => {
    const repo = await repository();
    const id = uniqueId();
    const { store } = await storeSecret(id);
    const spec = { store, generator: { type: 'random-bytes', size: 32 }, consumers: [consumer(`file://${repo.bare}`)], policy: { overlap: '0s' } };

    const { report, failure } = await rotate(id, spec, {
      activities: (real) => ({
        ...real,
        // Someone pushes to main just before the commit.
        async commitConsumer(step: Parameters<typeof real.commitConsumer>[0]) {
          await git(repo.work, 'pull', '--quiet', 'origin', 'main');
          await writeFile(join(repo.work, 'deploy/values.yaml'), (await readFile(join(repo.work, 'deploy/values.yaml'), 'utf8')).replace('replicas: 3', 'replicas: 5'));
          await git(repo.work, 'commit', '--quiet', '-am', 'scale out');
          await git(repo.work, 'push', '--quiet', 'origin', 'main');
          return real.commitConsumer(step);
        },
      }),
    });

    assert.equal(report?.outcome, 'rotated', failure ?? JSON.stringify(report?.failure));
    const current = (await labelled(store.secretId, 'AWSCURRENT'))!;
    const main = await repo.show('main');
    assert.match(main, /replicas: 5/);
    assert.match(main, new RegExp(`#${current.versionId}"`));
    assert.deepEqual((await git(repo.bare, 'log', '--format=%s', 'main')).trim().split('\n'), [`rekey: ${id} uses ${current.versionId}`, 'scale out', 'initial']);
  });

  it('over the network (a real git daemon): prepare is repeatable (the same commit twice), and abort after a commit puts main back on the current version', async () => {
    const repo = await repository();
    const port = 20000 + Math.floor(Math.random() * 20000);
    const daemon: ChildProcess = spawn('git', ['daemon', '--reuseaddr', '--export-all', '--enable=receive-pack', `--base-path=${repo.dir}`, '--listen=127.0.0.1', `--port=${port}`, repo.dir], { env: gitEnv, stdio: 'ignore' });
    try {
      const url = `git://127.0.0.1:${port}/config.git`;
      for (let i = 0; i < 50 && !(await run('git', ['ls-remote', url], { env: gitEnv }).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
      const spec = gitopsConsumerSchema.parse(consumer(url)) as GitopsConsumerSpec;
      const target = gitopsConsumer(spec);
      // rekey's version ids: abort reverts only what refers to one of them.
      const [v1, v2, v3] = ['a', 'b', 'c'].map((run) => versionTokenFor(`rotation/api-key/${run}`));
      const current = { secret: 'api-key', storeRef: 'aws-secrets-manager:prod/api-key', versionId: v1, createdAt: '2026-11-23T10:00:00Z' };
      const pending = { ...current, versionId: v2, createdAt: '2026-11-23T11:00:00Z' };

      await target.deploy(pending, {});
      const first = await git(repo.bare, 'rev-parse', `rekey/api-key/${v2}`);
      await target.deploy(pending, {});
      assert.equal(await git(repo.bare, 'rev-parse', `rekey/api-key/${v2}`), first, 'a retried prepare pushes the same commit');
      assert.match(await git(repo.bare, 'log', '-1', '--format=%aI %cI', first.trim()), /^2026-11-23T11:00:00Z 2026-11-23T11:00:00Z|^2026-11-23T11:00:00\+00:00 2026-11-23T11:00:00\+00:00/, 'dated like the version');

      const guard = async () => undefined;
      await target.commit!(pending, {}, { guard, deadline: Date.now() + 60_000 });
      assert.match(await repo.show('main'), new RegExp(`prod/api-key#${v2}"`));
      await target.abort!(current, {}, { guard, pendingVersionId: v2, deadline: Date.now() + 60_000 });
      assert.match(await repo.show('main'), new RegExp(`prod/api-key#${v1}"`), 'main refers to the current version again');
      assert.deepEqual(await repo.branches(), ['main']);
      // A commit (and a prepared branch) a terminated rotation left is undone too, by the next rotation's reset.
      await target.deploy({ ...pending, versionId: v2 }, {});
      await target.commit!({ ...pending, versionId: v3 }, {}, { guard, deadline: Date.now() + 60_000 });
      await target.abort!(current, {}, { guard, pendingVersionId: versionTokenFor('rotation/api-key/d'), deadline: Date.now() + 60_000 });
      assert.match(await repo.show('main'), new RegExp(`prod/api-key#${v1}"`));
      assert.deepEqual(await repo.branches(), ['main'], "the abandoned rotation's branch is gone too");
      // What a person put there is never overwritten.
      await git(repo.work, 'pull', '--quiet', 'origin', 'main');
      await writeFile(join(repo.work, 'deploy/values.yaml'), (await readFile(join(repo.work, 'deploy/values.yaml'), 'utf8')).replace(`#${v1}`, '#pinned-by-alice'));
      await git(repo.work, 'commit', '--quiet', '-am', 'pin');
      await git(repo.work, 'push', '--quiet', 'origin', 'main');
      const head = await git(repo.bare, 'rev-parse', 'main');
      await target.abort!(current, {}, { guard, pendingVersionId: v2, deadline: Date.now() + 60_000 });
      assert.equal(await git(repo.bare, 'rev-parse', 'main'), head);
    } finally {
      daemon.kill('SIGTERM');
    }
  });

  it('a JSON file keeps its layout; a path through a symlink in the repository is refused, and nothing is pushed', async () => {
    const repo = await repository();
    await writeFile(join(repo.work, 'deploy/app.json'), '{\n    "database": { "passwordRef": "none#none", "pool": 5 },\n    "name": "payments"\n}\n');
    await run('ln', ['-s', '/etc', join(repo.work, 'etc-link')]);
    await git(repo.work, 'add', '.');
    await git(repo.work, 'commit', '--quiet', '-m', 'json and a symlink');
    await git(repo.work, 'push', '--quiet', 'origin', 'main');
    const ref = { secret: 'api-key', storeRef: 'aws-secrets-manager:prod/api-key', versionId: 'v2', createdAt: '2026-11-23T11:00:00Z' };

    await gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`, { path: 'deploy/app.json' })) as GitopsConsumerSpec).deploy(ref, {});
    assert.equal(await repo.show('rekey/api-key/v2', 'deploy/app.json'), '{\n    "database": { "passwordRef": "aws-secrets-manager:prod/api-key#v2", "pool": 5 },\n    "name": "payments"\n}\n');

    const through = gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`, { path: 'etc-link/hostname' })) as GitopsConsumerSpec);
    await assert.rejects(through.deploy({ ...ref, versionId: 'v3' }, {}), /etc-link\/hostname goes through a symlink in the repository/);
    assert.deepEqual(await repo.branches(), ['main', 'rekey/api-key/v2']);
  });

  it('signed commits: rekey signs with the SSH key from the store (git verify-commit accepts it), and the same change is still the same commit', async () => {
    const repo = await repository();
    const id = uniqueId();
    const key = sshEd25519({ type: 'ssh-ed25519', comment: 'rekey-bot' }).generate();
    const signingKey = { store: { type: 'aws-secrets-manager', secretId: `rekey-test/${id}/git-signing-key` } };
    await sm.send(new CreateSecretCommand({ Name: signingKey.store.secretId, SecretString: JSON.stringify({ value: key.value }) }));
    const target = gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`, { signingKey, author: { name: 'rekey-bot', email: 'rekey@example.com' } })) as GitopsConsumerSpec);
    const ref = { secret: id, storeRef: 'aws-secrets-manager:prod/x', versionId: 'v2', createdAt: '2026-11-23T11:00:00Z' };

    await target.deploy(ref, {});
    const first = await git(repo.bare, 'rev-parse', `rekey/${id}/v2`);
    await target.deploy(ref, {});
    assert.equal(await git(repo.bare, 'rev-parse', `rekey/${id}/v2`), first);

    const signers = join(repo.dir, 'allowed_signers');
    await writeFile(signers, `rekey@example.com ${key.beside!.publicKey}\n`);
    const verified = await run('git', ['-c', 'gpg.format=ssh', '-c', `gpg.ssh.allowedSignersFile=${signers}`, 'verify-commit', `rekey/${id}/v2`], { cwd: repo.bare, env: gitEnv });
    assert.match(verified.stderr, /Good "git" signature for rekey@example.com with ED25519 key/);
    const everything = await git(repo.bare, 'log', '--all', '-p');
    assert.ok(!everything.includes(key.value.split('\n')[1]), 'the private key is not in the repository');
  });

  it('the repository cannot configure the tools verify runs (HOME is not the clone), and values that would not read back as meant are refused', async () => {
    const repo = await repository();
    const marker = join(repo.dir, 'fsmonitor-ran');
    // A .gitconfig in the repository, which `git status` would obey if HOME were the clone.
    await writeFile(join(repo.work, '.gitconfig'), `[core]\n\tfsmonitor = "touch ${marker}; false"\n`);
    await writeFile(join(repo.work, 'deploy/odd.yaml'), 'empty: # fill me\nshared: &ref "x#y"\nalias: *ref\nnumber: 12\nblock: |\n  x#y\n');
    await git(repo.work, 'add', '.');
    await git(repo.work, 'commit', '--quiet', '-m', 'dotfiles and odd values');
    await git(repo.work, 'push', '--quiet', 'origin', 'main');
    const ref = { secret: 'api-key', storeRef: 'aws-secrets-manager:prod/api-key', versionId: 'v2', createdAt: '2026-11-23T11:00:00Z' };

    const verifying = gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`, { verify: 'git status --short >/dev/null' })) as GitopsConsumerSpec);
    await verifying.deploy(ref, {});
    assert.equal((await verifying.health(ref)).healthy, true);
    assert.equal(await readFile(marker).then(() => true, () => false), false, "the repository's .gitconfig ran nothing");

    for (const field of ['empty', 'shared', 'number', 'block']) {
      const odd = gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`, { path: 'deploy/odd.yaml', set: { [field]: '${versionId}' } })) as GitopsConsumerSpec);
      await assert.rejects(odd.deploy({ ...ref, versionId: `v-${field}` }, {}), new RegExp(`deploy/odd.yaml: ${field} is not a single text value`), field);
    }
    assert.deepEqual(await repo.branches(), ['main', 'rekey/api-key/v2']);
  });

  it('reverting touches only fields that name another of rekey\'s versions: a pin a person set beside one stays', async () => {
    const repo = await repository();
    const [current, abandoned] = ['a', 'b'].map((run) => versionTokenFor(`rotation/api-key/${run}`));
    await writeFile(join(repo.work, 'deploy/two.yaml'), `image: "prod/api-key#${abandoned}"\nbackup: "bk/manual"\n`);
    await git(repo.work, 'add', '.');
    await git(repo.work, 'commit', '--quiet', '-m', 'two references');
    await git(repo.work, 'push', '--quiet', 'origin', 'main');
    const target = gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`, { path: 'deploy/two.yaml', set: { image: 'prod/${secret}#${versionId}', backup: 'bk/${versionId}' } })) as GitopsConsumerSpec);
    const ref = { secret: 'api-key', storeRef: 'aws-secrets-manager:prod/api-key', versionId: current, createdAt: '2026-11-23T10:00:00Z' };

    await target.abort!(ref, {}, { guard: async () => undefined, pendingVersionId: versionTokenFor('rotation/api-key/c'), deadline: Date.now() + 60_000 });

    assert.equal(await repo.show('main', 'deploy/two.yaml'), `image: "prod/api-key#${current}"\nbackup: "bk/manual"\n`);
  });

  it('a revoke-first emergency of a secret with a target still deploys to every consumer and lands the gitops change', async () => {
    const repo = await repository();
    const oncall = await newKey('oncall');
    const fx = await databaseFixture('single-user');
    const dir = await tempDir();
    const spec = postgresSpec(fx, 'single-user', {
      consumers: [
        { type: 'command', name: 'app', file: join(dir, 'db.json') },
        consumer(`file://${repo.bare}`, { set: { 'database.passwordRef': '${secretId}#${versionId}' } }),
      ],
    });
    const trusted = await manifests({ [fx.id]: spec }, people([oncall], ['oncall']));
    const document: BreakGlassDocument = { kind: 'rekey.dev/break-glass', namespace: 'default', secret: fx.id, revokeFirst: true, reason: 'password in a public paste', ...validFor(600_000) };

    const report: RotationReport = await withWorker(
      async (taskQueue) =>
        (await temporalClient()).workflow.execute(emergencyRevoke, { taskQueue, workflowId: emergencyWorkflowId(fx.id), args: [{ secret: fx.id, requestedBy: 'oncall', reason: 'leak', authorization: await sign(oncall, document) }] }),
      { manifestDirs: [trusted.dir] },
    );

    assert.equal(report.outcome, 'rotated', JSON.stringify(report.failure));
    assert.deepEqual(report.warnings ?? [], []);
    const current = (await labelled(fx.secretId, 'AWSCURRENT'))!;
    assert.equal(JSON.parse(await readFile(join(dir, 'db.json'), 'utf8')).rekey_version_id, current.versionId, 'the command consumer got the new credential');
    assert.match(await repo.show('main'), new RegExp(`#${current.versionId}"`), 'main refers to the new version');
    assert.equal(await canLogin(fx.users[0], fx.initialPassword), false);
  });

  it('over https, the token never follows a redirect to another host', async () => {
    const dir = await tempDir();
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')]);
    const tls = { key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem')) };
    // The git server answers with a redirect to another server, which writes down what it is sent.
    const seen: (string | undefined)[] = [];
    const elsewhere = createServer(tls, (req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => elsewhere.listen(0, '127.0.0.1', r));
    const redirecting = createServer(tls, (req, res) => res.writeHead(301, { location: `https://127.0.0.1:${(elsewhere.address() as AddressInfo).port}${req.url}` }).end());
    await new Promise<void>((r) => redirecting.listen(0, '127.0.0.1', r));
    try {
      const id = uniqueId();
      const token = `rekey-test-token-${randomBytes(12).toString('hex')}`;
      const credentials = { store: { type: 'aws-secrets-manager', secretId: `rekey-test/${id}/git-token` } };
      await sm.send(new CreateSecretCommand({ Name: credentials.store.secretId, SecretString: JSON.stringify({ token }) }));
      const url = `https://127.0.0.1:${(redirecting.address() as AddressInfo).port}/config.git`;
      const target = gitopsConsumer(gitopsConsumerSchema.parse(consumer(url, { credentials, tls: { ca: join(dir, 'cert.pem') } })) as GitopsConsumerSpec);

      const failure = await target.deploy({ secret: 'api-key', storeRef: 'aws-secrets-manager:prod/api-key', versionId: 'v2' }, {}).then(() => 'deployed', (err: Error) => err.message);

      assert.match(failure, /git clone of main failed/);
      assert.ok(!failure.includes(token));
      assert.deepEqual(seen, [], 'the other host heard nothing');
    } finally {
      redirecting.close();
      elsewhere.close();
    }
  });

  it('commit asks whether the rotation is still in flight before every push: a retry after the base moved pushes nothing once it is not', async () => {
    const repo = await repository();
    const target = gitopsConsumer(gitopsConsumerSchema.parse(consumer(`file://${repo.bare}`)) as GitopsConsumerSpec);
    const ref = { secret: 'api-key', storeRef: 'aws-secrets-manager:prod/api-key', versionId: versionTokenFor('rotation/api-key/a'), createdAt: '2026-11-23T11:00:00Z' };
    let asked = 0;
    // Asked at the start, then before the first push: someone pushes to main just then (so this push
    // is refused); asked before the second push: the rotation was rolled back meanwhile.
    const guard = async () => {
      if (++asked === 2) {
        await git(repo.work, 'pull', '--quiet', 'origin', 'main');
        await writeFile(join(repo.work, 'deploy/values.yaml'), (await readFile(join(repo.work, 'deploy/values.yaml'), 'utf8')).replace('replicas: 3', 'replicas: 4'));
        await git(repo.work, 'commit', '--quiet', '-am', 'scale');
        await git(repo.work, 'push', '--quiet', 'origin', 'main');
      } else if (asked > 2) throw new Error('rolled back meanwhile');
    };

    await assert.rejects(target.commit!(ref, {}, { guard, deadline: Date.now() + 60_000 }), /rolled back meanwhile/);

    assert.doesNotMatch(await repo.show('main'), new RegExp(ref.versionId), 'main never took the change');
    assert.deepEqual((await git(repo.bare, 'log', '--format=%s', 'main')).trim().split('\n'), ['scale', 'initial']);
  });

  it('bad manifests are named: a password in the URL, a path out of the repository, a reference that could not change, a command in a template', () => {
    const problems = (extra: Record<string, unknown>) => gitopsConsumerSchema.safeParse(consumer('file:///srv/config.git', extra)).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`) ?? [];
    assert.match(problems({ repository: 'https://user:hunter2@git.example.com/c.git' }).join(), /repository: must not carry a password/);
    assert.match(problems({ path: '../etc/passwd' }).join(), /path: must be a path inside the repository/);
    assert.match(problems({ path: '.git/config' }).join(), /path: must be a path inside the repository/);
    assert.match(problems({ set: { 'a.b': 'fixed' } }).join(), /set.a.b: must contain \$\{versionId\}/);
    assert.match(problems({ set: { 'a.b': '${versionId}$(id)${HOME}' } }).join(), /set.a.b: may use \$\{versionId\}, \$\{secretId\} and \$\{secret\} only/);
    assert.match(problems({ repository: 'ext::sh -c id' }).join(), /repository: must be a file:\/\/, git:\/\/, ssh:\/\/ or https:\/\/ URL/);
    // A token is a header: over git:// it would travel in clear, over file:// reach the repository's hooks.
    assert.match(problems({ repository: 'git://git.example.com/c.git', credentials: { store: { type: 'aws-secrets-manager', secretId: 'x' } } }).join(), /credentials: is for https:\/\/ repositories only/);
  });
});
