import {
  DescribeSecretCommand,
  GetSecretValueCommand,
  ListSecretVersionIdsCommand,
  PutSecretValueCommand,
  ResourceExistsException,
  ResourceNotFoundException,
  SecretsManagerClient,
  UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import type { Credential, SecretStore, StoreVersions } from '../provider';

// Staging labels as AWS names them; rotation lambdas use the same four-step dance.
const CURRENT = 'AWSCURRENT';
const PENDING = 'AWSPENDING';
const PREVIOUS = 'AWSPREVIOUS';

export const awsSecretsManagerSchema = z
  .object({
    type: z.literal('aws-secrets-manager'),
    secretId: z.string().min(1).describe('Name or ARN of the secret in AWS Secrets Manager'),
    region: z.string().min(1).optional().describe('Defaults to AWS_REGION, then us-east-1'),
    endpoint: z.url().optional().describe('Defaults to AWS_ENDPOINT_URL (moto, LocalStack) or the AWS endpoint'),
  })
  .strict();
export type AwsSecretsManagerSpec = z.infer<typeof awsSecretsManagerSchema>;

/**
 * Which stored secret a spec names, however it is written: an ARN (with or without AWS's random
 * six-character suffix) or a name, in an explicit or the default region, at an endpoint.
 */
export function awsSecretsManagerIdentity(spec: AwsSecretsManagerSpec): string {
  const arn = /^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):\d+:secret:(.+?)(-[A-Za-z0-9]{6})?$/.exec(spec.secretId);
  const region = arn?.[1] ?? spec.region ?? process.env.AWS_REGION ?? 'us-east-1';
  const endpoint = spec.endpoint ?? process.env.AWS_ENDPOINT_URL;
  return `aws-secrets-manager:${region}:${arn ? arn[2] : spec.secretId}${endpoint ? ` at ${endpoint}` : ''}`;
}

const clients = new Map<string, SecretsManagerClient>();
function clientFor(spec: AwsSecretsManagerSpec): SecretsManagerClient {
  const region = spec.region ?? process.env.AWS_REGION ?? 'us-east-1';
  const endpoint = spec.endpoint ?? process.env.AWS_ENDPOINT_URL;
  const key = `${region}|${endpoint ?? ''}`;
  let client = clients.get(key);
  if (!client) {
    client = new SecretsManagerClient({ region, endpoint, maxAttempts: 3 });
    clients.set(key, client);
  }
  return client;
}

function parseCredential(secretId: string, versionId: string, text: string | undefined): Credential {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text ?? '');
  } catch {
    // The value itself must not leak into the error, so only the shape is reported.
    throw new Error(`${secretId} version ${versionId} is not a JSON object`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error(`${secretId} version ${versionId} is not a JSON object`);
  }
  return parsed as Credential;
}

export function awsSecretsManager(spec: AwsSecretsManagerSpec): SecretStore {
  const client = clientFor(spec);
  const { secretId } = spec;

  async function versions(): Promise<StoreVersions> {
    const out: StoreVersions = { all: [] };
    let nextToken: string | undefined;
    do {
      const page = await client
        .send(new ListSecretVersionIdsCommand({ SecretId: secretId, IncludeDeprecated: true, NextToken: nextToken }))
        .catch(async (err) => {
          // Some endpoints (moto) answer a missing secret here with a 500; DescribeSecret says it plainly.
          await client.send(new DescribeSecretCommand({ SecretId: secretId }));
          throw err;
        });
      for (const v of page.Versions ?? []) {
        if (!v.VersionId) continue;
        out.all.push(v.VersionId);
        const stages = v.VersionStages ?? [];
        if (stages.includes(CURRENT)) out.current = v.VersionId;
        if (stages.includes(PENDING)) out.pending = v.VersionId;
        if (stages.includes(PREVIOUS)) out.previous = v.VersionId;
      }
      nextToken = page.NextToken;
    } while (nextToken);
    return out;
  }

  async function stagesOf(versionId: string): Promise<string[] | undefined> {
    const described = await client.send(new DescribeSecretCommand({ SecretId: secretId }));
    return described.VersionIdsToStages?.[versionId];
  }

  return {
    ref: `aws-secrets-manager:${secretId}`,
    versions,

    async externalRotation() {
      // A rotation Lambda that AWS runs on its own schedule would fight rekey over AWSPENDING.
      const described = await client.send(new DescribeSecretCommand({ SecretId: secretId }));
      return described.RotationEnabled ? `AWS rotation is enabled on it (Lambda ${described.RotationLambdaARN ?? 'unknown'})` : undefined;
    },

    async read(versionId) {
      const got = await client.send(new GetSecretValueCommand({ SecretId: secretId, VersionId: versionId }));
      return parseCredential(secretId, versionId, got.SecretString);
    },

    async createdAt(versionId) {
      // GetSecretValue, not ListSecretVersionIds: moto reports the time of the listing there.
      const got = await client.send(new GetSecretValueCommand({ SecretId: secretId, VersionId: versionId }));
      return got.CreatedDate?.toISOString();
    },

    async putPending(token, value) {
      const existing = await stagesOf(token);
      if (existing !== undefined) {
        // Written by an earlier attempt of this same rotation: make sure it is labelled, write nothing.
        if (!existing.includes(PENDING)) {
          await client.send(
            new UpdateSecretVersionStageCommand({ SecretId: secretId, VersionStage: PENDING, MoveToVersionId: token }),
          );
        }
        return { versionId: token, created: false };
      }
      try {
        await client.send(
          new PutSecretValueCommand({
            SecretId: secretId,
            ClientRequestToken: token,
            SecretString: JSON.stringify(value),
            VersionStages: [PENDING],
          }),
        );
      } catch (err) {
        // A concurrent attempt with the same token won the race: same rotation, same version.
        if (err instanceof ResourceExistsException) return { versionId: token, created: false };
        throw err;
      }
      return { versionId: token, created: true };
    },

    async promote(versionId) {
      const before = await versions();
      if (before.current !== versionId) {
        // AWS moves AWSPREVIOUS to the version that loses AWSCURRENT by itself.
        await client.send(
          new UpdateSecretVersionStageCommand({
            SecretId: secretId,
            VersionStage: CURRENT,
            MoveToVersionId: versionId,
            RemoveFromVersionId: before.current,
          }),
        );
      }
      const after = await versions();
      if (before.current && before.current !== versionId && after.previous !== before.current) {
        await client.send(
          new UpdateSecretVersionStageCommand({
            SecretId: secretId,
            VersionStage: PREVIOUS,
            MoveToVersionId: before.current,
            RemoveFromVersionId: after.previous,
          }),
        );
      }
      if (after.pending === versionId) {
        await client.send(
          new UpdateSecretVersionStageCommand({ SecretId: secretId, VersionStage: PENDING, RemoveFromVersionId: versionId }),
        );
      }
    },

    async discardPending(versionId) {
      const stages = await stagesOf(versionId);
      if (stages?.includes(PENDING)) {
        await client.send(
          new UpdateSecretVersionStageCommand({ SecretId: secretId, VersionStage: PENDING, RemoveFromVersionId: versionId }),
        );
      }
    },
  };
}

/** Used by tests, the demo and the inventory to tell "no such secret" from other failures. */
export function isNotFound(err: unknown): boolean {
  return err instanceof ResourceNotFoundException;
}
