import { AuditLog, defaultAuditLogPath, type AuditRecord } from '../../lib/audit';
import { EXIT, err, out, parse } from '../common';

const TAMPERED = 5;

/** `rekey audit [NAME] [--json] [--log PATH]` and `rekey audit verify [--log PATH]`. */
export async function audit(args: string[]): Promise<number> {
  if (args[0] === 'verify') {
    const { values } = parse(args.slice(1), { log: { type: 'string' } }, []);
    const log = new AuditLog((values.log as string | undefined) ?? defaultAuditLogPath());
    const verdict = await log.verify();
    if (verdict.ok) {
      out(`audit log intact: ${verdict.records} records (${log.path})`);
      return EXIT.ok;
    }
    err(`audit log TAMPERED: record ${verdict.line}: ${verdict.problem} (${log.path})`);
    return TAMPERED;
  }
  const { values, positionals } = parse(args, { log: { type: 'string' }, json: { type: 'boolean' } }, args.length && !args[0].startsWith('-') ? ['NAME'] : []);
  const log = new AuditLog((values.log as string | undefined) ?? defaultAuditLogPath());
  const records = await log.read(positionals[0]);
  if (values.json) {
    for (const r of records) out(JSON.stringify(r));
    return EXIT.ok;
  }
  if (!records.length) {
    err(`no audit records${positionals[0] ? ` for ${positionals[0]}` : ''} in ${log.path}`);
    return EXIT.ok;
  }
  for (const r of records) out(formatRecord(r));
  return EXIT.ok;
}

function formatRecord(r: AuditRecord): string {
  const versions = r.versions?.pending ? ` ${r.versions.current ?? '?'} -> ${r.versions.pending}` : '';
  const why = [r.reason, r.detail].filter(Boolean).join('; ');
  return `${r.at}  ${r.secret.padEnd(20)} ${r.event.padEnd(16)} ${r.actor.padEnd(12)}${versions}${why ? `  ${why}` : ''}`;
}
