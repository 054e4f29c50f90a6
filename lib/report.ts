// Human-readable rendering of a rotation report. Reports hold ids and verdicts, never values.
import type { Progress, RotationReport } from '../workflows/messages';
import { formatDuration } from './duration';

export function formatReport(report: RotationReport): string {
  const lines = [
    `${report.emergency ? 'EMERGENCY ' : ''}rotation of ${report.secret}: ${report.outcome.toUpperCase()}`,
    `  requested by ${report.requester ? `${report.requester.name} (signed, ${report.requester.fingerprint})` : `${report.requestedBy ?? 'unknown'} (unsigned)`}${report.reason ? `: ${report.reason}` : ''}`,
    `  spec ${report.specHash}`,
    `  version before ${report.versions.before}`,
    `  version after  ${report.versions.after}${report.outcome === 'rolled-back' ? ` (pending ${report.versions.pending} discarded)` : ''}`,
  ];
  if (report.discardedStaleVersionId) lines.push(`  cleared a stale pending version ${report.discardedStaleVersionId} left by an abandoned rotation`);
  const a = report.approval;
  if (a?.required) {
    const approvedBy = a.approvedBy.map((x) => `${x.approver} [${x.fingerprint}]${x.comment ? ` ("${x.comment}")` : ''}`).join(', ');
    lines.push(`  approval: ${a.approvedBy.length} of ${a.needed}${approvedBy ? `, approved by ${approvedBy}` : ''}${a.rejectedBy ? `, rejected by ${a.rejectedBy.approver}` : ''}`);
    if (a.ignoredCount) lines.push(`    ${a.ignoredCount} invalid decision(s) ignored${a.ignoredCount > a.ignored.length ? `, the last ${a.ignored.length}:` : ':'}`);
    for (const i of a.ignored) lines.push(`    ignored a decision from ${i.from}: ${i.reason}`);
  }
  if (report.failure) {
    lines.push(`  failed at ${report.failure.stage}${report.failure.consumer ? ` (consumer ${report.failure.consumer})` : ''}: ${report.failure.message}`);
  }
  lines.push('  stages:');
  for (const s of report.stages) lines.push(`    ${s.stage.padEnd(12)} ${s.durationMs === undefined ? '' : formatDuration(s.durationMs)}`);
  if (report.consumers.length) {
    lines.push('  consumers:');
    for (const c of report.consumers) lines.push(`    ${c.name.padEnd(20)} ${c.state}${c.detail ? `: ${c.detail}` : ''}`);
  }
  if (report.postVerify) lines.push(`  post-verify: ${report.postVerify.detail}`);
  for (const w of report.warnings ?? []) lines.push(`  WARNING ${w}`);
  if (report.auditHead) lines.push(`  audit: record ${report.auditHead.seq} of ${report.auditHead.trail}`);
  return lines.join('\n');
}

export function formatProgress(progress: Progress): string {
  const consumers = progress.consumers.map((c) => `${c.name}=${c.state}`).join(' ');
  return `${progress.stage}${consumers ? `  [${consumers}]` : ''}`;
}
