/**
 * The events DB on PostgreSQL, for several server processes sharing one database. Same rules as
 * the SQLite adapter (sqlite.ts); what differs is how they hold under concurrent writers:
 * offsets, versions and client sequences are assigned under row locks taken in the database
 * (channel, document and client rows), each write batch is one transaction (acknowledged means
 * committed), and a batch that lost a race (deadlock, serialization failure, first-insert
 * unique violation) is run again as a whole.
 */
import { BACKEND_PUBLISHER, fingerprint, newEpoch } from './records.js';
import { DatabaseError, Pool, types, type PoolClient } from 'pg';
import { isErrorCode } from '../../protocol/constants.js';
import {
  ANSWERS_KEPT, IDEMPOTENCY_TTL_MS, TOMBSTONE_VERSIONS_KEPT,
  type DocChange, type EventStore, type History, type RetentionPolicy, type StoredKey, type WriteOutcome, type WriteRequest,
} from './event-store.js';

export interface PostgresOptions {
  /** Connection string, e.g. postgres://user:password@host:5432/tether. */
  url: string;
  retention: RetentionPolicy;
  /** Largest document (keys and JSON values, in UTF-8 bytes); a transaction that grows one past it is refused. @default unbounded */
  maxDocBytes?: number;
  /** pool size @default 10 */
  maxConnections?: number;
}

/**
 * Schema migrations, applied in order; the `schema_version` table records how many ran. Functions,
 * so that each database gets an epoch of its own.
 */
const MIGRATIONS: (() => string)[] = [
  () => `CREATE TABLE channels (
     name TEXT PRIMARY KEY,
     epoch TEXT NOT NULL,
     head BIGINT NOT NULL DEFAULT 0,
     pruned_through BIGINT NOT NULL DEFAULT 0
   );
   CREATE TABLE events (
     channel TEXT NOT NULL,
     "offset" BIGINT NOT NULL,
     data TEXT NOT NULL,
     created_at BIGINT NOT NULL,
     client_id TEXT,
     client_seq BIGINT,
     -- who published it (JSON: {"user": …} or {"backend": true})
     publisher TEXT,
     PRIMARY KEY (channel, "offset")
   );
   CREATE UNIQUE INDEX events_by_client ON events (client_id, client_seq) WHERE client_id IS NOT NULL;
   CREATE INDEX events_by_age ON events (created_at);
   CREATE TABLE clients (
     client_id TEXT PRIMARY KEY,
     "user" TEXT,
     last_seq BIGINT NOT NULL DEFAULT 0,
     updated_at BIGINT NOT NULL,
     -- the lowest sequence the client said it still holds: answers from there on are kept
     first_held BIGINT
   );
   -- an Idempotency-Key, bound to its request: channel and offset, or document and version
   CREATE TABLE api_requests (
     key TEXT PRIMARY KEY,
     channel TEXT NOT NULL,
     "offset" BIGINT NOT NULL,
     created_at BIGINT NOT NULL,
     fingerprint TEXT NOT NULL
   );
   CREATE INDEX api_requests_by_age ON api_requests (created_at);
   -- shared documents; a deleted key stays as a tombstone (value NULL) until far behind
   CREATE TABLE docs (
     name TEXT PRIMARY KEY,
     version BIGINT NOT NULL DEFAULT 0,
     tombstones_through BIGINT NOT NULL DEFAULT 0,
     bytes BIGINT NOT NULL DEFAULT 0
   );
   CREATE TABLE doc_keys (
     doc TEXT NOT NULL,
     key TEXT NOT NULL,
     value TEXT,
     version BIGINT NOT NULL,
     PRIMARY KEY (doc, key)
   );
   CREATE INDEX doc_keys_by_version ON doc_keys (doc, version);
   CREATE TABLE doc_commits (
     client_id TEXT NOT NULL,
     client_seq BIGINT NOT NULL,
     doc TEXT NOT NULL,
     version BIGINT NOT NULL,
     PRIMARY KEY (client_id, client_seq)
   );
   CREATE TABLE client_refusals (
     client_id TEXT NOT NULL,
     client_seq BIGINT NOT NULL,
     code TEXT NOT NULL,
     message TEXT NOT NULL,
     PRIMARY KEY (client_id, client_seq)
   );
   CREATE TABLE revocations ("user" TEXT PRIMARY KEY, through BIGINT NOT NULL);
   CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   INSERT INTO meta (key, value) VALUES ('docs_epoch', '${newEpoch()}');`,
];

/** The advisory lock that serialises migrations of one database (any fixed key: this one is "tether" in ASCII). */
const MIGRATION_LOCK = '127979093517682';

/** The last sequence of a client whose answer may be pruned (SQL over a `clients` row `c`). */
const PRUNABLE_THROUGH = `LEAST(c.last_seq - ${ANSWERS_KEPT}, coalesce(c.first_held, c.last_seq + 1) - 1)`;

