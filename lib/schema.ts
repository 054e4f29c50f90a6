import { z } from 'zod';
import { isDuration } from './duration';

/** A manifest duration field: validated as text, converted with parseDuration where it is used. */
export const durationSchema = z.string().refine(isDuration, { message: 'expected a duration such as 30s, 5m or 1h30m' });
