/**
 * The IndexedDB outbox: every write is stored with strict durability before anything else
 * happens to it. Group commit: while one transaction is being written, the writes that arrive
 * (each tab call is its own task) gather into the next one. A transaction costs about a
 * millisecond on disk whatever it holds, so a burst of writes costs a few transactions.
 */
import { TetherError } from '../protocol/errors.js';
import type { ReadVersion, WriteOp } from '../protocol/shapes.js';
import { unwrap } from 'idb';
import type { LeaderRecord, ClientRecord, Database, OutboxEntry } from './db.js';
import type { Identity } from './identity.js';

/**
 * A read of "the value my transaction `local` produced", for a transaction the same tab made just
 * before this one and that had no `seq` yet when this one was made (the tab shows its own
 * transactions before the worker stores them). Resolved to `{ seq }` when stored.
 */
export type LocalRead = { local: string };

type TransactOp = Extract<WriteOp, { op: 'transact' }>;
export type NewWrite = Exclude<WriteOp, TransactOp> | (Omit<TransactOp, 'reads'> & { reads: Record<string, ReadVersion | LocalRead> });

/** How long acknowledged entries wait to be deleted with the next writes before they go alone. */
const DELETION_DELAY_MS = 50;
/** Writes stored in one IndexedDB transaction, at most. */
const MAX_TRANSACTION_WRITES = 500;

/** The result of a plain IndexedDB request. */
function requestResult<T>(request: IDBRequest): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result as T);
    request.onerror = () => reject(request.error);
  });
}

/** Sorted runs of consecutive numbers: [3, 1, 2, 7] → [[1, 3], [7, 7]]. */
function runs(numbers: number[]): [number, number][] {
  const sorted = [...numbers].sort((a, b) => a - b);
  const result: [number, number][] = [];
  for (const n of sorted) {
    const last = result.at(-1);
    if (last && n <= last[1] + 1) last[1] = Math.max(last[1], n);
    else result.push([n, n]);
  }
  return result;
}

/** Local transaction names remembered for later reads, at most (a tab refers back a few at a time). */
const LOCAL_NAMES_KEPT = 10_000;
/** Read by a transaction whose local predecessor was never stored: no write has it, so the read conflicts. */
const NO_SUCH_SEQ = Number.MAX_SAFE_INTEGER;

interface Waiting {
  write: NewWrite;
  /** The name later transactions of the tab read this one by (LocalRead). */
  local?: string | undefined;
  /** OutboxEntry.key. */
  key?: string | undefined;
  resolve: (entry: OutboxEntry) => void;
  reject: (error: TetherError) => void;
}

