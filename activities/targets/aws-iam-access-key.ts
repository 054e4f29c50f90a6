// An IAM user's access key. IAM allows two keys per user, so rotation is natively dual: the new key
// is minted by IAM at generate (Target.issue: IAM shows the secret once, so rekey cannot generate
// it), revoke deactivates the old one, and a durable timer (Target.retire, workflow
// retire/<secret>/<version>) deletes it after `deleteAfter`, counted from the worker's own audit
// record of the revoke; until then, reactivating it is the rollback, and a rotation that needs its
// slot is refused, except an emergency (a checked break-glass signature), which deletes it first.
//
// rekey labels every key it deals with by a tag on the user, as the AWS console labels access keys
// ("description tags": tag key = access key id): `rekey <secret> <version id>`, and once revoked
// `... inactive since <time>`. A label is only a hint (whoever may tag the user can write one):
// rekey deletes a key only when a version of this secret in the store holds it and it is inactive
// (the retire timer, once due; an emergency that needs the slot), or when an earlier attempt of the
// same issue asked IAM for it and the answer was lost (see issue). Any other key is never touched:
// a rotation that would need its slot is refused, naming it.
// The stored value is {accessKeyId, secretAccessKey}; other fields are kept.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html
import {
  CreateAccessKeyCommand,
  DeleteAccessKeyCommand,
  GetAccessKeyLastUsedCommand,
  IAMClient,
  type IAMClientConfig,
  ListAccessKeysCommand,
  PutUserPolicyCommand,
  ListUserTagsCommand,
  TagUserCommand,
  UntagUserCommand,
  UpdateAccessKeyCommand,
} from '@aws-sdk/client-iam';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { parseDuration } from '../../lib/duration';
import { durationBetween } from '../../lib/schema';
import { textOf, type Acceptance, type Credential, type Revoked, type Target, type TargetAccount, type TargetContext } from '../provider';
import { describeStore, readCurrent, storeIdentity, storeSchema } from '../stores';

/** How long before the store wrote a version the key it holds may have been created by issue. */
const MINTED_WINDOW_MS = 10 * 60_000;
/** IAM's clock and the store's (or Temporal's) may disagree by this much. */
const CLOCK_SKEW_MS = 60_000;
/** The inline policy an emergency revoke puts on the user: sessions issued before it are denied. */
export const REVOKE_SESSIONS_POLICY = 'rekey-revoke-older-sessions';
/** CreateAccessKey gets this long to answer (the SDK's default is minutes): a hang becomes a retry. */
const CREATE_TIMEOUT_MS = 10_000;
/** IAM's clock and the worker's, around a create whose answer was lost. */
const CREATE_SKEW_MS = 5_000;

export const awsIamAccessKeySchema = z
  .object({
    type: z.literal('aws-iam-access-key'),
    /** The IAM user whose access key is rotated (its name, not an ARN). */
    userName: z.string().regex(/^[\w+=,.@-]{1,64}$/, 'must be an IAM user name (letters, digits, +=,.@_-, at most 64)'),
    /**
     * Who creates, deactivates and deletes the keys: a stored {accessKeyId, secretAccessKey}
     * (`store`), or the worker's own AWS identity (`workerIdentity: true`), said explicitly. Never
     * the rotated user itself. Needs iam:ListAccessKeys, CreateAccessKey, UpdateAccessKey,
     * DeleteAccessKey, GetAccessKeyLastUsed, ListUserTags, TagUser and UntagUser on that user,
     * and iam:PutUserPolicy for emergencies (it denies sessions the old key opened).
     */
    admin: z.union([z.object({ store: storeSchema }).strict(), z.object({ workerIdentity: z.literal(true) }).strict()]),
    /**
     * How long a revoked (inactive) key is kept before it is deleted; reactivating it is the
     * rollback until then, and a rotation in that time is refused (keep it shorter than the time
     * between rotations). An emergency deletes it at once.
     */
    deleteAfter: durationBetween('0s', '365d').default('7d'),
    /**
     * In an emergency, also deny every session opened before the revoke (sts:GetSessionToken
     * credentials outlive the key that made them) with an inline policy on the user. Needs
     * iam:PutUserPolicy, with which the admin could also widen the user's rights: grant it within
     * a permissions boundary. Off by default.
     */
    denySessionsOnEmergency: z.boolean().default(false),
    region: z.string().min(1).optional().describe('Defaults to AWS_REGION, then us-east-1'),
    endpoint: z.url().optional().describe('IAM and STS endpoint; defaults to AWS_ENDPOINT_URL (moto) or AWS'),
  })
  .strict();
