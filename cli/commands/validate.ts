import { loadManifests, selectSecrets } from '../../lib/manifest';
import { EXIT, UsageError, err, out, parse } from '../common';

export async function validate(args: string[]): Promise<number> {
  const { values } = parse(args, { file: { type: 'string', short: 'f' } }, []);
  if (!values.file) throw new UsageError('validate needs -f DIR');
  const manifests = await loadManifests(values.file as string);
  for (const [name, m] of manifests.secrets) {
    out(`${name}  ${m.specHash}  ${m.spec.store.type}  ${m.spec.target?.type ?? 'no target'}  ${m.spec.consumers.length} consumer(s)  (${m.source})`);
  }
  for (const [name, m] of manifests.schedules) {
    const when = m.spec.cron ? `cron "${m.spec.cron}"` : m.spec.every ? `every ${m.spec.every}` : 'calendar';
    out(`schedule ${name}  ${when} ${m.spec.timezone}  selects ${selectSecrets(manifests, m.spec.select).length} secret(s)  (${m.source})`);
  }
  const { people, breakGlass } = manifests.settings;
  if (people.size) out(`people: ${[...people.values()].map((p) => `${p.name} (${p.keys.length} key${p.keys.length === 1 ? '' : 's'})`).join(', ')}; break-glass: ${breakGlass.map((p) => p.name).join(', ') || 'nobody'}`);
  err(`${manifests.secrets.size} secret(s) and ${manifests.schedules.size} schedule(s) valid`);
  return EXIT.ok;
}

