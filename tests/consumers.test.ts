// Consumers hand a version to a service. The file consumer writes into folders other processes can
// see and sources of shell text; the HTTP consumer talks to services that may answer anything. None
// of them may hand the value to someone else, tear it, or echo it in an error.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, lchown, lstat, readFile, readdir, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { commandConsumer, commandConsumerSchema } from '../activities/consumers/command';
import { httpConsumer, httpConsumerSchema } from '../activities/consumers/http';
import type { VersionRef } from '../activities/provider';
import { manifests, sm, tempDir, testPassword, uniqueId } from './helpers';

const ref = (): VersionRef => ({ secret: 'app', storeRef: 'aws-secrets-manager:test', versionId: uniqueId('v-') });

const fileConsumer = (file: string, extra: Record<string, unknown> = {}) =>
  commandConsumer(commandConsumerSchema.parse({ type: 'command', name: 'app', file, ...extra }));

/** A folder only its owner can write, as a file consumer's folder must be. */
async function privateDir(): Promise<string> {
  const dir = await tempDir();
  await chmod(dir, 0o700);
  return dir;
}

async function rejection(work: Promise<unknown>): Promise<string> {
  return work.then(
    () => assert.fail('expected a refusal'),
    (err: Error) => err.message,
  );
}

/** A real HTTP service on 127.0.0.1 that records what it is sent and answers with `answer`. */
async function service(answer: (res: import('node:http').ServerResponse, url: string) => void) {
  const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    req.resume().on('end', () => answer(res, req.url!));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, seen, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

async function storedToken(value: Record<string, string>): Promise<string> {
  const secretId = `rekey-test/${uniqueId('hdr-')}`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify(value) }));
  return secretId;
}

/** An http consumer of `svc` that sends header `name` from field `token` of the stored secret `secretId`. */
function storedHeaderConsumer(svc: { base: string }, name: string, secretId: string) {
  return httpConsumer(
    httpConsumerSchema.parse({
      type: 'http',
      name: 'svc',
      reloadUrl: `${svc.base}/reload`,
      healthUrl: `${svc.base}/health`,
      headers: { [name]: { store: { type: 'aws-secrets-manager', secretId }, field: 'token' } },
    }),
  );
}