export type AwsIamAccessKeySpec = z.infer<typeof awsIamAccessKeySchema>;

/**
 * IAM user names are unique per AWS account and ignore case. Which AWS account is the admin's:
 * the same user name under two admins may be two accounts' users (a `ci` user in staging and in
 * production), so only the same name under the same admin is known to be one user.
 */
export function awsIamAccessKeyAccounts(spec: AwsIamAccessKeySpec): TargetAccount[] {
  const admin = 'store' in spec.admin ? storeIdentity(spec.admin.store) : "the worker's identity";
  const endpoint = spec.endpoint ?? process.env.AWS_ENDPOINT_URL;
  return [{ path: 'userName', account: `IAM user ${spec.userName.toLowerCase()}${endpoint ? ` at ${endpoint}` : ''} (admin ${admin})` }];
}

/** An access key id as IAM prints them: safe to name in messages (AWS does not treat it as secret). */
const KEY_ID = /^[A-Z0-9]{16,128}$/;
const LABEL = /^rekey ([a-z0-9.-]{1,63}) ([A-Za-z0-9-]{1,64})(?: inactive since ([0-9TZ:.+-]{1,40}))?$/;
const DENIED = new Set(['AccessDenied', 'AccessDeniedException', 'UnauthorizedOperation', 'UnauthorizedAccess']);
const REJECTED_KEY = new Set(['InvalidClientTokenId', 'SignatureDoesNotMatch', 'ExpiredToken', 'UnrecognizedClientException']);

/** The activity's log; outside an activity (the benchmark's direct path) there is none to write to. */
function logged(message: string, attributes: Record<string, unknown>): void {
  try {
    log.info(message, attributes);
  } catch {
    // No activity context.
  }
}

function refusal(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`aws-iam-access-key: ${message}`, 'TargetRefused');
}

interface Key {
  id: string;
  status: string;
  created?: Date;
}
interface Label {
  secret: string;
  version: string;
  inactiveSince?: string;
}

