// The id of the version a rotation writes, derived from the rotation, so that a retry asks the
// store for the same version, and anyone can check that a version belongs to a given rotation.
import { createHash } from 'node:crypto';

/**
 * The pending version's id, derived from the rotation (workflow id + run id): every retry of
 * createPendingVersion asks the store for the same ClientRequestToken, so one rotation writes
 * exactly one version. Shaped as a UUID (AWS requires 32-64 characters) whose last group checks
 * the rest, so any tool can tell a version rekey wrote from one another tool wrote.
 */
export function versionTokenFor(rotationId: string): string {
  const h = createHash('sha256').update(`rekey:${rotationId}`).digest('hex');
  const head = `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}`;
  return `${head}-${versionCheck(head)}`;
}

function versionCheck(head: string): string {
  return createHash('sha256').update(`rekey-version:${head}`).digest('hex').slice(0, 12);
}

/**
 * Does this version id have the shape rekey gives its own? A random (v4) UUID never does, so an
 * AWS rotation Lambda's pending version is never mistaken for rekey's. Anyone can compute the
 * shape: it tells tools apart, it is not a proof of authorship.
 */
export function isRekeyVersionId(versionId: string): boolean {
  const m = /^([0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-a[0-9a-f]{3})-([0-9a-f]{12})$/.exec(versionId);
  return m !== null && versionCheck(m[1]) === m[2];
}
