// The generator registry: a manifest's generator `type` picks one of these.
import { z } from 'zod';
import type { Generator } from '../provider';
import { password, passwordSchema } from './password';
import { randomBytes, randomBytesSchema } from './random-bytes';

export const generatorSchema = z.discriminatedUnion('type', [passwordSchema, randomBytesSchema]);
export type GeneratorSpec = z.infer<typeof generatorSchema>;

const factories: { [K in GeneratorSpec['type']]: (spec: Extract<GeneratorSpec, { type: K }>) => Generator } = {
  password,
  'random-bytes': randomBytes,
};

export function createGenerator(spec: GeneratorSpec): Generator {
  return (factories[spec.type] as (spec: GeneratorSpec) => Generator)(spec);
}
