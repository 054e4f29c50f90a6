// What rekey's small HTTP servers (codec server, approvals server) share: an error that carries its
// status, and a body reader that stops at a limit, so a huge request costs no memory.
import type { IncomingMessage } from 'node:http';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The body as text; refuses (413) once it passes `maxBytes`, without keeping the rest. */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  const tooBig = new HttpError(413, `a request body may hold at most ${maxBytes} bytes`);
  if (Number(req.headers['content-length']) > maxBytes) return Promise.reject(tooBig);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) reject(tooBig);
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
