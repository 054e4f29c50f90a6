// Human-readable rendering of a rotation report. Reports hold ids and verdicts, never values.
import type { Progress, RotationReport } from '../workflows/messages';
import { formatDuration } from './duration';

/**
 * Text from outside (a reason, a comment, a failure message) as it may be printed: control and
 * direction characters escaped, so nothing recorded can rewrite a terminal or reorder a line.
 */
export function plain(text: string, newlines: 'escape' | 'indent' = 'escape'): string {
  const escaped = text.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return newlines === 'indent' ? escaped.replace(/\n/g, '\n      ') : escaped.replace(/\n/g, '\\u000a');
}

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
  if (report.sessionsEnded !== undefined) lines.push(`  revoke ended ${report.sessionsEnded} session(s) of the old credential`);
  if (report.postVerify) lines.push(`  post-verify: ${report.postVerify.detail}`);
  for (const w of report.warnings ?? []) lines.push(`  WARNING ${w}`);
  if (report.auditHead) lines.push(`  audit: record ${report.auditHead.seq} of ${report.auditHead.trail}`);
  // A multi-line message (a twin diff) stays readable, indented so no line can pass for the report's own.
  return lines.map((line) => plain(line, 'indent')).join('\n');
}

export function formatProgress(progress: Progress): string {
  const consumers = progress.consumers.map((c) => `${c.name}=${c.state}`).join(' ');
  return plain(`${progress.stage}${consumers ? `  [${consumers}]` : ''}`);
}
