// The small interfaces every provider implements. A provider is one file under stores/, generators/,
// targets/ or consumers/, plus one line in registry.ts. Workflows never see these types' values:
// they pass secret names and version ids, and activities build providers from the manifest spec.

/**
 * A stored secret value: a JSON object such as {username, password, host, port, dbname}. Fields a
 * provider does not use are kept as they are (numbers and nested values included).
 */
export type Credential = Record<string, unknown>;

/** A text field of a credential, or undefined when it is missing or not text. */
export function textOf(credential: Credential, field: string): string | undefined {
  const value = credential[field];
  return typeof value === 'string' ? value : undefined;
}

/** Which version carries each staging label. Version ids only, never values. */
export interface StoreVersions {
  current?: string;
  pending?: string;
  previous?: string;
  /** Every version id the store knows for this secret, labelled or not. */
  all: string[];
}

export interface SecretStore {
  /** A readable reference, e.g. "aws-secrets-manager:rekey/demo/orders-db". */
  readonly ref: string;
  versions(): Promise<StoreVersions>;
  /** Why another mechanism rotates this secret (so rekey must not), or undefined. */
  externalRotation(): Promise<string | undefined>;
  read(versionId: string): Promise<Credential>;
  /** When a version was written (ISO 8601): the age the inventory compares with maxAge. */
  createdAt(versionId: string): Promise<string | undefined>;
  /**
   * Write `value` as the pending version identified by `token`. Calling it again with the same token
   * returns the existing version and writes nothing, so a retried activity cannot add a second one.
   */
  putPending(token: string, value: Credential): Promise<{ versionId: string; created: boolean }>;
  /** Move the current label to `versionId`; the old current becomes previous; pending is cleared. */
  promote(versionId: string): Promise<void>;
  /** Drop the pending label from `versionId` if it still has it. */
  discardPending(versionId: string): Promise<void>;
}

/** Fresh secret material: the secret value, and public parts stored beside it (an SSH public key). */
export interface Material {
  value: string;
  /** Fields stored next to the value in the same version, e.g. {publicKey}. Not secret, still never logged. */
  beside?: Record<string, string>;
}

export interface Generator {
  /** Fresh secret material; callers must never log or return it. */
  generate(): Material;
}

export interface Acceptance {
  accepted: boolean;
  /** Why it was rejected, in words safe to log (no values). */
  reason?: string;
}

export interface Target {
  /**
   * Whether the old and the new credential both work once prepare is done (two accounts, two
   * keys). Decides what a rollback that cannot reach every consumer does with the target.
   */
  readonly acceptsBoth: boolean;
  /** The credential the next version holds, built from the current one and fresh material. */
  nextCredential(current: Credential, material: Material): Credential;
  /**
   * For targets that mint the credential themselves (an IAM access key: IAM makes the secret and
   * shows it once): called instead of the generator and nextCredential, at generate, before the
   * pending version is written; what it returns is stored as that version. It must be idempotent
   * per `context.nextVersionId`: an earlier attempt may have minted a credential whose answer never
   * reached the store, and a retry must not leave it behind. Refusals come before any change.
   * Such a target's prepare only checks what issue made; undo removes it.
   */
  issue?(current: Credential, context: TargetContext): Promise<Credential>;
  /** Teach the target the next credential; where the strategy allows it, the current keeps working. */
  prepare(next: Credential, current: Credential, context: TargetContext): Promise<void>;
  /** Reverse prepare: the target accepts exactly what it accepted before. */
  undo(next: Credential, current: Credential, context: TargetContext): Promise<void>;
  /**
   * Make the old credential stop working, leaving the new one untouched; in an emergency (or by
   * the target's policy) also end the sessions opened with it. Says how many were ended.
   */
  revoke(old: Credential, next: Credential, options: { emergency?: boolean; context: TargetContext }): Promise<Revoked | void>;
  /**
   * For targets whose revoke only disables (an IAM key is deactivated, so reactivating it is the
   * way back for a while): remove what revoke disabled once it is due, counted from `revokedAt`
   * (the worker's audit record of the revoke). The rotation leaves a durable timer that asks
   * (workflow retire/<secret>/<version>); whoever can start a workflow can ask early, so it says
   * when it is due instead of acting. It must never touch a credential a person re-enabled, and be
   * idempotent. Says what it did.
   */
  retire?(old: Credential, context: { secret: string; versionId: string; revokedAt: string }): Promise<{ done: string } | { dueAt: string }>;
  /**
   * Try to authenticate with `credential` (thorough: also what the manifest asks to check, such as
   * a verify query). Throws only when the target cannot be reached.
   */
  accepts(credential: Credential, options?: { thorough?: boolean }): Promise<Acceptance>;
  /** Problems a rotation would meet, found without changing anything (rekey validate --check-targets). */
  preflight?(current: Credential): Promise<string[]>;
}