export class Outbox {
  private batch: Waiting[] = [];
  private committing = false;
  private deletions: number[] = [];
  private deletionTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The highest sequence this outbox numbered or saw. Sequences never go back, even when the
   * browser's storage was cleared under a running worker (the counter is gone then, the server
   * still remembers the client id): reusing 1 would get new writes acknowledged as duplicates.
   */
  private floor = 0;
  /** The client record as this outbox last stored it (undefined: read it first). */
  private stored: ClientRecord | undefined;
  /** Acknowledged entries whose deletion is not committed yet: never listed again. */
  private readonly deleting = new Set<number>();

  constructor(
    private readonly db: () => Promise<Database>,
    private readonly url: string,
    private readonly identity: Identity,
    /** The leader id of this worker where tabs elect one (db.ts `leader`): writes are stored only while it leads. */
    private readonly fence?: string,
  ) {}

  /** Sequences of stored transactions by their local name (see LocalRead), the newest kept. */
  private readonly localSeqs = new Map<string, number>();

  /**
   * Resolves with the stored entry (its `seq` assigned) once it is durably in IndexedDB.
   * `local` names it for later transactions of the same tab that read what it wrote.
   */
  add(write: NewWrite, local?: string, key?: string): Promise<OutboxEntry> {
    return new Promise((resolve, reject) => {
      this.batch.push({ write, local, key, resolve, reject });
      if (!this.committing) {
        this.committing = true;
        queueMicrotask(() => void this.drain());
      }
    });
  }

  /**
   * Names a stored transaction for later local reads: a worker that loads writes another worker
   * stored (a leader tab that went away) resolves its tabs' reads of them too.
   */
  remember(local: string, seq: number): void {
    if (!this.localSeqs.has(local)) this.localSeqs.set(local, seq);
  }

  /** Every entry of this client, in sequence order. */
  async list(): Promise<OutboxEntry[]> {
    const db = await this.db();
    const range = IDBKeyRange.bound([this.identity.clientId, 0], [this.identity.clientId, Infinity]);
    const entries = (await db.getAll('outbox', range)).filter((entry) => !this.deleting.has(entry.seq));
    this.floor = Math.max(this.floor, entries.at(-1)?.seq ?? 0);
    return entries;
  }

  /**
   * The server applied writes up to `lastSeq` for this client id: the next write is numbered
   * after them, even if this browser's counter is older (a restored profile, storage cleared).
   */
  async continueAfter(lastSeq: number): Promise<void> {
    this.floor = Math.max(this.floor, lastSeq);
    this.stored = undefined; // the record may change below
    const db = await this.db();
    const tx = db.transaction('clients', 'readwrite', { durability: 'strict' });
    const key: [string, string] = [this.url, this.identity.user];
    const client = await tx.store.get(key);
    if (!client || client.nextSeq <= lastSeq) {
      await tx.store.put({ url: this.url, user: this.identity.user, clientId: this.identity.clientId, ...client, nextSeq: lastSeq + 1 });
    }
    await tx.done;
  }

  /**
   * The lowest sequence not answered yet: the first stored entry, or the next sequence when
   * none is left. Read in one transaction with the counter, so a write being added at the same
   * time is either seen or numbered after (the in-memory queue could lag behind the database).
   */
  async firstUnanswered(): Promise<number> {
    const db = await this.db();
    const tx = db.transaction(['clients', 'outbox'], 'readonly');
    const range = IDBKeyRange.bound([this.identity.clientId, 0], [this.identity.clientId, Infinity]);
    const [client, keys] = await Promise.all([tx.objectStore('clients').get([this.url, this.identity.user]), tx.objectStore('outbox').getAllKeys(range)]);
    const first = keys.map(([, seq]) => seq).find((seq) => !this.deleting.has(seq));
    return first ?? client?.nextSeq ?? 1;
  }

  /**
   * Forgets an acknowledged entry. Deletions ride along with the next transaction that stores
   * writes, or go in one of their own a little later: a lost deletion only means a deduplicated
   * resend, and every separate transaction on the outbox delays the writes queued behind it.
   */
  remove(seq: number): void {
    this.deleting.add(seq);
    this.deletions.push(seq);
    this.scheduleDeletions();
  }

  private scheduleDeletions(): void {
    this.deletionTimer ??= setTimeout(() => {
      this.deletionTimer = undefined;
      if (this.deletions.length === 0) return;
      if (this.committing) this.scheduleDeletions(); // the running drain takes them, or this timer again
      else void this.commitDeletions();
    }, DELETION_DELAY_MS);
  }

  /** The worker is done with this outbox (its last tab left): the deletions waiting go now. */
  close(): void {
    clearTimeout(this.deletionTimer);
    this.deletionTimer = undefined;
    if (this.deletions.length > 0) void this.commitDeletions();
  }

  /** Range deletes of the acknowledged entries in `seqs`: one per run of consecutive sequences. */
  private deleteIn(store: IDBObjectStore, seqs: number[]): void {
    for (const [first, last] of runs(seqs)) {
      store.delete(first === last ? [this.identity.clientId, first] : IDBKeyRange.bound([this.identity.clientId, first], [this.identity.clientId, last]));
    }
  }

  private async drain(): Promise<void> {
    while (this.batch.length > 0) {
      // Bounded transactions: the first writes of a long burst are stored (and sent) while the
      // rest are still arriving, instead of all waiting for one huge transaction.
      const batch = this.batch.splice(0, MAX_TRANSACTION_WRITES);
      await this.commit(batch);
    }
    this.committing = false;
  }

  private async commit(batch: Waiting[]): Promise<void> {
    const deletions = this.deletions.splice(0);
    try {
      // Numbered from the client record this outbox stored last, checked in the same transaction
      // (no read before the writes: one round trip less per burst). Another worker of the origin
      // (a deploy) may have numbered writes since: then the transaction is undone and numbered
      // again from what is stored.
      let entries = await this.attempt(batch, deletions, this.stored);
      if (!entries) {
        this.stored = undefined;
        entries = await this.attempt(batch, deletions, undefined);
      }
      entries!.forEach((entry, i) => batch[i]!.resolve(entry));
    } catch (cause) {
      this.deletions.push(...deletions); // not deleted with the writes: they go on their own later
      if (this.deletions.length > 0) this.scheduleDeletions();
      const quota = cause instanceof DOMException && cause.name === 'QuotaExceededError';
      const error = cause instanceof TetherError ? cause : quota
        ? new TetherError('quota_exceeded', 'the browser refused to store the write: storage quota exceeded; nothing was sent')
        : new TetherError('internal', `the write could not be stored in IndexedDB (${String(cause)}); nothing was sent`);
      for (const waiting of batch) waiting.reject(error);
    }
  }

  /** One try at storing `batch`; undefined when `guess` turned out stale (nothing was stored). */
  private async attempt(batch: Waiting[], deletions: number[], guess: ClientRecord | undefined): Promise<OutboxEntry[] | undefined> {
    const db = await this.db();
    const tx = db.transaction(this.fence === undefined ? ['clients', 'outbox'] : ['clients', 'outbox', 'leader'], 'readwrite', { durability: 'strict' });
    const clients = unwrap(tx.objectStore('clients'));
    const holder = this.fence === undefined ? undefined : requestResult<LeaderRecord | undefined>(unwrap(tx.objectStore('leader')).get('current'));
    holder?.catch(() => {}); // a failed read aborts the transaction: tx.done reports it
    const key: [string, string] = [this.url, this.identity.user];
    const read = requestResult<ClientRecord | undefined>(clients.get(key));
    read.catch(() => {}); // a failed read aborts the transaction: tx.done reports it
    const client = (guess ? { ...guess } : await read) ?? { url: this.url, user: this.identity.user, clientId: this.identity.clientId, nextSeq: 1 };
    client.nextSeq = Math.max(client.nextSeq, this.floor + 1);
    const now = Date.now();
    // Names resolved in this batch count only once it is stored (a failed one numbered nothing).
    const named = new Map<string, number>();
    const seqOf = (read: ReadVersion | LocalRead): ReadVersion =>
      typeof read === 'object' && 'local' in read ? { seq: named.get(read.local) ?? this.localSeqs.get(read.local) ?? NO_SUCH_SEQ } : read;
    const entries = batch.map(({ write, local, key }): OutboxEntry => {
      const seq = client.nextSeq++;
      const stored: WriteOp = write.op === 'transact' ? { ...write, reads: Object.fromEntries(Object.entries(write.reads).map(([key, read]) => [key, seqOf(read)])) } : write;
      if (local !== undefined) named.set(local, seq);
      return { ...stored, clientId: client.clientId, seq, url: this.url, user: this.identity.user, createdAt: now, ...(key === undefined ? {} : { key }) };
    });
    // Plain requests, no promise per write: a failed one aborts the transaction, and tx.done says so.
    const outbox = unwrap(tx.objectStore('outbox'));
    for (const entry of entries) outbox.put(entry);
    this.deleteIn(outbox, deletions);
    clients.put(client);
    if (holder && (await holder)?.id !== this.fence) {
      tx.abort();
      await tx.done.catch(() => {});
      throw new TetherError('connection_lost', 'this tab no longer holds the connection (another tab took the lead); the write was not stored here');
    }
    if (guess) {
      const current = await read;
      if (current?.clientId !== guess.clientId || current.nextSeq !== guess.nextSeq) {
        tx.abort();
        await tx.done.catch(() => {});
        return undefined;
      }
    }
    await tx.done;
    this.stored = { ...client };
    for (const seq of deletions) this.deleting.delete(seq);
    this.floor = Math.max(this.floor, client.nextSeq - 1);
    for (const [local, seq] of named) this.localSeqs.set(local, seq);
    for (const oldest of this.localSeqs.keys()) {
      if (this.localSeqs.size <= LOCAL_NAMES_KEPT) break;
      this.localSeqs.delete(oldest);
    }
    return entries;
  }

  private async commitDeletions(): Promise<void> {
    const seqs = this.deletions;
    this.deletions = [];
    try {
      const db = await this.db();
      const tx = db.transaction('outbox', 'readwrite');
      this.deleteIn(unwrap(tx.store), seqs);
      await tx.done;
      for (const seq of seqs) this.deleting.delete(seq);
    } catch {
      // Not deleted: the next worker resends them and the server answers them again, no second effect.
    }
  }
}
