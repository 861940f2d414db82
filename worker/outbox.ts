/**
 * The IndexedDB outbox: every write is stored with strict durability before anything else
 * happens to it. Group commit: while one transaction is being written, the writes that arrive
 * (each tab call is its own task) gather into the next one. A transaction costs about a
 * millisecond on disk whatever it holds, so a burst of writes costs a few transactions.
 */
import { TetherError } from '../protocol/errors.js';
import type { WriteOp } from '../protocol/shapes.js';
import type { Database, OutboxEntry } from './db.js';
import type { Identity } from './identity.js';

export type NewWrite = WriteOp;

interface Waiting {
  write: NewWrite;
  resolve: (entry: OutboxEntry) => void;
  reject: (error: TetherError) => void;
}

export class Outbox {
  private batch: Waiting[] = [];
  private committing = false;
  private deletions: number[] = [];
  /**
   * The highest sequence this outbox numbered or saw. Sequences never go back, even when the
   * browser's storage was cleared under a running worker (the counter is gone then, the server
   * still remembers the client id): reusing 1 would get new writes acknowledged as duplicates.
   */
  private floor = 0;
  /** Acknowledged entries whose deletion is not committed yet: never listed again. */
  private readonly deleting = new Set<number>();

  constructor(
    private readonly db: () => Promise<Database>,
    private readonly url: string,
    private readonly identity: Identity,
  ) {}

  /** Resolves with the stored entry (its `seq` assigned) once it is durably in IndexedDB. */
  add(write: NewWrite): Promise<OutboxEntry> {
    return new Promise((resolve, reject) => {
      this.batch.push({ write, resolve, reject });
      if (!this.committing) {
        this.committing = true;
        queueMicrotask(() => void this.drain());
      }
    });
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

  /** Forgets acknowledged entries; batched, since a lost deletion only means a deduplicated resend. */
  remove(seq: number): void {
    this.deleting.add(seq);
    this.deletions.push(seq);
    if (this.deletions.length === 1) setTimeout(() => void this.commitDeletions(), 0);
  }

  private async drain(): Promise<void> {
    while (this.batch.length > 0) {
      const batch = this.batch;
      this.batch = [];
      await this.commit(batch);
    }
    this.committing = false;
  }

  private async commit(batch: Waiting[]): Promise<void> {
    try {
      const db = await this.db();
      const tx = db.transaction(['clients', 'outbox'], 'readwrite', { durability: 'strict' });
      const clients = tx.objectStore('clients');
      const key: [string, string] = [this.url, this.identity.user];
      const client = (await clients.get(key)) ?? { url: this.url, user: this.identity.user, clientId: this.identity.clientId, nextSeq: 1 };
      client.nextSeq = Math.max(client.nextSeq, this.floor + 1);
      const now = Date.now();
      const entries = batch.map(({ write }): OutboxEntry => ({
        ...write,
        clientId: client.clientId,
        seq: client.nextSeq++,
        url: this.url,
        user: this.identity.user,
        createdAt: now,
      }));
      const outbox = tx.objectStore('outbox');
      await Promise.all([...entries.map((entry) => outbox.put(entry)), clients.put(client), tx.done]);
      this.floor = Math.max(this.floor, client.nextSeq - 1);
      entries.forEach((entry, i) => batch[i]!.resolve(entry));
    } catch (cause) {
      const quota = cause instanceof DOMException && cause.name === 'QuotaExceededError';
      const error = quota
        ? new TetherError('quota_exceeded', 'the browser refused to store the write: storage quota exceeded; nothing was sent')
        : new TetherError('internal', `the write could not be stored in IndexedDB (${String(cause)}); nothing was sent`);
      for (const waiting of batch) waiting.reject(error);
    }
  }

  private async commitDeletions(): Promise<void> {
    const seqs = this.deletions;
    this.deletions = [];
    try {
      const db = await this.db();
      const tx = db.transaction('outbox', 'readwrite');
      await Promise.all([...seqs.map((seq) => tx.store.delete([this.identity.clientId, seq])), tx.done]);
      for (const seq of seqs) this.deleting.delete(seq);
    } catch {
      // Not deleted: the next worker resends them and the server answers them again, no second effect.
    }
  }
}
