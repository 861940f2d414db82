/**
 * Protocol constants shared by the worker, the SDK and the server.
 * Kept free of any runtime dependency so the worker bundle stays small.
 */

/** Version exchanged in the handshake; bumped on any incompatible wire change. */
export const PROTOCOL_VERSION = 1;

/** WebSocket close codes the server uses (4000–4999 is the application range). */
export const CloseCode = {
  /** Normal closure (client called `close()` or the server is shutting down). */
  Normal: 1000,
  /** The server is going away (restart, deploy). Clients reconnect. */
  GoingAway: 1001,
  /** Origin not allowed, or another policy violation. */
  Policy: 1008,
  /** A frame exceeded the size limit. Set by `ws` itself through `maxPayload`. */
  TooBig: 1009,
  /** The server could not serve the connection (its events DB failed). Clients reconnect. */
  InternalError: 1011,
  /** The first frame was not a valid handshake, or a frame arrived before it. */
  HandshakeExpected: 4000,
  /** The handshake's token was refused. */
  Unauthorized: 4001,
  /** The client speaks a protocol version the server does not. */
  UnsupportedVersion: 4002,
  /** No handshake arrived in time. */
  HandshakeTimeout: 4003,
  /** Nothing (not even a heartbeat) arrived from the client for too long. */
  IdleTimeout: 4004,
  /** Too many malformed frames: the peer is not a Tether client. */
  TooManyErrors: 4005,
  /** The client does not read fast enough: its send buffer passed the bound. */
  SlowConsumer: 4006,
  /** The client sent faster than its rate limit, for too long. */
  RateLimited: 4007,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * Stable error codes. They cross the socket and the tab↔worker boundary as strings;
 * receivers rebuild errors from the code, never by `instanceof`.
 */
export const ERROR_CODES = [
  'offline', // no connection to the server; nothing was sent
  'connection_lost', // the connection dropped after sending: the call may or may not have run
  'timeout', // no answer within the caller's timeoutMs
  'not_found', // unknown procedure
  'forbidden', // the caller may not do this
  'unauthorized', // missing, invalid or expired token
  'invalid_argument', // the arguments were refused by the procedure
  'invalid_message', // a frame that is not valid JSON or not a known message
  'message_too_big', // a frame over the size limit
  'unsupported_version', // protocol version mismatch
  'internal', // the procedure failed on the server; details are in the server log
  'unavailable', // the backend a procedure is proxied to could not be reached
  'closed', // the client was closed by the app
  'worker_unavailable', // the SharedWorker could not be started
  'out_of_order', // a write's sequence skips ahead of the last applied one; resend from the lowest
  'rate_limited', // too many frames per second on this connection
  'limit_exceeded', // e.g. too many subscriptions on one connection
  'quota_exceeded', // the browser refused to store a write (storage quota)
  'conflict', // a transaction read a value that changed before it committed
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** Channel names: no `*` (reserved for the patterns of a token's `channels` claim). */
export const CHANNEL_NAME = /^[A-Za-z0-9_][\w.:@/-]{0,199}$/;

/** Document keys are 1–200 characters (any characters but the reserved names below). */
export const MAX_DOC_KEY_LENGTH = 200;

/** U+0000 and lone UTF-16 surrogates: text a database cannot store as written (PostgreSQL refuses the one, turns the other into U+FFFD). */
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether `text` can be a document key in every store: well-formed Unicode without U+0000. */
export function storableText(text: string): boolean {
  return !UNSTORABLE.test(text);
}

export const UNSTORABLE_KEY_MESSAGE = 'document keys must be well-formed Unicode without U+0000 (a lone surrogate or a NUL cannot be stored)';

/**
 * Names a document key cannot have: object records drop them silently (prototype pollution
 * guards), so a write to one would be acknowledged and never stored. Refused instead.
 */
export const RESERVED_DOC_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];

/** Why `key` cannot be a document key. */
export function reservedKeyMessage(key: string): string {
  return `${key} cannot be a document key (reserved: ${RESERVED_DOC_KEYS.join(', ')})`;
}

/** The refusal for the first reserved key among the own keys of `records` (a transaction's reads, writes), if any. */
export function reservedKeyProblem(...records: unknown[]): string | undefined {
  for (const record of records) {
    if (typeof record !== 'object' || record === null) continue;
    const key = RESERVED_DOC_KEYS.find((name) => Object.hasOwn(record, name));
    if (key !== undefined) return reservedKeyMessage(key);
  }
  return undefined;
}

/** Largest frame a server accepts unless configured otherwise (TETHER_MAX_MESSAGE_BYTES). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * Deepest nesting of arrays and objects accepted in any JSON a client or backend sends.
 * Deeper values are refused at decode (`invalid_message`): serialising them again would
 * overflow the stack, and no app data needs more.
 */
export const MAX_JSON_DEPTH = 64;

/** Writes one `writes` frame carries, at most. */
export const MAX_WRITE_BATCH = 100;
/** A `writes` frame costs one rate-limit token per this many writes it carries (rounded up). */
export const WRITES_PER_RATE_TOKEN = 10;

/** The largest presence state a connection may set: bytes of its JSON text in UTF-8. */
export const PRESENCE_STATE_MAX_BYTES = 1024;
/** Tabs one connection may count on one channel's presence. */
export const PRESENCE_MAX_TABS = 1000;
/** Members a `presence` frame lists at most (its `total` counts them all). */
export const PRESENCE_MAX_MEMBERS = 500;
