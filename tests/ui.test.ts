import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { progressQuery, rotationWorkflowId, type RotationReport } from '../workflows/messages';
import { rotateSecret } from '../workflows/rotateSecret';
import { newKey, people } from './keys';
import { manifests, sm, temporalClient, uniqueId, withWorker } from './helpers';

const CHROMIUM = process.env.REKEY_CHROMIUM ?? '/usr/bin/chromium';
const UI = process.env.REKEY_TEMPORAL_UI ?? 'http://127.0.0.1:8233';
const CODEC = process.env.REKEY_CODEC_ENDPOINT ?? 'http://127.0.0.1:8388';
const ROOT = join(__dirname, '..');
const ARTIFACTS = join(ROOT, 'artifacts');

describe('the Temporal UI', function () {
  let browser: Browser;

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`chromium not found at ${CHROMIUM}: apt-get install chromium (or set REKEY_CHROMIUM)`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // This machine has no network but loopback: no background traffic, no sandbox as root.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(() => browser?.close());

  it('shows a waiting rotation decoded through the codec server, and its approve signal sent from the UI completes it', async () => {
    const secret = uniqueId('ui-');
    await sm.send(new CreateSecretCommand({ Name: `rekey-test/${secret}`, SecretString: JSON.stringify({ value: uniqueId('v') }) }));
    const bob = await newKey('bob');
    const trusted = await manifests(
      {
        [secret]: {
          store: { type: 'aws-secrets-manager', secretId: `rekey-test/${secret}` },
          generator: { type: 'random-bytes' },
          policy: { overlap: '0s', approval: { required: true, approvers: ['bob'] } },
        },
      },
      people([bob]),
    );
    await mkdir(ARTIFACTS, { recursive: true });

    const report: RotationReport = await withWorker(async (taskQueue) => {
      const handle = await (await temporalClient()).workflow.start(rotateSecret, {
        taskQueue,
        workflowId: rotationWorkflowId(secret),
        args: [trusted.input(secret, { requestedBy: 'alice', reason: 'ui test' })],
      });
      for (let i = 0; i < 100 && (await handle.query(progressQuery)).stage !== 'approve'; i++) await new Promise((r) => setTimeout(r, 100));

      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      page.setDefaultTimeout(30_000);
      try {
        // A person allowed to see payloads logs in to the codec server once; the UI then sends the cookie.
        const token = readFileSync(process.env.REKEY_CODEC_TOKEN_FILE!, 'utf8').trim();
        assert.equal((await page.goto(`${CODEC}/login?token=${token}`))!.status(), 200);

        // Find the rotation the way an on-call engineer would: filter by the search attribute.
        await page.goto(`${UI}/namespaces/default/workflows?query=${encodeURIComponent(`RekeySecret="${secret}" AND RekeyStage="approve"`)}`);
        await page.getByRole('link', { name: rotationWorkflowId(secret) }).first().click();
        await page.getByRole('button', { name: 'More Actions' }).waitFor();

        await page.getByTestId('data-encoder-status-error').or(page.getByTestId('data-encoder-status')).first().click();
        await page.getByTestId('use-local-endpoint-input').check();
        await page.getByTestId('data-encoder-endpoint-input').fill(CODEC);
        await page.getByText('Include cross-origin credentials').click();
        assert.equal(await page.locator('#pass-access-credentials').isChecked(), true);
        await page.getByTestId('confirm-modal-button').filter({ hasText: 'Apply' }).click();
        await page.reload();
        // Decoded: the input's spec hash is readable only after the codec server decrypted it.
        await page.getByText(trusted.set.secrets.get(secret)!.specHash).first().waitFor();

        await page.getByRole('button', { name: 'More Actions' }).click();
        await page.getByRole('menuitem', { name: 'Send a Signal' }).click();
        // The UI lists the workflow's signals (it asks the worker through the codec server).
        const dialog = page.locator('dialog[open]').filter({ hasText: 'Send a Signal' });
        await dialog.getByTestId('signal-select-button').click();
        await dialog.getByRole('option', { name: 'approve', exact: true }).click();
        // What bob pastes: the decision rekey signed with his key, printed for the UI.
        const printed = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), 'approve', secret, '--key', bob.path, '--comment', 'approved in the Temporal UI', '--print'], {
          cwd: ROOT,
          env: { ...process.env, REKEY_TASK_QUEUE: taskQueue },
        });
        await dialog.getByRole('textbox', { name: 'Data' }).fill(printed.stdout.trim());
        await dialog.getByTestId('confirm-modal-button').click();

        const result: RotationReport = await handle.result();
        await page.reload();
        await page.getByText('COMPLETED').first().waitFor();
        await page.screenshot({ path: join(ARTIFACTS, 'ui-approval.png'), fullPage: true });
        return result;
      } catch (err) {
        await page.screenshot({ path: join(ARTIFACTS, 'ui-approval-failure.png'), fullPage: true }).catch(() => undefined);
        throw err;
      } finally {
        await page.close();
      }
    }, { manifestDirs: [trusted.dir] });

    assert.equal(report.outcome, 'rotated');
    assert.deepEqual(report.approval.approvedBy.map((a) => [a.approver, a.fingerprint, a.comment]), [['bob', bob.fingerprint, 'approved in the Temporal UI']]);
  });
});
