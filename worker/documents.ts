/**
 * Shared documents as this client sees them. Per document the worker keeps the confirmed
 * state (from the server, cached in IndexedDB) and computes the view every tab gets: the
 * confirmed state with this client's pending transactions replayed on top, in order.
 */
import type { ClientMessage, Conflict, DocState, KeyState } from '../protocol/messages.js';
import type { DocConflict, DocListener, DocSnapshot, Inspection } from './api.js';
import type { Database, OutboxEntry, ReadVersion } from './db.js';
import { release } from './release.js';

type Transaction = Extract<OutboxEntry, { op: 'transact' }>;

/** Rejected transactions listed per document, at most (the oldest are dropped). */
const MAX_CONFLICTS = 100;
/** Days a cached document is kept without being opened. */
const CACHE_DAYS = 30;

interface Doc {
  listeners: Map<string, { tabId: string; listener: DocListener }>;
  /** The confirmed version: `keys` reflects every change up to it. */
  version: number;
  /**
   * Confirmed keys, deleted ones included (tombstones with their version): a late answer about
   * an older write must not bring a deleted key back.
   */
  keys: Map<string, KeyState>;
  conflicts: DocConflict[];
  /** The server's documents epoch the version belongs to (undefined until known). */
  epoch: string | undefined;
  synced: boolean;
  loaded: Promise<void>;
  /** Per tab, its last transaction number included in the view (DocSnapshot.seen). */
  seen: Map<string, number>;
  /**
   * This client's committed transaction with the highest `seq` (per outbox clientId). The server
   * decides a client's writes in `seq` order, so every earlier one was decided before `version`
   * — but its answer can come later (a `writes` frame is answered after later single writes).
   */
  decided: Map<string, { seq: number; version: number }>;
}

export class Documents {
  private readonly docs = new Map<string, Doc>();

  constructor(
    private readonly url: string,
    private readonly db: () => Promise<Database>,
    private readonly send: (message: ClientMessage) => boolean,
    /** This client's unconfirmed transactions, in sequence order. */
    private readonly pending: () => readonly OutboxEntry[],
  ) {
    void this.pruneCache();
  }

  /**
   * Cached documents not opened for CACHE_DAYS are dropped (the next open fetches the full state
   * again); those listing conflicts are kept, the user has not seen them yet.
   */
  private async pruneCache(): Promise<void> {
    try {
      const db = await this.db();
      const tx = db.transaction('docs', 'readwrite');
      const before = Date.now() - CACHE_DAYS * 24 * 3600 * 1000;
      for (const record of await tx.store.getAll(IDBKeyRange.bound([this.url, ''], [this.url, '\uffff']))) {
        if ((record.at ?? 0) < before && record.conflicts.length === 0) await tx.store.delete([this.url, record.doc]);
      }
      await tx.done;
    } catch {
      // Not pruned this time: the cache is only a cache.
    }
  }

  /** Each open document's state, for the inspector. */
  inspect(): Inspection['documents'] {
    const pending = this.pending();
    return [...this.docs].map(([doc, d]) => ({
      doc,
      version: d.version,
      pending: pending.filter((entry) => entry.op === 'transact' && entry.doc === doc).length,
      conflicts: d.conflicts.length,
      synced: d.synced,
      tabs: new Set([...d.listeners.values()].map((l) => l.tabId)).size,
    }));
  }

  get open(): string[] {
    return [...this.docs.keys()];
  }

  async add(tabId: string, id: string, name: string, listener: DocListener): Promise<void> {
    let doc = this.docs.get(name);
    if (!doc) {
      const created: Doc = { listeners: new Map(), version: 0, keys: new Map(), conflicts: [], epoch: undefined, synced: false, loaded: Promise.resolve(), seen: new Map(), decided: new Map() };
      created.loaded = this.db()
        .then((db) => db.get('docs', [this.url, name]))
        .then((saved) => {
          if (!saved || created.synced) return;
          created.version = saved.version;
          created.keys = new Map(Object.entries(saved.keys));
          created.conflicts = saved.conflicts;
          created.epoch = saved.epoch;
        })
        .catch(() => {});
      this.docs.set(name, (doc = created));
      doc.listeners.set(id, { tabId, listener });
      await doc.loaded;
      if (this.docs.get(name) === doc) this.request(name, doc);
    } else {
      doc.listeners.set(id, { tabId, listener });
      await doc.loaded;
    }
    void Promise.resolve(listener(this.snapshot(name, tabId, doc))).catch(() => {});
  }

