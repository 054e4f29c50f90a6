import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Generator } from '../provider';

export const randomBytesSchema = z
  .object({
    type: z.literal('random-bytes'),
    size: z.number().int().min(16).max(1024).default(32).describe('Number of random bytes'),
    encoding: z.enum(['hex', 'base64', 'base64url']).default('base64url'),
  })
  .strict();
export type RandomBytesSpec = z.infer<typeof randomBytesSchema>;

export function randomBytes(spec: RandomBytesSpec): Generator {
  return { generate: () => ({ value: cryptoRandomBytes(spec.size).toString(spec.encoding) }) };
}
