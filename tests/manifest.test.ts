import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { WorkflowNotFoundError } from '@temporalio/client';
import { stringify } from 'yaml';
import { ManifestError, loadManifests } from '../lib/manifest';
import { newKey } from './keys';
import { rotationWorkflowId } from '../workflows/messages';
import { tempDir, temporalClient, uniqueId } from './helpers';

const ROOT = join(__dirname, '..');

function secret(name: string, spec: Record<string, unknown> = {}) {
  return {
    apiVersion: 'rekey.dev/v1',
    kind: 'Secret',
    metadata: { name },
    spec: {
      store: { type: 'aws-secrets-manager', secretId: `x/${name}` },
      generator: { type: 'password' },
      consumers: [{ type: 'command', name: 'app', file: '/tmp/x' }],
      ...spec,
    },
  };
}

const schedule = (spec: Record<string, unknown>) => ({ apiVersion: 'rekey.dev/v1', kind: 'Schedule', metadata: { name: 'weekly' }, spec });
const group = (spec: Record<string, unknown>) => ({ apiVersion: 'rekey.dev/v1', kind: 'RotationGroup', metadata: { name: 'payments' }, spec });
const settings = (spec: Record<string, unknown>) => ({ apiVersion: 'rekey.dev/v1', kind: 'Settings', metadata: { name: 'people' }, spec });
// Well-formed ed25519 public keys (32 bytes each); signatures are not needed to validate manifests.
const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIgDOStPRVYh55I4nsWpQL7dNyzChv0rVQca49GQ0i1F';
/** Bytes 1..32: plainly not anyone's key. */
const KEY_B = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g';
const approval = (approvers: unknown[]) => ({ policy: { approval: { required: true, approvers } } });
const admin = { store: { type: 'aws-secrets-manager', secretId: 'x/admin' } };
const pg = (target: Record<string, unknown>) => ({ target: { type: 'postgres', database: 'app', strategy: 'single-user', admin, ...target } });
const rabbit = (target: Record<string, unknown>) => ({ target: { type: 'rabbitmq', managementUrl: 'https://mq.internal:15671', admin, ...target } });
const iam = (target: Record<string, unknown>) => ({ generator: undefined, target: { type: 'aws-iam-access-key', admin, ...target } });

/** The issues loading `docs` (each a file) produces, as "file: path: message" lines. */
async function problems(files: Record<string, string | object>): Promise<string[]> {
  const dir = await tempDir();
  for (const [file, content] of Object.entries(files)) {
    await writeFile(join(dir, file), typeof content === 'string' ? content : stringify(content));
  }
  try {
    await loadManifests(dir);
  } catch (err) {
    assert.ok(err instanceof ManifestError, String(err));
    return err.issues.map((i) => `${i.source.split('/').pop()}: ${i.path}: ${i.message}`);
  }
  return [];
}

