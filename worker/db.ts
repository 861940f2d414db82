/**
 * The worker's IndexedDB: the one file that owns its schema and migrations.
 *   clients  — one durable client id (and next write sequence) per server URL and user
 *   outbox   — writes not yet acknowledged by the server; the only queue there is
 *   offsets  — per server URL and channel, the last event offset delivered to the tabs
 *   docs     — per server URL and document, the last confirmed state (and unresolved conflicts)
 *   leader   — which tab's worker leads, where there is no SharedWorker (worker/election.ts)
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { DocConflict, WriteOp } from '../protocol/shapes.js';

export interface ClientRecord {
  url: string;
  /** The token's `sub`, or '' for anonymous (IndexedDB keys cannot be null). */
  user: string;
  clientId: string;
  nextSeq: number;
  /** When a token of this user last worked here: the fallback owner of writes made while tokens fail. */
  lastUsedAt?: number;
}

export type { ReadVersion, WriteOp, DocConflict } from '../protocol/shapes.js';

export type OutboxEntry = WriteOp & {
  clientId: string;
  seq: number;
  url: string;
  user: string;
  createdAt: number;
  /**
   * Who made it (`p:<tab>:<id>` for a publish, `t:<tab>:<n>` for a transaction): a tab that
   * sends it again after its leader tab went away finds it here instead of storing it twice.
   */
  key?: string;
};

export interface DocRecord {
  url: string;
  doc: string;
  version: number;
  /** Confirmed keys; deleted ones as tombstones (`deleted: true`). */
  keys: Record<string, { version: number; value: unknown } | { version: number; deleted: true }>;
  conflicts: DocConflict[];
  /** The server's documents epoch `version` belongs to. */
  epoch?: string;
  /** When it was last saved (documents not used for 30 days are dropped from the cache). */
  at?: number;
}

export interface OffsetRecord {
  url: string;
  channel: string;
  offset: number;
  epoch: string;
}

/** The worker that leads the origin's tabs (key `current`): only it may store writes. */
export interface LeaderRecord {
  id: string;
  /** When it took the lead (a later leader has a later term). */
  term: number;
}

export interface TetherDB extends DBSchema {
  clients: { key: [string, string]; value: ClientRecord };
  outbox: { key: [string, number]; value: OutboxEntry };
  offsets: { key: [string, string]; value: OffsetRecord };
  docs: { key: [string, string]; value: DocRecord };
  leader: { key: string; value: LeaderRecord };
}

export type Database = IDBPDatabase<TetherDB>;

const DB_NAME = 'tether';
const DB_VERSION = 3;

let opening: Promise<Database> | undefined;

/** Opens the database `name`, running migrations keyed on the old version. */
export function openTetherDB(name: string, onLost: () => void = () => {}): Promise<Database> {
  const opened: Promise<Database> = openDB<TetherDB>(name, DB_VERSION, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) {
        db.createObjectStore('clients', { keyPath: ['url', 'user'] });
        db.createObjectStore('outbox', { keyPath: ['clientId', 'seq'] });
        db.createObjectStore('offsets', { keyPath: ['url', 'channel'] });
      }
      if (oldVersion < 2) {
        db.createObjectStore('docs', { keyPath: ['url', 'doc'] });
      }
      if (oldVersion < 3) {
        db.createObjectStore('leader');
      }
    },
    blocking() {
      // A newer worker (a new deploy) needs to upgrade the schema: step aside. The next call
      // opens the database again (and waits for the upgrade) instead of failing for good.
      void opened.then((db) => db.close());
      onLost();
    },
    terminated() {
      onLost(); // the browser closed it (e.g. storage cleared): reopen on next use
    },
  });
  return opened;
}

/** The worker's database, opened once per worker (and again after it was lost). */
export function database(): Promise<Database> {
  opening ??= openTetherDB(DB_NAME, () => (opening = undefined));
  return opening;
}

/**
 * Records that `leader` leads from now on, unless the database already names a leader of a later
 * term (this worker was elected, then replaced before it got here): then false, and nothing
 * changes. A deposed leader that wakes up (a frozen tab) finds the record in the transaction that
 * would store a write, and stores nothing: the write goes to the new leader, never stored twice.
 */
export async function takeLead(db: Database, leader: LeaderRecord): Promise<boolean> {
  const tx = db.transaction('leader', 'readwrite', { durability: 'strict' });
  const current = await tx.store.get('current');
  if (current && current.id !== leader.id && current.term >= leader.term) {
    await tx.done;
    return false;
  }
  await tx.store.put(leader, 'current');
  await tx.done;
  return true;
}
