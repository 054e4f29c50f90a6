// `npm run schema`: regenerate schemas/secret.schema.json from the zod schema that validates.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { secretJsonSchema } from '../lib/manifest';

export const SCHEMA_PATH = join(__dirname, '../schemas/secret.schema.json');
export const schemaText = () => `${JSON.stringify(secretJsonSchema(), null, 2)}\n`;

if (require.main === module) {
  mkdirSync(join(__dirname, '../schemas'), { recursive: true });
  writeFileSync(SCHEMA_PATH, schemaText());
  console.log(`wrote ${SCHEMA_PATH}`);
}
