// The store registry: a manifest's store `type` picks one of these. Adding a store is one file
// beside this one, its schema in the union and its factory in the map.
import { z } from 'zod';
import type { Credential, SecretStore } from '../provider';
import { awsSecretsManager, awsSecretsManagerSchema } from './aws-secrets-manager';

export const storeSchema = z.discriminatedUnion('type', [awsSecretsManagerSchema]);
export type StoreSpec = z.infer<typeof storeSchema>;

const factories: { [K in StoreSpec['type']]: (spec: Extract<StoreSpec, { type: K }>) => SecretStore } = {
  'aws-secrets-manager': awsSecretsManager,
};

export function openStore(spec: StoreSpec): SecretStore {
  return (factories[spec.type] as (spec: StoreSpec) => SecretStore)(spec);
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
