import { randomInt } from 'node:crypto';
import { z } from 'zod';
import type { Generator } from '../provider';

const CLASSES = {
  lower: 'abcdefghijklmnopqrstuvwxyz',
  upper: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
  digits: '0123456789',
  symbols: '!#$%&()*+,-.;<=>?[]^_{|}~',
} as const;
type CharacterClass = keyof typeof CLASSES;

export const passwordSchema = z
  .object({
    type: z.literal('password'),
    length: z.number().int().min(12).max(256).default(32),
    classes: z
      .array(z.enum(Object.keys(CLASSES) as [CharacterClass, ...CharacterClass[]]))
      .min(1)
      .default(['lower', 'upper', 'digits']),
    // Characters that break connection strings, shells or config parsers downstream.
    exclude: z.string().default(''),
  })
  .strict()
  .superRefine((spec, ctx) => {
    for (const cls of spec.classes) {
      if ([...CLASSES[cls]].every((c) => spec.exclude.includes(c))) {
        ctx.addIssue({ code: 'custom', path: ['exclude'], message: `excludes every character of class "${cls}"` });
      }
    }
    if (spec.length < spec.classes.length) {
      ctx.addIssue({ code: 'custom', path: ['length'], message: `must be at least the number of classes (${spec.classes.length})` });
    }
  });
export type PasswordSpec = z.infer<typeof passwordSchema>;

export function password(spec: PasswordSpec): Generator {
  const pools = spec.classes.map((cls) => [...CLASSES[cls]].filter((c) => !spec.exclude.includes(c)));
  const all = pools.flat();
  return {
    generate() {
      // One character from every class, the rest from the union, then an unbiased shuffle.
      const chars = pools.map((pool) => pool[randomInt(pool.length)]);
      while (chars.length < spec.length) chars.push(all[randomInt(all.length)]);
      for (let i = chars.length - 1; i > 0; i--) {
        const j = randomInt(i + 1);
        [chars[i], chars[j]] = [chars[j], chars[i]];
      }
      return { value: chars.join('') };
    },
  };
}
