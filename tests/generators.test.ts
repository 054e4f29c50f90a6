// Generators make the secret itself. The ssh-ed25519 one writes OpenSSH's private key format by
// hand, so it is checked with the real ssh-keygen: it must read the key, sign with it, and
// rewrite it to the very same bytes. Values are never printed, not even by a failing assertion.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sshEd25519, sshEd25519Schema } from '../activities/generators/ssh-ed25519';
import { parsePublicKey, verifySignature } from '../lib/sshsig';

const run = promisify(execFile);

/** Run `command` with `input` on stdin; resolves with its exit status and output. */
function runWithInput(command: string, args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}


/** An OpenSSH private key's armour line, spelt in parts so that no key-shaped literal sits in the repository. */
const armour = (edge: 'BEGIN' | 'END') => `-----${edge} ${['OPENSSH', 'PRIVATE', 'KEY'].join(' ')}-----`;
describe('generators', () => {
  describe('ssh-ed25519', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'rekey-gen-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    /** Generate a key and write its private half where ssh-keygen will accept it (0600). */
    async function generated(spec: Record<string, unknown> = {}) {
      const material = sshEd25519(sshEd25519Schema.parse({ type: 'ssh-ed25519', ...spec })).generate();
      const path = join(dir, `key-${Math.random().toString(36).slice(2, 10)}`);
      await writeFile(path, material.value, { mode: 0o600 });
      return { material, path };
    }

    it('writes a private key ssh-keygen reads, whose public key is the one stored beside it', async () => {
      const { material, path } = await generated({ comment: 'deploy@rekey' });
      assert.match(material.beside?.publicKey ?? '', /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43} deploy@rekey$/);
      parsePublicKey(material.beside!.publicKey); // the repo's own parser agrees it is an ed25519 key

      const lines = material.value.split('\n');
      // assert.ok with a message, not assert.equal: a failure must not print a line of the key.
      assert.ok(lines[0] === armour('BEGIN'), 'starts with the OpenSSH header');
      assert.ok(lines.at(-2) === armour('END'), 'ends with the OpenSSH footer');
      assert.ok(lines.at(-1) === '', 'ends with a newline');
      const body = lines.slice(1, -2);
      assert.ok(body.slice(0, -1).every((line) => line.length === 70), 'base64 wrapped at 70 columns');
      assert.ok(body.at(-1)!.length > 0 && body.at(-1)!.length <= 70);

      const { stdout } = await run('ssh-keygen', ['-y', '-f', path]);
      assert.equal(stdout.trim(), material.beside!.publicKey);
    });

    it('is byte for byte what ssh-keygen writes for the same key (apart from the random check words)', async () => {
      const { material, path } = await generated({ comment: 'same bytes' });
      // -p with empty passphrases makes ssh-keygen parse the key and serialise it again itself.
      await run('ssh-keygen', ['-q', '-p', '-P', '', '-N', '', '-f', path]);
      const rewritten = await readFile(path, 'utf8');
      const decode = (pem: string) => Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
      const ours = decode(material.value);
      const theirs = decode(rewritten);
      assert.ok(ours.length === theirs.length, 'same length as ssh-keygen writes');
      // The two check words open the private section: 15 (magic) + 8 + 8 + 4 (cipher, kdf, options)
      // + 4 (key count) + 55 (public key blob) + 4 (section length) = byte 98. Everything else must match.
      const CHECK = 98;
      assert.ok(ours.subarray(CHECK, CHECK + 4).equals(ours.subarray(CHECK + 4, CHECK + 8)), 'the two check words are equal');
      // ssh-keygen draws new check words, so equal ones would mean it did not rewrite the file.
      assert.ok(!ours.subarray(CHECK, CHECK + 4).equals(theirs.subarray(CHECK, CHECK + 4)), 'ssh-keygen rewrote the file');
      assert.ok(ours.subarray(0, CHECK).equals(theirs.subarray(0, CHECK)), 'header and public key match');
      assert.ok(ours.subarray(CHECK + 8).equals(theirs.subarray(CHECK + 8)), 'private section matches (key, comment, padding)');
      assert.ok(rewritten.split('\n').every((line) => line.length <= 70));
    });

    it('signs: ssh-keygen -Y sign with the key verifies against the stored public key', async () => {
      const { material, path } = await generated({ comment: 'signer@rekey' });
      const message = 'rotate me\n';
      const messagePath = join(dir, 'message.txt');
      await writeFile(messagePath, message);
      await run('ssh-keygen', ['-Y', 'sign', '-n', 'rekey', '-f', path, messagePath]);
      const signaturePath = `${messagePath}.sig`;
      const signature = await readFile(signaturePath, 'utf8');

      const check = await runWithInput('ssh-keygen', ['-Y', 'check-novalidate', '-n', 'rekey', '-s', signaturePath], message);
      assert.equal(check.code, 0, check.stderr);

      // Bound to our public key, not just to whatever key the signature carries.
      const allowed = join(dir, 'allowed_signers');
      await writeFile(allowed, `signer@rekey ${material.beside!.publicKey}\n`);
      const verify = await runWithInput('ssh-keygen', ['-Y', 'verify', '-f', allowed, '-I', 'signer@rekey', '-n', 'rekey', '-s', signaturePath], message);
      assert.equal(verify.code, 0, verify.stderr);

      const verdict = verifySignature(message, signature, [{ key: parsePublicKey(material.beside!.publicKey) }]);
      assert.equal(verdict.ok, true, verdict.ok ? '' : verdict.reason);
      await rm(signaturePath);
    });

    it('makes a fresh key every time', async () => {
      const generator = sshEd25519(sshEd25519Schema.parse({ type: 'ssh-ed25519' }));
      const a = generator.generate();
      const b = generator.generate();
      assert.ok(a.value !== b.value, 'two generations gave the same private key');
      assert.notEqual(a.beside?.publicKey, b.beside?.publicKey);
    });

    it('without a comment, the public key line has none and ssh-keygen still reads the key', async () => {
      const { material, path } = await generated();
      assert.match(material.beside!.publicKey, /^ssh-ed25519 [A-Za-z0-9+/]+=*$/);
      const { stdout } = await run('ssh-keygen', ['-y', '-f', path]);
      assert.equal(stdout.trim().split(' ').slice(0, 2).join(' '), material.beside!.publicKey);
    });

    it('refuses a comment that could add a line to authorized_keys, or is not printable, or too long', () => {
      for (const comment of ['ok\nssh-ed25519 AAAA attacker', 'ok\r', 'tab\there', 'bell\x07', 'é', 'x'.repeat(101)]) {
        assert.equal(sshEd25519Schema.safeParse({ type: 'ssh-ed25519', comment }).success, false, JSON.stringify(comment));
      }
      assert.equal(sshEd25519Schema.safeParse({ type: 'ssh-ed25519', comment: 'ci deploy key (2024) <ops@example.com>' }).success, true);
      assert.equal(sshEd25519Schema.safeParse({ type: 'ssh-ed25519', bits: 4096 }).success, false, 'unknown fields are refused');
    });
  });
});
