// The commands README's "Encryption" section documents, run with the real temporal CLI against a
// codec server in this process: each one encodes or decodes through it, or fails loudly.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { createCodecServer } from '../cli/commands/codec-server';
import { AesGcmCodec, loadKeyring } from '../lib/codec';
import { rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { manifests, sm, stack, tempDir, temporalClient, uniqueId, withWorker, untilProgress } from './helpers';
import { newKey, people } from './keys';

const TEMPORAL = join(__dirname, '..', '.tools', 'venv', 'bin', 'temporal');

/** A store-only secret with a file consumer: cheap to rotate to the end. */
async function cheapSpec(extraPolicy: Record<string, unknown> = {}) {
  const name = uniqueId('cli-');
  const secretId = `rekey-test/${name}`;
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ value: uniqueId('v') }) }));
  const spec = {
    store: { type: 'aws-secrets-manager', secretId },
    generator: { type: 'random-bytes', size: 16 },
    consumers: [{ type: 'command', name: 'app', file: join(await tempDir(), 'app.json') }],
    policy: { overlap: '0s', ...extraPolicy },
  };
  return { name, spec };
}

/** The CLI's JSON output with every payload's data (base64 there) also spelled out as text. */
const readable = (out: string) => out + [...out.matchAll(/"data":\s*"([A-Za-z0-9+/=]*)"/g)].map((m) => Buffer.from(m[1], 'base64').toString('utf8')).join('\n');

const until = untilProgress;

describe('the temporal CLI through the codec server', () => {
  const token = randomBytes(24).toString('base64url');
  let server: Server;
  let endpoint: string;

  before(async () => {
    server = createCodecServer({ codec: new AesGcmCodec(loadKeyring()!), token, origins: [] });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  /** `temporal ARGS -o json` as README documents it: --codec-endpoint and --codec-auth "Bearer <token>". */
  const temporal = (...args: string[]) =>
    promisify(execFile)(TEMPORAL, [...args, '-o', 'json', '--address', stack.temporalAddress, '--namespace', 'default', '--codec-endpoint', endpoint, '--codec-auth', `Bearer ${token}`]).then(
      (r) => ({ code: 0, out: r.stdout, errOut: r.stderr }),
      (e) => ({ code: e.code as number, out: e.stdout as string, errOut: e.stderr as string }),
    );

  it('workflow query without arguments (sent as {}), show, signal --input and update execute all go through the codec', async () => {
    const bob = await newKey('bob');
    const { name, spec } = await cheapSpec({ approval: { required: true, approvers: ['bob'] } });
    const trusted = await manifests({ [name]: spec }, people([bob]));
    const specHash = trusted.set.secrets.get(name)!.specHash;
    const workflowId = rotationWorkflowId(name);
    await withWorker(
      async (taskQueue) => {
        const handle = await (await temporalClient()).workflow.start(rotateSecret, { taskQueue, workflowId, args: [trusted.input(name)] });
        try {
          await until(handle, (p) => p.stage === 'approve');

          const query = await temporal('workflow', 'query', '--workflow-id', workflowId, '--type', 'progress');
          assert.equal(query.code, 0, query.errOut);
          assert.ok(readable(query.out).includes(specHash), query.out);

          const show = await temporal('workflow', 'show', '--workflow-id', workflowId);
          assert.equal(show.code, 0, show.errOut);
          assert.ok(readable(show.out).includes(specHash), 'the input is shown decoded');

          const signal = await temporal('workflow', 'signal', '--workflow-id', workflowId, '--name', 'approve', '--input', '{"document":"cli-signal","signature":""}');
          assert.equal(signal.code, 0, signal.errOut);
          const ignored = await until(handle, (p) => p.approval.ignoredCount === 1);
          assert.match(ignored.approval.ignored[0].reason, /signature is missing/, 'the worker decoded the signal the CLI encoded');

          const update = await temporal('workflow', 'update', 'execute', '--workflow-id', workflowId, '--name', 'decide', '--input', '{"document":"cli-update","signature":""}');
          assert.match(update.out + update.errOut, /unsigned: signature is missing/, 'the refusal comes back decoded');
          assert.doesNotMatch(update.errOut, /codec|Encoded failure/i);
        } finally {
          await handle.terminate('test done');
        }
      },
      { manifestDirs: [trusted.dir] },
    );
  });

  it('workflow result shows the finished rotation\'s report decoded', async () => {
    const { name, spec } = await cheapSpec();
    const trusted = await manifests({ [name]: spec });
    const reason = uniqueId('visible-only-decoded-');
    const report: RotationReport = await withWorker(
      async (taskQueue) => (await temporalClient()).workflow.execute(rotateSecret, { taskQueue, workflowId: rotationWorkflowId(name), args: [trusted.input(name, { reason })] }),
      { manifestDirs: [trusted.dir] },
    );
    assert.equal(report.outcome, 'rotated');
    const result = await temporal('workflow', 'result', '--workflow-id', rotationWorkflowId(name));
    assert.equal(result.code, 0, result.errOut);
    assert.ok(readable(result.out).includes(reason), result.out);
  });

  it('schedule describe shows the arguments of a schedule\'s action decoded', async () => {
    const scheduleId = uniqueId('codec-cli-');
    const reason = uniqueId('visible-only-decoded-');
    const client = await temporalClient();
    const schedule = await client.schedule.create({
      scheduleId,
      spec: { intervals: [{ every: '1 day' }] },
      action: { type: 'startWorkflow', workflowType: rotateSecret, taskQueue: uniqueId('nobody-'), args: [{ secret: scheduleId, specHash: `sha256:${'0'.repeat(64)}`, reason }] },
      state: { paused: true },
    });
    try {
      const described = await temporal('schedule', 'describe', '--schedule-id', scheduleId);
      assert.equal(described.code, 0, described.errOut);
      assert.ok(readable(described.out).includes(reason), described.out);
    } finally {
      await schedule.delete();
    }
  });
});