  /** The tab's transaction number `local` is in the view now (queued): its next snapshots say so. */
  seen(name: string, tabId: string, local: number): void {
    const doc = this.docs.get(name);
    if (doc && local > (doc.seen.get(tabId) ?? 0)) doc.seen.set(tabId, local);
  }

  remove(id: string): void {
    for (const [name, doc] of this.docs) {
      const entry = doc.listeners.get(id);
      if (!entry) continue;
      doc.listeners.delete(id);
      release(entry.listener);
      if (doc.listeners.size === 0) {
        this.docs.delete(name);
        this.send({ type: 'doc_close', doc: name });
      }
    }
  }

  removeTab(tabId: string): void {
    for (const doc of this.docs.values()) {
      doc.seen.delete(tabId);
      for (const [id, entry] of doc.listeners) if (entry.tabId === tabId) this.remove(id);
    }
  }

  /** After every (re)connect: ask for what changed since the version held. */
  reopenAll(): void {
    for (const [name, doc] of this.docs) {
      doc.synced = false;
      this.request(name, doc);
    }
  }

  /** The snapshot a tab gets, or that a re-run of a transaction starts from. */
  snapshot(name: string, tabId?: string, doc = this.docs.get(name)): DocSnapshot {
    const view: Record<string, unknown> = {};
    const versions: Record<string, ReadVersion> = {};
    for (const [key, state] of doc?.keys ?? []) {
      if ('deleted' in state) continue; // absent: a read records 0, which the server matches to a deleted key
      view[key] = state.value;
      versions[key] = state.version;
    }
    let pending = 0;
    for (const entry of this.pending()) {
      if (entry.op !== 'transact' || entry.doc !== name) continue;
      pending++;
      // Unanswered, but decided before a later transaction of ours that committed: where the
      // confirmed state reaches that point, its writes are in it already (or were rejected) —
      // replayed over it they would take the view back.
      const later = doc?.decided.get(entry.clientId);
      const before = later !== undefined && entry.seq < later.seq ? later.version - 1 : undefined;
      for (const [key, value] of Object.entries(entry.writes)) {
        if (before !== undefined && (doc!.version >= before || (doc!.keys.get(key)?.version ?? -1) >= before)) continue;
        if (value === null) delete view[key];
        else view[key] = value;
        versions[key] = { seq: entry.seq };
      }
    }
    const seen = tabId === undefined ? undefined : doc?.seen.get(tabId);
    return { view, versions, version: doc?.version ?? 0, pending, synced: doc?.synced ?? false, conflicts: doc?.conflicts ?? [], ...(seen === undefined ? {} : { seen }) };
  }

  /** A change in the pending transactions of `name` (queued, confirmed, rejected): tell the tabs. */
  changed(name: string): void {
    const doc = this.docs.get(name);
    if (doc) this.notify(name, doc);
  }

  handle(message: DocState): void {
    const doc = this.docs.get(message.doc);
    if (!doc) return;
    if (message.full) {
      doc.keys = new Map(); // a full state lists no tombstones: none are needed below its version
      doc.decided.clear(); // versions from before it may not compare (another epoch)
    }
    // Key versions only grow: a delta never takes a key back to an older state.
    this.apply(doc, message.keys, !message.full);
    doc.version = message.full ? message.version : Math.max(doc.version, message.version);
    if (message.epoch !== undefined) doc.epoch = message.epoch;
    doc.synced = true;
    this.save(message.doc, doc);
    this.notify(message.doc, doc);
  }

