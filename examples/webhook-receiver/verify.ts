// GitHub-style webhook signatures: X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>.
// Kept apart from the server so tests (and other receivers) can use it directly.
import { createHmac, timingSafeEqual } from 'node:crypto';

const HEADER = /^sha256=([0-9a-f]{64})$/;

/**
 * Which of `keys` signed `body`, as its index, or -1 when none did (or the header is missing or
 * malformed). Every key is compared, in constant time and without stopping at a match, so the
 * response time does not tell a sender which key (current or previous) its signature matched.
 */
export function matchingKey(body: Buffer, header: string | undefined, keys: readonly string[]): number {
  // GitHub writes lowercase hex. Checking the shape first also keeps timingSafeEqual from throwing:
  // it demands equal lengths, and Buffer.from(hex) silently drops what is not hex.
  const match = typeof header === 'string' ? HEADER.exec(header) : null;
  if (!match) return -1;
  const given = Buffer.from(match[1], 'hex');
  let found = -1;
  keys.forEach((key, index) => {
    const expected = createHmac('sha256', key).update(body).digest();
    // An empty key would let anyone sign; a key file holding one is broken, not permissive.
    const equal = timingSafeEqual(expected, given) && key.length > 0;
    if (equal && found < 0) found = index;
  });
  return found;
}

/** Whether any of `keys` signed `body` (see matchingKey). Never throws on hostile headers. */
export function verifySignature(body: Buffer, header: string | undefined, keys: string[]): boolean {
  return matchingKey(body, header, keys) >= 0;
}

/** The header value GitHub would send for `body` signed with `key`. */
export function signatureHeader(body: Buffer, key: string): string {
  return `sha256=${createHmac('sha256', key).update(body).digest('hex')}`;
}
