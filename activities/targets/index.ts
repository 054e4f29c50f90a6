// The target registry: a manifest's target `type` picks the system that checks the credential.
import { z } from 'zod';
import type { Target } from '../provider';
import type { StoreSpec } from '../stores';
import { postgres, postgresSchema } from './postgres';

export const targetSchema = z.discriminatedUnion('type', [postgresSchema]);
export type TargetSpec = z.infer<typeof targetSchema>;

const factories: { [K in TargetSpec['type']]: (spec: Extract<TargetSpec, { type: K }>) => Target } = {
  postgres,
};

export function createTarget(spec: TargetSpec): Target {
  return (factories[spec.type] as (spec: TargetSpec) => Target)(spec);
}

/** The stores a target reads its own credentials from (an admin login), with their manifest path. */
export function targetStores(spec: TargetSpec): { path: string; store: StoreSpec }[] {
  return spec.type === 'postgres' ? [{ path: 'admin.store', store: spec.admin.store }] : [];
}
