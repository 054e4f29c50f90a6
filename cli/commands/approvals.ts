import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseDuration } from '../../lib/duration';
import { loadManifests } from '../../lib/manifest';
import { connectClient, temporalSettings } from '../../lib/temporal';
import { ENROLMENT_TTL_MS, createEnrolment } from '../../web/enrolment';
import { announceWaiting, createApprovalsServer } from '../../web/server';
import { EXIT, UsageError, err, out, parse } from '../common';

const PERSON = /^[a-z0-9][a-z0-9._@-]{0,62}$/;

/** Where enrolment records live: shared by `rekey approvals enroll` and the server, on one host. */
function dataDir(given: unknown): string {
  return (given as string | undefined) ?? process.env.REKEY_APPROVALS_DATA ?? join(homedir(), '.local', 'state', 'rekey-approvals');
}

async function relyingParty(dir: string) {
  const set = await loadManifests(dir);
  if (!set.settings.passkeys) throw new UsageError(`${dir}: no Settings manifest declares spec.passkeys {rpId, origins} (the approvals server's relying party)`);
  return { set, rp: set.settings.passkeys };
}

/**
 * `rekey approvals enroll --as NAME -f DIR [--data DIR] [--expires 15m]`: a one-time, short-lived
 * link to enrol a passkey for NAME on the approvals server. It grants nothing: the resulting
 * credential counts only once it is added to the reviewed manifests.
 */
export async function approvals(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'enroll') throw new UsageError('expected "rekey approvals enroll --as NAME -f DIR"');
  const { values } = parse(rest, { as: { type: 'string' }, file: { type: 'string', short: 'f' }, data: { type: 'string' }, expires: { type: 'string' } }, []);
  const person = values.as as string | undefined;
  if (!person || !PERSON.test(person)) throw new UsageError('--as: the person\'s name as the manifests write it (lower-case letters, digits, ".", "_", "@", "-")');
  if (!values.file) throw new UsageError('-f DIR: the reviewed manifests (their Settings spec.passkeys say where the server is)');
  const { rp } = await relyingParty(values.file as string);
  let ttl = ENROLMENT_TTL_MS;
  if (values.expires !== undefined) {
    ttl = parseDuration(values.expires as string);
    if (!(ttl > 0 && ttl <= 24 * 3_600_000)) throw new UsageError('--expires: at most 24h');
  }
  const { token, expiresAt } = await createEnrolment(dataDir(values.data), person, ttl);
  err(`one-time enrolment link for ${person}, valid until ${expiresAt}; open it on ${person}'s phone or computer:`);
  out(`${rp.origins[0]}/enroll/${token}`);
  err('the passkey it makes counts for nothing until its lines are added to the reviewed manifests');
  return EXIT.ok;
}

/**
 * `rekey approvals-server -f DIR [--host 127.0.0.1] [--port 8390] [--data DIR] [--poll 10s]`: the
 * page where approvers decide with a passkey. Binds to loopback unless told otherwise.
 */
export async function approvalsServer(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    { file: { type: 'string', short: 'f' }, host: { type: 'string' }, port: { type: 'string' }, data: { type: 'string' }, poll: { type: 'string' } },
    [],
  );
  if (!values.file) throw new UsageError('-f DIR: the reviewed manifests (the relying party, and the specs approvers sign for)');
  const manifestDir = values.file as string;
  const { rp } = await relyingParty(manifestDir);
  const host = (values.host as string | undefined) ?? '127.0.0.1';
  const port = Number(values.port ?? new URL(rp.origins[0]).port ?? 8390) || 8390;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new UsageError(`--port: "${values.port}" is not a port number`);
  const pollMs = values.poll ? parseDuration(values.poll as string) : 10_000;
  const client = await connectClient();
  const { namespace } = temporalSettings();
  const log = (line: string) => out(`${new Date().toISOString()} ${line}`);
  const options = { client, namespace, manifestDir, dataDir: dataDir(values.data), log };
  const server = createApprovalsServer(options);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new UsageError(`cannot listen on ${host}:${port}: ${e.message}`)));
    server.listen(port, host, resolve);
  });
  const pageUrl = `${rp.origins[0]}/`;
  err(`rekey approvals server listening on ${host}:${port}; page: ${pageUrl} (relying party ${rp.rpId})`);
  const stop = announceWaiting({ ...options, pageUrl, everyMs: pollMs });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  stop();
  server.close();
  return EXIT.ok;
}