/** How often a batch that lost a race with another writer is run again before the error is passed on. */
const MAX_ATTEMPTS = 8;

/** Deadlock, serialization failure, and a unique violation (two writers creating the same row). */
const RETRYABLE = new Set(['40P01', '40001', '23505']);

/**
 * BIGINT columns as JS numbers, on this pool only (pg's default is strings, and changing it
 * globally would reach other code). Offsets, versions and ms timestamps stay far below 2^53.
 */
const TYPES = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === types.builtins.INT8 && format !== 'binary' ? parseBigint : types.getTypeParser(oid, format as 'text')) as typeof types.getTypeParser,
};

function parseBigint(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new Error(`PostgreSQL returned the integer ${text}, beyond what JavaScript represents exactly`);
  return value;
}

type Publish = Extract<WriteRequest, { kind: 'publish' }>;
type Transact = Extract<WriteRequest, { kind: 'transact' }>;

/** A client row as this batch sees it (locked, or created by it). */
interface ClientState { user: string | null; lastSeq: number; stored: boolean; changed: boolean }
interface ChannelState { epoch: string; head: number; touched: boolean }
interface DocState { version: number; bytes: number; changed: boolean }

export async function openPostgresStore(options: PostgresOptions): Promise<EventStore> {
  // Timeouts: a partitioned database must fail calls (clients resend, health says 503), not hang them.
  const pool = new Pool({
    connectionString: options.url, max: options.maxConnections ?? 10, types: TYPES,
    connectionTimeoutMillis: 10_000, query_timeout: 30_000, keepAlive: true,
  });
  // An idle connection that fails (the server restarted it) is dropped by the pool and replaced
  // on the next query; without a listener the error event would end the process.
  pool.on('error', (error) => process.emitWarning(`an idle PostgreSQL connection of the events DB failed: ${error.message}`));
  try {
    await migrate(pool);
  } catch (error) {
    await pool.end();
    throw error;
  }
  const maxDocBytes = options.maxDocBytes ?? Infinity;
  const maxEvents = options.retention.maxEvents;
  let closing: Promise<void> | undefined;

  /**
   * Runs `work` in one transaction; a transaction that lost a race with another writer is rolled
   * back and run again from the start (it is all-or-nothing, so nothing of it took effect).
   */
  async function transaction<T>(what: string, work: (db: PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const db = await pool.connect();
      let broken: Error | undefined;
      try {
        await db.query('BEGIN');
        const result = await work(db);
        await db.query('COMMIT');
        return result;
      } catch (error) {
        broken = await rollback(db);
        const retryable = error instanceof DatabaseError && error.code !== undefined && RETRYABLE.has(error.code);
        if (!retryable || broken !== undefined) throw error;
        if (attempt >= MAX_ATTEMPTS) {
          throw new Error(`the events DB could not ${what}: it lost a race with other writers ${attempt} times in a row (${error.message})`, { cause: error });
        }
      } finally {
        // A connection whose rollback failed is in an unknown state: the pool closes it.
        db.release(broken);
      }
      // Jittered backoff (without holding a connection), so that the writers that collided do not collide again.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * 2 ** attempt));
    }
  }

  /** Rolls back; returns the error when that failed too (the connection is unusable then). */
  async function rollback(db: PoolClient): Promise<Error | undefined> {
    try {
      await db.query('ROLLBACK');
      return undefined;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  }

  /** One attempt at a batch: locks the rows it writes, then applies the requests in their order. */
  async function applyBatch(db: PoolClient, requests: WriteRequest[]): Promise<WriteOutcome[]> {
    const now = Date.now();
    // Locks in a fixed order (clients, channels, documents; each sorted by the database), so that
    // two batches touching the same rows wait for each other instead of deadlocking.
    const clients = await lockClients(db, requests);
    const channels = await lockChannels(db, requests.flatMap((r) => (r.kind === 'publish' ? [r.channel] : [])));
    const docs = await lockDocs(db, requests.flatMap((r) => (r.kind === 'transact' ? [r.doc] : [])));
    // Events are inserted together at the end; a resend later in the batch finds its offset here.
    const events: { channel: string; offset: number; data: string; clientId: string | null; seq: number | null; publisher: string }[] = [];
    const pendingOffsets = new Map<string, number>();

    async function apply(request: WriteRequest): Promise<WriteOutcome> {
      const unstorable = unstorableUser(request);
      if (unstorable !== undefined) return { status: 'refused', code: 'invalid_argument', message: unstorable };
      if (request.kind !== 'skip' && request.idempotencyKey !== undefined) {
        const { rows: [seen] } = await db.query<{ offset: number; fingerprint: string }>(
          'SELECT "offset", fingerprint FROM api_requests WHERE key = $1', [request.idempotencyKey],
        );
        if (seen) {
          // Same key, another request: answering with the first one's offset would drop this body.
          if (seen.fingerprint !== fingerprint(request)) return { status: 'idempotency_mismatch' };
          return { status: 'duplicate', offset: seen.offset };
        }
      }
      const clientId = request.clientId;
      if (clientId !== null && request.seq !== null) {
        const client = clients.get(clientId);
        if (client && client.user !== request.user) return { status: 'forbidden' };
        const last = client?.lastSeq ?? 0;
        if (request.seq <= last) return replayed(request, clientId, request.seq);
        // Sequences never skip, for new clients too: a client that holds only later writes says
        // so in its handshake (firstSeq), which moves its sequence up explicitly.
        if (request.seq !== last + 1) return { status: 'out_of_order', expected: last + 1 };
        if (client) {
          client.lastSeq = request.seq;
          client.changed = true;
        } else clients.set(clientId, { user: request.user, lastSeq: request.seq, stored: false, changed: true });
      }
      if (request.kind === 'skip') {
        await insertRefusal(request.clientId, request.seq, request.code, request.message);
        return { status: 'refused', code: request.code, message: request.message };
      }
      if (request.kind === 'transact') return transact(request);
      return publish(request);
    }

    async function publish(request: Publish): Promise<WriteOutcome> {
      const channel = channels.get(request.channel)!;
      const offset = channel.head + 1;
      channel.head = offset;
      channel.touched = true;
      const publisher = request.clientId === null ? BACKEND_PUBLISHER : JSON.stringify({ user: request.user });
      events.push({ channel: request.channel, offset, data: request.data, clientId: request.clientId, seq: request.seq, publisher });
      if (request.clientId !== null && request.seq !== null) pendingOffsets.set(clientSeqKey(request.clientId, request.seq), offset);
      if (request.idempotencyKey !== undefined) await insertApiRequest(request.idempotencyKey, request.channel, offset, fingerprint(request));
      return { status: 'stored', event: { channel: request.channel, offset, epoch: channel.epoch, data: request.data, publisher } };
    }

    /** Applies a transaction if everything it read is still current; otherwise reports the current state. */
    async function transact(request: Transact): Promise<WriteOutcome> {
      const doc = docs.get(request.doc)!;
      const stored = await docKeys(request.doc, [...Object.keys(request.reads), ...Object.keys(request.writes)]);
      const ownSeqs = Object.values(request.reads).flatMap((read) => (typeof read === 'number' ? [] : [read.seq]));
      const ownCommits = request.clientId !== null && ownSeqs.length > 0 ? await commitsOf(request.clientId, ownSeqs) : new Map<number, { doc: string; version: number }>();
      const current: Record<string, StoredKey> = {};
      let conflict = false;
      for (const [key, read] of Object.entries(request.reads)) {
        const state = keyState(stored.get(key));
        current[key] = state;
        let expected: number | undefined = typeof read === 'number' ? read : undefined;
        if (typeof read !== 'number' && request.clientId !== null) {
          const commit = ownCommits.get(read.seq);
          expected = commit && commit.doc === request.doc ? commit.version : undefined;
        }
        // Version 0 reads "absent": a key deleted since (a tombstone) is absent still, so the read
        // holds — what the transaction saw is what is current, which is all serialisability needs.
        const holds = expected !== undefined && (state.version === expected || (expected === 0 && 'deleted' in state));
        if (!holds) conflict = true;
      }
      if (conflict) return { status: 'conflict', doc: request.doc, version: doc.version, current };
      // Size: a live key counts its key and value, a tombstone its key (tombstones are sent to
      // clients too, so they must not grow a document past the bound either).
      let bytes = doc.bytes;
      const before = bytes;
      const writes: [string, string | null][] = [];
      for (const [key, value] of Object.entries(request.writes)) {
        const old = stored.get(key);
        // Deleting a key that is absent or already deleted changes nothing: no tombstone.
        if (value === null && (old === undefined || old.value === null)) continue;
        writes.push([key, value]);
        if (old === undefined) bytes += Buffer.byteLength(key);
        if (old?.value != null) bytes -= Buffer.byteLength(old.value);
        if (value !== null) bytes += Buffer.byteLength(value);
      }
      const nul = writes.find(([key]) => key.includes('\u0000'))?.[0];
      if (nul !== undefined) {
        // PostgreSQL text cannot hold U+0000: refused for good (as the size bound is), rather
        // than failing the whole group commit with every other client's writes in it.
        const message = `the document key ${JSON.stringify(nul)} contains the character U+0000, which this server (PostgreSQL) cannot store`;
        if (request.clientId !== null && request.seq !== null) await insertRefusal(request.clientId, request.seq, 'invalid_argument', message);
        return { status: 'refused', code: 'invalid_argument', message };
      }
      // A write that shrinks a document is taken even over the bound (the bound may have been lowered).
      if (bytes > maxDocBytes && bytes > before) {
        const message = `the document ${request.doc} would grow to ${bytes} bytes; this server keeps documents up to ${maxDocBytes} bytes (TETHER_MAX_DOC_BYTES)`;
        if (request.clientId !== null && request.seq !== null) await insertRefusal(request.clientId, request.seq, 'limit_exceeded', message);
        return { status: 'refused', code: 'limit_exceeded', message };
      }
      const next = doc.version + 1;
      const keys: Record<string, StoredKey> = {};
      for (const [key, value] of writes) keys[key] = value === null ? { version: next, deleted: true } : { version: next, value };
      if (writes.length > 0) {
        await db.query(
          `INSERT INTO doc_keys (doc, key, value, version) SELECT $1, k, v, $4 FROM unnest($2::text[], $3::text[]) AS t(k, v)
           ON CONFLICT (doc, key) DO UPDATE SET value = excluded.value, version = excluded.version`,
          [request.doc, writes.map(([key]) => key), writes.map(([, value]) => value), next],
        );
      }
      doc.version = next;
      doc.bytes = bytes;
      doc.changed = true;
      if (request.clientId !== null && request.seq !== null) {
        await db.query('INSERT INTO doc_commits (client_id, client_seq, doc, version) VALUES ($1, $2, $3, $4)', [request.clientId, request.seq, request.doc, next]);
      }
      if (request.idempotencyKey !== undefined) await insertApiRequest(request.idempotencyKey, request.doc, next, fingerprint(request));
      return { status: 'committed', change: { doc: request.doc, version: next, keys } };
    }

    /** The outcome a resent write had the first time (it is not applied again). */
    async function replayed(request: WriteRequest, clientId: string, seq: number): Promise<WriteOutcome> {
      const { rows: [refusal] } = await db.query<{ code: string; message: string }>(
        'SELECT code, message FROM client_refusals WHERE client_id = $1 AND client_seq = $2', [clientId, seq],
      );
      if (refusal) return { status: 'refused', code: isErrorCode(refusal.code) ? refusal.code : 'internal', message: refusal.message };
      if (request.kind === 'transact') {
        // Committed before (its version), or rejected before (reported again).
        const commit = (await commitsOf(clientId, [seq])).get(seq);
        if (commit) return { status: 'duplicate', offset: commit.version };
        const stored = await docKeys(request.doc, Object.keys(request.reads));
        const current: Record<string, StoredKey> = {};
        for (const key of Object.keys(request.reads)) current[key] = keyState(stored.get(key));
        return { status: 'conflict', doc: request.doc, version: docs.get(request.doc)!.version, current };
      }
      const pending = pendingOffsets.get(clientSeqKey(clientId, seq));
      if (pending !== undefined) return { status: 'duplicate', offset: pending };
      const { rows: [event] } = await db.query<{ offset: number }>('SELECT "offset" FROM events WHERE client_id = $1 AND client_seq = $2', [clientId, seq]);
      return { status: 'duplicate', offset: event?.offset ?? null };
    }

    async function docKeys(doc: string, keys: string[]): Promise<Map<string, { value: string | null; version: number }>> {
      // A key with U+0000 cannot be stored, so it is absent (and PostgreSQL would refuse the query).
      const storable = keys.filter((key) => !key.includes('\u0000'));
      if (storable.length === 0) return new Map();
      const { rows } = await db.query<{ key: string; value: string | null; version: number }>(
        'SELECT key, value, version FROM doc_keys WHERE doc = $1 AND key = ANY($2::text[])', [doc, storable],
      );
      return new Map(rows.map((row) => [row.key, row]));
    }

    async function commitsOf(clientId: string, seqs: number[]): Promise<Map<number, { doc: string; version: number }>> {
      const { rows } = await db.query<{ client_seq: number; doc: string; version: number }>(
        'SELECT client_seq, doc, version FROM doc_commits WHERE client_id = $1 AND client_seq = ANY($2::bigint[])', [clientId, seqs],
      );
      return new Map(rows.map((row) => [row.client_seq, row]));
    }

    async function insertRefusal(clientId: string, seq: number, code: string, message: string): Promise<void> {
      await db.query(
        `INSERT INTO client_refusals (client_id, client_seq, code, message) VALUES ($1, $2, $3, $4)
         ON CONFLICT (client_id, client_seq) DO UPDATE SET code = excluded.code, message = excluded.message`,
        // Text cannot hold U+0000; the message is for people, so a replacement character does.
        [clientId, seq, code, message.replaceAll('\u0000', '\ufffd')],
      );
    }

    async function insertApiRequest(key: string, target: string, position: number, print: string): Promise<void> {
      // A concurrent batch with the same key fails here (unique violation) and runs again: then it sees this one.
      await db.query('INSERT INTO api_requests (key, channel, "offset", created_at, fingerprint) VALUES ($1, $2, $3, $4, $5)', [key, target, position, now, print]);
    }

    const outcomes: WriteOutcome[] = [];
    for (const request of requests) outcomes.push(await apply(request));

    if (events.length > 0) {
      await db.query(
        `INSERT INTO events (channel, "offset", data, created_at, client_id, client_seq, publisher)
         SELECT channel, "offset", data, $4, client_id, client_seq, publisher
         FROM unnest($1::text[], $2::bigint[], $3::text[], $5::text[], $6::bigint[], $7::text[]) AS t(channel, "offset", data, client_id, client_seq, publisher)`,
        [events.map((e) => e.channel), events.map((e) => e.offset), events.map((e) => e.data), now, events.map((e) => e.clientId), events.map((e) => e.seq), events.map((e) => e.publisher)],
      );
    }
    const touched = [...channels].filter(([, channel]) => channel.touched);
    if (touched.length > 0) {
      // Retention by count: the oldest events past maxEvents go in the same transaction.
      const through = touched.map(([, channel]) => Math.max(0, channel.head - maxEvents));
      await db.query(
        `UPDATE channels AS c SET head = t.head, pruned_through = GREATEST(c.pruned_through, t.through)
         FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(name, head, through) WHERE c.name = t.name`,
        [touched.map(([name]) => name), touched.map(([, channel]) => channel.head), through],
      );
      const pruned = touched.flatMap(([name], i) => (through[i]! > 0 ? [[name, through[i]!] as const] : []));
      if (pruned.length > 0) {
        await db.query(
          `DELETE FROM events AS e USING unnest($1::text[], $2::bigint[]) AS t(name, through) WHERE e.channel = t.name AND e."offset" <= t.through`,
          [pruned.map(([name]) => name), pruned.map(([, n]) => n)],
        );
      }
    }
    const changedDocs = [...docs].filter(([, doc]) => doc.changed);
    if (changedDocs.length > 0) {
      await db.query(
        'UPDATE docs AS d SET version = t.version, bytes = t.bytes FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(name, version, bytes) WHERE d.name = t.name',
        [changedDocs.map(([name]) => name), changedDocs.map(([, doc]) => doc.version), changedDocs.map(([, doc]) => doc.bytes)],
      );
    }
    const changedClients = [...clients].filter(([, client]) => client.changed);
    const updated = changedClients.filter(([, client]) => client.stored);
    if (updated.length > 0) {
      await db.query(
        'UPDATE clients AS c SET last_seq = t.last_seq, updated_at = $3 FROM unnest($1::text[], $2::bigint[]) AS t(client_id, last_seq) WHERE c.client_id = t.client_id',
        [updated.map(([id]) => id), updated.map(([, client]) => client.lastSeq), now],
      );
    }
    const created = changedClients.filter(([, client]) => !client.stored);
    if (created.length > 0) {
      // A plain insert: a client another process created meanwhile is a unique violation, and the
      // batch runs again with that client's row locked.
      await db.query(
        'INSERT INTO clients (client_id, "user", last_seq, updated_at) SELECT client_id, "user", last_seq, $4 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(client_id, "user", last_seq)',
        [created.map(([id]) => id), created.map(([, client]) => client.user), created.map(([, client]) => client.lastSeq), now],
      );
    }
    return outcomes;
  }

  return {
    kind: 'postgres',

    async ping() {
      await pool.query('SELECT 1');
    },

    async write(requests) {
      if (requests.length === 0) return [];
      return transaction('apply a write batch', (db) => applyBatch(db, requests));
    },

    async history(name, since, limit, maxBytes = Infinity) {
      let page = await readHistory(pool, name, since, limit, maxBytes);
      if (page === undefined) {
        // A channel exists from its first subscribe or publish: a subscriber always learns its
        // epoch, so a later reset of the channel (a restored backup) can never pass unnoticed.
        await pool.query('INSERT INTO channels (name, epoch) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, newEpoch()]);
        page = await readHistory(pool, name, since, limit, maxBytes);
        if (page === undefined) throw new Error(`the events DB lost the channel ${name} just after creating it`);
      }
      return page;
    },

    async document(doc, since, epoch) {
      // One statement, one snapshot: the version, the tombstone mark and the keys agree even
      // while other processes commit to the document.
      const { rows } = await pool.query<{ version: number; epoch: string; full: boolean; key: string | null; value: string | null; key_version: number | null }>(
        `WITH d AS (
           SELECT coalesce(docs.version, 0) AS version, coalesce(docs.tombstones_through, 0) AS tombstones_through,
                  coalesce((SELECT value FROM meta WHERE key = 'docs_epoch'), '') AS epoch
           FROM (VALUES (1)) AS one LEFT JOIN docs ON docs.name = $1
         ), f AS (
           -- A client with nothing, ahead of the server, behind the tombstones still kept (it could
           -- miss a deletion) or from another epoch (a restored backup) gets everything.
           SELECT version, epoch,
                  $2::bigint IS NULL OR $2::bigint > version OR $2::bigint < tombstones_through OR ($3::text IS NOT NULL AND $3::text <> epoch) AS full
           FROM d
         )
         SELECT f.version, f.epoch, f.full, k.key, k.value, k.version AS key_version
         FROM f LEFT JOIN LATERAL (
           SELECT key, value, version FROM doc_keys
           WHERE doc = $1 AND version > CASE WHEN f.full THEN 0 ELSE $2::bigint END AND (value IS NOT NULL OR NOT f.full)
         ) AS k ON true`,
        [doc, since ?? null, epoch === undefined ? null : comparable(epoch)],
      );
      const head = rows[0]!;
      const keys: Record<string, StoredKey> = {};
      for (const row of rows) {
        if (row.key === null || row.key_version === null) continue;
        keys[row.key] = row.value === null ? { version: row.key_version, deleted: true } : { version: row.key_version, value: row.value };
      }
      const change: DocChange = { doc, version: head.version, keys };
      return { ...change, full: head.full, epoch: head.epoch };
    },

    async revoke(user, through) {
      assertStorableUser(user);
      await pool.query(
        'INSERT INTO revocations ("user", through) VALUES ($1, $2) ON CONFLICT ("user") DO UPDATE SET through = GREATEST(revocations.through, excluded.through)',
        [user, through],
      );
    },

    async revokedThrough(user) {
      if (user.includes('\u0000')) return undefined; // never stored (revoke refuses it)
      const { rows: [row] } = await pool.query<{ through: number }>('SELECT through FROM revocations WHERE "user" = $1', [user]);
      return row?.through;
    },

    async handshake(clientId, user, firstSeq) {
      if (user !== null) assertStorableUser(user);
      return transaction('move a client sequence', async (db) => {
        const { rows: [client] } = await db.query<{ user: string | null; last_seq: number }>(
          'SELECT "user", last_seq FROM clients WHERE client_id = $1 FOR UPDATE', [clientId],
        );
        if (client && client.user !== user) return 'forbidden' as const;
        const last = client?.last_seq ?? 0;
        if (firstSeq - 1 <= last) {
          if (client) await db.query('UPDATE clients SET first_held = $2 WHERE client_id = $1', [clientId, firstSeq]);
          return { lastSeq: last };
        }
        if (client) {
          await db.query('UPDATE clients SET last_seq = $2, updated_at = $3, first_held = $4 WHERE client_id = $1', [clientId, firstSeq - 1, Date.now(), firstSeq]);
        } else {
          // A client created meanwhile by another process: unique violation, and the handshake runs again.
          await db.query('INSERT INTO clients (client_id, "user", last_seq, updated_at, first_held) VALUES ($1, $2, $3, $4, $5)', [clientId, user, firstSeq - 1, Date.now(), firstSeq]);
        }
        return { lastSeq: firstSeq - 1, movedFrom: last };
      });
    },

    async positions(channelNames, docNames) {
      const result = { channels: new Map<string, number>(), docs: new Map<string, number>() };
      if (channelNames.length === 0 && docNames.length === 0) return result;
      // One statement: heads and versions of one moment.
      const { rows } = await pool.query<{ kind: 'channel' | 'doc'; name: string; position: number }>(
        `SELECT 'channel' AS kind, name, head AS position FROM channels WHERE name = ANY($1::text[])
         UNION ALL SELECT 'doc', name, version FROM docs WHERE name = ANY($2::text[])`,
        [channelNames, docNames],
      );
      const known = new Map(rows.map((row) => [`${row.kind}:${row.name}`, row.position]));
      for (const name of channelNames) result.channels.set(name, known.get(`channel:${name}`) ?? 0);
      for (const name of docNames) result.docs.set(name, known.get(`doc:${name}`) ?? 0);
      return result;
    },

    async prune(now = Date.now()) {
      return transaction('prune', async (db) => {
        let removed = 0;
        const { rows: old } = await db.query<{ channel: string; through: number }>(
          'SELECT channel, max("offset") AS through FROM events WHERE created_at < $1 GROUP BY channel',
          [now - options.retention.maxAgeMs],
        );
        if (old.length > 0) {
          const names = old.map((row) => row.channel);
          const through = old.map((row) => row.through);
          // The channel rows first, in the writers' order: a writer pruning by count waits, or is waited for.
          await db.query('SELECT name FROM channels WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE', [names]);
          const deleted = await db.query(
            'DELETE FROM events AS e USING unnest($1::text[], $2::bigint[]) AS t(name, through) WHERE e.channel = t.name AND e."offset" <= t.through',
            [names, through],
          );
          removed = deleted.rowCount ?? 0;
          await db.query(
            'UPDATE channels AS c SET pruned_through = GREATEST(c.pruned_through, t.through) FROM unnest($1::text[], $2::bigint[]) AS t(name, through) WHERE c.name = t.name',
            [names, through],
          );
        }
        await db.query('DELETE FROM api_requests WHERE created_at < $1', [now - IDEMPOTENCY_TTL_MS]);
        await db.query(`DELETE FROM doc_commits AS d USING clients AS c WHERE c.client_id = d.client_id AND d.client_seq <= ${PRUNABLE_THROUGH}`);
        await db.query(`DELETE FROM client_refusals AS r USING clients AS c WHERE c.client_id = r.client_id AND r.client_seq <= ${PRUNABLE_THROUGH}`);
        const { rows: docs } = await db.query<{ name: string; through: number }>(
          'SELECT name, version - $1::bigint AS through FROM docs WHERE version - tombstones_through > $2::bigint ORDER BY name FOR UPDATE',
          [TOMBSTONE_VERSIONS_KEPT, TOMBSTONE_VERSIONS_KEPT * 2],
        );
        for (const { name, through } of docs) {
          // The pruned tombstones' bytes are given back to the document's size.
          await db.query(
            `WITH gone AS (DELETE FROM doc_keys WHERE doc = $1 AND value IS NULL AND version <= $2 RETURNING octet_length(key) AS bytes)
             UPDATE docs SET bytes = GREATEST(0, bytes - (SELECT coalesce(sum(bytes), 0) FROM gone)), tombstones_through = GREATEST(tombstones_through, $2)
             WHERE name = $1`,
            [name, through],
          );
        }
        return removed;
      });
    },

    async close() {
      closing ??= pool.end();
      return closing;
    },
  };
}

/**
 * The events of `name` after `since`, read in one statement (one snapshot: head, pruned mark
 * and events agree while other processes write); undefined when the channel does not exist.
 */
async function readHistory(
  pool: Pool, name: string, since: { offset: number; epoch?: string } | undefined, limit: number, maxBytes: number,
): Promise<History | undefined> {
  if (since === undefined) {
    const { rows: [channel] } = await pool.query<{ epoch: string; head: number }>('SELECT epoch, head FROM channels WHERE name = $1', [name]);
    return channel && { epoch: channel.epoch, head: channel.head, events: [], reset: false, from: channel.head };
  }
  const { rows } = await pool.query<{
    epoch: string; head: number; pruned_through: number; reset: boolean;
    offset: number | null; data: string | null; created_at: number | null; publisher: string | null;
  }>(
    `WITH ch AS (
       -- Missed events are gone when the client's offset is behind what was pruned, or ahead of
       -- the head (the history was lost or reset under the same name), or the epoch changed.
       SELECT epoch, head, pruned_through,
              ($3::text IS NOT NULL AND $3::text <> '' AND $3::text <> epoch) OR $2::bigint < pruned_through OR $2::bigint > head AS reset
       FROM channels WHERE name = $1
     )
     SELECT ch.epoch, ch.head, ch.pruned_through, ch.reset, page."offset", page.data, page.created_at, page.publisher
     FROM ch LEFT JOIN LATERAL (
       -- Stop at the byte budget (always one event, so that the reader moves on): an event is in
       -- the page while the events before it stay under maxBytes.
       SELECT "offset", data, created_at, publisher FROM (
         SELECT "offset", data, created_at, publisher,
                row_number() OVER w AS n,
                coalesce(sum(octet_length(data)) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
         FROM events
         -- After a reset the events still retained are delivered: a reset reports what was lost, no more.
         WHERE channel = $1 AND "offset" > CASE WHEN ch.reset THEN ch.pruned_through ELSE $2::bigint END
         WINDOW w AS (ORDER BY "offset")
         ORDER BY "offset"
         LIMIT $4
       ) AS candidates
       WHERE n = 1 OR $5::bigint IS NULL OR before < $5::bigint
     ) AS page ON true
     ORDER BY page."offset"`,
    // A negative limit is no limit, as in SQLite.
    [name, since.offset, since.epoch === undefined ? null : comparable(since.epoch), limit < 0 ? null : limit, Number.isFinite(maxBytes) ? Math.ceil(maxBytes) : null],
  );
  const channel = rows[0];
  if (!channel) return undefined;
  const events: History['events'] = [];
  for (const row of rows) {
    if (row.offset === null || row.data === null || row.created_at === null) continue;
    events.push({ offset: row.offset, data: row.data, createdAt: row.created_at, publisher: row.publisher });
  }
  return { epoch: channel.epoch, head: channel.head, reset: channel.reset, from: channel.reset ? channel.pruned_through : since.offset, events };
}

/** Locks the rows of the clients that write with a sequence; clients not stored yet are absent. */
async function lockClients(db: PoolClient, requests: WriteRequest[]): Promise<Map<string, ClientState>> {
  const ids = [...new Set(requests.flatMap((r) => (r.clientId !== null && r.seq !== null ? [r.clientId] : [])))];
  const clients = new Map<string, ClientState>();
  if (ids.length === 0) return clients;
  const { rows } = await db.query<{ client_id: string; user: string | null; last_seq: number }>(
    'SELECT client_id, "user", last_seq FROM clients WHERE client_id = ANY($1::text[]) ORDER BY client_id FOR UPDATE', [ids],
  );
  for (const row of rows) clients.set(row.client_id, { user: row.user, lastSeq: row.last_seq, stored: true, changed: false });
  return clients;
}

/** Locks the rows of `names`, creating those that do not exist yet (each with a new epoch). */
async function lockChannels(db: PoolClient, names: string[]): Promise<Map<string, ChannelState>> {
  const channels = new Map<string, ChannelState>();
  const add = (rows: { name: string; epoch: string; head: number }[]) => {
    for (const row of rows) channels.set(row.name, { epoch: row.epoch, head: row.head, touched: false });
  };
  const wanted = [...new Set(names)];
  if (wanted.length === 0) return channels;
  const lock = 'SELECT name, epoch, head FROM channels WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE';
  add((await db.query<{ name: string; epoch: string; head: number }>(lock, [wanted])).rows);
  const missing = wanted.filter((name) => !channels.has(name));
  if (missing.length > 0) {
    // Two processes creating one channel: the second waits for the first and keeps its epoch.
    await db.query(
      'INSERT INTO channels (name, epoch) SELECT name, epoch FROM unnest($1::text[], $2::text[]) AS t(name, epoch) ORDER BY name ON CONFLICT (name) DO NOTHING',
      [missing, missing.map(() => newEpoch())],
    );
    add((await db.query<{ name: string; epoch: string; head: number }>(lock, [missing])).rows);
  }
  for (const name of wanted) if (!channels.has(name)) throw new Error(`the events DB could not create the channel ${name}`);
  return channels;
}

/** Locks the rows of `names`, creating those that do not exist yet (version 0, as an absent one). */
async function lockDocs(db: PoolClient, names: string[]): Promise<Map<string, DocState>> {
  const docs = new Map<string, DocState>();
  const add = (rows: { name: string; version: number; bytes: number }[]) => {
    for (const row of rows) docs.set(row.name, { version: row.version, bytes: row.bytes, changed: false });
  };
  const wanted = [...new Set(names)];
  if (wanted.length === 0) return docs;
  const lock = 'SELECT name, version, bytes FROM docs WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE';
  add((await db.query<{ name: string; version: number; bytes: number }>(lock, [wanted])).rows);
  const missing = wanted.filter((name) => !docs.has(name));
  if (missing.length > 0) {
    await db.query('INSERT INTO docs (name) SELECT name FROM unnest($1::text[]) AS t(name) ORDER BY name ON CONFLICT (name) DO NOTHING', [missing]);
    add((await db.query<{ name: string; version: number; bytes: number }>(lock, [missing])).rows);
  }
  for (const name of wanted) if (!docs.has(name)) throw new Error(`the events DB could not create the document ${name}`);
  return docs;
}

function keyState(row: { value: string | null; version: number } | undefined): StoredKey {
  if (!row) return { version: 0, deleted: true };
  return row.value === null ? { version: row.version, deleted: true } : { version: row.version, value: row.value };
}

/**
 * An epoch from a client, only compared with stored ones: PostgreSQL refuses U+0000 in text, and
 * stored epochs are hex, so the string equals none of them with or without the replacement.
 */
function comparable(text: string): string {
  return text.replaceAll('\u0000', '\ufffd');
}

function clientSeqKey(clientId: string, seq: number): string {
  return `${clientId}\u0000${seq}`;
}

/** Why a request's user cannot be stored (PostgreSQL text cannot hold U+0000), if it cannot. */
function unstorableUser(request: WriteRequest): string | undefined {
  return request.user !== null && request.user.includes('\u0000') ? userMessage(request.user) : undefined;
}

function assertStorableUser(user: string): void {
  if (user.includes('\u0000')) throw new Error(userMessage(user));
}

function userMessage(user: string): string {
  return `the user ${JSON.stringify(user)} contains the character U+0000, which this server (PostgreSQL) cannot store`;
}

/**
 * Brings the schema up to date. Several processes may start at once: an advisory lock lets one
 * migrate while the others wait, then find the schema current.
 */
async function migrate(pool: Pool): Promise<void> {
  const db = await pool.connect();
  let failure: Error | undefined;
  try {
    await db.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK})`);
    await db.query('BEGIN');
    await db.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const { rows } = await db.query<{ version: number }>('SELECT version FROM schema_version');
    if (rows.length > 1) throw new Error(`the events DB's schema_version table has ${rows.length} rows; it should have one`);
    const version = rows[0]?.version ?? 0;
    if (version > MIGRATIONS.length) {
      throw new Error(`the events DB has schema version ${version}, newer than this server knows (${MIGRATIONS.length}); upgrade the server`);
    }
    for (let i = version; i < MIGRATIONS.length; i++) await db.query(MIGRATIONS[i]!());
    if (rows.length === 0) await db.query('INSERT INTO schema_version (version) VALUES ($1)', [MIGRATIONS.length]);
    else if (version < MIGRATIONS.length) await db.query('UPDATE schema_version SET version = $1', [MIGRATIONS.length]);
    await db.query('COMMIT');
    await db.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK})`);
  } catch (error) {
    failure = error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    // After a failure the connection is closed, not reused: that rolls its transaction back and
    // releases the advisory lock, whatever state it was left in.
    db.release(failure);
  }
}
