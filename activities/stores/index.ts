// The store registry: a manifest's store `type` picks one of these. Adding a store is one file
// beside this one, its schema in the union and its entry in the map.
import { z } from 'zod';
import type { Credential, SecretStore } from '../provider';
import { awsSecretsManager, awsSecretsManagerIdentity, awsSecretsManagerSchema, isNotFound } from './aws-secrets-manager';

/** The store has no such secret (as opposed to being unreachable). */
export const isMissingSecret = isNotFound;

export const storeSchema = z.discriminatedUnion('type', [awsSecretsManagerSchema]);
export type StoreSpec = z.infer<typeof storeSchema>;

interface StoreProvider<S> {
  open(spec: S): SecretStore;
  /** What names one stored secret, whatever else the spec says: two manifests may not share it. */
  identity(spec: S): string;
}

const providers: { [K in StoreSpec['type']]: StoreProvider<Extract<StoreSpec, { type: K }>> } = {
  'aws-secrets-manager': { open: awsSecretsManager, identity: awsSecretsManagerIdentity },
};

const providerOf = (spec: StoreSpec) => providers[spec.type] as StoreProvider<StoreSpec>;

export function openStore(spec: StoreSpec): SecretStore {
  return providerOf(spec).open(spec);
}

export function storeIdentity(spec: StoreSpec): string {
  return providerOf(spec).identity(spec);
}

export function describeStore(spec: StoreSpec): string {
  return openStore(spec).ref;
}

/** The value labelled current, with its version id. */
export async function readCurrent(spec: StoreSpec): Promise<Credential> {
  const store = openStore(spec);
  const { current } = await store.versions();
  if (!current) throw new Error(`${store.ref} has no current version`);
  return store.read(current);
}