export interface Revoked {
  /** Sessions of the old credential that were ended. */
  sessionsEnded?: number;
  /** Revoke did what it could but not all: shown in the report and logged at error level. */
  warning?: string;
  /** Revoke only disabled the old credential: `retire` removes it later (the rotation leaves a timer). */
  retire?: boolean;
}

/**
 * An account at a target that a manifest's rotation changes (a role, a user, an access key's
 * user), named so that two manifests naming the same account give the same text: two rotations
 * of one account would each revoke what the other just deployed. `path` is the field that names
 * it, below `target`.
 */
export interface TargetAccount {
  path: string;
  account: string;
}

/** The fields that name what a strategy changes: the pair `users` alternating-users takes turns with, else the one `user`. */
export function rotatedUsers<U>(spec: { strategy: string; user?: U; users?: readonly U[] }): { path: string; user: U }[] {
  if (spec.strategy === 'alternating-users') return (spec.users ?? []).map((user, i) => ({ path: `users[${i}]`, user }));
  return spec.user === undefined ? [] : [{ path: 'user', user: spec.user }];
}

/**
 * Which rotation a target step belongs to: a target that labels what it creates (a deploy key's
 * title) uses it to find its own work again, and never touches what it did not create.
 */
export interface TargetContext {
  secret: string;
  currentVersionId: string;
  nextVersionId: string;
  /** At issue and revoke: every version the store has of this secret, to recognise what an abandoned rotation left. */
  storeVersionIds?: string[];
  /**
   * At issue: read one of those versions from the store, so a target can prove that something it
   * finds at the target (a key labelled as rekey's) really is a version of this secret, and never
   * acts on a label anyone else could have written.
   */
  readVersion?(versionId: string): Promise<Credential>;
  /**
   * At issue: a small note for a retry of this same issue (kept in the activity's heartbeat, so
   * best effort: a worker killed before it was sent leaves none), such as what the target had just
   * before it asked for something whose answer may be lost; `earlierNote` is what the last attempt
   * noted. Untrusted like any activity state: a target checks it against what it finds.
   */
  note?(value: unknown): void;
  earlierNote?: unknown;
  /** At issue: the rotation is an emergency, authorised by a break-glass signature the worker checked. */
  emergency?: boolean;
  /** At issue: the activity's cancellation (it timed out or was given up): make nothing more. */
  signal?: AbortSignal;
  /** At undo: when the store wrote the next version (ISO 8601), so a target can tell what it made just before. */
  nextStoredAt?: string;
}

/** What a consumer is told about a version: where to find it, never the value itself. */
export interface VersionRef {
  secret: string;
  storeRef: string;
  versionId: string;
  /** When the store wrote this version (ISO 8601), for consumers that can only see write times. */
  createdAt?: string;
}

export interface Health {
  healthy: boolean;
  /** Short description safe to log and to show in reports. */
  detail: string;
  /** The answer cannot change by asking again (a verify workflow concluded "failure"): stop probing. */
  final?: boolean;
}

export interface DeployOptions {
  /** The activity's cancellation. */
  signal?: AbortSignal;
  /**
   * Also accept this version (`keys: current-and-previous`): set while a rotation overlaps two
   * keys, e.g. webhook receivers during the switch of their sender. Absent: this version alone.
   */
  previous?: { ref: VersionRef; credential: Credential };
  /** This deploy puts the current version back after a failed rotation that had `pendingVersionId` pending. */
  rollback?: { pendingVersionId: string };
}

/**
 * How a version reaches a service. `signal` is the activity's cancellation: a cancelled rotation
 * rolls back only once the step it cancelled has stopped (its command killed, its request aborted).
 */
export interface Consumer {
  readonly name: string;
  /** Hand the version to the consumer and ask it to reload. Idempotent. */
  deploy(ref: VersionRef, credential: Credential, options?: DeployOptions): Promise<void>;
  /** One health probe: is the consumer healthy and using `ref.versionId`? */
  health(ref: VersionRef, signal?: AbortSignal): Promise<Health>;
  /**
   * Optional phases, for consumers that produce the secret rather than use it (a webhook sender):
   * commit runs at promote, after every consumer is verified and approvals are given, and switches
   * the producer to `ref`, proving it end to end (a ping each receiver answered 2xx). Idempotent.
   * Says what it proved, in words safe to log.
   */
  commit?(ref: VersionRef, credential: Credential, options: { signal?: AbortSignal; guard: () => Promise<void>; deadline: number }): Promise<string>;
  /**
   * Undo commit (also after a commit that may have half happened): the producer back on `current`.
   * Idempotent. `guard` throws once the rotation may no longer go back: call it before each change.
   */
  abort?(current: VersionRef, credential: Credential, options: { signal?: AbortSignal; guard: () => Promise<void>; pendingVersionId: string; deadline: number }): Promise<void>;
}
