// Real git for the tests: bare repositories on disk holding a reviewed configuration file, and an
// API key stored in moto whose consumers refer to it from git.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { sm, tempDir } from './helpers';

const run = promisify(execFile);
export const gitEnv = { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1', GIT_AUTHOR_NAME: 'test', GIT_AUTHOR_EMAIL: 't@x', GIT_COMMITTER_NAME: 'test', GIT_COMMITTER_EMAIL: 't@x' };
export const git = async (cwd: string, ...args: string[]) => (await run('git', args, { cwd, env: gitEnv })).stdout;

export const VALUES = `# Payments service configuration (reviewed by the payments team)
database:
  host: db.internal   # the primary
  # which stored version the service reads
  passwordRef: "aws-secrets-manager:rekey/none#none"
replicas: 3
`;

/** A bare repository whose main branch holds deploy/values.yaml, and a working clone to push from. */
export async function repository() {
  const dir = await tempDir();
  const bare = join(dir, 'config.git');
  await git(dir, 'init', '--quiet', '--bare', '--initial-branch=main', bare);
  const work = join(dir, 'work');
  await git(dir, 'clone', '--quiet', bare, work);
  await mkdir(join(work, 'deploy'));
  await writeFile(join(work, 'deploy/values.yaml'), VALUES);
  await git(work, 'checkout', '--quiet', '-b', 'main');
  await git(work, 'add', '.');
  await git(work, 'commit', '--quiet', '-m', 'initial');
  await git(work, 'push', '--quiet', 'origin', 'main');
  const show = (ref: string, path = 'deploy/values.yaml') => git(bare, 'show', `${ref}:${path}`);
  const branches = async () => (await git(bare, 'for-each-ref', '--format=%(refname:short)', 'refs/heads')).split('\n').filter(Boolean).sort();
  return { dir, bare, work, show, branches };
}

export async function storeSecret(id: string) {
  const secretId = `rekey-test/${id}/api-key`;
  const value = `rekey-test-value-${randomBytes(12).toString('hex')}`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ value }) }));
  return { store: { type: 'aws-secrets-manager', secretId }, value };
}

/** A gitops consumer of `repositoryUrl` that points deploy/values.yaml at the new version. */
export const configConsumer = (repositoryUrl: string, extra: Record<string, unknown> = {}) => ({
  type: 'gitops',
  name: 'payments-config',
  repository: repositoryUrl,
  path: 'deploy/values.yaml',
  set: { 'database.passwordRef': '${secretId}#${versionId}' },
  ...extra,
});