  /**
   * One of this client's transactions committed at `version`: its writes are confirmed now,
   * even if the server's broadcast of them is still on its way (no flicker in between).
   */
  committed(name: string, writes: Record<string, unknown>, version: number, by?: { clientId: string; seq: number }): void {
    const doc = this.docs.get(name);
    if (doc && by && by.seq > (doc.decided.get(by.clientId)?.seq ?? 0)) doc.decided.set(by.clientId, { seq: by.seq, version });
    // The server state held already reflects every change up to doc.version: this one included.
    if (!doc || version <= doc.version) return;
    const keys: Record<string, KeyState> = {};
    for (const [key, value] of Object.entries(writes)) keys[key] = value === null ? { version, deleted: true } : { version, value };
    this.apply(doc, keys, true);
    this.save(name, doc);
  }

  /**
   * A transaction was rejected: the current values it met become confirmed at once (the forced
   * synchronisation), so that running it again starts from them.
   */
  rejected(message: Conflict, transaction: Transaction | undefined, reportable: boolean): void {
    const doc = this.docs.get(message.doc);
    if (doc) {
      this.apply(doc, message.current, true);
      if (reportable && transaction) {
        const current: Record<string, unknown> = {};
        for (const [key, state] of Object.entries(message.current)) current[key] = 'value' in state ? state.value : undefined;
        doc.conflicts = [...doc.conflicts, { writes: transaction.writes, current, at: Date.now() }].slice(-MAX_CONFLICTS);
      }
      this.save(message.doc, doc);
    } else if (reportable && transaction) {
      void this.recordConflict(message, transaction);
    }
  }

  async clearConflicts(name: string): Promise<void> {
    const doc = this.docs.get(name);
    if (doc) {
      doc.conflicts = [];
      this.save(name, doc);
      this.notify(name, doc);
    }
  }

  private apply(doc: Doc, keys: Record<string, KeyState>, onlyNewer = false): void {
    for (const [key, state] of Object.entries(keys)) {
      const held = doc.keys.get(key);
      if (onlyNewer && held && held.version >= state.version) continue;
      doc.keys.set(key, state);
    }
  }

  private request(name: string, doc: Doc): void {
    if (doc.version === 0) this.send({ type: 'doc_open', doc: name });
    else this.send({ type: 'doc_open', doc: name, since: doc.version, ...(doc.epoch === undefined ? {} : { epoch: doc.epoch }) });
  }

  private notify(name: string, doc: Doc): void {
    const snapshot = this.snapshot(name, undefined, doc);
    for (const { listener, tabId } of doc.listeners.values()) {
      const seen = doc.seen.get(tabId);
      void Promise.resolve(listener(seen === undefined ? snapshot : { ...snapshot, seen })).catch(() => {});
    }
  }

  /** The confirmed state survives reloads; relaxed durability: the server has it anyway. */
  private save(name: string, doc: Doc): void {
    const record = {
      url: this.url,
      doc: name,
      version: doc.version,
      keys: Object.fromEntries(doc.keys),
      conflicts: doc.conflicts,
      at: Date.now(),
      ...(doc.epoch === undefined ? {} : { epoch: doc.epoch }),
    };
    void this.db().then((db) => db.put('docs', record)).catch(() => {});
  }

  /** A conflict on a document no tab has open: kept for whoever opens it next. */
  private async recordConflict(message: Conflict, transaction: Transaction): Promise<void> {
    const db = await this.db();
    const saved = (await db.get('docs', [this.url, message.doc])) ?? { url: this.url, doc: message.doc, version: 0, keys: {}, conflicts: [] };
    const current: Record<string, unknown> = {};
    for (const [key, state] of Object.entries(message.current)) current[key] = 'value' in state ? state.value : undefined;
    saved.conflicts = [...saved.conflicts, { writes: transaction.writes, current, at: Date.now() }].slice(-MAX_CONFLICTS);
    await db.put('docs', saved);
  }
}
