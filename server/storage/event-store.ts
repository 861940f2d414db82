/**
 * The events DB, as an interface: SQLite is the default implementation; PostgreSQL can be
 * added beside it without touching sessions, the protocol or the HTTP API. Methods are async
 * so that a networked database fits the same shape.
 */
import type { ErrorCode } from '../../protocol/constants.js';
import type { ReadVersion } from '../../protocol/shapes.js';

/** A write to apply once. `data` is JSON text (validated JSON, serialised once at the edge). */
export type WriteRequest =
  | {
      kind: 'publish';
      channel: string;
      data: string;
      /** Set for client writes: the dedupe key with `seq`. */
      clientId: string | null;
      seq: number | null;
      user: string | null;
      /** Set for HTTP API writes that carried an `Idempotency-Key`. */
      idempotencyKey?: string;
    }
  /** A transaction on a shared document (values are JSON text; null deletes the key). */
  | {
      kind: 'transact';
      doc: string;
      reads: Record<string, ReadVersion>;
      writes: Record<string, string | null>;
      clientId: string | null;
      seq: number | null;
      user: string | null;
      /** Set for HTTP API transactions that carried an `Idempotency-Key`. */
      idempotencyKey?: string;
    }
  /**
   * A client write refused for good (forbidden, malformed, withdrawn as too big): advance the
   * sequence, store nothing but the refusal, so that a resend gets the same answer.
   */
  | { kind: 'skip'; clientId: string; seq: number; user: string | null; code: ErrorCode; message: string };

export type { ReadVersion } from '../../protocol/shapes.js';

/** A key's confirmed state: value as JSON text, or deleted. */
export type StoredKey = { version: number; value: string } | { version: number; deleted: true };

export interface DocChange {
  doc: string;
  version: number;
  keys: Record<string, StoredKey>;
}

export interface StoredEvent {
  channel: string;
  offset: number;
  epoch: string;
  /** JSON text. */
  data: string;
  /** Who published it, as JSON text of a protocol `Publisher`; null for events stored before it was recorded. */
  publisher: string | null;
}

export type WriteOutcome =
  | { status: 'stored'; event: StoredEvent }
  /** Refused for good (now, or before: a resend of a refused write gets the same refusal). */
  | { status: 'refused'; code: ErrorCode; message: string }
  /** The `Idempotency-Key` was used before by a different request (another channel, document or body). */
  | { status: 'idempotency_mismatch' }
  /** A transaction committed: the document's new version and the keys it changed. */
  | { status: 'committed'; change: DocChange }
  /** A transaction was rejected: the current state of the keys it read. */
  | { status: 'conflict'; doc: string; version: number; current: Record<string, StoredKey> }
  /** Applied before: acknowledged again, no second effect. `offset` null when not known any more. */
  | { status: 'duplicate'; offset: number | null }
  | { status: 'out_of_order'; expected: number }
  /** The clientId belongs to another user. */
  | { status: 'forbidden' };

export interface ClientResync {
  /** The last applied sequence, after the move. */
  lastSeq: number;
  /** The last applied sequence the store had before moving it up (undefined: not moved). */
  movedFrom?: number;
}

export interface History {
  epoch: string;
  /** Highest offset of the channel (0 when empty). */
  head: number;
  /** Events after the requested offset, in order (at most `limit`). */
  events: { offset: number; data: string; createdAt: number; publisher: string | null }[];
  /** True when the history no longer reaches back to the requested offset, or the epoch changed. */
  reset: boolean;
  /** The offset `events` follow: the requested one, or after a reset the oldest still known. */
  from: number;
}

export interface RetentionPolicy {
  /** Events kept per channel. */
  maxEvents: number;
  /** Age after which events are dropped, in milliseconds. */
  maxAgeMs: number;
}

/**
 * The answers kept per client for resends (transaction versions, refusals): at least the last
 * this many sequences, and every one from the lowest sequence the client said it still holds.
 */
export const ANSWERS_KEPT = 10_000;

/** Tombstones kept per document: deletions in its last this many versions. */
export const TOMBSTONE_VERSIONS_KEPT = 1_000;

/** How long an `Idempotency-Key` is remembered. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

export interface EventStore {
  /** Which database this is, for /api/health and logs. */
  readonly kind: 'sqlite' | 'postgres';
  /** Resolves when the database answers a trivial query (rejects with why not): /api/health asks it. */
  ping(): Promise<void>;
  /** Applies the writes in order in ONE durable transaction (group commit). */
  write(requests: WriteRequest[]): Promise<WriteOutcome[]>;
  /**
   * The events of `channel` after `since` (or none: only the head): at most `limit` events after `since`, and no more than about `maxBytes` of event data (at
   * least one event): a reader pages through a large history without holding it in memory.
   */
  history(channel: string, since: { offset: number; epoch?: string } | undefined, limit: number, maxBytes?: number): Promise<History>;
  /**
   * A document's keys: all of them (`full`), or those changed after version `since` of the
   * documents epoch `epoch` (another epoch — a restored backup — gets them all).
   */
  document(doc: string, since: number | undefined, epoch?: string): Promise<DocChange & { full: boolean; epoch: string }>;
  /**
   * A client connects holding writes from `firstSeq` on: its last applied sequence, moved up to
   * `firstSeq - 1` when the store knows less (the writes before were acknowledged by a store
   * that no longer has them: a restored backup, a new events DB). 'forbidden' if the clientId
   * belongs to another user.
   */
  handshake(clientId: string, user: string | null, firstSeq: number): Promise<ClientResync | 'forbidden'>;
  /**
   * Ends a user's sessions for good: tokens issued (`iat`, ms) up to `through` are refused from
   * now on, also after a restart. A later call moves the mark forward, never back.
   */
  revoke(user: string, through: number): Promise<void>;
  /** The revocation mark of `user` (ms), if its sessions were ever revoked. */
  revokedThrough(user: string): Promise<number | undefined>;
  /**
   * The head offset of each channel and the version of each document (0 when unknown), in one
   * read: a node checks with it that it missed no notification (a lost fan-out message).
   */
  positions(channels: string[], docs: string[]): Promise<{ channels: Map<string, number>; docs: Map<string, number> }>;
  /** Drops events past the retention policy; returns how many. */
  prune(now?: number): Promise<number>;
  close(): Promise<void>;
}
