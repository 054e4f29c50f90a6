// `npm run schema`: regenerate schemas/secret.schema.json from the zod schema that validates.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scheduleJsonSchema, secretJsonSchema } from '../lib/manifest';

export const SCHEMA_PATH = join(__dirname, '../schemas/secret.schema.json');
export const SCHEDULE_SCHEMA_PATH = join(__dirname, '../schemas/schedule.schema.json');
export const schemaText = () => `${JSON.stringify(secretJsonSchema(), null, 2)}\n`;
export const scheduleSchemaText = () => `${JSON.stringify(scheduleJsonSchema(), null, 2)}\n`;

if (require.main === module) {
  mkdirSync(join(__dirname, '../schemas'), { recursive: true });
  writeFileSync(SCHEMA_PATH, schemaText());
  writeFileSync(SCHEDULE_SCHEMA_PATH, scheduleSchemaText());
  console.log(`wrote ${SCHEMA_PATH} and ${SCHEDULE_SCHEMA_PATH}`);
}
