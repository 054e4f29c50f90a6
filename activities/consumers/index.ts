// The consumer registry: a manifest's consumer `type` picks how a version reaches a service.
import { z } from 'zod';
import type { Consumer } from '../provider';
import { commandConsumer, commandConsumerSchema } from './command';
import { githubActionsSecret, githubActionsSecretSchema } from './github-actions-secret';
import { githubWebhook, githubWebhookSchema } from './github-webhook';
import { gitopsConsumer, gitopsConsumerSchema } from './gitops';
import { gitopsGithubConsumer, gitopsGithubConsumerSchema } from './gitops-github';
import { httpConsumer, httpConsumerSchema } from './http';

export const consumerSchema = z.discriminatedUnion('type', [commandConsumerSchema, httpConsumerSchema, githubActionsSecretSchema, githubWebhookSchema, gitopsConsumerSchema, gitopsGithubConsumerSchema]);
export type ConsumerSpec = z.infer<typeof consumerSchema>;

const factories: { [K in ConsumerSpec['type']]: (spec: Extract<ConsumerSpec, { type: K }>) => Consumer } = {
  command: commandConsumer,
  http: httpConsumer,
  'github-actions-secret': githubActionsSecret,
  'github-webhook': githubWebhook,
  gitops: gitopsConsumer,
  'gitops-github': gitopsGithubConsumer,
};

export function createConsumer(spec: ConsumerSpec): Consumer {
  return (factories[spec.type] as (spec: ConsumerSpec) => Consumer)(spec);
}

/** Names of the worker's environment variables a consumer passes on (checked against the Settings env list). */
export function consumerEnvironment(spec: ConsumerSpec): string[] {
  return spec.type === 'command' ? spec.env : [];
}

/**
 * A consumer that signs with the secret what others verify (a webhook sender): it switches only
 * at promote, so the others must accept both versions until then.
 */
export function signsForOthers(spec: ConsumerSpec): boolean {
  return spec.type === 'github-webhook';
}
