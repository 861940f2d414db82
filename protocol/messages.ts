/**
 * Every wire message, defined once as a valibot schema; the TypeScript types are inferred
 * from the schemas. Messages are JSON text frames, told apart by their string `type`.
 * See PROTOCOL.md for the prose description.
 *
 * The server validates every client frame against `ClientMessage`. The worker only imports
 * the types (`import type`), so valibot never reaches the browser bundle.
 */
import * as v from 'valibot';
import { CHANNEL_NAME, ERROR_CODES, MAX_DOC_KEY_LENGTH, MAX_WRITE_BATCH, PRESENCE_MAX_TABS, PRESENCE_STATE_MAX_BYTES, UNSTORABLE_KEY_MESSAGE, storableText } from './constants.js';
import { jsonBytes } from './utf8.js';

const RequestId = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER));
const MethodName = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(128),
  v.regex(/^[A-Za-z_][\w.:-]*$/, 'method names are letters, digits, _ . : - and start with a letter or _'),
);

export const ChannelName = v.pipe(
  v.string(),
  v.regex(CHANNEL_NAME, 'channel names are 1–200 letters, digits, _ . : @ / - and start with a letter, digit or _'),
);
const ClientId = v.pipe(v.string(), v.regex(/^[A-Za-z0-9-]{8,64}$/, 'clientId is 8–64 letters, digits or -'));
const Seq = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER));
const Offset = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER));

// ---- client → server -------------------------------------------------------------------

/** First frame on every connection. */
export const Handshake = v.strictObject({
  type: v.literal('handshake'),
  /** The protocol version the client speaks. */
  v: v.pipe(v.number(), v.integer()),
  /** A JWT signed by the app's backend; optional in development mode. */
  token: v.optional(v.pipe(v.string(), v.maxLength(8192))),
  /** The client's durable id (one per user per browser profile); required to send writes. */
  clientId: v.optional(ClientId),
  /**
   * The lowest write sequence this client still holds unacknowledged (its next sequence when it
   * holds none). Everything before it was acknowledged once: a server that does not know those
   * writes (a restored backup, a new events DB) moves the client's sequence up to it, explicitly,
   * instead of accepting whatever sequence comes first. Default 1.
   */
  firstSeq: v.optional(Seq),
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

/**
 * A queued write: publish `data` on `channel`. `seq` numbers the client's writes 1, 2, 3…;
 * the server applies each once, in order, and answers `ack` (or `error` with the same `seq`).
 */
export const Publish = v.strictObject({
  type: v.literal('publish'),
  seq: Seq,
  channel: ChannelName,
  data: v.unknown(),
});

/** Keys of a shared document: 1–200 characters. */
export const DocKey = v.pipe(v.string(), v.minLength(1), v.maxLength(MAX_DOC_KEY_LENGTH), v.check(storableText, UNSTORABLE_KEY_MESSAGE));

/**
 * What a transaction read: the version of each key (0 = the key did not exist), or, for a key
 * last written by one of the client's own earlier transactions not yet confirmed, `{ seq }`:
 * "the value my write `seq` produced".
 */
const ReadVersion = v.union([Offset, v.strictObject({ seq: Seq })]);

/**
 * A queued transaction on a shared document: commits atomically only if every key it read
 * is still at the version it read. `null` in `writes` deletes the key.
 */
export const Transact = v.strictObject({
  type: v.literal('transact'),
  seq: Seq,
  doc: ChannelName,
  reads: v.record(DocKey, ReadVersion),
  writes: v.record(DocKey, v.unknown()),
});

/** Open a document: the server sends its state (or what changed after `since`), then every change. */
export const DocOpen = v.strictObject({
  type: v.literal('doc_open'),
  doc: ChannelName,
  since: v.optional(Offset),
  /** The documents epoch `since` belongs to; another epoch (a restored backup) gets the full state. */
  epoch: v.optional(v.pipe(v.string(), v.maxLength(64))),
});

export const DocClose = v.strictObject({
  type: v.literal('doc_close'),
  doc: ChannelName,
});

/** Start receiving a channel; `since` resumes after an offset the client already has. */
export const Subscribe = v.strictObject({
  type: v.literal('subscribe'),
  channel: ChannelName,
  since: v.optional(v.strictObject({ offset: Offset, epoch: v.pipe(v.string(), v.maxLength(64)) })),
});

export const Unsubscribe = v.strictObject({
  type: v.literal('unsubscribe'),
  channel: ChannelName,
});

/**
 * The client gives up queued write `seq` without sending it: it grew over the server's size limit
 * (the operator lowered it while the write waited). The server records the refusal, advances the
 * sequence as for any refused write, and answers `error` with that `seq`.
 */
export const Skip = v.strictObject({
  type: v.literal('skip'),
  seq: Seq,
  reason: v.picklist(['message_too_big']),
  /** The write's size in bytes, for the error message. */
  bytes: v.optional(Offset),
});

/** Events a client missed: how many a `history` request may return at most. */
export const HISTORY_PAGE_MAX = 500;

/**
 * Read a channel's stored events after `since` without subscribing (a tab that comes back to a
 * subscription the worker kept alive catches up with it). Answered by `result` with a
 * `HistoryPage` value, or `error` (`forbidden`). Same grants as subscribe.
 */
export const HistoryRequest = v.strictObject({
  type: v.literal('history'),
  id: RequestId,
  channel: ChannelName,
  since: v.strictObject({ offset: Offset, epoch: v.pipe(v.string(), v.maxLength(64)) }),
  limit: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(HISTORY_PAGE_MAX)),
});

export { MAX_WRITE_BATCH, PRESENCE_MAX_MEMBERS, PRESENCE_MAX_TABS, PRESENCE_STATE_MAX_BYTES, WRITES_PER_RATE_TOKEN } from './constants.js';


/**
 * This connection's presence on `channel` (join, update, leave): how many of its tabs are there,
 * and the app's state of its user there (typing, cursor…; the latest any of its tabs set).
 * `tabs: 0` leaves. Not durable, not numbered: the latest frame wins. Needs the channel's
 * subscribe grant; refused with `error` carrying `presence: channel`. A connection that has
 * joined receives the channel's `presence` members after every change.
 */
export const PresenceSet = v.strictObject({
  type: v.literal('presence'),
  channel: ChannelName,
  tabs: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(PRESENCE_MAX_TABS)),
  state: v.optional(
    v.pipe(
      v.unknown(),
      v.check((state) => (jsonBytes(state) ?? 0) <= PRESENCE_STATE_MAX_BYTES, `presence state is at most ${PRESENCE_STATE_MAX_BYTES} bytes of JSON (UTF-8)`),
    ),
  ),
});

