/**
 * The worker's IndexedDB: the one file that owns its schema and migrations.
 *   clients  — one durable client id (and next write sequence) per server URL and user
 *   outbox   — writes not yet acknowledged by the server; the only queue there is
 *   offsets  — per server URL and channel, the last event offset delivered to the tabs
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';

export interface ClientRecord {
  url: string;
  /** The token's `sub`, or '' for anonymous (IndexedDB keys cannot be null). */
  user: string;
  clientId: string;
  nextSeq: number;
}

export interface OutboxEntry {
  clientId: string;
  seq: number;
  url: string;
  user: string;
  op: 'publish';
  channel: string;
  data: unknown;
  createdAt: number;
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
}

export type Database = IDBPDatabase<TetherDB>;

const DB_NAME = 'tether';
const DB_VERSION = 1;

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
