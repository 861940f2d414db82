/**
 * The default events DB: one SQLite file through better-sqlite3, in WAL mode with
 * synchronous=FULL, so a write is on disk before it is acknowledged.
 */
import { BACKEND_PUBLISHER, fingerprint, newEpoch } from './records.js';
import { isErrorCode } from '../../protocol/constants.js';
import Database from 'better-sqlite3';
import { ANSWERS_KEPT, IDEMPOTENCY_TTL_MS, TOMBSTONE_VERSIONS_KEPT, type DocChange, type EventStore, type History, type RetentionPolicy, type StoredKey, type WriteOutcome, type WriteRequest } from './event-store.js';

/** Schema migrations, applied in order; `PRAGMA user_version` records how many ran. */
const MIGRATIONS: string[] = [
  `CREATE TABLE channels (
     name TEXT PRIMARY KEY,
     epoch TEXT NOT NULL,
     head INTEGER NOT NULL DEFAULT 0,
     pruned_through INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE TABLE events (
     channel TEXT NOT NULL,
     offset INTEGER NOT NULL,
     data TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     client_id TEXT,
     client_seq INTEGER,
     PRIMARY KEY (channel, offset)
   ) WITHOUT ROWID;
   CREATE UNIQUE INDEX events_by_client ON events (client_id, client_seq) WHERE client_id IS NOT NULL;
   CREATE INDEX events_by_age ON events (created_at);
   CREATE TABLE clients (
     client_id TEXT PRIMARY KEY,
     user TEXT,
     last_seq INTEGER NOT NULL DEFAULT 0,
     updated_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE api_requests (
     key TEXT PRIMARY KEY,
     channel TEXT NOT NULL,
     offset INTEGER NOT NULL,
     created_at INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // 2: shared documents. A deleted key stays as a tombstone (value NULL) so that clients that
  // hold an older version learn about the deletion.
  `CREATE TABLE docs (
     name TEXT PRIMARY KEY,
     version INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE TABLE doc_keys (
     doc TEXT NOT NULL,
     key TEXT NOT NULL,
     value TEXT,
     version INTEGER NOT NULL,
     PRIMARY KEY (doc, key)
   ) WITHOUT ROWID;
   CREATE INDEX doc_keys_by_version ON doc_keys (doc, version);
   CREATE TABLE doc_commits (
     client_id TEXT NOT NULL,
     client_seq INTEGER NOT NULL,
     doc TEXT NOT NULL,
     version INTEGER NOT NULL,
     PRIMARY KEY (client_id, client_seq)
   ) WITHOUT ROWID;`,
  // 3: a refused write keeps its refusal, so a resend is answered the same; an Idempotency-Key
  // is bound to its request (kind, target and body) and may name a document transaction.
  `CREATE TABLE client_refusals (
     client_id TEXT NOT NULL,
     client_seq INTEGER NOT NULL,
     code TEXT NOT NULL,
     message TEXT NOT NULL,
     PRIMARY KEY (client_id, client_seq)
   ) WITHOUT ROWID;
   ALTER TABLE api_requests ADD COLUMN fingerprint TEXT;`,
  // 4: the documents epoch. Restoring a backup changes it (and every channel's epoch), so that
  // clients holding versions or offsets of the lost future reload instead of missing changes.
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
   INSERT INTO meta (key, value) VALUES ('docs_epoch', lower(hex(randomblob(6))));
   CREATE TABLE restores (restored_at INTEGER NOT NULL, source TEXT NOT NULL);`,
  // 5: tombstones are pruned once far behind the document's version; a client older than that
  // gets the full state.
  `ALTER TABLE docs ADD COLUMN tombstones_through INTEGER NOT NULL DEFAULT 0;`,
  // 6: the lowest sequence a client said it still holds (its handshake's firstSeq): answers from
  // there on are never pruned, however old (a resend may come from an outbox a worker failed to clear).
  `ALTER TABLE clients ADD COLUMN first_held INTEGER;`,
  // 7: a document's size in bytes (keys and JSON values; deleted keys count by their key, as
  // their tombstones are sent too), bounded by maxDocBytes.
  `ALTER TABLE docs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
   UPDATE docs SET bytes = (SELECT coalesce(sum(length(CAST(key AS BLOB)) + coalesce(length(CAST(value AS BLOB)), 0)), 0)
     FROM doc_keys WHERE doc_keys.doc = docs.name);
   -- and who published each event (JSON: {"user": …} or {"backend": true}); NULL before.
   ALTER TABLE events ADD COLUMN publisher TEXT;
   -- and sessions the backend revoked: tokens issued up to \`through\` (ms) are refused.
   CREATE TABLE revocations (user TEXT PRIMARY KEY, through INTEGER NOT NULL) WITHOUT ROWID;`,
];

/** The last sequence of a client whose answer may be pruned (SQL over a `clients` row). */
const PRUNABLE_THROUGH = `min(last_seq - ${ANSWERS_KEPT}, coalesce(first_held, last_seq + 1) - 1)`;


/** Marks a database as restored from a backup: new epochs for every channel and for documents. */
export const RESTORE_SQL = `UPDATE channels SET epoch = lower(hex(randomblob(6)));
  UPDATE meta SET value = lower(hex(randomblob(6))) WHERE key = 'docs_epoch';`;


export interface SqliteOptions {
  /** File path, or ':memory:'. */
  path: string;
  retention: RetentionPolicy;
  /** `full` (default) fsyncs every commit; `off` is for measuring what durability costs. */
  synchronous?: 'full' | 'off';
  /** Largest document (keys and JSON values, in UTF-8 bytes); a transaction that grows one past it is refused. @default unbounded */
  maxDocBytes?: number;
}

export function openSqliteStore(options: SqliteOptions): EventStore {
  const db = new Database(options.path);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${options.synchronous === 'off' ? 'OFF' : 'FULL'}`);
  db.pragma('busy_timeout = 5000');
  migrate(db);
  const maxDocBytes = options.maxDocBytes ?? Infinity;

  const q = {
    channel: db.prepare<[string], { epoch: string; head: number; pruned_through: number }>(
      'SELECT epoch, head, pruned_through FROM channels WHERE name = ?',
    ),
    createChannel: db.prepare('INSERT INTO channels (name, epoch) VALUES (?, ?)'),
    bumpHead: db.prepare('UPDATE channels SET head = ? WHERE name = ?'),
    insertEvent: db.prepare(
      'INSERT INTO events (channel, offset, data, created_at, client_id, client_seq, publisher) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    client: db.prepare<[string], { user: string | null; last_seq: number }>('SELECT user, last_seq FROM clients WHERE client_id = ?'),
    upsertClient: db.prepare(
      `INSERT INTO clients (client_id, user, last_seq, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (client_id) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at`,
    ),
    offsetOfWrite: db.prepare<[string, number], { offset: number }>(
      'SELECT offset FROM events WHERE client_id = ? AND client_seq = ?',
    ),
    apiRequest: db.prepare<[string], { offset: number; fingerprint: string | null }>('SELECT offset, fingerprint FROM api_requests WHERE key = ?'),
    insertApiRequest: db.prepare('INSERT INTO api_requests (key, channel, offset, created_at, fingerprint) VALUES (?, ?, ?, ?, ?)'),
    refusal: db.prepare<[string, number], { code: string; message: string }>(
      'SELECT code, message FROM client_refusals WHERE client_id = ? AND client_seq = ?',
    ),
    insertRefusal: db.prepare('INSERT OR REPLACE INTO client_refusals (client_id, client_seq, code, message) VALUES (?, ?, ?, ?)'),
    eventsAfter: db.prepare<[string, number, number], { offset: number; data: string; created_at: number; publisher: string | null }>(
      'SELECT offset, data, created_at, publisher FROM events WHERE channel = ? AND offset > ? ORDER BY offset LIMIT ?',
    ),
    pruneByCount: db.prepare('DELETE FROM events WHERE channel = ? AND offset <= ?'),
    setPrunedThrough: db.prepare('UPDATE channels SET pruned_through = max(pruned_through, ?) WHERE name = ?'),
    oldByChannel: db.prepare<[number], { channel: string; through: number }>(
      'SELECT channel, max(offset) AS through FROM events WHERE created_at < ? GROUP BY channel',
    ),
    pruneApiRequests: db.prepare('DELETE FROM api_requests WHERE created_at < ?'),
    pruneCommits: db.prepare(
      `DELETE FROM doc_commits WHERE client_seq <= (SELECT ${PRUNABLE_THROUGH} FROM clients WHERE clients.client_id = doc_commits.client_id)`,
    ),
    pruneRefusals: db.prepare(
      `DELETE FROM client_refusals WHERE client_seq <= (SELECT ${PRUNABLE_THROUGH} FROM clients WHERE clients.client_id = client_refusals.client_id)`,
    ),
    setFirstHeld: db.prepare('UPDATE clients SET first_held = ? WHERE client_id = ?'),
    docsWithOldTombstones: db.prepare<[number, number], { name: string; through: number }>(
      'SELECT name, version - ? AS through FROM docs WHERE version - tombstones_through > ?',
    ),
    pruneTombstones: db.prepare('DELETE FROM doc_keys WHERE doc = ? AND value IS NULL AND version <= ?'),
    tombstoneBytes: db.prepare<[string, number], { bytes: number }>(
      'SELECT coalesce(sum(length(CAST(key AS BLOB))), 0) AS bytes FROM doc_keys WHERE doc = ? AND value IS NULL AND version <= ?',
    ),
    shrinkDoc: db.prepare('UPDATE docs SET bytes = max(0, bytes - ?) WHERE name = ?'),
    setTombstonesThrough: db.prepare('UPDATE docs SET tombstones_through = max(tombstones_through, ?) WHERE name = ?'),
    tombstonesThrough: db.prepare<[string], { through: number }>('SELECT tombstones_through AS through FROM docs WHERE name = ?'),
    docVersion: db.prepare<[string], { version: number }>('SELECT version FROM docs WHERE name = ?'),
    docBytes: db.prepare<[string], { bytes: number }>('SELECT bytes FROM docs WHERE name = ?'),
    revoke: db.prepare(
      'INSERT INTO revocations (user, through) VALUES (?, ?) ON CONFLICT (user) DO UPDATE SET through = max(through, excluded.through)',
    ),
    revokedThrough: db.prepare<[string], { through: number }>('SELECT through FROM revocations WHERE user = ?'),
    setDocBytes: db.prepare('UPDATE docs SET bytes = ? WHERE name = ?'),
    setDocVersion: db.prepare(
      'INSERT INTO docs (name, version) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET version = excluded.version',
    ),
    docKey: db.prepare<[string, string], { value: string | null; version: number }>(
      'SELECT value, version FROM doc_keys WHERE doc = ? AND key = ?',
    ),
    putDocKey: db.prepare(
      `INSERT INTO doc_keys (doc, key, value, version) VALUES (?, ?, ?, ?)
       ON CONFLICT (doc, key) DO UPDATE SET value = excluded.value, version = excluded.version`,
    ),
    docKeysAfter: db.prepare<[string, number], { key: string; value: string | null; version: number }>(
      'SELECT key, value, version FROM doc_keys WHERE doc = ? AND version > ?',
    ),
    commitOf: db.prepare<[string, number], { doc: string; version: number }>(
      'SELECT doc, version FROM doc_commits WHERE client_id = ? AND client_seq = ?',
    ),
    docsEpoch: db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'docs_epoch'"),
    insertCommit: db.prepare('INSERT INTO doc_commits (client_id, client_seq, doc, version) VALUES (?, ?, ?, ?)'),
  };

  function keyState(doc: string, key: string): StoredKey {
    const row = q.docKey.get(doc, key);
    if (!row) return { version: 0, deleted: true };
    return row.value === null ? { version: row.version, deleted: true } : { version: row.version, value: row.value };
  }

  /** Applies a transaction if everything it read is still current; otherwise reports the current state. */
  function transact(request: Extract<WriteRequest, { kind: 'transact' }>): WriteOutcome {
    const version = q.docVersion.get(request.doc)?.version ?? 0;
    const current: Record<string, StoredKey> = {};
    let conflict = false;
    for (const [key, read] of Object.entries(request.reads)) {
      const state = keyState(request.doc, key);
      current[key] = state;
      let expected: number | undefined = typeof read === 'number' ? read : undefined;
      if (typeof read !== 'number' && request.clientId !== null) {
        const commit = q.commitOf.get(request.clientId, read.seq);
        expected = commit && commit.doc === request.doc ? commit.version : undefined;
      }
      // Version 0 reads "absent": a key deleted since (a tombstone) is absent still, so the read
      // holds — what the transaction saw is what is current, which is all serialisability needs.
      const holds = expected !== undefined && (state.version === expected || (expected === 0 && 'deleted' in state));
      if (!holds) conflict = true;
    }
    if (conflict) return { status: 'conflict', doc: request.doc, version, current };
    // Size: a live key counts its key and value, a tombstone its key (tombstones are sent to
    // clients too, so they must not grow a document past the bound either).
    let bytes = q.docBytes.get(request.doc)?.bytes ?? 0;
    const before = bytes;
    const writes: [string, string | null][] = [];
    for (const [key, value] of Object.entries(request.writes)) {
      const old = q.docKey.get(request.doc, key);
      // Deleting a key that is absent or already deleted changes nothing: no tombstone.
      if (value === null && (old === undefined || old.value === null)) continue;
      writes.push([key, value]);
      if (old === undefined) bytes += Buffer.byteLength(key);
      if (old?.value != null) bytes -= Buffer.byteLength(old.value);
      if (value !== null) bytes += Buffer.byteLength(value);
    }
    // A write that shrinks a document is taken even over the bound (the bound may have been lowered).
    if (bytes > maxDocBytes && bytes > before) {
      const message = `the document ${request.doc} would grow to ${bytes} bytes; this server keeps documents up to ${maxDocBytes} bytes (TETHER_MAX_DOC_BYTES)`;
      if (request.clientId !== null && request.seq !== null) q.insertRefusal.run(request.clientId, request.seq, 'limit_exceeded', message);
      return { status: 'refused', code: 'limit_exceeded', message };
    }
    const next = version + 1;
    const keys: Record<string, StoredKey> = {};
    for (const [key, value] of writes) {
      q.putDocKey.run(request.doc, key, value, next);
      keys[key] = value === null ? { version: next, deleted: true } : { version: next, value };
    }
    q.setDocVersion.run(request.doc, next);
    q.setDocBytes.run(bytes, request.doc);
    if (request.clientId !== null && request.seq !== null) q.insertCommit.run(request.clientId, request.seq, request.doc, next);
    if (request.idempotencyKey !== undefined) q.insertApiRequest.run(request.idempotencyKey, request.doc, next, Date.now(), fingerprint(request));
    return { status: 'committed', change: { doc: request.doc, version: next, keys } };
  }

  /** A resent transaction: committed before (its version), or rejected before (reported again). */
  function replayedTransact(request: Extract<WriteRequest, { kind: 'transact' }>, clientId: string, seq: number): WriteOutcome {
    const commit = q.commitOf.get(clientId, seq);
    if (commit) return { status: 'duplicate', offset: commit.version };
    const current: Record<string, StoredKey> = {};
    for (const key of Object.keys(request.reads)) current[key] = keyState(request.doc, key);
    return { status: 'conflict', doc: request.doc, version: q.docVersion.get(request.doc)?.version ?? 0, current };
  }

  function ensureChannel(name: string): { epoch: string; head: number; pruned_through: number } {
    const existing = q.channel.get(name);
    if (existing) return existing;
    const epoch = newEpoch();
    q.createChannel.run(name, epoch);
    return { epoch, head: 0, pruned_through: 0 };
  }

  /** The outcome a resent write had the first time (it is not applied again). */
  function replayed(request: WriteRequest, clientId: string, seq: number): WriteOutcome {
    const refusal = q.refusal.get(clientId, seq);
    if (refusal) return { status: 'refused', code: isErrorCode(refusal.code) ? refusal.code : 'internal', message: refusal.message };
    if (request.kind === 'transact') return replayedTransact(request, clientId, seq);
    return { status: 'duplicate', offset: q.offsetOfWrite.get(clientId, seq)?.offset ?? null };
  }

  const writeAll = db.transaction((requests: WriteRequest[]): WriteOutcome[] => {
    const now = Date.now();
    const touched = new Map<string, number>();
    const outcomes = requests.map((request): WriteOutcome => {
      if (request.kind !== 'skip' && request.idempotencyKey !== undefined) {
        const seen = q.apiRequest.get(request.idempotencyKey);
        if (seen) {
          // Same key, another request: answering with the first one's offset would drop this body.
          if (seen.fingerprint !== null && seen.fingerprint !== fingerprint(request)) return { status: 'idempotency_mismatch' };
          return { status: 'duplicate', offset: seen.offset };
        }
      }
      const clientId = request.clientId;
      if (clientId !== null && request.seq !== null) {
        const client = q.client.get(clientId);
        if (client && client.user !== request.user) return { status: 'forbidden' };
        const last = client?.last_seq ?? 0;
        if (request.seq <= last) return replayed(request, clientId, request.seq);
        // Sequences never skip, for new clients too: a client that holds only later writes says
        // so in its handshake (firstSeq), which moves its sequence up explicitly.
        if (request.seq !== last + 1) return { status: 'out_of_order', expected: last + 1 };
        q.upsertClient.run(clientId, request.user, request.seq, now);
      }
      if (request.kind === 'skip') {
        q.insertRefusal.run(request.clientId, request.seq, request.code, request.message);
        return { status: 'refused', code: request.code, message: request.message };
      }
      if (request.kind === 'transact') return transact(request);
      const channel = ensureChannel(request.channel);
      const offset = (touched.get(request.channel) ?? channel.head) + 1;
      touched.set(request.channel, offset);
      const publisher = request.clientId === null ? BACKEND_PUBLISHER : JSON.stringify({ user: request.user });
      q.insertEvent.run(request.channel, offset, request.data, now, request.clientId, request.seq, publisher);
      if (request.idempotencyKey !== undefined) q.insertApiRequest.run(request.idempotencyKey, request.channel, offset, now, fingerprint(request));
      return { status: 'stored', event: { channel: request.channel, offset, epoch: channel.epoch, data: request.data, publisher } };
    });
    for (const [name, head] of touched) {
      q.bumpHead.run(head, name);
      const through = head - options.retention.maxEvents;
      if (through > 0) {
        q.pruneByCount.run(name, through);
        q.setPrunedThrough.run(through, name);
      }
    }
    return outcomes;
  });

  const resync = db.transaction((clientId: string, user: string | null, firstSeq: number) => {
    const client = q.client.get(clientId);
    if (client && client.user !== user) return 'forbidden' as const;
    const last = client?.last_seq ?? 0;
    if (firstSeq - 1 <= last) {
      if (client) q.setFirstHeld.run(firstSeq, clientId);
      return { lastSeq: last };
    }
    q.upsertClient.run(clientId, user, firstSeq - 1, Date.now());
    q.setFirstHeld.run(firstSeq, clientId);
    return { lastSeq: firstSeq - 1, movedFrom: last };
  });

  const pruneOld = db.transaction((now: number): number => {
    let removed = 0;
    for (const { channel, through } of q.oldByChannel.all(now - options.retention.maxAgeMs)) {
      removed += q.pruneByCount.run(channel, through).changes;
      q.setPrunedThrough.run(through, channel);
    }
    q.pruneApiRequests.run(now - IDEMPOTENCY_TTL_MS);
    q.pruneCommits.run();
    q.pruneRefusals.run();
    for (const { name, through } of q.docsWithOldTombstones.all(TOMBSTONE_VERSIONS_KEPT, TOMBSTONE_VERSIONS_KEPT * 2)) {
      q.shrinkDoc.run(q.tombstoneBytes.get(name, through)?.bytes ?? 0, name);
      q.pruneTombstones.run(name, through);
      q.setTombstonesThrough.run(through, name);
    }
    return removed;
  });

  return {
    kind: 'sqlite',
    async ping() {
      db.prepare('SELECT 1').get();
    },
    async write(requests) {
      return writeAll(requests);
    },
    async history(name, since, limit, maxBytes = Infinity) {
      // A channel exists from its first subscribe or publish: a subscriber always learns its
      // epoch, so a later reset of the channel (a restored backup) can never pass unnoticed.
      const channel = q.channel.get(name) ?? ensureChannel(name);
      const epoch = channel.epoch;
      if (since === undefined) return { epoch, head: channel.head, events: [], reset: false, from: channel.head };
      const epochChanged = since.epoch !== undefined && since.epoch !== '' && since.epoch !== epoch;
      // Missed events are gone when the client's offset is behind what was pruned, or ahead of
      // the head (the history was lost or reset under the same name).
      const reset = epochChanged || since.offset < channel.pruned_through || since.offset > channel.head;
      // After a reset the events still retained are delivered: a reset reports what was lost, no more.
      const from = reset ? channel.pruned_through : since.offset;
      // Stop at the byte budget (always one event, so that the reader moves on).
      const rows: { offset: number; data: string; created_at: number; publisher: string | null }[] = [];
      let bytes = 0;
      for (const row of q.eventsAfter.iterate(name, from, limit)) {
        rows.push(row);
        bytes += row.data.length;
        if (bytes >= maxBytes) break;
      }
      return {
        epoch,
        head: channel.head,
        reset,
        from,
        events: rows.map((r) => ({ offset: r.offset, data: r.data, createdAt: r.created_at, publisher: r.publisher })),
      };
    },
    async document(doc, since, epoch) {
      const version = q.docVersion.get(doc)?.version ?? 0;
      const docsEpoch = q.docsEpoch.get()?.value ?? '';
      // A client with nothing, ahead of the server, or from another epoch (a restored backup) gets everything.
      // …or behind the tombstones still kept (it could miss a deletion).
      const tombstonesThrough = q.tombstonesThrough.get(doc)?.through ?? 0;
      const full = since === undefined || since > version || since < tombstonesThrough || (epoch !== undefined && epoch !== docsEpoch);
      const keys: Record<string, StoredKey> = {};
      for (const row of q.docKeysAfter.all(doc, full ? 0 : since)) {
        if (row.value === null) {
          if (!full) keys[row.key] = { version: row.version, deleted: true };
        } else keys[row.key] = { version: row.version, value: row.value };
      }
      const change: DocChange = { doc, version, keys };
      return { ...change, full, epoch: docsEpoch };
    },
    async revoke(user, through) {
      q.revoke.run(user, through);
    },
    async revokedThrough(user) {
      return q.revokedThrough.get(user)?.through;
    },
    async handshake(clientId, user, firstSeq) {
      return resync(clientId, user, firstSeq);
    },
    async positions(channels, docs) {
      return {
        channels: new Map(channels.map((name) => [name, q.channel.get(name)?.head ?? 0])),
        docs: new Map(docs.map((name) => [name, q.docVersion.get(name)?.version ?? 0])),
      };
    },
    async prune(now = Date.now()) {
      return pruneOld(now);
    },
    async close() {
      db.close();
    },
  };
}

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new Error(`the events DB has schema version ${version}, newer than this server knows (${MIGRATIONS.length}); upgrade the server`);
  }
  db.transaction(() => {
    for (let i = version; i < MIGRATIONS.length; i++) db.exec(MIGRATIONS[i]!);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  })();
}
