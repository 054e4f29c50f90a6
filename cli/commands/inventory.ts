import { inventory, formatInventory } from '../../lib/inventory';
import { loadManifests } from '../../lib/manifest';
import { connectClient } from '../../lib/temporal';
import { EXIT, UsageError, out, parse } from '../common';

/** `rekey inventory -f DIR [--json]`: every secret, its age against policy, next and last rotation. */
export async function inventoryCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { file: { type: 'string', short: 'f' }, json: { type: 'boolean' } }, []);
  if (!values.file) throw new UsageError('inventory needs -f DIR');
  const rows = await inventory(await connectClient(), await loadManifests(values.file as string));
  if (values.json) for (const row of rows) out(JSON.stringify(row));
  else for (const line of formatInventory(rows)) out(line);
  return EXIT.ok;
}
