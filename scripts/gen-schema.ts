// `npm run schema`: regenerate schemas/*.schema.json from the zod schemas that validate.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { groupJsonSchema, scheduleJsonSchema, secretJsonSchema, settingsJsonSchema } from '../lib/manifest';

const folder = join(__dirname, '../schemas');

/** Each generated file and the text it must hold. */
export const SCHEMAS: { path: string; text: () => string }[] = [
  { path: join(folder, 'secret.schema.json'), text: () => `${JSON.stringify(secretJsonSchema(), null, 2)}\n` },
  { path: join(folder, 'schedule.schema.json'), text: () => `${JSON.stringify(scheduleJsonSchema(), null, 2)}\n` },
  { path: join(folder, 'settings.schema.json'), text: () => `${JSON.stringify(settingsJsonSchema(), null, 2)}\n` },
  { path: join(folder, 'rotation-group.schema.json'), text: () => `${JSON.stringify(groupJsonSchema(), null, 2)}\n` },
];

if (require.main === module) {
  mkdirSync(folder, { recursive: true });
  for (const { path, text } of SCHEMAS) writeFileSync(path, text());
  console.log(`wrote ${SCHEMAS.map((s) => s.path).join(', ')}`);
}