/** One queued write, as sent alone or inside `writes`. */
export const WriteMessage = v.variant('type', [Publish, Transact, Skip]);

/**
 * Several queued writes in one frame (a client drains a burst in a few frames, not one per
 * write): each is handled exactly as if it had come in its own frame, in the order listed, and
 * answered on its own (`ack`, `conflict` or `error` with its `seq`). Sent only to a server whose
 * welcome offers `maxWriteBatch`.
 */
export const WriteBatch = v.strictObject({
  type: v.literal('writes'),
  writes: v.pipe(v.array(WriteMessage), v.minLength(1), v.maxLength(MAX_WRITE_BATCH)),
});

export const ClientMessage = v.variant('type', [Handshake, Ping, RpcRequest, Publish, Subscribe, Unsubscribe, Transact, DocOpen, DocClose, Skip, HistoryRequest, WriteBatch, PresenceSet]);

// ---- server → client -------------------------------------------------------------------

/** Answer to a valid handshake. */
export const Welcome = v.strictObject({
  type: v.literal('welcome'),
  v: v.number(),
  /** Unique per connection; useful in logs on both sides. */
  session: v.string(),
  /** `sub` of the verified token, or null for an anonymous development client. */
  user: v.nullable(v.string()),
  /** The client sends a `ping` this often while it waits for answers (calls, writes). */
  heartbeatMs: v.number(),
  /** …and this often while it waits for nothing; the server drops a client silent for 3× this. */
  idleHeartbeatMs: v.optional(v.number()),
  /** The last write sequence applied for the handshake's clientId (0 if none): drop those from the outbox. */
  lastSeq: v.number(),
  /** Largest frame the server accepts, in bytes. */
  maxMessageBytes: v.number(),
  /** Frames per second the server accepts from this connection on average (bursts of 2×); beyond, it closes with 4007. */
  rateLimit: v.optional(v.number()),
  /** RPC calls the server runs at once for this connection; more are refused, so the client queues them. */
  maxRpcInFlight: v.optional(v.number()),
  /** The server takes `writes` frames of up to this many writes (absent: one write per frame). */
  maxWriteBatch: v.optional(v.number()),
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

/** A write was applied (now or before: a resent write is acknowledged again without a second effect). */
export const Ack = v.strictObject({
  type: v.literal('ack'),
  seq: Seq,
  /** A publish: the event's channel offset; a transaction: the document version it created. Null when no longer known. */
  offset: v.nullable(Offset),
});

/** A key's confirmed value and version; `deleted` keys have no value. */
const KeyState = v.union([
  v.strictObject({ version: Offset, value: v.unknown() }),
  v.strictObject({ version: Offset, deleted: v.literal(true) }),
]);

/** A transaction was rejected: `current` holds the confirmed state of the keys it read. Not applied. */
export const Conflict = v.strictObject({
  type: v.literal('conflict'),
  seq: Seq,
  doc: ChannelName,
  current: v.record(DocKey, KeyState),
  /** The document's version when it was rejected. */
  version: Offset,
});

/**
 * A document's state after `doc_open` (`full`: every key; otherwise only keys changed after
 * `since`), or a committed change (`full: false`). `version` is the document's version after it.
 */
export const DocState = v.strictObject({
  type: v.literal('doc'),
  doc: ChannelName,
  version: Offset,
  full: v.boolean(),
  keys: v.record(DocKey, KeyState),
  /** In answers to `doc_open`: the documents epoch (changes when the events DB is restored from a backup). */
  epoch: v.optional(v.string()),
});

/** The subscription is live; events after `offset` follow (the missed ones first, in order). */
export const Subscribed = v.strictObject({
  type: v.literal('subscribed'),
  channel: ChannelName,
  epoch: v.string(),
  /** The channel's head when the subscription started. */
  offset: Offset,
});

/** One event of a channel. Offsets increase by one within an epoch. */
/**
 * Who published an event, as the server knows it: a user (`sub` of the publisher's token; null
 * for an anonymous development client) or the app's backend (the HTTP API). Clients cannot
 * claim to be the backend. Absent on events stored before servers recorded it.
 */
export const Publisher = v.union([v.strictObject({ user: v.nullable(v.string()) }), v.strictObject({ backend: v.literal(true) })]);

export const ChannelEvent = v.strictObject({
  type: v.literal('event'),
  channel: ChannelName,
  offset: Offset,
  data: v.unknown(),
  publisher: v.optional(Publisher),
});

/**
 * The history no longer reaches back to the client's offset (retention) or was reset
 * (new epoch): events were missed and cannot be recovered. Delivery resumes after `offset`.
 */
export const Reset = v.strictObject({
  type: v.literal('reset'),
  channel: ChannelName,
  epoch: v.string(),
  offset: Offset,
});

/** An error; `id` answers a request, `seq` a write, `channel` a subscription. */
export const ErrorMessage = v.strictObject({
  type: v.literal('error'),
  id: v.optional(RequestId),
  seq: v.optional(Seq),
  channel: v.optional(ChannelName),
  doc: v.optional(ChannelName),
  /** The channel whose presence was refused (`forbidden`, `limit_exceeded`). */
  presence: v.optional(ChannelName),
  code: v.picklist(ERROR_CODES),
  message: v.string(),
});

/**
 * The `value` of the `result` answering `history`: events after `since`, in order (at most
 * `limit`). `reset`: events after `since` were lost (retention, or another epoch); `events`
 * then follow `from`, the oldest offset still known.
 */
export const HistoryPage = v.strictObject({
  epoch: v.string(),
  head: Offset,
  reset: v.boolean(),
  from: Offset,
  events: v.array(v.strictObject({ offset: Offset, data: v.unknown(), publisher: v.optional(Publisher) })),
});

/**
 * The answers to the writes of one `writes` frame, in one frame, in the order they were decided:
 * each exactly what would have answered the write alone (`ack`, `conflict`, `error` with `seq`).
 */
export const Answers = v.strictObject({
  type: v.literal('answers'),
  answers: v.array(v.variant('type', [Ack, Conflict, ErrorMessage])),
});

/**
 * One person on a channel's presence: a user (token `sub`), or in development mode one anonymous
 * browser (`id` is then `client:<clientId>`), with how many tabs and browsers (connections of
 * distinct client ids) they have there.
 */
export const PresenceMember = v.strictObject({
  id: v.string(),
  user: v.nullable(v.string()),
  tabs: v.pipe(v.number(), v.integer(), v.minValue(0)),
  devices: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** The state most recently set by any of their tabs (null: none). */
  state: v.unknown(),
  /** When they joined (server clock, ms since the epoch). */
  since: v.number(),
});

/**
 * A channel's presence after a change (or on joining). Either the whole list, `members` (oldest
 * first: the first frame of every join, and whenever it is smaller than the changes), or the
 * changes since the previous frame this connection got for the channel: `set` (members new or
 * changed, whole) and `gone` (ids no longer listed). protocol/presence-list.ts applies both.
 */
export const PresenceMembers = v.strictObject({
  type: v.literal('presence'),
  channel: ChannelName,
  members: v.optional(v.array(PresenceMember)),
  set: v.optional(v.array(PresenceMember)),
  gone: v.optional(v.array(v.string())),
  /** Members in all (the list holds the first PRESENCE_MAX_MEMBERS). */
  total: v.pipe(v.number(), v.integer(), v.minValue(0)),
});

export const ServerMessage = v.variant('type', [Welcome, Pong, RpcResult, Ack, Subscribed, ChannelEvent, Reset, Conflict, DocState, ErrorMessage, Answers, PresenceMembers]);

export type Handshake = v.InferOutput<typeof Handshake>;
export type Ping = v.InferOutput<typeof Ping>;
export type RpcRequest = v.InferOutput<typeof RpcRequest>;
export type Publish = v.InferOutput<typeof Publish>;
export type Subscribe = v.InferOutput<typeof Subscribe>;
export type Unsubscribe = v.InferOutput<typeof Unsubscribe>;
export type Transact = v.InferOutput<typeof Transact>;
export type Skip = v.InferOutput<typeof Skip>;
export type WriteMessage = v.InferOutput<typeof WriteMessage>;
export type WriteBatch = v.InferOutput<typeof WriteBatch>;
export type HistoryRequest = v.InferOutput<typeof HistoryRequest>;
export type HistoryPage = v.InferOutput<typeof HistoryPage>;
export type Publisher = v.InferOutput<typeof Publisher>;
export type DocOpen = v.InferOutput<typeof DocOpen>;
export type ReadVersion = v.InferOutput<typeof ReadVersion>;
export type KeyState = v.InferOutput<typeof KeyState>;
export type Conflict = v.InferOutput<typeof Conflict>;
export type DocState = v.InferOutput<typeof DocState>;
export type ClientMessage = v.InferOutput<typeof ClientMessage>;
export type Welcome = v.InferOutput<typeof Welcome>;
export type Pong = v.InferOutput<typeof Pong>;
export type RpcResult = v.InferOutput<typeof RpcResult>;
export type Ack = v.InferOutput<typeof Ack>;
export type Answers = v.InferOutput<typeof Answers>;
export type Subscribed = v.InferOutput<typeof Subscribed>;
export type ChannelEvent = v.InferOutput<typeof ChannelEvent>;
export type Reset = v.InferOutput<typeof Reset>;
export type ErrorMessage = v.InferOutput<typeof ErrorMessage>;
export type ServerMessage = v.InferOutput<typeof ServerMessage>;
export type PresenceSet = v.InferOutput<typeof PresenceSet>;
export type PresenceMember = v.InferOutput<typeof PresenceMember>;
export type PresenceMembers = v.InferOutput<typeof PresenceMembers>;