export function awsIamAccessKey(spec: AwsIamAccessKeySpec): Target {
  const user = spec.userName;
  const region = spec.region ?? process.env.AWS_REGION ?? 'us-east-1';
  const endpoint = spec.endpoint ?? process.env.AWS_ENDPOINT_URL;
  const deleteAfterMs = parseDuration(spec.deleteAfter);

  /** The access key id a stored value names; a value that is not id-shaped is never repeated. */
  function keyIdOf(credential: Credential, which: string): string {
    const id = textOf(credential, 'accessKeyId');
    if (!id || !KEY_ID.test(id)) throw refusal(`the ${which} credential has no accessKeyId (an IAM access key id); nothing was changed`);
    return id;
  }

  function secretOf(credential: Credential, which: string): string {
    const secret = textOf(credential, 'secretAccessKey');
    if (!secret) throw refusal(`the ${which} credential has no secretAccessKey (text)`);
    return secret;
  }

  /** The user an STS identity is: the last part of `arn:aws:iam::123:user/path/name`, or undefined for a role. */
  const userOfArn = (arn: string | undefined) => (arn && /^arn:aws[a-z-]*:iam::\d+:user\//.test(arn) ? arn.slice(arn.lastIndexOf('/') + 1) : undefined);
  /** IAM user names are case-insensitive: "Deploy" and "deploy" are one user. */
  const isUser = (name: string | undefined) => name !== undefined && name.toLowerCase() === user.toLowerCase();

  /** One IAM call by the admin; a permission it lacks is a refusal that names the action. */
  async function call<T>(action: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      const e = err as Error & { $metadata?: { httpStatusCode?: number } };
      if (DENIED.has(e.name) || e.$metadata?.httpStatusCode === 403) {
        throw refusal(`the admin credential may not iam:${action} for IAM user ${user} (AWS said ${e.name}); grant it, then rotate again`);
      }
      if (e.name === 'NoSuchEntity' || e.name === 'NoSuchEntityException') throw refusal(`iam:${action}: ${e.message.slice(0, 300)}`);
      throw err;
    }
  }

  /** The admin's IAM client settings, once STS says the admin is not the user whose keys change. */
  async function adminConfig(): Promise<IAMClientConfig> {
    let credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined;
    if ('store' in spec.admin) {
      const stored = await readCurrent(spec.admin.store);
      const [accessKeyId, secretAccessKey, sessionToken] = [textOf(stored, 'accessKeyId'), textOf(stored, 'secretAccessKey'), textOf(stored, 'sessionToken')];
      if (!accessKeyId || !secretAccessKey) throw refusal(`admin credential ${describeStore(spec.admin.store)} must hold accessKeyId and secretAccessKey as text`);
      credentials = { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
    }
    const who = await new STSClient({ region, endpoint, credentials, maxAttempts: 3 }).send(new GetCallerIdentityCommand({}));
    if (isUser(userOfArn(who.Arn))) throw refusal(`the admin credential is IAM user ${user} itself, whose keys this manifest rotates: use a separate admin identity`);
    return { region, endpoint, credentials, maxAttempts: 3 };
  }
  const admin = async () => new IAMClient(await adminConfig());

  async function keysOf(iam: IAMClient): Promise<Key[]> {
    const out: Key[] = [];
    let marker: string | undefined;
    do {
      const page = await call('ListAccessKeys', () => iam.send(new ListAccessKeysCommand({ UserName: user, Marker: marker })));
      for (const k of page.AccessKeyMetadata ?? []) if (k.AccessKeyId) out.push({ id: k.AccessKeyId, status: k.Status ?? 'Unknown', created: k.CreateDate });
      marker = page.IsTruncated ? page.Marker : undefined;
    } while (marker && out.length < 10);
    return out;
  }

  /** rekey's labels on the user's keys (tag key = access key id), for `secret` only if given. */
  async function labelsOf(iam: IAMClient, secret?: string): Promise<Map<string, Label>> {
    const labels = new Map<string, Label>();
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await call('ListUserTags', () => iam.send(new ListUserTagsCommand({ UserName: user, Marker: marker })));
      for (const tag of page.Tags ?? []) {
        const m = LABEL.exec(tag.Value ?? '');
        if (tag.Key && m && (secret === undefined || m[1] === secret)) labels.set(tag.Key, { secret: m[1], version: m[2], inactiveSince: m[3] });
      }
      marker = page.IsTruncated ? page.Marker : undefined;
    } while (marker && ++pages < 10);
    return labels;
  }

  const label = (iam: IAMClient, keyId: string, value: string) => call('TagUser', () => iam.send(new TagUserCommand({ UserName: user, Tags: [{ Key: keyId, Value: value }] })));

  async function remove(iam: IAMClient, keyId: string): Promise<void> {
    await call('DeleteAccessKey', () => iam.send(new DeleteAccessKeyCommand({ UserName: user, AccessKeyId: keyId }))).catch((err) => {
      // Already gone (an earlier attempt): only its label is left to remove.
      if (!(err instanceof ApplicationFailure && /NoSuchEntity|cannot be found|not found/i.test(err.message))) throw err;
    });
    await call('UntagUser', () => iam.send(new UntagUserCommand({ UserName: user, TagKeys: [keyId] })));
  }

  /** Deactivate a key and label it with the time (kept from an earlier attempt), so a later rotation knows when it may delete it. */
  async function deactivate(iam: IAMClient, key: Key, secret: string, versionId: string, labelled?: Label): Promise<void> {
    const since = labelled?.version === versionId && labelled.inactiveSince ? labelled.inactiveSince : new Date().toISOString();
    // The key stops working first: an admin that may not tag still revokes (and the revoke is retried until it may).
    if (key.status !== 'Inactive') await call('UpdateAccessKey', () => iam.send(new UpdateAccessKeyCommand({ UserName: user, AccessKeyId: key.id, Status: 'Inactive' })));
    await label(iam, key.id, `rekey ${secret} ${versionId} inactive since ${since}`);
  }

  /** Deny the user's sessions issued before now (an inline policy, overwritten by each emergency); a warning if the admin may not. */
  async function denyOlderSessions(iam: IAMClient): Promise<string | undefined> {
    // AWS's clock, as the SDK learnt it: the condition is evaluated there, not on the worker.
    const now = new Date(Date.now() + (iam.config.systemClockOffset ?? 0)).toISOString();
    const document = {
      Version: '2012-10-17',
      Statement: [{ Sid: 'RekeyEmergencyRevoke', Effect: 'Deny', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:TokenIssueTime': now } } }],
    };
    try {
      await call('PutUserPolicy', () => iam.send(new PutUserPolicyCommand({ UserName: user, PolicyName: REVOKE_SESSIONS_POLICY, PolicyDocument: JSON.stringify(document) })));
      return undefined;
    } catch (err) {
      // Not allowed: the key is dead anyway, so the revoke stands and says what is left. Anything
      // else (throttled, unreachable) fails the step, which is retried until it is done.
      if (err instanceof ApplicationFailure && err.message.includes('may not iam:PutUserPolicy')) return `sessions opened with the old key were not denied: ${err.message.slice(0, 300)}`;
      throw err;
    }
  }

  /** IAM answered the request (a 4xx, such as LimitExceeded): it made nothing. */
  const definiteAnswer = (err: unknown) => {
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    return status !== undefined && status >= 400 && status < 500;
  };

  const describe = (k: Key, l?: Label) =>
    `${k.id} (${k.status.toLowerCase()}, created ${k.created?.toISOString() ?? 'at an unknown time'}${l ? `, labelled for rekey version ${l.version}${l.inactiveSince ? `, inactive since ${l.inactiveSince}` : ''}` : ', not labelled by rekey'})`;

  /**
   * What the user's keys other than `currentId` mean for a new key. rekey may delete a key a version
   * of this secret in the store holds once it is inactive (revoked), only in an emergency (otherwise
   * its retire timer deletes it when due, and reactivating it is the rollback until then), and a key
   * an earlier attempt of this issue asked for whose answer was lost: not among the keys that
   * attempt saw just before it asked, made within seconds of the asking, never used. A label alone
   * proves nothing: whoever may tag the user can write one, and version ids derive from run ids,
   * which anyone who can read the namespace knows. Everything else is kept, and named.
   */
  async function sortKeys(iam: IAMClient, keys: Key[], labels: Map<string, Label>, currentId: string, context: TargetContext) {
    const versions = new Set(context.storeVersionIds ?? []);
    const earlier = asked(context.earlierNote);
    const removable: { key: Key; why: string }[] = [];
    const kept: { key: Key; why: string }[] = [];
    for (const k of keys) {
      if (k.id === currentId) continue;
      const l = labels.get(k.id);
      const stored = l !== undefined && versions.has(l.version) && context.readVersion !== undefined && textOf(await context.readVersion(l.version), 'accessKeyId') === k.id;
      const made = k.created?.getTime() ?? NaN;
      if (stored && k.status === 'Inactive') {
        if (context.emergency) removable.push({ key: k, why: 'revoked earlier; deleted before deleteAfter for an emergency that needs its slot' });
        else kept.push({ key: k, why: `it is the previous key, kept for rollback until its retire timer deletes it (deleteAfter ${spec.deleteAfter}); an emergency rotation deletes it first` });
      } else if (!stored && earlier && !earlier.before.includes(k.id) && made >= earlier.at - CREATE_SKEW_MS && made <= earlier.at + CREATE_TIMEOUT_MS + CREATE_SKEW_MS && (await neverUsed(iam, k.id))) {
        removable.push({ key: k, why: 'made for an earlier attempt of this issue whose answer was lost' });
      } else {
        kept.push({ key: k, why: stored ? 'it was reactivated after rekey revoked it' : 'rekey may not delete it' });
      }
    }
    return { removable, kept };
  }

  /** What an earlier attempt noted just before it asked IAM for a key, if it is well formed. */
  function asked(note: unknown): { before: string[]; at: number } | undefined {
    const n = note as { asked?: { before?: unknown; at?: unknown } } | undefined;
    const before = n?.asked?.before;
    const at = n?.asked?.at;
    if (!Array.isArray(before) || before.length > 2 || !before.every((id) => typeof id === 'string' && KEY_ID.test(id)) || typeof at !== 'number') return undefined;
    return { before, at };
  }

  async function neverUsed(iam: IAMClient, keyId: string): Promise<boolean> {
    const { AccessKeyLastUsed } = await call('GetAccessKeyLastUsed', () => iam.send(new GetAccessKeyLastUsedCommand({ AccessKeyId: keyId })));
    return AccessKeyLastUsed?.LastUsedDate === undefined;
  }

  /** Refuses unless the stored key is one of the user's keys. */
  function requireOwnKey(keys: Key[], keyId: string, which: string): Key {
    const found = keys.find((k) => k.id === keyId);
    if (!found) throw refusal(`the ${which} access key ${keyId} is not a key of IAM user ${user} (the user has ${keys.map((k) => k.id).join(', ') || 'no keys'}); nothing was changed`);
    return found;
  }

  return {
    acceptsBoth: true,

    nextCredential() {
      throw refusal('IAM mints access keys itself (issue); a generator cannot make one');
    },

    async issue(current, context) {
      const currentId = keyIdOf(current, 'stored');
      const config = await adminConfig();
      const iam = new IAMClient(config);
      const keys = await keysOf(iam);
      requireOwnKey(keys, currentId, 'stored');
      const labels = await labelsOf(iam, context.secret);
      const { removable, kept } = await sortKeys(iam, keys, labels, currentId, context);
      // IAM allows two keys per user: one is the current one, the other slot must be free or rekey's to free.
      if (kept.length > 0) {
        const [{ key, why }] = kept;
        throw refusal(
          `IAM user ${user} already has two access keys: the stored ${currentId} and ${describe(key, labels.get(key.id))}, which rekey may not delete: ${why}; nothing was changed. ` +
            `If nothing uses it, delete it (aws iam delete-access-key --user-name ${user} --access-key-id ${key.id}), then rotate again`,
        );
      }
      // With a free slot the new key comes first, so an admin that may not create one changes nothing.
      const freeSlot = keys.length < 2;
      const clear = async () => {
        for (const { key, why } of removable) {
          await remove(iam, key.id);
          logged('deleted an access key to make room for the new one', { secret: context.secret, user, accessKeyId: key.id, why });
        }
      };
      if (!freeSlot) await clear();
      // Asked once, and not for long: the SDK retrying a create whose answer was lost would mint a
      // second key. What the user had just before and when rekey asked go into the activity's
      // heartbeat, so the activity's retry recognises the key (sortKeys) and deletes it.
      const once = new IAMClient({ ...config, maxAttempts: 1, requestHandler: { requestTimeout: CREATE_TIMEOUT_MS, connectionTimeout: CREATE_TIMEOUT_MS } });
      const before = (await keysOf(iam)).map((k) => k.id);
      context.note?.({ asked: { before, at: Date.now() } });
      const created = await call('CreateAccessKey', () => once.send(new CreateAccessKeyCommand({ UserName: user }))).catch((err) => {
        // IAM answered no (LimitExceeded: a person's key took the slot; a refusal): nothing was
        // made, so the retry must recognise nothing. Anything else may have made a key.
        if (err instanceof ApplicationFailure || definiteAnswer(err)) context.note?.(undefined);
        throw err;
      });
      const accessKeyId = created.AccessKey?.AccessKeyId;
      const secretAccessKey = created.AccessKey?.SecretAccessKey;
      if (!accessKeyId || !secretAccessKey || !KEY_ID.test(accessKeyId)) throw new Error(`IAM answered CreateAccessKey for ${user} without a key`);
      try {
        await label(iam, accessKeyId, `rekey ${context.secret} ${context.nextVersionId}`);
      } catch (err) {
        // Unlabelled, the key would block the next attempt as someone else's: it goes now.
        await call('DeleteAccessKey', () => iam.send(new DeleteAccessKeyCommand({ UserName: user, AccessKeyId: accessKeyId }))).catch(() => undefined);
        throw err;
      }
      if (freeSlot) await clear();
      // Given up meanwhile (timed out): the workflow will never store this key, so it goes now.
      if (context.signal?.aborted) {
        await remove(iam, accessKeyId);
        throw new Error(`issue for ${user} was given up after IAM made ${accessKeyId}; it was deleted again`);
      }
      return { ...current, accessKeyId, secretAccessKey };
    },

    // issue made the key; prepare checks it is still there, active and rekey's, and that the current one is the user's.
    async prepare(next, current, context) {
      const [nextId, currentId] = [keyIdOf(next, 'new'), keyIdOf(current, 'current')];
      const iam = await admin();
      const keys = await keysOf(iam);
      requireOwnKey(keys, currentId, 'current');
      const key = requireOwnKey(keys, nextId, 'new');
      const l = (await labelsOf(iam, context.secret)).get(nextId);
      if (l?.version !== context.nextVersionId) throw refusal(`the new access key ${nextId} is not the one rekey created for version ${context.nextVersionId}`);
      if (key.status !== 'Active') throw refusal(`the new access key ${nextId} of ${user} is ${key.status.toLowerCase()}`);
    },

    // Only the key rekey minted for this version, never the current one.
    async undo(next, current, context) {
      const [nextId, currentId] = [keyIdOf(next, 'new'), keyIdOf(current, 'current')];
      if (nextId === currentId) return;
      const iam = await admin();
      const keys = await keysOf(iam);
      const l = (await labelsOf(iam, context.secret)).get(nextId);
      if (l?.version !== context.nextVersionId) return;
      const key = keys.find((k) => k.id === nextId);
      // The stored value and the label are anyone's to write: only a key IAM made just before the
      // store took this version (issue creates, labels, then the store writes) is rekey's to delete.
      const storedAt = context.nextStoredAt ? Date.parse(context.nextStoredAt) : NaN;
      const made = key?.created?.getTime();
      if (key && (made === undefined || Number.isNaN(storedAt) || made < storedAt - MINTED_WINDOW_MS || made > storedAt + CLOCK_SKEW_MS)) {
        throw refusal(`undo: the access key ${nextId} was not created just before rekey stored version ${context.nextVersionId} (created ${key.created?.toISOString() ?? 'at an unknown time'}); it is left for a person`);
      }
      if (key) await remove(iam, nextId);
      else await call('UntagUser', () => iam.send(new UntagUserCommand({ UserName: user, TagKeys: [nextId] })));
    },

    // Deactivate, not delete: the key can be reactivated until retire deletes it after deleteAfter.
    // Only the old key (the store's previous version holds it): IAM's two-key limit leaves no room for others.
    async revoke(old, next, { context, emergency }): Promise<Revoked> {
      const [oldId, nextId] = [keyIdOf(old, 'old'), keyIdOf(next, 'new')];
      if (oldId === nextId) throw refusal(`the old and the new version hold the same access key ${oldId}; nothing was deactivated`);
      const iam = await admin();
      const keys = await keysOf(iam);
      const labels = await labelsOf(iam, context.secret);
      // Never leave the user without a working key: the new one must still be there and active.
      const fresh = keys.find((k) => k.id === nextId);
      if (fresh?.status !== 'Active') throw refusal(`the new access key ${nextId} of ${user} is ${fresh ? fresh.status.toLowerCase() : 'gone'}; the old one ${oldId} was left active`);
      const found = keys.find((k) => k.id === oldId);
      if (found) await deactivate(iam, found, context.secret, context.currentVersionId, labels.get(oldId));
      // A leaked key may already have been turned into session credentials (sts:GetSessionToken,
      // up to 36 hours), which deactivating the key does not end. Sessions issued before now are
      // denied, as the console's "revoke active sessions" does for roles.
      const warning = !emergency
        ? undefined
        : spec.denySessionsOnEmergency
          ? await denyOlderSessions(iam)
          : `sessions opened with the old key (sts:GetSessionToken) stay valid until they expire; set denySessionsOnEmergency to deny them`;
      if (!found) return { warning: [`the old access key ${oldId} is no longer a key of IAM user ${user}; nothing to deactivate`, warning].filter(Boolean).join('; ') };
      return { retire: true, ...(warning ? { warning } : {}) };
    },

    // The timer's end: once deleteAfter has passed since the revoke (the worker's record, not a
    // label), delete the key the revoked version holds, if it is still inactive.
    async retire(old, { secret, versionId, revokedAt }) {
      const oldId = keyIdOf(old, 'retired');
      const due = Date.parse(revokedAt) + deleteAfterMs;
      if (!(due <= Date.now())) return { dueAt: new Date(due).toISOString() };
      const iam = await admin();
      const key = (await keysOf(iam)).find((k) => k.id === oldId);
      if (!key) {
        if ((await labelsOf(iam, secret)).get(oldId)?.version === versionId) await call('UntagUser', () => iam.send(new UntagUserCommand({ UserName: user, TagKeys: [oldId] })));
        return { done: `access key ${oldId} is no longer a key of ${user} (already deleted)` };
      }
      if (key.status !== 'Inactive') throw refusal(`retire: the access key ${oldId} of ${user} is ${key.status.toLowerCase()} again (reactivated after rekey revoked it, a rollback?); it is left for a person`);
      await remove(iam, oldId);
      return { done: `deleted access key ${oldId} (revoked ${revokedAt}, deleteAfter ${spec.deleteAfter})` };
    },

    async accepts(credential, options = {}): Promise<Acceptance> {
      const keyId = keyIdOf(credential, 'checked');
      const secretAccessKey = secretOf(credential, 'checked');
      // IAM's own word on the key first (an inactive key is refused by AWS; some emulators answer for it anyway).
      const key = (await keysOf(await admin())).find((k) => k.id === keyId);
      if (!key) return { accepted: false, reason: `${keyId} is not a key of IAM user ${user}` };
      if (key.status !== 'Active') return { accepted: false, reason: `${keyId} of ${user} is ${key.status.toLowerCase()}` };
      const sts = new STSClient({ region, endpoint, credentials: { accessKeyId: keyId, secretAccessKey }, maxAttempts: 2 });
      // A new key takes a few seconds to be accepted everywhere in AWS: verify waits for it.
      for (let attempt = 1; ; attempt++) {
        try {
          const who = await sts.send(new GetCallerIdentityCommand({}));
          const as = userOfArn(who.Arn);
          return isUser(as) ? { accepted: true } : { accepted: false, reason: `${keyId} signs in as ${as ? `IAM user ${as}` : 'another identity'}, not ${user}` };
        } catch (err) {
          const name = (err as Error).name;
          if (!REJECTED_KEY.has(name)) throw err;
          if (!options.thorough || attempt >= 10) return { accepted: false, reason: `STS rejected ${keyId} (${name})` };
          await new Promise((r) => setTimeout(r, 2_000));
        }
      }
    },

    // Without changing anything: the admin may list the user's keys, the stored key is one of them, and there is room for a new one.
    async preflight(current) {
      try {
        const currentId = keyIdOf(current, 'stored');
        const iam = await admin();
        const keys = await keysOf(iam);
        requireOwnKey(keys, currentId, 'stored');
        const problems: string[] = [];
        const stored = keys.find((k) => k.id === currentId)!;
        if (stored.status !== 'Active') problems.push(`the stored access key ${currentId} is inactive`);
        const others = keys.filter((k) => k.id !== currentId);
        const labels = others.length ? await labelsOf(iam) : new Map<string, Label>();
        for (const k of others) {
          // The store is not read here: a labelled inactive key is taken at its label's word, for a hint only.
          const since = labels.get(k.id)?.inactiveSince;
          problems.push(
            k.status === 'Inactive' && since
              ? `IAM user ${user} has the previous key ${describe(k, labels.get(k.id))}, kept for rollback until its retire timer deletes it (about ${new Date(Date.parse(since) + deleteAfterMs).toISOString()}): a rotation before then is refused; an emergency rotation deletes it first`
              : `IAM user ${user} has a second key ${describe(k, labels.get(k.id))}: a rotation is refused until it is deleted (rekey deletes only keys this secret held, once revoked)`,
          );
        }
        return problems;
      } catch (err) {
        return [(err as Error).message];
      }
    },
  };
}
