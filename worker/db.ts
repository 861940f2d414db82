/**
 * The worker's IndexedDB: the one file that owns its schema and migrations.
 *   clients  — one durable client id (and next write sequence) per server URL and user
 *   outbox   — writes not yet acknowledged by the server; the only queue there is
 *   offsets  — per server URL and channel, the last event offset delivered to the tabs
 *   docs     — per server URL and document, the last confirmed state (and unresolved conflicts)
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';

export interface ClientRecord {
  url: string;
  /** The token's `sub`, or '' for anonymous (IndexedDB keys cannot be null). */
  user: string;
  clientId: string;
  nextSeq: number;
}

/** What a transaction read of a key: its version, or "what my own write `seq` produced". */
export type ReadVersion = number | { seq: number };

/** A queued write, without the fields the outbox assigns. */
export type WriteOp =
  | { op: 'publish'; channel: string; data: unknown }
  /** `null` in writes deletes the key. */
  | { op: 'transact'; doc: string; reads: Record<string, ReadVersion>; writes: Record<string, unknown> };

export type OutboxEntry = WriteOp & {
  clientId: string;
  seq: number;
  url: string;
  user: string;
  createdAt: number;
};

export interface DocConflict {
  /** The rejected transaction's writes, and the state it met. */
  writes: Record<string, unknown>;
  current: Record<string, unknown>;
  at: number;
}

export interface DocRecord {
  url: string;
  doc: string;
  version: number;
  keys: Record<string, { version: number; value: unknown }>;
  conflicts: DocConflict[];
}

export interface OffsetRecord {
  url: string;
  channel: string;
  offset: number;
  epoch: string;
}

export interface TetherDB extends DBSchema {
  clients: { key: [string, string]; value: ClientRecord };
  outbox: { key: [string, number]; value: OutboxEntry };
  offsets: { key: [string, string]; value: OffsetRecord };
  docs: { key: [string, string]; value: DocRecord };
}

export type Database = IDBPDatabase<TetherDB>;

const DB_NAME = 'tether';
const DB_VERSION = 2;

let opening: Promise<Database> | undefined;

/** Opens (once per worker) the database, running migrations keyed on the old version. */
export function database(): Promise<Database> {
  opening ??= openDB<TetherDB>(DB_NAME, DB_VERSION, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) {
        db.createObjectStore('clients', { keyPath: ['url', 'user'] });
        db.createObjectStore('outbox', { keyPath: ['clientId', 'seq'] });
        db.createObjectStore('offsets', { keyPath: ['url', 'channel'] });
      }
      if (oldVersion < 2) {
        db.createObjectStore('docs', { keyPath: ['url', 'doc'] });
      }
    },
    blocking() {
      // A newer worker (a new deploy) needs to upgrade the schema: step aside. The next call
      // opens the database again (and waits for the upgrade) instead of failing for good.
      void opening?.then((db) => db.close());
      opening = undefined;
    },
    terminated() {
      opening = undefined; // the browser closed it (e.g. storage cleared): reopen on next use
    },
  });
  return opening;
}
