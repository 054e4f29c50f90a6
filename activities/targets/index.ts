// The target registry: a manifest's target `type` picks the system that checks the credential.
import { z } from 'zod';
import type { Target } from '../provider';
import type { GeneratorSpec } from '../generators';
import type { StoreSpec } from '../stores';
import { githubStores } from '../github';
import { awsIamAccessKey, awsIamAccessKeySchema } from './aws-iam-access-key';
import { githubDeployKey, githubDeployKeySchema } from './github-deploy-key';
import { postgres, postgresSchema } from './postgres';
import { mysql, mysqlSchema } from './mysql';
import { rabbitmq, rabbitmqSchema } from './rabbitmq';
import { redis, redisSchema } from './redis';

export const targetSchema = z.discriminatedUnion('type', [postgresSchema, githubDeployKeySchema, awsIamAccessKeySchema, redisSchema, mysqlSchema, rabbitmqSchema]);
export type TargetSpec = z.infer<typeof targetSchema>;

const factories: { [K in TargetSpec['type']]: (spec: Extract<TargetSpec, { type: K }>) => Target } = {
  postgres,
  'github-deploy-key': githubDeployKey,
  'aws-iam-access-key': awsIamAccessKey,
  redis,
  mysql,
  rabbitmq,
};

export function createTarget(spec: TargetSpec): Target {
  return (factories[spec.type] as (spec: TargetSpec) => Target)(spec);
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
