// Health command of the demo's file consumer: can the credential in this file log in?
import { readFileSync } from 'node:fs';
import { Client } from 'pg';

async function main(): Promise<number> {
  const file = process.argv[2] ?? process.env.REKEY_FILE;
  if (!file) {
    console.error('usage: check-credential FILE');
    return 2;
  }
  const c = JSON.parse(readFileSync(file, 'utf8'));
  if (process.env.REKEY_VERSION_ID && c.rekey_version_id !== process.env.REKEY_VERSION_ID) {
    console.error(`file holds version ${c.rekey_version_id}, expected ${process.env.REKEY_VERSION_ID}`);
    return 1;
  }
  const db = new Client({ host: c.host, port: Number(c.port), database: c.dbname, user: c.username, password: c.password, connectionTimeoutMillis: 5000 });
  try {
    await db.connect();
    await db.query('SELECT 1');
    return 0;
  } catch (err) {
    console.error(`cannot log in as ${c.username}: ${(err as Error).message}`);
    return 1;
  } finally {
    await db.end().catch(() => undefined);
  }
}

main().then((code) => process.exit(code));
