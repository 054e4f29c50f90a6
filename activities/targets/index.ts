// The target registry: a manifest's target `type` picks the system that checks the credential.
import { z } from 'zod';
import type { Target, TargetAccount } from '../provider';
import type { GeneratorSpec } from '../generators';
import type { StoreSpec } from '../stores';
import { githubStores } from '../github';
import { awsIamAccessKey, awsIamAccessKeyAccounts, awsIamAccessKeySchema } from './aws-iam-access-key';
import { githubDeployKey, githubDeployKeyAccounts, githubDeployKeySchema } from './github-deploy-key';
import { postgres, postgresAccounts, postgresSchema } from './postgres';
import { mysql, mysqlAccounts, mysqlSchema } from './mysql';
import { rabbitmq, rabbitmqAccounts, rabbitmqSchema } from './rabbitmq';
import { redis, redisAccounts, redisSchema } from './redis';

export const targetSchema = z.discriminatedUnion('type', [postgresSchema, githubDeployKeySchema, awsIamAccessKeySchema, redisSchema, mysqlSchema, rabbitmqSchema]);
export type TargetSpec = z.infer<typeof targetSchema>;

interface TargetProvider<S> {
  create(spec: S): Target;
  /** The accounts a rotation changes; two manifests may not share one. */
  accounts(spec: S): TargetAccount[];
}

const providers: { [K in TargetSpec['type']]: TargetProvider<Extract<TargetSpec, { type: K }>> } = {
  postgres: { create: postgres, accounts: postgresAccounts },
  'github-deploy-key': { create: githubDeployKey, accounts: githubDeployKeyAccounts },
  'aws-iam-access-key': { create: awsIamAccessKey, accounts: awsIamAccessKeyAccounts },
  redis: { create: redis, accounts: redisAccounts },
  mysql: { create: mysql, accounts: mysqlAccounts },
  rabbitmq: { create: rabbitmq, accounts: rabbitmqAccounts },
};

const providerOf = (spec: TargetSpec) => providers[spec.type] as TargetProvider<TargetSpec>;

export function createTarget(spec: TargetSpec): Target {
  return providerOf(spec).create(spec);
}

/** The accounts at the target a rotation changes, each with the field (below `target`) that names it. */
export function targetAccounts(spec: TargetSpec): TargetAccount[] {
  return providerOf(spec).accounts(spec);
}

/** The stores a target reads its own credentials from (an admin login), with their manifest path. */
export function targetStores(spec: TargetSpec): { path: string; store: StoreSpec }[] {
  switch (spec.type) {
    case 'postgres':
    case 'redis':
    case 'mysql':
    case 'rabbitmq':
      return [{ path: 'admin.store', store: spec.admin.store }];
    case 'github-deploy-key':
      return githubStores(spec.github);
    case 'aws-iam-access-key':
      return 'store' in spec.admin ? [{ path: 'admin.store', store: spec.admin.store }] : [];
  }
}

/** The generator a target's credentials need (a deploy key is a key pair), if it needs one. */
export function targetGenerator(spec: TargetSpec): GeneratorSpec['type'] | undefined {
  return spec.type === 'github-deploy-key' ? 'ssh-ed25519' : undefined;
}

/** Whether the target mints the credential itself (Target.issue), so the manifest names no generator. */
export function targetIssues(spec: TargetSpec): boolean {
  return spec.type === 'aws-iam-access-key';
}
