/**
 * Every wire message, defined once as a valibot schema; the TypeScript types are inferred
 * from the schemas. Messages are JSON text frames, told apart by their string `type`.
 * See PROTOCOL.md for the prose description.
 *
 * The server validates every client frame against `ClientMessage`. The worker only imports
 * the types (`import type`), so valibot never reaches the browser bundle.
 */
import * as v from 'valibot';
import { ERROR_CODES } from './constants.js';

const RequestId = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER));
const MethodName = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(128),
  v.regex(/^[A-Za-z_][\w.:-]*$/, 'method names are letters, digits, _ . : - and start with a letter or _'),
);

// ---- client → server -------------------------------------------------------------------

/** First frame on every connection. */
export const Handshake = v.strictObject({
  type: v.literal('handshake'),
  /** The protocol version the client speaks. */
  v: v.pipe(v.number(), v.integer()),
  /** A JWT signed by the app's backend; optional in development mode. */
  token: v.optional(v.pipe(v.string(), v.maxLength(8192))),
});

/** Heartbeat; the server answers with `pong` echoing `t`. */
export const Ping = v.strictObject({
  type: v.literal('ping'),
  t: v.number(),
});

/** Call a procedure; answered by `result` or `error` with the same `id`. */
export const RpcRequest = v.strictObject({
  type: v.literal('rpc'),
  id: RequestId,
  method: MethodName,
  args: v.array(v.unknown()),
});

export const ClientMessage = v.variant('type', [Handshake, Ping, RpcRequest]);

// ---- server → client -------------------------------------------------------------------

/** Answer to a valid handshake. */
export const Welcome = v.strictObject({
  type: v.literal('welcome'),
  v: v.number(),
  /** Unique per connection; useful in logs on both sides. */
  session: v.string(),
  /** `sub` of the verified token, or null for an anonymous development client. */
  user: v.nullable(v.string()),
  /** The client sends a `ping` this often; the server drops a client silent for 3×. */
  heartbeatMs: v.number(),
});

export const Pong = v.strictObject({
  type: v.literal('pong'),
  t: v.number(),
});

export const RpcResult = v.strictObject({
  type: v.literal('result'),
  id: RequestId,
  value: v.unknown(),
});

/** An error; `id` is set when it answers a request. */
export const ErrorMessage = v.strictObject({
  type: v.literal('error'),
  id: v.optional(RequestId),
  code: v.picklist(ERROR_CODES),
  message: v.string(),
});

export const ServerMessage = v.variant('type', [Welcome, Pong, RpcResult, ErrorMessage]);

export type Handshake = v.InferOutput<typeof Handshake>;
export type Ping = v.InferOutput<typeof Ping>;
export type RpcRequest = v.InferOutput<typeof RpcRequest>;
export type ClientMessage = v.InferOutput<typeof ClientMessage>;
export type Welcome = v.InferOutput<typeof Welcome>;
export type Pong = v.InferOutput<typeof Pong>;
export type RpcResult = v.InferOutput<typeof RpcResult>;
export type ErrorMessage = v.InferOutput<typeof ErrorMessage>;
export type ServerMessage = v.InferOutput<typeof ServerMessage>;
