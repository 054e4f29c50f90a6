// The generator registry: a manifest's generator `type` picks one of these.
import { z } from 'zod';
import type { Generator } from '../provider';
import { password, passwordSchema } from './password';
import { randomBytes, randomBytesSchema } from './random-bytes';
import { sshEd25519, sshEd25519Schema } from './ssh-ed25519';

export const generatorSchema = z.discriminatedUnion('type', [passwordSchema, randomBytesSchema, sshEd25519Schema]);
export type GeneratorSpec = z.infer<typeof generatorSchema>;

const factories: { [K in GeneratorSpec['type']]: (spec: Extract<GeneratorSpec, { type: K }>) => Generator } = {
  password,
  'random-bytes': randomBytes,
  'ssh-ed25519': sshEd25519,
};

export function createGenerator(spec: GeneratorSpec): Generator {
  return (factories[spec.type] as (spec: GeneratorSpec) => Generator)(spec);
}
