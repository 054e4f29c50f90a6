import { isIP } from 'node:net';
import { z } from 'zod';
import { formatDuration, isDuration, parseDuration } from './duration';

/**
 * A manifest duration field between `min` and `max`: validated as text (so a reviewer reads "5m"),
 * converted with parseDuration where it is used. Zero where zero makes no sense, and absurd
 * lengths (99999999999999999999d), are errors.
 */
export function durationBetween(min: string, max: string) {
  const [lo, hi] = [parseDuration(min), parseDuration(max)];
  return z.string().superRefine((text, ctx) => {
    if (!isDuration(text)) {
      ctx.addIssue({ code: 'custom', message: 'expected a duration such as 30s, 5m or 1h30m' });
    } else {
      const ms = parseDuration(text);
      if (!(ms >= lo && ms <= hi)) ctx.addIssue({ code: 'custom', message: `must be from ${min} to ${max} (got ${ms > hi ? `more than ${formatDuration(hi)}` : text})` });
    }
  });
}

/** Any duration up to ten years: for fields with no tighter sense of scale. */
export const durationSchema = durationBetween('0ms', '3650d');

/**
 * Which versions a consumer holds while a rotation runs. `current-and-previous` keeps the version
 * being replaced beside the new one until revoke (webhook receivers while their sender switches);
 * at revoke the consumer is redeployed with the new version alone.
 */
export const consumerKeysSchema = z.enum(['current', 'current-and-previous']).default('current');

/**
 * TLS to a target's server (Postgres `ssl`, Redis and MySQL `tls`): verify-full checks the
 * certificate and the name against `ca` (a PEM file) or the system's CAs; require encrypts only
 * (with a `ca`, the chain is checked); disable is for loopback hosts only (each target says so).
 */
export const targetTlsSchema = z
  .object({ mode: z.enum(['disable', 'require', 'verify-full']), ca: z.string().min(1).optional() })
  .strict();

const LOOPBACK_NAMES = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);

/**
 * A server as manifests name it, written one way (host names are case-insensitive, and every
 * loopback name is this machine), so that two manifests naming one server can be told apart from
 * two naming different ones. A server reached under two different names is not recognised.
 */
export function serverAddress(host: string, port: number): string {
  const name = host.toLowerCase().replace(/\.$/, '');
  if (LOOPBACK_NAMES.has(name)) return `localhost:${port}`;
  return isIP(name) === 6 ? `[${name}]:${port}` : `${name}:${port}`;
}
