import { loadManifests } from '../../lib/manifest';
import { EXIT, UsageError, err, out, parse } from '../common';

export async function validate(args: string[]): Promise<number> {
  const { values } = parse(args, { file: { type: 'string', short: 'f' } }, []);
  if (!values.file) throw new UsageError('validate needs -f DIR');
  const manifests = await loadManifests(values.file as string);
  for (const [name, m] of manifests.secrets) {
    out(`${name}  ${m.spec.store.type}  ${m.spec.target?.type ?? 'no target'}  ${m.spec.consumers.length} consumer(s)  (${m.source})`);
  }
  err(`${manifests.secrets.size} secret(s) valid`);
  return EXIT.ok;
}

