/**
 * Reading a request body with a limit, for every endpoint that takes one (the HTTP API, long
 * polling): a body past the limit is cut as soon as it passes it, never buffered whole.
 */
import type { IncomingMessage } from 'node:http';

/** Why a body was not read: too large (413) or aborted / malformed by the client (400). */
export class BodyError extends Error {
  constructor(
    readonly status: 400 | 413,
    readonly code: 'invalid_message' | 'message_too_big',
    message: string,
  ) {
    super(message);
  }
}

/** The body's bytes, at most `limit` of them; a declared Content-Length over it is refused before reading. */
export async function readLimitedBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooBig = () => new BodyError(413, 'message_too_big', `the body is larger than ${limit} bytes`);
  if (Number(req.headers['content-length'] ?? 0) > limit) throw tooBig();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw tooBig();
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof BodyError) throw error;
    // The client's fault (aborted, or a malformed chunked body), not the server's: no error log.
    throw new BodyError(400, 'invalid_message', 'the request body could not be read (aborted or malformed)');
  }
  return Buffer.concat(chunks);
}
