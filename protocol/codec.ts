/**
 * Encoding and validated decoding of frames. Used by the server (strict validation of
 * everything a client sends) and by tests; the worker uses `parseServerFrame`, which
 * only checks the envelope because it trusts its own server.
 */
import * as v from 'valibot';
import { ClientMessage, MAX_WRITE_BATCH, PRESENCE_STATE_MAX_BYTES, ServerMessage, WriteMessage } from './messages.js';
import type { ErrorShape } from './errors.js';
import { CHANNEL_NAME, MAX_JSON_DEPTH, reservedKeyProblem } from './constants.js';
import { jsonBytes } from './utf8.js';

/**
 * A refused frame echoes the request `id` or the write `seq` it carried (when usable), so the
 * sender can match the error — and a refused write still takes its place in the sequence.
 */
export type Decoded<T> = { ok: true; message: T } | { ok: false; error: ErrorShape; id?: number; seq?: number; presence?: string };

const WRITE_TYPES = new Set(['publish', 'transact', 'skip']);

function positiveInteger(value: unknown): number | undefined {
  return Number.isSafeInteger(value) && (value as number) > 0 ? (value as number) : undefined;
}

/** The size of a presence frame's state as the schema measures it (bytes of JSON in UTF-8), if it is one. */
function presenceStateSize(json: unknown): number | undefined {
  if (typeof json !== 'object' || json === null || (json as Record<string, unknown>).type !== 'presence') return undefined;
  const state = (json as Record<string, unknown>).state;
  return state === undefined ? undefined : (jsonBytes(state) ?? 0);
}

/** Serializes one message as a JSON text frame. */
export function encode(message: ClientMessage | ServerMessage): string {
  return JSON.stringify(message);
}

/**
 * What makes a parsed JSON value unfit to pass on, if anything: nesting deeper than `maxDepth`
 * (serialising it again would overflow the stack), or a number JSON cannot carry (`1e400`
 * parses as Infinity and would be sent on as `null`). Iterative, so that the check itself
 * cannot overflow the stack on the values it exists to refuse.
 */
export function jsonProblem(value: unknown, maxDepth: number = MAX_JSON_DEPTH): string | undefined {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (typeof item === 'number' && !Number.isFinite(item)) return 'numbers must be finite (JSON has no Infinity)';
    if (typeof item !== 'object' || item === null) continue;
    if (depth + 1 > maxDepth) return `values may nest arrays and objects at most ${maxDepth} levels deep`;
    for (const child of Array.isArray(item) ? item : Object.values(item)) stack.push([child, depth + 1]);
  }
  return undefined;
}

/** A transaction naming a reserved key (a record would drop it silently: acknowledged, never stored). */
function reservedDocKeyProblem(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const fields = json as Record<string, unknown>;
  if (fields.type !== 'transact') return undefined;
  return reservedKeyProblem(fields.reads, fields.writes);
}

function describe(issues: readonly v.BaseIssue<unknown>[]): string {
  const first = issues[0];
  if (!first) return 'invalid message';
  const path = first.path?.map((p) => String(p.key)).join('.');
  return path ? `${path}: ${first.message}` : first.message;
}

/** What a client may not send even when the schema would accept it. */
function clientProblem(json: unknown): string | undefined {
  return jsonProblem(json) ?? reservedDocKeyProblem(json);
}

function decodeWith<T>(schema: v.GenericSchema<unknown, T>, frame: string, problemOf?: (json: unknown) => string | undefined): Decoded<T> {
  let json: unknown;
  try {
    json = JSON.parse(frame);
  } catch {
    return { ok: false, error: { code: 'invalid_message', message: 'frame is not valid JSON' } };
  }
  return decodeValue(schema, json, problemOf);
}

function decodeValue<T>(schema: v.GenericSchema<unknown, T>, json: unknown, problemOf?: (json: unknown) => string | undefined): Decoded<T> {
  let error: ErrorShape;
  const problem = problemOf?.(json);
  if (problem !== undefined) {
    error = { code: 'invalid_message', message: problem };
  } else {
    const parsed = v.safeParse(schema, json);
    if (parsed.success) return { ok: true, message: parsed.output };
    error = { code: 'invalid_message', message: describe(parsed.issues) };
    const size = presenceStateSize(json);
    if (size !== undefined && size > PRESENCE_STATE_MAX_BYTES) {
      error = { code: 'message_too_big', message: `presence state is ${size} bytes of JSON (UTF-8); at most ${PRESENCE_STATE_MAX_BYTES}` };
    }
  }
  if (typeof json !== 'object' || json === null) return { ok: false, error };
  const fields = json as Record<string, unknown>;
  const id = positiveInteger(fields.id);
  const seq = typeof fields.type === 'string' && WRITE_TYPES.has(fields.type) ? positiveInteger(fields.seq) : undefined;
  // A refused presence frame names its channel when it can, so the client knows which presence failed.
  const presence = fields.type === 'presence' && typeof fields.channel === 'string' && CHANNEL_NAME.test(fields.channel) ? fields.channel : undefined;
  return { ok: false, error, ...(id === undefined ? {} : { id }), ...(seq === undefined ? {} : { seq }), ...(presence === undefined ? {} : { presence }) };
}

/** Validates a frame received from a client. */
export function decodeClientFrame(frame: string): Decoded<ClientMessage> {
  return decodeWith(ClientMessage, frame, clientProblem);
}

/** What a client frame carries: one message, or each write of a `writes` frame on its own. */
export type ClientFrame = { batch: false; decoded: Decoded<ClientMessage> } | { batch: true; writes: Decoded<WriteMessage>[] };

/**
 * Validates a frame received from a client. A `writes` frame is taken apart and each write
 * validated on its own, as if it had come alone: one malformed write is refused with its `seq`
 * (and takes its place in the sequence) without costing the others.
 */
export function decodeClientFrames(frame: string): ClientFrame {
  let json: unknown;
  try {
    json = JSON.parse(frame);
  } catch {
    return { batch: false, decoded: { ok: false, error: { code: 'invalid_message', message: 'frame is not valid JSON' } } };
  }
  const fields = typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  if (fields?.type !== 'writes') return { batch: false, decoded: decodeValue(ClientMessage, json, clientProblem) };
  const writes = fields.writes;
  const extra = Object.keys(fields).find((key) => key !== 'type' && key !== 'writes');
  const envelope =
    extra !== undefined
      ? `writes: unknown field ${JSON.stringify(extra.slice(0, 50))}`
      : !Array.isArray(writes)
        ? 'writes: must be an array of writes'
        : writes.length === 0 || writes.length > MAX_WRITE_BATCH
          ? `writes: 1 to ${MAX_WRITE_BATCH} writes per frame, got ${writes.length}`
          : undefined;
  if (envelope !== undefined) return { batch: false, decoded: { ok: false, error: { code: 'invalid_message', message: envelope } } };
  return { batch: true, writes: (writes as unknown[]).map((write) => decodeValue(WriteMessage, write, clientProblem)) };
}

/** Validates a frame received from a server (tests, tools). */
export function decodeServerFrame(frame: string): Decoded<ServerMessage> {
  return decodeWith(ServerMessage, frame);
}