describe('the command consumer', () => {
  it('a symlink planted at the old predictable temp name, or at a plausible temp path, never receives the value', async () => {
    const dir = await privateDir();
    const victim = join(await tempDir(), 'victim');
    await writeFile(victim, 'untouched');
    const file = join(dir, 'app.json');
    const planted = [`${file}.rekey-${process.pid}.tmp`, `${file}.tmp`, join(dir, '.app.json.tmp'), `${file}~`];
    for (const path of planted) await symlink(victim, path);
    const password = testPassword();
    await fileConsumer(file).deploy(ref(), { password });
    assert.equal(await readFile(victim, 'utf8'), 'untouched');
    assert.equal(JSON.parse(await readFile(file, 'utf8')).password, password);
    for (const path of planted) assert.equal(await readlink(path), victim, `${path} is still the planted link`);
  });

  it('the written file is 0600 even when the file it replaces was 0644', async () => {
    const dir = await privateDir();
    const file = join(dir, 'app.json');
    await writeFile(file, '{}');
    await chmod(file, 0o644);
    await fileConsumer(file).deploy(ref(), { password: testPassword() });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  it('200 concurrent deploys of alternating values never leave a torn or mixed file', async () => {
    const dir = await privateDir();
    const file = join(dir, 'app.json');
    const consumer = fileConsumer(file);
    // Different lengths, so a shorter write over a longer one would leave a visible tail.
    const values = [`${testPassword()}${'a'.repeat(20_000)}`, testPassword()];
    const versionRef = ref();
    const expected = values.map((password) => JSON.stringify({ password, rekey_version_id: versionRef.versionId }, null, 2) + '\n');
    let done = false;
    const reads: string[] = [];
    const reader = (async () => {
      while (!done) {
        const text = await readFile(file, 'utf8').catch(() => undefined);
        if (text !== undefined) reads.push(text);
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    await Promise.all(Array.from({ length: 200 }, (_, i) => consumer.deploy(versionRef, { password: values[i % 2] }))).finally(() => (done = true));
    await reader;
    reads.push(await readFile(file, 'utf8'));
    for (const text of reads) assert.ok(expected.includes(text), 'every read is one whole written value');
    assert.deepEqual(await readdir(dir), ['app.json'], 'no temp file is left behind');
  });

  it('a folder writable by others (0777) is refused, naming it, and nothing is written or run', async () => {
    const dir = await tempDir();
    await chmod(dir, 0o777);
    const marker = join(await tempDir(), 'reloaded');
    const message = await rejection(fileConsumer(join(dir, 'app.json'), { reload: `touch ${marker}` }).deploy(ref(), { password: testPassword() }));
    assert.match(message, new RegExp(`folder ${dir} is writable by group or others`));
    assert.deepEqual(await readdir(dir), []);
    assert.equal(existsSync(marker), false);
  });

  it('a folder reached through a symlink someone else owns is refused, naming it, and nothing is written; one root owns is followed', async () => {
    const real = await privateDir();
    const link = join(await privateDir(), 'link');
    await symlink(real, link);
    await lchown(link, 65534, 65534); // nobody's: it could be pointed anywhere
    const message = await rejection(fileConsumer(join(link, 'app.json')).deploy(ref(), { password: testPassword() }));
    assert.match(message, new RegExp(`folder ${link} is reached through a symlink someone else owns`));
    assert.deepEqual(await readdir(real), []);
    // Like Debian's /var/run -> /run: a link the worker's user or root owns leads to a folder that is checked too.
    await lchown(link, process.getuid!(), process.getgid!());
    await fileConsumer(join(link, 'app.json')).deploy(ref(), { password: testPassword() });
    assert.deepEqual(await readdir(real), ['app.json']);
  });

  it('a folder owned by another user, or below a folder others may write to, is refused', async () => {
    const stranger = await privateDir();
    await chown(stranger, 65534, 65534);
    assert.match(await rejection(fileConsumer(join(stranger, 'app.json')).deploy(ref(), { password: testPassword() })), /is owned by another user/);
    const open = await privateDir();
    await chmod(open, 0o777); // writable by all, and not sticky: a subfolder could be swapped
    const below = join(open, 'svc');
    assert.match(await rejection(fileConsumer(join(below, 'app.json')).deploy(ref(), { password: testPassword() })), new RegExp(`is below ${open}, which others may write to`));
  });

  it('an env file never sets what a loader or shell acts on (LD_PRELOAD, PATH, BASH_ENV...) from the store; fields chooses what is written', async () => {
    const dir = await privateDir();
    const file = join(dir, 'app.env');
    const hostile = { value: testPassword(), ld_preload: '/tmp/evil.so', Path: '/tmp/evil' };
    assert.match(await rejection(fileConsumer(file, { format: 'env' }).deploy(ref(), hostile)), /credential key "ld_preload" would set LD_PRELOAD for whatever loads the env file/);
    assert.equal(existsSync(file), false);
    await fileConsumer(file, { format: 'env', fields: ['value'] }).deploy(ref(), hostile);
    const written = await readFile(file, 'utf8');
    assert.match(written, /^VALUE='/m);
    assert.ok(!/LD_PRELOAD|PATH=/.test(written), written);
  });

  it('an env file never holds one name twice: a stored previous_value cannot shadow the older version PREVIOUS_VALUE holds', async () => {
    const file = join(await privateDir(), 'keys.env');
    const consumer = fileConsumer(file, { format: 'env', keys: 'current-and-previous' });
    const previous = { ref: { ...ref(), versionId: 'older' }, credential: { value: testPassword() } };
    assert.match(await rejection(consumer.deploy(ref(), { value: testPassword(), previous_value: 'forged' }, { previous })), /two fields of the stored value become PREVIOUS_VALUE in the env file/);
    assert.equal(existsSync(file), false);
    await consumer.deploy(ref(), { value: testPassword() }, { previous });
    assert.match(await readFile(file, 'utf8'), /^PREVIOUS_VALUE='.+'\nPREVIOUS_REKEY_VERSION_ID='older'$/m);
  });

  it('missing folders are created 0700', async () => {
    const base = await privateDir();
    await fileConsumer(join(base, 'a', 'b', 'app.json')).deploy(ref(), { password: testPassword() });
    for (const folder of [join(base, 'a'), join(base, 'a', 'b')]) assert.equal((await lstat(folder)).mode & 0o777, 0o700, folder);
  });

  it('an env file sourced by sh sets the variables, and quotes and $(...) in values stay text', async () => {
    const dir = await privateDir();
    const file = join(dir, 'app.env');
    const marker = join(dir, 'pwned');
    const password = `${testPassword()}'"$(touch ${marker})\`touch ${marker}\`\n;touch ${marker}`;
    const versionRef = ref();
    await fileConsumer(file, { format: 'env' }).deploy(versionRef, { username: 'app', password });
    const out = execFileSync('/bin/sh', ['-c', '. "$1"; printf "%s|%s|%s" "$USERNAME" "$PASSWORD" "$REKEY_VERSION_ID"', 'sh', file], { env: { PATH: process.env.PATH }, cwd: dir });
    assert.equal(out.toString(), `app|${password}|${versionRef.versionId}`);
    assert.equal(existsSync(marker), false);
  });

  it('a stored key that is shell text (x=1;touch ...) is refused, naming the key and not the value, and the old file stays', async () => {
    const dir = await privateDir();
    const file = join(dir, 'app.env');
    await fileConsumer(file, { format: 'env' }).deploy(ref(), { password: 'old' });
    const before = await readFile(file, 'utf8');
    const marker = join(dir, 'pwned');
    const key = `x=1;touch ${marker}`;
    const password = testPassword();
    const message = await rejection(fileConsumer(file, { format: 'env' }).deploy(ref(), { [key]: password, password }));
    assert.ok(message.includes(JSON.stringify(key)), message);
    assert.ok(!message.includes(password), 'the value never appears');
    assert.equal(await readFile(file, 'utf8'), before);
    assert.deepEqual(await readdir(dir), ['app.env']);
    execFileSync('/bin/sh', ['-c', '. "$1"', 'sh', file], { env: { PATH: process.env.PATH } });
    assert.equal(existsSync(marker), false, 'sourcing the file runs nothing');
  });
});

describe('the http consumer', () => {
  it('reloadUrl or healthUrl with a user name or password is refused when the manifest is loaded, naming the field and not the password', async () => {
    const password = testPassword();
    for (const field of ['reloadUrl', 'healthUrl']) {
      const consumer = { type: 'http', name: 'svc', reloadUrl: 'http://127.0.0.1:1/reload', healthUrl: 'http://127.0.0.1:1/health', [field]: `http://admin:${password}@127.0.0.1:1/x` };
      const spec = { store: { type: 'aws-secrets-manager', secretId: 'rekey-test/none' }, generator: { type: 'random-bytes', size: 16 }, consumers: [consumer] };
      const message = await rejection(manifests({ [uniqueId('url-')]: spec }));
      assert.match(message, new RegExp(`consumers\\[0\\]\\.${field}: ${field} must not carry a user name or password`));
      assert.ok(!message.includes(password), 'the password never appears');
      assert.equal(httpConsumerSchema.safeParse(consumer).success, false);
    }
  });

  it('a header read from the store reaches the service, and is in no error when the service answers 500', async () => {
    const token = testPassword();
    const secretId = await storedToken({ token });
    const svc = await service((res) => res.writeHead(500).end(`internal error, you sent Bearer ${token}`));
    try {
      const spec = httpConsumerSchema.parse({
        type: 'http',
        name: 'svc',
        reloadUrl: `${svc.base}/reload`,
        healthUrl: `${svc.base}/health`,
        headers: { Authorization: { store: { type: 'aws-secrets-manager', secretId }, field: 'token', prefix: 'Bearer ' }, 'X-Plain': 'plain' },
      });
      assert.ok(!JSON.stringify(spec).includes(token), 'the spec holds a reference, not the token');
      const consumer = httpConsumer(spec);
      const message = await rejection(consumer.deploy(ref(), {}));
      assert.equal(message, 'reload of consumer svc answered HTTP 500');
      const health = await consumer.health(ref());
      assert.deepEqual(health, { healthy: false, detail: 'health answered HTTP 500' });
      assert.deepEqual(svc.seen.map((r) => [r.method, r.url, r.headers.authorization, r.headers['x-plain']]), [
        ['POST', '/reload', `Bearer ${token}`, 'plain'],
        ['GET', '/health', `Bearer ${token}`, 'plain'],
      ]);
    } finally {
      await svc.close();
    }
  });

  it('a stored header whose field is missing fails naming the header and the store, never a value, and sends nothing', async () => {
    const other = testPassword();
    const secretId = await storedToken({ other });
    const svc = await service((res) => res.end('ok'));
    try {
      const consumer = storedHeaderConsumer(svc, 'Authorization', secretId);
      const message = await rejection(consumer.deploy(ref(), {}));
      assert.match(message, new RegExp(`header Authorization of consumer svc: aws-secrets-manager:.*${secretId} has no field token`));
      const { healthy, detail } = await consumer.health(ref());
      assert.equal(healthy, false);
      for (const text of [message, detail]) assert.ok(!text.includes(other), 'no stored value appears');
      assert.deepEqual(svc.seen, []);
    } finally {
      await svc.close();
    }
  });

  it('a stored header value fetch cannot send (a newline, header injection) is refused without quoting it', async () => {
    const token = testPassword();
    const secretId = await storedToken({ token: `${token}\r\nX-Injected: 1` });
    const svc = await service((res) => res.end('ok'));
    try {
      const consumer = storedHeaderConsumer(svc, 'X-Api-Key', secretId);
      const message = await rejection(consumer.deploy(ref(), {}));
      assert.match(message, /header X-Api-Key of consumer svc is not a valid HTTP header/);
      const { detail } = await consumer.health(ref());
      for (const text of [message, detail]) assert.ok(!text.includes(token), 'the stored value never appears');
      assert.deepEqual(svc.seen, []);
    } finally {
      await svc.close();
    }
  });

  it('a redirect from the service does not carry a stored header to another host', async () => {
    const token = testPassword();
    const secretId = await storedToken({ token });
    const elsewhere = await service((res) => res.end('ok'));
    const svc = await service((res, url) => res.writeHead(307, { location: `${elsewhere.base}${url}` }).end());
    try {
      const consumer = storedHeaderConsumer(svc, 'X-Api-Key', secretId);
      assert.equal(await rejection(consumer.deploy(ref(), {})), 'reload of consumer svc answered HTTP 307');
      assert.equal((await consumer.health(ref())).healthy, false);
      assert.equal(svc.seen.length, 2);
      assert.deepEqual(elsewhere.seen, []);
    } finally {
      await Promise.all([svc.close(), elsewhere.close()]);
    }
  });
});
