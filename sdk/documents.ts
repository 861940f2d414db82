/**
 * Shared documents on the tab side: a zustand store of the document's local view (a plain
 * object), and `transact`, which runs a function over that view, and again over the fresh
 * state when the server rejects it (the seed's DSTM: rejected, synchronisation forced, retried).
 */
import * as Comlink from 'comlink';
import { createStore } from 'zustand/vanilla';
import { readonly, type ReadonlyStore } from './readonly-store.js';
import { TetherError } from '../protocol/errors.js';
import { MAX_DOC_KEY_LENGTH, RESERVED_DOC_KEYS, UNSTORABLE_KEY_MESSAGE, reservedKeyMessage, storableText } from '../protocol/constants.js';
import type { DocConflict, DocSnapshot, Outcome, Status, TabApi, TabReadVersion } from '../worker/api.js';

/** The operations a transaction function gets. Reads are recorded; writes are applied atomically. */
export interface Transaction<T extends Record<string, unknown>> {
  /** The key's value as this transaction sees it (its own writes included); undefined if absent. */
  get<K extends keyof T & string>(key: K): T[K] | undefined;
  /** Sets a key to a JSON value (`null` deletes the key). */
  set<K extends keyof T & string>(key: K, value: T[K]): void;
  delete(key: keyof T & string): void;
}

export interface TransactOptions {
  /**
   * How many times the function runs again after a conflict before `transact` rejects with
   * `conflict`.
   * @default 5
   */
  maxRetries?: number;
}

export interface DocStatus {
  /** The server's state was received on the current connection. */
  synced: boolean;
  /** This client's transactions on the document not confirmed yet. */
  pending: number;
  /** Confirmed version of the document (0 before the first sync). */
  version: number;
  /** Rejected transactions whose function could not run again (their tab was closed). */
  conflicts: DocConflict[];
}

/** A document: a read-only zustand store of its local view (change it with `transact`). */
export interface DocStore<T extends Record<string, unknown>> extends ReadonlyStore<T> {
  readonly name: string;
  readonly status: ReadonlyStore<DocStatus>;
  /**
   * Runs `fn` on the local view and commits its writes as one transaction. It shows in every
   * tab at once and is queued durably (offline too); resolves with `fn`'s return value once the
   * server committed it. When another client changed what `fn` read, `fn` runs again on the
   * fresh state (up to `maxRetries` times), then rejects with `conflict` (and the conflict is
   * listed in `status.conflicts`). `fn` must be
   * synchronous and free of side effects: it may run more than once.
   */
  transact<R>(fn: (tx: Transaction<T>) => R, options?: TransactOptions): Promise<R>;
  /** Forgets the conflicts listed in `status`. */
  clearConflicts(): Promise<void>;
  /** Stops following the document in this tab. */
  close(): void;
}

interface Context {
  /** This tab's API in the worker, once attached. */
  attached: Promise<Comlink.Remote<TabApi>>;
  /** The worker's TabApi version (known once attached). */
  apiVersion: () => number;
  /** The next number for a transaction of this tab (one sequence for all its documents). */
  nextLocal: () => number;
  /** Hands the tab's waiting publishes to the worker now, so that a transaction is stored after them. */
  flushWrites: () => void;
  settle: <T>(outcome: Promise<Outcome<T>>) => Promise<T>;
  /** The client's connection status. */
  connection: ReadonlyStore<Status>;
}

/** Keys are checked here as the protocol checks them, so a bad key fails in the app, not on the wire. */
function checkKey(operation: string, key: unknown): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_DOC_KEY_LENGTH) {
    const got = typeof key === 'string' ? `${key.length} characters` : typeof key;
    throw new TypeError(`transact: ${operation}(key): keys are strings of 1–${MAX_DOC_KEY_LENGTH} characters, got ${got}`);
  }
  if (RESERVED_DOC_KEYS.includes(key)) {
    throw new TypeError(`transact: ${operation}(key): ${reservedKeyMessage(key)}`);
  }
  if (!storableText(key)) throw new TypeError(`transact: ${operation}(key): ${UNSTORABLE_KEY_MESSAGE}`);
}

/** How long a first transaction waits for the server's state before running on the cached one. */
const SYNC_WAIT_MS = 10_000;

