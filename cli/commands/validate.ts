import { loadManifests, scheduledSecrets } from '../../lib/manifest';
import { createTarget } from '../../activities/targets';
import { readCurrent } from '../../activities/stores';
import { EXIT, UsageError, err, out, parse, plain } from '../common';

export async function validate(args: string[]): Promise<number> {
  const { values } = parse(args, { file: { type: 'string', short: 'f' }, 'check-targets': { type: 'boolean' } }, []);
  if (!values.file) throw new UsageError('validate needs -f DIR [--check-targets]');
  const manifests = await loadManifests(values.file as string);
  for (const [name, m] of manifests.secrets) {
    out(`${name}  ${m.specHash}  ${m.spec.store.type}  ${m.spec.target?.type ?? 'no target'}  ${m.spec.consumers.length} consumer(s)  (${m.source})`);
  }
  for (const [name, m] of manifests.schedules) {
    const when = m.spec.cron ? `cron "${m.spec.cron}"` : m.spec.every ? `every ${m.spec.every}` : 'calendar';
    out(`schedule ${name}  ${when} ${m.spec.timezone}  ${m.spec.group ? `rotates group ${m.spec.group}, ` : ''}selects ${scheduledSecrets(manifests, m).length} secret(s)  (${m.source})`);
  }
  for (const [name, g] of manifests.groups) {
    out(`group ${name}  ${g.specHash}  ${g.spec.secrets.join(', ')}  approval ${g.spec.approval.required ? `${g.spec.approval.minApprovals} of ${g.approvers.map((p) => p.name).join(', ')}` : 'not required'}  (${g.source})`);
  }
  const { people, breakGlass } = manifests.settings;
  if (people.size) out(`people: ${[...people.values()].map((p) => `${p.name} (${p.keys.length} key${p.keys.length === 1 ? '' : 's'})`).join(', ')}; break-glass: ${breakGlass.map((p) => p.name).join(', ') || 'nobody'}`);
  err(`${manifests.secrets.size} secret(s), ${manifests.groups.size} group(s) and ${manifests.schedules.size} schedule(s) valid`);
  if (!values['check-targets']) return EXIT.ok;
  // What a rotation would meet at each target, asked without changing anything.
  let problems = 0;
  for (const [name, m] of manifests.secrets) {
    const target = m.spec.target ? createTarget(m.spec.target) : undefined;
    if (!target?.preflight) continue;
    try {
      const found = await target.preflight(await readCurrent(m.spec.store));
      problems += found.length;
      out(found.length ? `${name}: ${found.length} problem(s) a rotation would meet:\n  ${found.map((f) => plain(f)).join('\n  ')}` : `${name}: target ready`);
    } catch (e) {
      problems++;
      out(`${name}: cannot check the target: ${plain((e as Error).message, 'indent')}`);
    }
  }
  return problems ? EXIT.rolledBack : EXIT.ok;
}

