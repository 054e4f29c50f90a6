// The worker's own manifest set: the only place a rotation's spec comes from. Workflow inputs,
// schedules and activity arguments name a secret and a spec hash; the worker looks the spec up
// here. The folder (REKEY_MANIFESTS) is typically a git checkout that CI deploys; it is reloaded
// when its files change, and the spec each rotation started with is remembered for it.
import { stat } from 'node:fs/promises';
import { ApplicationFailure, log } from '@temporalio/activity';
import { ManifestError, loadManifests, yamlFiles, type GroupEntry, type ManifestSet, type SecretEntry } from '../lib/manifest';

export const REFUSED = {
  unknownSecret: 'UnknownSecret',
  specMismatch: 'SpecMismatch',
  specChanged: 'SpecChanged',
  noManifests: 'NoManifests',
} as const;

/** How often the folder is checked for changes; between checks the loaded set is used. */
const RECHECK_MS = 1_000;

/** "sha256:ab12cd34ef56..." : enough to tell two hashes apart in a message. */
export function shortHash(hash: string): string {
  return hash.length > 19 ? `${hash.slice(0, 19)}...` : hash;
}

/** How a step treats a spec that changed after its rotation started. */
export type SpecUse =
  /** Before promote: the rotation must run the spec it started with, or roll back. */
  | 'started-with'
  /** Rollback and everything after promote: must finish; the current reviewed spec will do. */
  | 'finish';

/** Rotations whose starting spec this worker remembers (a manifest may change while they run). */
const REMEMBERED = 10_000;

export class WorkerManifests {
  private loaded?: { fingerprint: string; set: ManifestSet; checkedAt: number };
  /** The spec each rotation started with, by rotation id (workflow id + run id): bounded, oldest dropped. */
  private readonly started = new Map<string, SecretEntry>();

  constructor(readonly dirs: string[]) {}

  private async fingerprint(): Promise<string> {
    const files = (await Promise.all(this.dirs.map((d) => yamlFiles(d).catch(() => [d])))).flat();
    const stats = await Promise.all(
      files.map(async (f) => {
        const info = await stat(f).catch(() => undefined);
        return `${f}:${info?.mtimeMs ?? 'gone'}:${info?.size ?? ''}`;
      }),
    );
    return stats.join('|');
  }

  /** The current set, reloaded if a file changed. Invalid manifests refuse every rotation, loudly. */
  async set(): Promise<ManifestSet> {
    if (this.dirs.length === 0) {
      throw ApplicationFailure.nonRetryable('this worker has no manifests: start it with REKEY_MANIFESTS set to the folder of reviewed manifests', REFUSED.noManifests);
    }
    const now = Date.now();
    if (this.loaded && now - this.loaded.checkedAt < RECHECK_MS) return this.loaded.set;
    const fingerprint = await this.fingerprint();
    if (this.loaded?.fingerprint === fingerprint) {
      this.loaded.checkedAt = now;
      return this.loaded.set;
    }
    let set: ManifestSet;
    try {
      set = await loadManifests(...this.dirs);
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      log.error('the worker\'s manifests are invalid; rotations are refused until they are fixed', { problems: err.message });
      throw ApplicationFailure.nonRetryable(`the worker's manifests under ${this.dirs.join(', ')} are invalid:\n${err.message}`, REFUSED.noManifests);
    }
    this.loaded = { fingerprint, set, checkedAt: now };
    return set;
  }

  /** The secret as the worker's manifests declare it now; refused if it differs from `specHash`. */
  async current(secret: string, specHash?: string): Promise<SecretEntry> {
    const set = await this.set();
    const entry = set.secrets.get(secret);
    if (!entry) {
      const known = [...set.secrets.keys()];
      const list = known.length > 20 ? `${known.slice(0, 20).join(', ')}, ...` : known.join(', ') || 'none';
      throw ApplicationFailure.nonRetryable(`the worker's manifests have no Secret named ${secret} (known: ${list})`, REFUSED.unknownSecret);
    }
    if (specHash !== undefined && specHash !== entry.specHash) {
      throw ApplicationFailure.nonRetryable(
        `${secret}: the manifest the worker has (${shortHash(entry.specHash)}) differs from the one you reviewed (${shortHash(specHash)}); ` +
          'deploy the reviewed manifests to the workers or re-plan',
        REFUSED.specMismatch,
      );
    }
    return entry;
  }

  /** The RotationGroup as the worker's manifests declare it now; refused if it differs from `specHash`. */
  async group(name: string, specHash?: string): Promise<GroupEntry> {
    const set = await this.set();
    const entry = set.groups.get(name);
    if (!entry) {
      throw ApplicationFailure.nonRetryable(`the worker's manifests have no RotationGroup named ${name} (known: ${[...set.groups.keys()].slice(0, 20).join(', ') || 'none'})`, REFUSED.unknownSecret);
    }
    if (specHash !== undefined && specHash !== entry.specHash) {
      throw ApplicationFailure.nonRetryable(
        `group ${name}: the manifest the worker has (${shortHash(entry.specHash)}) differs from the one you reviewed (${shortHash(specHash)}); deploy the reviewed manifests to the workers or re-plan`,
        REFUSED.specMismatch,
      );
    }
    return entry;
  }

  /** Remember the spec `rotationId` resolved at its start (activities/rotation.ts resolveRotation). */
  startedWith(rotationId: string, entry: SecretEntry): void {
    this.started.delete(rotationId);
    this.started.set(rotationId, entry);
    if (this.started.size > REMEMBERED) this.started.delete(this.started.keys().next().value!);
  }

  /**
   * The spec a step of a running rotation uses: the worker's current one if it has the hash the
   * rotation runs, else the one this rotation started with on this worker. A hash alone never
   * brings back an older spec (a forged plan could name one whose host or command was removed).
   * See SpecUse for a spec that changed meanwhile.
   */
  async forStep(ref: { secret: string; specHash: string }, use: SpecUse, rotationId: string): Promise<SecretEntry> {
    const set = await this.set();
    const now = set.secrets.get(ref.secret);
    if (now?.specHash === ref.specHash) return now;
    const before = this.started.get(rotationId);
    if (before && before.metadata.name === ref.secret && before.specHash === ref.specHash) return before;
    if (use === 'started-with' || !now) {
      throw ApplicationFailure.nonRetryable(
        `${ref.secret}: the manifest changed during the rotation (started with ${shortHash(ref.specHash)}, the worker now has ${now ? shortHash(now.specHash) : 'none'})`,
        REFUSED.specChanged,
      );
    }
    log.warn('finishing a rotation with the current manifest: the one it started with is no longer known to this worker', {
      secret: ref.secret,
      startedWith: ref.specHash,
      current: now.specHash,
    });
    return now;
  }
}