describe('manifest validation', () => {
  const cases: [string, Record<string, string | object>, RegExp][] = [
    ['an unknown store type', { 'a.yaml': secret('a', { store: { type: 'vault', path: 'x' } }) }, /^a\.yaml: spec\.store\.type: unknown or missing "type"/],
    ['a missing generator', { 'a.yaml': secret('a', { generator: undefined }) }, /^a\.yaml: spec\.generator: is required/],
    ['a password shorter than 12', { 'a.yaml': secret('a', { generator: { type: 'password', length: 8 } }) }, /^a\.yaml: spec\.generator\.length: .*>=12/],
    ['a typo in a field name', { 'a.yaml': { ...secret('a'), spec: { ...secret('a').spec, consumer: [] } } }, /^a\.yaml: spec: unknown field consumer/],
    ['alternating-users without users', { 'a.yaml': secret('a', { target: { type: 'postgres', database: 'd', strategy: 'alternating-users', admin: { store: { type: 'aws-secrets-manager', secretId: 'adm' } } } }) }, /^a\.yaml: spec\.target\.users: is required for strategy alternating-users/],
    ['single-user without user', { 'a.yaml': secret('a', { target: { type: 'postgres', database: 'd', strategy: 'single-user', admin: { store: { type: 'aws-secrets-manager', secretId: 'adm' } } } }) }, /^a\.yaml: spec\.target\.user: is required for strategy single-user/],
    ['an inline admin password', { 'a.yaml': secret('a', { target: { type: 'postgres', database: 'd', strategy: 'single-user', user: 'u', admin: { username: 'root', password: 'hunter2' } } }) }, /^a\.yaml: spec\.target\.admin(\.store)?: /],
    ['a duration in words', { 'a.yaml': secret('a', { policy: { overlap: '5 minutes' } }) }, /^a\.yaml: spec\.policy\.overlap: expected a duration such as 30s/],
    ['two consumers with one name', { 'a.yaml': secret('a', { consumers: [{ type: 'command', name: 'app', file: '/a' }, { type: 'command', name: 'app', file: '/b' }] }) }, /^a\.yaml: spec\.consumers\[1\]\.name: duplicate consumer name "app"/],
    ['an approval policy without approvers', { 'a.yaml': secret('a', { policy: { approval: { required: true } } }) }, /^a\.yaml: spec\.policy\.approval\.approvers: must name at least one approver/],
    ['a wrong apiVersion', { 'a.yaml': { ...secret('a'), apiVersion: 'rekey.dev/v2' } }, /^a\.yaml: apiVersion: expected one of "rekey\.dev\/v1"/],
    ['an unknown kind', { 'a.yaml': { ...secret('a'), kind: 'Secrett' } }, /^a\.yaml: kind: expected one of Secret, Schedule, Settings, RotationGroup, got "Secrett"/],
    ['invalid YAML', { 'a.yaml': 'apiVersion: rekey.dev/v1\nkind: [Secret\n' }, /^a\.yaml: : invalid YAML/],
    ['the same secret in two files', { 'a.yaml': secret('dup'), 'b.yaml': secret('dup') }, /^b\.yaml: metadata\.name: secret "dup" is also defined in .*a\.yaml/],
    ['a bad second document', { 'a.yaml': `${stringify(secret('one'))}---\n${stringify(secret('Two Words'))}` }, /^a\.yaml \(document 2\): metadata\.name: must be lower-case/],
    ['an unset environment variable', { 'a.yaml': 'apiVersion: rekey.dev/v1\nkind: Secret\nmetadata: {name: a}\nspec:\n  store: {type: aws-secrets-manager, secretId: "${REKEY_TEST_SURELY_UNSET}"}\n  generator: {type: password}\n' }, /environment variable REKEY_TEST_SURELY_UNSET is not set/],
    ['an unquoted ${} inside {...}', { 'a.yaml': 'apiVersion: rekey.dev/v1\nkind: Secret\nmetadata: {name: a}\nspec:\n  store: {type: aws-secrets-manager, secretId: ${REKEY_X}}\n' }, /^a\.yaml: : invalid YAML: .*\(quote values that use \$\{\.\.\.\} inside \{\.\.\.\}\)/],
    ['a timeout of zero', { 'a.yaml': secret('a', { policy: { timeouts: { verify: '0s' } } }) }, /^a\.yaml: spec\.policy\.timeouts\.verify: must be from 1s to 24h \(got 0s\)/],
    ['an absurd duration', { 'a.yaml': secret('a', { policy: { maxAge: '99999999999999999999d' } }) }, /^a\.yaml: spec\.policy\.maxAge: must be from 1s to 3650d \(got more than/],
    ['a number where text belongs', { 'a.yaml': secret('a', { store: { type: 'aws-secrets-manager', secretId: 42 } }) }, /^a\.yaml: spec\.store\.secretId: expected string, got number/],
    ['sixty-five consumers', { 'a.yaml': secret('a', { consumers: Array.from({ length: 65 }, (_, i) => ({ type: 'command', name: `c${i}`, file: `/tmp/c${i}` })) }) }, /^a\.yaml: spec\.consumers: .*64/],
    ['a file over 4 MiB', { 'a.yaml': `# ${'x'.repeat(4 * 1024 * 1024)}\n${stringify(secret('a'))}` }, /^a\.yaml: : is \d+ bytes; a manifest file may be at most 4194304/],
    ['an alias bomb', { 'a.yaml': `a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n` }, /^a\.yaml: : invalid YAML: .*(alias|resource exhaustion)/i],
    ['a bad cron', { 's.yaml': schedule({ cron: 'every sunday', select: { names: ['a'] } }) }, /^s\.yaml: spec\.cron: expected five cron fields/],
    ['an unknown time zone', { 's.yaml': schedule({ every: '7d', timezone: 'Mars/Olympus', select: { names: ['a'] } }) }, /^s\.yaml: spec\.timezone: is not an IANA time zone/],
    ['both cron and every', { 's.yaml': schedule({ cron: '0 2 * * 0', every: '7d', select: { names: ['a'] } }) }, /^s\.yaml: spec\.every: give exactly one of cron, calendar, every \(got cron, every\)/],
    ['a schedule that selects nothing', { 's.yaml': schedule({ every: '7d', select: {} }) }, /^s\.yaml: spec\.select: must name secrets or labels/],
    // The trust boundary: what a manifest may name, read and claim.
    ['two manifests rotating one stored secret', { 'a.yaml': secret('a'), 'b.yaml': { ...secret('b'), spec: { ...secret('b').spec, store: { type: 'aws-secrets-manager', secretId: 'x/a' } } } }, /^b\.yaml: spec\.store: aws-secrets-manager:[a-z0-9-]+:x\/a.* is already rotated by secret "a" \(.*a\.yaml\); a stored secret belongs to exactly one manifest/],
    // Two manifests on one account at a target: each rotation would revoke what the other deployed.
    ['two postgres manifests on one role, written differently (host case, default port, another database)', { 'a.yaml': secret('a', pg({ host: 'DB.internal', user: 'app' })), 'b.yaml': secret('b', pg({ host: 'db.internal', port: 5432, database: 'reports', strategy: 'alternating-users', users: ['app_b', 'app'] })) }, /^b\.yaml: spec\.target\.users\[1\]: postgres role app at db\.internal:5432 is already rotated by secret "a" \(.*a\.yaml, spec\.target\.user\); an account belongs to exactly one manifest$/],
    ['two redis manifests on one ACL user', { 'a.yaml': secret('a', { target: { type: 'redis', host: 'cache.internal', user: 'sessions', admin } }), 'b.yaml': secret('b', { target: { type: 'redis', host: 'cache.internal', port: 6379, user: 'sessions', admin } }) }, /^b\.yaml: spec\.target\.user: redis user sessions at cache\.internal:6379 is already rotated by secret "a" \(.*a\.yaml, spec\.target\.user\)/],
    ['two mysql manifests on one account', { 'a.yaml': secret('a', { target: { type: 'mysql', host: 'db.internal', strategy: 'single-user', user: { name: 'app', host: '%' }, admin } }), 'b.yaml': secret('b', { target: { type: 'mysql', host: 'db.internal', strategy: 'alternating-users', users: [{ name: 'app_b', host: '%' }, { name: 'app', host: '%' }], admin } }) }, /^b\.yaml: spec\.target\.users\[1\]: mysql account 'app'@'%' at db\.internal:3306 is already rotated by secret "a" \(.*a\.yaml, spec\.target\.user\)/],
    ['two rabbitmq manifests sharing one user of a broker', { 'a.yaml': secret('a', rabbit({ users: ['billing_a', 'billing_b'] })), 'b.yaml': secret('b', rabbit({ managementUrl: 'https://MQ.internal:15671/', users: ['billing_b', 'billing_c'] })) }, /^b\.yaml: spec\.target\.users\[0\]: rabbitmq user billing_b at mq\.internal:15671 is already rotated by secret "a" \(.*a\.yaml, spec\.target\.users\[1\]\)/],
    ['two IAM manifests on one user under one admin (IAM user names ignore case)', { 'a.yaml': secret('a', iam({ userName: 'CI-Deployer' })), 'b.yaml': secret('b', iam({ userName: 'ci-deployer' })) }, /^b\.yaml: spec\.target\.userName: IAM user ci-deployer.* is already rotated by secret "a"/],
    ['the worker\'s own credential, even with the REKEY_ prefix', { 'a.yaml': secret('a', { description: '${REKEY_AUDIT_DATABASE_URL}' }) }, /^a\.yaml: spec\.description: \$\{REKEY_AUDIT_DATABASE_URL\} is one of the worker's own credentials; manifests never read it/],
    ['a credential in the Settings env list', { 'p.yaml': settings({ env: ['AWS_SECRET_ACCESS_KEY'] }) }, /^p\.yaml: spec\.env\[0\]: is one of the worker's own credentials/],
    ['a command passing a variable no Settings env lists', { 'a.yaml': secret('a', { consumers: [{ type: 'command', name: 'app', file: '/tmp/x', env: ['KUBECONFIG'] }] }) }, /^a\.yaml: spec\.consumers\[0\]\.env\[0\]: KUBECONFIG is not in a Settings manifest's env list/],
    ['one stored secret named by ARN in one manifest and by name in another', { 'a.yaml': secret('a', { store: { type: 'aws-secrets-manager', secretId: 'prod/db', region: 'eu-west-1' } }), 'b.yaml': secret('b', { store: { type: 'aws-secrets-manager', secretId: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf' } }) }, /^b\.yaml: spec\.store: aws-secrets-manager:eu-west-1:prod\/db.* is already rotated by secret "a"/],
    ['the worker\'s AWS key', { 'a.yaml': secret('a', { store: { type: 'aws-secrets-manager', secretId: '${AWS_SECRET_ACCESS_KEY}' } }) }, /^a\.yaml: spec\.store\.secretId: \$\{AWS_SECRET_ACCESS_KEY\} is one of the worker's own credentials/],
    ['a variable outside the env allow-list', { 'a.yaml': secret('a', { store: { type: 'aws-secrets-manager', secretId: '${DATABASE_URL}' } }) }, /^a\.yaml: spec\.store\.secretId: \$\{DATABASE_URL\} is not allowed: add DATABASE_URL to a Settings manifest's env list/],
    ['an approver name with a trailing space', { 'a.yaml': secret('a', approval(['alice '])) }, /^a\.yaml: spec\.policy\.approval\.approvers\[0\]: .*no spaces/],
    ['an approver nobody declared', { 'a.yaml': secret('a', approval(['bob'])) }, /^a\.yaml: spec\.policy\.approval\.approvers\[0\]: "bob" is not declared in the people of a Settings manifest/],
    ['an approver key that is not ed25519', { 'a.yaml': secret('a', approval([{ name: 'bob', keys: ['ssh-rsa AAAAB3NzaC1yc2E'] }])) }, /^a\.yaml: spec\.policy\.approval\.approvers\[0\]\.keys\[0\]: expected an "ssh-ed25519 AAAA\.\.\." public key/],
    ['a person declared twice', { 'p.yaml': `${stringify(settings({ people: [{ name: 'bob', keys: [KEY_A] }] }))}---\n${stringify({ ...settings({ people: [{ name: 'bob', keys: [KEY_A] }] }), metadata: { name: 'more' } })}` }, /^p\.yaml \(document 2\): spec\.people\[0\]\.name: person "bob" is declared twice/],
    // Groups: one decision must cover what every member asks for.
    ['a group member no Secret declares', { 'a.yaml': secret('a'), 'g.yaml': group({ secrets: ['a', 'b'] }) }, /^g\.yaml: spec\.secrets\[1\]: no Secret named "b" in the manifest set/],
    ['a group of one', { 'a.yaml': secret('a'), 'g.yaml': group({ secrets: ['a'] }) }, /^g\.yaml: spec\.secrets: a group needs at least two secrets/],
    ['a member listed twice', { 'a.yaml': secret('a'), 'g.yaml': group({ secrets: ['a', 'a'] }) }, /^g\.yaml: spec\.secrets\[1\]: "a" is listed twice/],
    ['a member that requires approval in a group that does not', { 'a.yaml': secret('a', approval([{ name: 'bob', keys: [KEY_A] }])), 'b.yaml': secret('b'), 'g.yaml': group({ secrets: ['a', 'b'] }) }, /^g\.yaml: spec\.approval\.required: "a" requires approval, so the group must too/],
    ['a group whose members give up before people decide', { 'a.yaml': secret('a'), 'b.yaml': secret('b'), 'g.yaml': group({ secrets: ['a', 'b'], holdTimeout: '1h', approval: { required: true, approvers: [{ name: 'bob', keys: [KEY_A] }], timeout: '2h' } }) }, /^g\.yaml: spec\.holdTimeout: must be longer than the group's approval wait \(2h\)/],
    ['a group approver who may not approve a member', { 'a.yaml': secret('a', approval([{ name: 'bob', keys: [KEY_A] }])), 'b.yaml': secret('b'), 'g.yaml': group({ secrets: ['a', 'b'], approval: { required: true, approvers: [{ name: 'carol', keys: [KEY_B] }] } }) }, /^g\.yaml: spec\.approval\.approvers\[0\]: carol may not approve "a" \(not among its approvers\), so cannot approve the group/],
    ['a group named like a secret', { 'a.yaml': secret('payments'), 'b.yaml': secret('b'), 'g.yaml': group({ secrets: ['payments', 'b'] }) }, /^g\.yaml: metadata\.name: "payments" is also a Secret's name/],
    ['a schedule of a group nobody declared', { 's.yaml': schedule({ every: '7d', group: 'payments' }) }, /^s\.yaml: spec\.group: no RotationGroup named "payments"/],
    ['a schedule with both a selector and a group', { 'a.yaml': secret('a'), 'b.yaml': secret('b'), 'g.yaml': group({ secrets: ['a', 'b'] }), 's.yaml': schedule({ every: '7d', group: 'payments', select: { names: ['a'] } }) }, /^s\.yaml: spec\.group: give exactly one of select .* and group/],
    ['break-glass naming nobody declared', { 'p.yaml': settings({ breakGlass: ['oncall'] }) }, /^p\.yaml: spec\.breakGlass\[0\]: "oncall" is not declared in people/],
  ];
  for (const [what, files, expected] of cases) {
    it(`reports ${what}, naming the file and field`, async () => {
      const found = await problems(files);
      assert.ok(found.some((p) => expected.test(p)), `expected ${expected} in:\n${found.join('\n')}`);
    });
  }

  it('${} is filled after parsing, from allowed variables only: a newline in a value cannot add a field, and the spec hash is of the text as written', async () => {
    const write = async (env: Record<string, string>) => {
      const dir = await tempDir();
      await writeFile(join(dir, 'p.yaml'), stringify(settings({ env: ['TEAM_DB_HOST'] })));
      await writeFile(
        join(dir, 'a.yaml'),
        'apiVersion: rekey.dev/v1\nkind: Secret\nmetadata: {name: a}\nspec:\n  store: {type: aws-secrets-manager, secretId: "${REKEY_TEST_ID}"}\n' +
          '  generator: {type: password}\n  target: {type: postgres, host: "${TEAM_DB_HOST}", port: "${REKEY_TEST_PORT}", database: d, strategy: single-user, user: u, admin: {store: {type: aws-secrets-manager, secretId: adm}}}\n',
      );
      Object.assign(process.env, env);
      try {
        return (await loadManifests(dir)).secrets.get('a')!;
      } finally {
        for (const k of Object.keys(env)) delete process.env[k];
      }
    };
    const injected = 'x\nconsumers: [{type: command, name: evil, file: /tmp/x, reload: "curl evil"}]';
    const one = await write({ REKEY_TEST_ID: injected, TEAM_DB_HOST: 'db1.internal', REKEY_TEST_PORT: '5433' });
    assert.equal(one.spec.store.secretId, injected, 'the whole value stays in its one field');
    assert.deepEqual(one.spec.consumers, []);
    assert.equal(one.spec.target?.type === 'postgres' && one.spec.target.host, 'db1.internal');
    assert.equal(one.spec.target?.type === 'postgres' && one.spec.target.port, 5433);
    const other = await write({ REKEY_TEST_ID: 'prod/a', TEAM_DB_HOST: 'db2.internal', REKEY_TEST_PORT: '5432' });
    assert.equal(other.specHash, one.specHash, 'requester and worker environments need not match');
    assert.match(one.specHash, /^sha256:[0-9a-f]{64}$/);
  });

  it('approvers are people declared with their keys; the spec hash changes when the spec does', async () => {
    const bob = await newKey('bob');
    const dir = await tempDir();
    await writeFile(join(dir, 'p.yaml'), stringify(settings({ people: [{ name: 'bob', keys: [`${bob.publicKey} bob@laptop`] }], breakGlass: ['bob'] })));
    await writeFile(join(dir, 'a.yaml'), stringify(secret('a', approval(['bob']))));
    const first = await loadManifests(dir);
    assert.deepEqual(first.secrets.get('a')!.approvers, [{ name: 'bob', keys: [bob.publicKey] }], 'the comment is not part of the key');
    assert.deepEqual(first.settings.breakGlass.map((p) => p.name), ['bob']);
    await writeFile(join(dir, 'a.yaml'), stringify(secret('a', { policy: { approval: { required: true, approvers: ['bob'] }, overlap: '1m' } })));
    assert.notEqual((await loadManifests(dir)).secrets.get('a')!.specHash, first.secrets.get('a')!.specHash);
  });

  it('reports every problem of a folder together', async () => {
    const found = await problems({ 'a.yaml': secret('a', { generator: { type: 'password', length: 2 } }), 'b.yaml': secret('b', { policy: { overlap: 'soon' } }) });
    assert.deepEqual([...new Set(found.map((p) => p.split(':')[0]))].sort(), ['a.yaml', 'b.yaml']);
  });

  it('an empty folder is an error, and a valid manifest gets the documented defaults', async () => {
    assert.match((await problems({}))[0], /no \.yaml or \.yml files found/);
    const dir = await tempDir();
    await writeFile(join(dir, 'a.yaml'), stringify(secret('a')));
    const spec = (await loadManifests(dir)).secrets.get('a')!.spec;
    assert.deepEqual([spec.policy.overlap, spec.generator?.type === 'password' && spec.generator.length, spec.policy.approval.required], ['30s', 32, false]);
  });

  it('rekey rotate with an invalid manifest names the problem, exits 2 and starts nothing', async () => {
    const dir = await tempDir();
    const name = uniqueId('bad-');
    await mkdir(join(dir, 'm'));
    await writeFile(join(dir, 'm', 'bad.yaml'), stringify(secret(name, { policy: { overlap: 'later' } })));
    const result = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'rotate', name, '-f', join(dir, 'm')], { cwd: ROOT }).then(
      () => ({ code: 0, stderr: '' }),
      (e) => ({ code: e.code as number, stderr: e.stderr as string }),
    );
    assert.equal(result.code, 2);
    assert.match(result.stderr, /invalid manifests, nothing was started/);
    assert.match(result.stderr, /bad\.yaml: spec\.policy\.overlap: expected a duration/);
    await assert.rejects((await temporalClient()).workflow.getHandle(rotationWorkflowId(name)).describe(), WorkflowNotFoundError);
  });
  it('manifests on different accounts at one target are fine: another role, port, account host, admin, or a deploy key beside another', async () => {
    const otherAdmin = { store: { type: 'aws-secrets-manager', secretId: 'x/other-admin' } };
    const github = { auth: { token: { store: { type: 'aws-secrets-manager', secretId: 'x/github-token' } } } };
    const deployKey = (name: string) => secret(name, { generator: { type: 'ssh-ed25519' }, target: { type: 'github-deploy-key', github, repository: 'octo/app' } });
    const found = await problems({
      'a.yaml': secret('a', pg({ host: 'db.internal', user: 'app' })),
      'b.yaml': secret('b', pg({ host: 'db.internal', strategy: 'alternating-users', users: ['reports_a', 'reports_b'] })),
      'c.yaml': secret('c', pg({ host: 'db.internal', port: 5433, user: 'app' })),
      'd.yaml': secret('d', { target: { type: 'mysql', host: 'db.internal', strategy: 'single-user', user: { name: 'app', host: '%' }, admin } }),
      'e.yaml': secret('e', { target: { type: 'mysql', host: 'db.internal', strategy: 'single-user', user: { name: 'app', host: '10.0.%' }, admin } }),
      'f.yaml': secret('f', iam({ userName: 'ci' })),
      // The same user name in another AWS account: another admin manages it.
      'g.yaml': secret('g', iam({ userName: 'ci', admin: otherAdmin })),
      'h.yaml': deployKey('h'),
      'i.yaml': deployKey('i'),
    });
    assert.deepEqual(found, []);
  });

  it('GitHub providers: plain-http hosts, inline tokens, reserved secret names, missing repositories and the wrong generator are named', async () => {
    const stored = { store: { type: 'aws-secrets-manager', secretId: 'x/github-token' } };
    const github = (extra: Record<string, unknown> = {}) => ({ baseUrl: 'https://ghe.example.com/api/v3', auth: { token: stored }, ...extra });
    const found = await problems({
      'a.yaml': secret('plain-http', { consumers: [{ type: 'github-actions-secret', name: 'ci', github: github({ baseUrl: 'http://ghe.example.com/api/v3' }), targets: [{ repository: 'o/r', name: 'T' }] }] }),
      'b.yaml': secret('inline-token', { consumers: [{ type: 'github-actions-secret', name: 'ci', github: { auth: { token: 'ghp_inline' } }, targets: [{ repository: 'o/r', name: 'T' }] }] }),
      'c.yaml': secret('reserved', { consumers: [{ type: 'github-actions-secret', name: 'ci', github: github(), targets: [{ repository: 'o/r', name: 'GITHUB_TOKEN' }] }] }),
      'd.yaml': secret('selected', { consumers: [{ type: 'github-actions-secret', name: 'ci', github: github(), targets: [{ organization: 'o', name: 'T', visibility: 'selected' }] }] }),
      'e.yaml': secret('traversal', { consumers: [{ type: 'github-webhook', name: 'gh', github: github(), hooks: [{ repository: 'o/..', id: 1 }] }] }),
      'f.yaml': secret('deploy-key', { target: { type: 'github-deploy-key', github: github(), repository: 'o/r' } }),
      'g.yaml': secret('dot-environment', { consumers: [{ type: 'github-actions-secret', name: 'ci', github: github(), targets: [{ repository: 'o/r', environment: '..', name: 'T' }] }] }),
      'i.yaml': secret('rotation-reference-elsewhere', { consumers: [{ type: 'command', name: 'app', file: '/tmp/x', reload: 'echo ${versionId}' }] }),
      'h.yaml': secret('receiver-one-key', {
        consumers: [
          { type: 'command', name: 'receiver', file: '/tmp/x' },
          { type: 'github-webhook', name: 'gh', github: github(), hooks: [{ repository: 'o/r', url: 'https://hooks.example.com/x?token=abc' }] },
        ],
      }),
    });
    const about = (file: string) => found.filter((p) => p.startsWith(`${file}:`)).join('\n');
    assert.match(about('a.yaml'), /spec\.consumers\[0\]\.github\.baseUrl: must be https \(plain http only to a loopback address\)/);
    assert.match(about('b.yaml'), /spec\.consumers\[0\]\.github\.auth/);
    assert.match(about('c.yaml'), /spec\.consumers\[0\]\.targets\[0\]\.name: must not start with GITHUB_/);
    assert.match(about('d.yaml'), /spec\.consumers\[0\]\.targets\[0\]\.selectedRepositories: is required when visibility is selected/);
    assert.match(about('e.yaml'), /spec\.consumers\[0\]\.hooks\[0\]/);
    assert.match(about('f.yaml'), /spec\.generator\.type: target github-deploy-key needs generator ssh-ed25519/);
    // \${versionId} is left unexpanded only where a gitops consumer fills it.
    assert.match(about('i.yaml'), /spec\.consumers\[0\]\.reload: \$\{versionId\} is not allowed/);
    assert.match(about('g.yaml'), /spec\.consumers\[0\]\.targets\[0\]\.environment: must be an environment name/);
    // Receivers that accept only the new key would reject everything the hook signs until promote.
    assert.match(about('h.yaml'), /spec\.consumers\[0\]\.keys: must be current-and-previous: gh switches to the new version only at promote/);
    assert.match(about('h.yaml'), /spec\.consumers\[1\]\.hooks\[0\]\.url: must not carry a user name, password or query/);
  });
  it("a group's spec hash covers its members' specs: a member's manifest changing changes it", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'g.yaml'), stringify(group({ secrets: ['a', 'b'] })));
    await writeFile(join(dir, 'b.yaml'), stringify(secret('b')));
    await writeFile(join(dir, 'a.yaml'), stringify(secret('a')));
    const before = (await loadManifests(dir)).groups.get('payments')!.specHash;
    await writeFile(join(dir, 'a.yaml'), stringify(secret('a', { policy: { overlap: '1m' } })));
    const after = await loadManifests(dir);
    assert.notEqual(after.groups.get('payments')!.specHash, before);
    assert.match(after.groups.get('payments')!.specHash, /^sha256:[0-9a-f]{64}$/);
  });

  it('every example manifest is valid, and examples/github.yaml declares each GitHub kind', async () => {
    const set = await loadManifests(join(ROOT, 'examples'));
    const kinds = (name: string) => {
      const spec = set.secrets.get(name)!.spec;
      return [spec.generator?.type, spec.target?.type, ...spec.consumers.map((c) => c.type)];
    };
    assert.deepEqual(kinds('ci-deploy-token'), ['random-bytes', undefined, 'github-actions-secret']);
    assert.deepEqual(kinds('github-webhook-signing'), ['random-bytes', undefined, 'command', 'github-webhook']);
    assert.deepEqual(kinds('infra-deploy-key'), ['ssh-ed25519', 'github-deploy-key', 'command']);
    assert.deepEqual(kinds('payments-db-password'), ['random-bytes', undefined, 'gitops-github']);
    assert.deepEqual(kinds('sessions-cache'), ['password', 'redis', 'http']);
    assert.deepEqual(set.groups.get('payments')?.spec.secrets, ['payments-db', 'billing-api-key']);
  });
});