export function createDocStore<T extends Record<string, unknown>>(name: string, context: Context, onClose: () => void): DocStore<T> {
  const { attached, settle, connection } = context;
  const store = createStore<T>()(() => ({}) as T);
  const status = createStore<DocStatus>()(() => ({ synced: false, pending: 0, version: 0, conflicts: [] }));
  /** The worker's last snapshot. */
  let latest: DocSnapshot | undefined;
  /** What this tab shows: `latest` with its own transactions the worker has not included yet on top. */
  let shown: { view: Record<string, unknown>; versions: Record<string, TabReadVersion> } = { view: {}, versions: {} };
  /**
   * This tab's transactions applied to its view at once, before the worker stored them, in order.
   * One leaves when a snapshot includes it (`seen`), or when it failed or was rejected.
   */
  let local: { n: number; writes: Record<string, unknown>; committedAt?: number }[] = [];
  let tab: Comlink.Remote<TabApi> | undefined;
  let closed = false;
  let ready!: () => void;
  const first = new Promise<void>((resolve) => (ready = resolve));
  void attached.then((attachedTab) => (tab = attachedTab), () => {});

  const render = () => {
    if (!latest) return;
    const seen = latest.seen ?? 0;
    // Included (seen), or committed and the state holds that version already.
    const version = latest.version;
    local = local.filter((t) => t.n > seen && !(t.committedAt !== undefined && version >= t.committedAt));
    let view = latest.view;
    let versions: Record<string, TabReadVersion> = latest.versions;
    if (local.length > 0) {
      view = { ...view };
      versions = { ...versions };
      for (const t of local) {
        for (const [key, value] of Object.entries(t.writes)) {
          if (value === null) delete view[key];
          else view[key] = value;
          versions[key] = { local: t.n };
        }
      }
    }
    shown = { view, versions };
    store.setState(view as T, true);
    status.setState({ synced: latest.synced, pending: latest.pending + local.length, version: latest.version, conflicts: latest.conflicts }, true);
  };
  const show = (snapshot: DocSnapshot) => {
    // Snapshots and transaction outcomes come on different ports: `seen` never goes back.
    const seen = Math.max(snapshot.seen ?? 0, latest?.seen ?? 0);
    latest = seen > 0 ? { ...snapshot, seen } : snapshot;
    render();
    ready();
  };
  const withdraw = (n: number) => {
    local = local.filter((t) => t.n !== n);
    render();
  };
  const listenerId = crypto.randomUUID();
  const opened = attached.then((attachedTab) => settle(attachedTab.openDoc(listenerId, name, Comlink.proxy(show))));
  opened.catch((error: unknown) => console.error(`[tether] could not open ${name}: ${String(error)}`));

  /**
   * Online, a transaction waits for the server's state, so that what it decides on (even when
   * it ends up writing nothing) is current. Offline it runs on the cached state at once.
   */
  const usableNow = () => latest?.synced === true || connection.getState().connection === 'offline';
  function usable(): Promise<void> {
    if (usableNow()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        offStatus();
        offDoc();
        resolve();
      };
      const check = () => usableNow() && done();
      const timer = setTimeout(done, SYNC_WAIT_MS);
      const offStatus = connection.subscribe(check);
      const offDoc = status.subscribe(check);
    });
  }

  async function transact<R>(fn: (tx: Transaction<T>) => R, { maxRetries = 5 }: TransactOptions = {}): Promise<R> {
    if (closed) throw new TetherError('closed', `the document ${name} was closed`);
    if (typeof fn !== 'function') throw new TypeError('transact(fn): fn must be a function');
    // Ready (the usual case once the document is open): the first run happens now, and its writes
    // are in this tab's view before transact returns — no round trip to the worker first.
    if (!(latest && tab && usableNow())) {
      await opened;
      await first;
      await usable();
    }
    const overlay = context.apiVersion() >= 2;
    for (let run = 1; ; run++) {
      const reads: Record<string, TabReadVersion> = {};
      const writes: Record<string, unknown> = {};
      const { view, versions } = shown;
      const tx: Transaction<T> = {
        get(key) {
          checkKey('get', key);
          if (key in writes) return (writes[key] === null ? undefined : structuredClone(writes[key])) as T[typeof key];
          reads[key] ??= versions[key] ?? 0;
          return structuredClone(view[key]) as T[typeof key] | undefined;
        },
        set(key, value) {
          checkKey('set', key);
          if (value === undefined) throw new TypeError(`transact: set(${key}, undefined) — use delete(${key})`);
          let json: string | undefined;
          try {
            json = JSON.stringify(value);
          } catch (cause) {
            throw new TypeError(`transact: the value of ${key} must be JSON (${String(cause)})`);
          }
          writes[key] = json === undefined ? null : JSON.parse(json);
        },
        delete(key) {
          checkKey('delete', key);
          writes[key] = null;
        },
      };
      const result = fn(tx);
      if (result instanceof Promise) throw new TypeError('transact(fn): fn must be synchronous (it may run again on conflict)');
      if (Object.keys(writes).length === 0) return result; // read-only: nothing to commit
      const final = run > maxRetries;
      let outcome;
      context.flushWrites();
      if (overlay) {
        const n = context.nextLocal();
        local.push({ n, writes });
        render();
        try {
          outcome = await settle(tab!.transact(name, reads, writes, final, n));
        } catch (error) {
          withdraw(n); // never stored: it leaves the view
          throw error;
        }
        // Committed: it stays shown until a snapshot includes it or holds its version (no flicker in between).
        if (!outcome.committed) withdraw(n);
        else {
          const mine = local.find((t) => t.n === n);
          // (No version: an answer too old to keep it; the next snapshot has it anyway.)
          if (mine) mine.committedAt = outcome.version ?? 0;
          render();
        }
      } else {
        // A worker of an older SDK: it shows the transaction in every tab itself.
        outcome = await settle((tab ?? (await attached)).transact(name, reads as Record<string, Exclude<TabReadVersion, { local: number }>>, writes, final));
      }
      if (outcome.committed) return result;
      show(outcome.snapshot); // the forced synchronisation: run again on what the server has
      if (final) {
        throw new TetherError('conflict', `${outcome.message}; gave up after ${run} runs of the transaction`);
      }
    }
  }

  return {
    ...readonly(store),
    name,
    status: readonly(status),
    transact,
    clearConflicts: async () => {
      await opened;
      await (await attached).clearConflicts(name);
    },
    close() {
      if (closed) return;
      closed = true;
      onClose();
      void opened.then(() => attached.then((tab) => tab.closeDoc(listenerId)), () => {});
    },
  };
}
