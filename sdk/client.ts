/**
 * The tab side: a thin proxy to the SharedWorker that owns the socket.
 */
import * as Comlink from 'comlink';
import { createStore } from 'zustand/vanilla';
import { readonly, type ReadonlyStore } from './readonly-store.js';
import { TetherError } from '../protocol/errors.js';
import { CHANNEL_NAME, MAX_WRITE_BATCH } from '../protocol/constants.js';
import type { Publisher } from '../protocol/shapes.js';
import type { ChannelDelivery, HostMode, Outcome, PendingWrite, Status, TabApi, WorkerApi } from '../worker/api.js';
import { resolveOptions, type ConnectMode, type ConnectOptions } from './options.js';
import { createDocStore, type DocStore } from './documents.js';
import { createPresenceStore, type PresenceStore } from './presence.js';
import { createInspector, type InspectorStore } from './inspector.js';

export interface RpcCallOptions {
  /** Reject with `timeout` if no answer arrives in time. @default the client's `timeoutMs` */
  timeoutMs?: number;
}

/** What a subscriber learns about each event. */
export interface EventMeta {
  channel: string;
  /** The event's offset in its channel: increasing by one, never repeated. */
  offset: number;
  /**
   * Who published it, as the server verified: `{ user }` (the publisher's token `sub`; null for
   * an anonymous development client) or `{ backend: true }` (your backend, through the HTTP API —
   * no browser can claim this). Undefined for events stored by servers before 0.2.
   */
  publisher?: Publisher;
}

export interface SubscribeOptions {
  /**
   * Events up to `offset` were missed and cannot be recovered: the server's history no longer
   * reaches back that far (retention), or it was reset. Reload what you show from your backend.
   */
  onReset?: (info: { channel: string; epoch: string; offset: number }) => void;
  /** The subscription is live on the server (after every reconnect too); events after `offset` follow. */
  onSubscribed?: (info: { channel: string; offset: number }) => void;
  /** The subscription was refused (`forbidden`, `limit_exceeded`…). Default: logged to the console. */
  onError?: (error: TetherError) => void;
}

/** The answer of `navigator.storage.persist()`, asked once per page. */
export type Persistence = 'persisted' | 'best-effort' | 'unsupported';

export interface TetherClient {
  /** Connection status, as a read-only zustand store: `client.status.getState().connection`. */
  readonly status: ReadonlyStore<Status>;
  readonly rpc: {
    /**
     * Calls a procedure on the server. Rejects with a `TetherError` whose `code` is
     * `offline`, `connection_lost`, `timeout`, `not_found`, `forbidden`, `invalid_argument`,
     * `unauthorized`, `unavailable` or `internal`.
     */
    call<T = unknown>(method: string, args?: unknown[], options?: RpcCallOptions): Promise<T>;
  };
  readonly pubsub: {
    /**
     * Publishes `data` (any JSON value) on `channel`. The event is stored in this browser's
     * outbox before anything else happens; the promise resolves with its channel offset once the
     * server stored it — offline that waits for the network, across reloads it is resent
     * (exactly once). Rejects with `forbidden`, `message_too_big` or `quota_exceeded`.
     */
    publish(channel: string, data: unknown): Promise<{ offset: number | null }>;
    /**
     * Calls `onEvent` for every event of `channel`, in order, once — including those missed
     * while offline or reloading. Returns the function that unsubscribes.
     */
    subscribe<T = unknown>(channel: string, onEvent: (data: T, meta: EventMeta) => void, options?: SubscribeOptions): () => void;
    /** The writes of this user the server has not acknowledged yet, oldest first (they survive reloads). */
    pending(): Promise<PendingWrite[]>;
  };
  readonly state: {
    /**
     * The shared document `name`: a zustand store of its local view (the confirmed state with
     * this client's pending transactions on top), with `transact`. One store per name per tab.
     */
    doc<T extends Record<string, unknown> = Record<string, unknown>>(name: string): DocStore<T>;
  };
  /**
   * Joins `channel`'s presence from this tab: a read-only zustand store of who is there — one
   * member per person (per browser in development mode) with their tabs and browsers, and the
   * state they set — with `set(state)` for yours and `leave()`. Needs the channel's subscribe
   * grant (else the store's `error` is `forbidden`). Not durable: it is never queued offline.
   */
  presence(channel: string): PresenceStore;
  /**
   * What the worker holds for this server — connection, outbox, subscriptions, documents,
   * presence, its last log lines — as a read-only store kept current (at most every 250 ms).
   * Null until the first snapshot (and for good with an older worker: a console warning says so).
   * `close()` it when done; `mountInspector` (`tether/inspector`) renders it.
   */
  inspect(): InspectorStore;
  /** Whether the browser agreed to keep this origin's storage under pressure (asked at connect). */
  readonly persistence: Promise<Persistence>;
  /** Detaches this tab from the worker; other tabs keep their connection. */
  close(): void;
}

/** A tab's position on a channel, in sessionStorage (none where it is unavailable: a sandboxed frame, a full quota). */
function tabPositions(url: string, channel: string) {
  const key = `tether:position:${url}:${channel}`;
  const attempt = <T>(run: (storage: Storage) => T): T | undefined => {
    try {
      return run(sessionStorage);
    } catch {
      return undefined;
    }
  };
  return {
    read: (): { offset: number; epoch: string } | undefined => {
      const saved = attempt((storage) => JSON.parse(storage.getItem(key) ?? 'null') as { offset?: unknown; epoch?: unknown } | null);
      return saved && typeof saved.offset === 'number' && typeof saved.epoch === 'string' ? { offset: saved.offset, epoch: saved.epoch } : undefined;
    },
    write: (position: { offset: number; epoch: string }) => attempt((storage) => storage.setItem(key, JSON.stringify(position))),
    clear: () => attempt((storage) => storage.removeItem(key)),
  };
}

/**
 * Starts the worker script: as the origin's SharedWorker, or — where there is none, or it cannot
 * start, or `mode` says so — as this tab's dedicated Worker, which joins the leader election.
 */
function startWorker(url: string, mode: ConnectMode): { endpoint: Comlink.Endpoint; mode: HostMode; close: () => void } {
  const unavailable = (what: string, cause: unknown) =>
    new TetherError(
      'worker_unavailable',
      `could not start the ${what} at ${url} (${String(cause)}); ` +
        'the worker script must be same-origin with the page: host tether-worker.js yourself and pass workerUrl',
    );
  let sharedFailure: unknown;
  if (mode !== 'leader-election') {
    if (typeof SharedWorker === 'function') {
      try {
        const shared = new SharedWorker(url, { name: 'tether' });
        return { endpoint: shared.port, mode: 'shared-worker', close: () => shared.port.close() };
      } catch (cause) {
        sharedFailure = cause;
      }
    } else sharedFailure = new Error('this browser has no SharedWorker');
    if (mode === 'shared-worker') throw unavailable('SharedWorker', sharedFailure);
  }
  try {
    const dedicated = new Worker(url, { name: 'tether' });
    return { endpoint: dedicated, mode: 'follower', close: () => dedicated.terminate() };
  } catch (cause) {
    throw unavailable(sharedFailure === undefined ? 'Worker' : `SharedWorker (${String(sharedFailure)}) nor a Worker`, cause);
  }
}

function randomId(): string {
  return crypto.randomUUID();
}

export function createClient(options: ConnectOptions, defaultWorkerUrl: string | undefined): TetherClient {
  const resolved = resolveOptions(options, defaultWorkerUrl);
  const worker = startWorker(resolved.workerUrl, resolved.mode);
  const status = createStore<Status>()(() => ({ connection: 'connecting', pending: 0, lastSyncAt: null, error: null, mode: worker.mode, transport: null }));
  const api = Comlink.wrap<WorkerApi>(worker.endpoint);
  // A frozen (or cached) leader tab hands the connection over first; it can run again once back.
  const host = api as unknown as { lifecycle(state: 'frozen' | 'active'): Promise<void> };
  const lifecycle = (state: 'frozen' | 'active') => () => void host.lifecycle(state).catch(() => {});
  const frozen = lifecycle('frozen');
  const active = lifecycle('active');
  if (worker.mode !== 'shared-worker' && typeof document !== 'undefined') {
    document.addEventListener('freeze', frozen);
    document.addEventListener('resume', active);
    addEventListener('pagehide', frozen);
    addEventListener('pageshow', active);
  }
  const tabId = randomId();
  let closed = false;
  let releaseLock: () => void = () => {};
  /** The worker's TabApi version (known once attached). */
  let apiVersion = 1;
  /** This tab's API in the worker, once attached. */
  let attachedTab: Comlink.Remote<TabApi> | undefined;
  /** Publishes handed to the worker (version 2), by id, until it reports how they ended. */
  const waitingPublishes = new Map<number, { resolve: (value: { offset: number | null }) => void; reject: (error: unknown) => void }>();
  let publishes = 0;
  const published = (settled: [number, Outcome<{ offset: number | null }>][]) => {
    for (const [id, outcome] of settled) {
      const waiting = waitingPublishes.get(id);
      waitingPublishes.delete(id);
      if (outcome.ok) waiting?.resolve(outcome.value);
      else waiting?.reject(TetherError.from(outcome.error));
    }
  };

  // Hold a Web Lock for the tab's lifetime; the worker waits on it to notice the tab is gone.
  const lockName = `tether-tab-${tabId}`;
  const attached: Promise<Comlink.Remote<TabApi>> = new Promise<void>((ready, fail) => {
    navigator.locks
      .request(lockName, () => {
        ready();
        return new Promise<void>((release) => (releaseLock = release));
      })
      .catch(fail);
  }).then(async () => {
    // An older worker still running (a deploy) reports no mode: it is a SharedWorker.
    // A status the worker pushed is newer than the answer to the `status()` asked below, which may
    // have been taken before (say, before the user's outbox was loaded): that answer must not
    // overwrite it, and the worker never sends an unchanged status again.
    let pushed = false;
    const onStatus = Comlink.proxy((next: Status) => {
      pushed = true;
      status.setState({ ...next, mode: next.mode ?? 'shared-worker', transport: next.transport ?? (next.connection === 'online' ? 'websocket' : null) }, true);
    });
    const registration = { tabId, lockName, url: resolved.url, ...(resolved.transports ? { transports: resolved.transports } : {}) };
    const getToken = resolved.token ? Comlink.proxy(resolved.token) : undefined;
    // A worker of an older SDK ignores the last argument (and is never sent publishMany).
    const tab = await api.attach(registration, onStatus, getToken, Comlink.proxy(published));
    // A worker of an older SDK may still be running (a deploy while tabs are open): it has no apiVersion.
    const [initial, version] = await Promise.all([tab.status(), tab.apiVersion().then((v) => v, () => 1)]);
    apiVersion = version;
    attachedTab = tab;
    if (!closed && !pushed) status.setState({ ...initial, mode: initial.mode ?? 'shared-worker', transport: initial.transport ?? (initial.connection === 'online' ? 'websocket' : null) }, true);
    return tab;
  });
  attached.catch(() => {}); // surfaced through rpc.call

  async function call<T>(method: string, args: unknown[] = [], callOptions: RpcCallOptions = {}): Promise<T> {
    if (closed) throw new TetherError('closed', 'the client was closed');
    if (typeof method !== 'string' || method === '') throw new TypeError('rpc.call(method): method must be a non-empty string');
    if (!Array.isArray(args)) throw new TypeError('rpc.call(method, args): args must be an array');
    const timeoutMs = callOptions.timeoutMs ?? resolved.timeoutMs;
    const tab = await attached;
    return (await settle(tab.call(method, args, { timeoutMs }))) as T;
  }

  async function settle<T>(outcome: Promise<Outcome<T>>): Promise<T> {
    const result = await outcome;
    if (!result.ok) throw TetherError.from(result.error);
    return result.value;
  }

  function checkChannel(where: string, channel: unknown): asserts channel is string {
    if (typeof channel !== 'string' || !CHANNEL_NAME.test(channel)) {
      throw new TypeError(`${where}: name ${JSON.stringify(channel)} must be 1–200 letters, digits, _ . : @ / - (no *)`);
    }
  }

  function publish(channel: string, data: unknown): Promise<{ offset: number | null }> {
    let item: { channel: string; data: unknown };
    try {
      item = checkedPublish(channel, data);
    } catch (error) {
      return Promise.reject(error); // bad arguments reject, as they always did
    }
    // Attached: handed on now, so that writes reach the worker in the order they were made
    // (a transaction right after this publish is posted at once too).
    if (attachedTab) return send(attachedTab, item);
    return attached.then((tab) => send(tab, item));
  }

  function checkedPublish(channel: string, data: unknown): { channel: string; data: unknown } {
    if (closed) throw new TetherError('closed', 'the client was closed');
    checkChannel('pubsub.publish', channel);
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (cause) {
      throw new TypeError(`pubsub.publish: data must be JSON (${String(cause)})`);
    }
    if (json === undefined) throw new TypeError('pubsub.publish: data must be a JSON value, not undefined or a function');
    // The worker receives what JSON would keep (no Dates, Maps or class instances surprises).
    return { channel, data: JSON.parse(json) as unknown };
  }

  function send(tab: Comlink.Remote<TabApi>, item: { channel: string; data: unknown }): Promise<{ offset: number | null }> {
    if (apiVersion < 2) return settle(tab.publish(item.channel, item.data));
    return new Promise((resolve, reject) => {
      const id = ++publishes;
      waitingPublishes.set(id, { resolve, reject });
      if (publishing.length === 0) queueMicrotask(() => flushPublishes(tab));
      publishing.push({ id, ...item });
    });
  }

  /**
   * The publishes made in one task go to the worker in one message, in order: a burst is stored
   * in one IndexedDB transaction and sent in few frames, instead of one round trip per publish.
   * Each settles on its own, when the worker reports it (`onPublished`).
   */
  let publishing: { id: number; channel: string; data: unknown }[] = [];
  function flushPublishes(tab: Comlink.Remote<TabApi> | undefined = attachedTab): void {
    if (!tab || publishing.length === 0) return;
    const queued = publishing;
    publishing = [];
    for (let start = 0; start < queued.length; start += MAX_WRITE_BATCH) {
      const batch = queued.slice(start, start + MAX_WRITE_BATCH);
      tab.publishMany(batch).catch((error: unknown) => {
        for (const { id } of batch) published([[id, { ok: false, error: { code: 'internal', message: `the worker could not take the publish: ${String(error)}` } }]]);
      });
    }
  }

  function subscribe<T>(channel: string, onEvent: (data: T, meta: EventMeta) => void, options: SubscribeOptions = {}): () => void {
    if (closed) throw new TetherError('closed', 'the client was closed');
    checkChannel('pubsub.subscribe', channel);
    if (typeof onEvent !== 'function') throw new TypeError('pubsub.subscribe: onEvent must be a function');
    const id = randomId();
    let active = true;
    // Where this tab left off on the channel, kept in sessionStorage (per tab, survives a reload):
    // a reloaded tab gets what it missed from there, and each event once.
    const positions = tabPositions(resolved.url, channel);
    let position = positions.read();
    // A throwing handler must not cost the events after it: report it and go on.
    const guarded = (what: string, run: () => void) => {
      try {
        run();
      } catch (error) {
        console.error(`[tether] the ${what} handler of ${channel} threw; later events are still delivered:`, error);
      }
    };
    /** Whether `position` moved since it was last written to sessionStorage (once per burst). */
    let moved = false;
    const receive = (delivery: ChannelDelivery) => {
      if (!active) return;
      if (delivery.kind === 'event') {
        if (position && delivery.offset <= position.offset) return; // this tab has it already
        if (position) {
          position = { offset: delivery.offset, epoch: position.epoch };
          moved = true;
        }
        const meta: EventMeta = { channel: delivery.channel, offset: delivery.offset, ...(delivery.publisher ? { publisher: delivery.publisher } : {}) };
        guarded('event', () => onEvent(delivery.data as T, meta));
      } else if (delivery.kind === 'subscribed') {
        if (!position || position.epoch !== delivery.epoch) positions.write((position = { offset: delivery.offset, epoch: delivery.epoch }));
        guarded('onSubscribed', () => options.onSubscribed?.({ channel: delivery.channel, offset: delivery.offset }));
      } else if (delivery.kind === 'reset') {
        positions.write((position = { offset: delivery.offset, epoch: delivery.epoch }));
        const info = { channel: delivery.channel, epoch: delivery.epoch, offset: delivery.offset };
        // A gap is never silent: without onReset, the console says events were missed.
        if (options.onReset) guarded('onReset', () => options.onReset!(info));
        else console.warn(`[tether] ${channel}: events up to offset ${delivery.offset} were missed and cannot be recovered (history retention or a restored server); pass onReset to reload what you show`);
      } else {
        const error = TetherError.from(delivery);
        if (options.onError) options.onError(error);
        else console.error(`[tether] subscription to ${channel} refused: ${error.code}: ${error.message}`);
      }
    };
    const persist = () => {
      if (moved && active && position) positions.write(position);
      moved = false;
    };
    const since = position;
    const subscribed = attached.then((tab) => {
      if (apiVersion >= 2) {
        const listener = Comlink.proxy((deliveries: ChannelDelivery[]) => {
          for (const delivery of deliveries) receive(delivery);
          persist();
        });
        return settle(tab.subscribe(id, channel, listener, since, true));
      }
      const listener = Comlink.proxy((delivery: ChannelDelivery) => {
        receive(delivery);
        persist();
      });
      return settle(since ? tab.subscribe(id, channel, listener, since) : tab.subscribe(id, channel, listener));
    });
    subscribed.catch((error: unknown) => {
      const failure = error instanceof TetherError ? error : new TetherError('internal', String(error));
      if (options.onError) options.onError(failure);
      else console.error(`[tether] could not subscribe to ${channel}: ${failure.message}`);
    });
    return () => {
      if (!active) return;
      active = false;
      positions.clear(); // unsubscribed on purpose: a later subscribe starts from the present
      void subscribed.then(() => attached.then((tab) => tab.unsubscribe(id)), () => {});
    };
  }

  async function pending(): Promise<PendingWrite[]> {
    if (closed) throw new TetherError('closed', 'the client was closed');
    const tab = await attached;
    return settle(tab.pendingWrites());
  }

  // `persist()` only works from a page (not from the worker that owns the data), so ask here.
  const persistence: Promise<Persistence> =
    typeof navigator.storage?.persist === 'function'
      ? navigator.storage.persist().then((granted) => (granted ? 'persisted' : 'best-effort'), () => 'best-effort' as const)
      : Promise.resolve('unsupported');

  const docs = new Map<string, DocStore<Record<string, unknown>>>();
  /** Transactions numbered by this tab (see TabApi.transact's `local`). */
  let transactions = 0;
  function doc<T extends Record<string, unknown>>(name: string): DocStore<T> {
    if (closed) throw new TetherError('closed', 'the client was closed');
    checkChannel('state.doc', name);
    let store = docs.get(name);
    if (!store) {
      store = createDocStore(name, { attached, settle, connection: status, apiVersion: () => apiVersion, nextLocal: () => ++transactions, flushWrites: () => flushPublishes() }, () => docs.delete(name));
      docs.set(name, store);
    }
    return store as unknown as DocStore<T>;
  }

  const presences = new Set<PresenceStore>();
  function presence(channel: string): PresenceStore {
    if (closed) throw new TetherError('closed', 'the client was closed');
    checkChannel('presence', channel);
    const store: PresenceStore = createPresenceStore(channel, { attached, apiVersion: () => apiVersion }, () => presences.delete(store));
    presences.add(store);
    return store;
  }

  return {
    status: readonly(status),
    rpc: { call },
    pubsub: { publish, subscribe, pending },
    state: { doc },
    presence,
    inspect: createInspector(attached, () => apiVersion, () => closed),
    persistence,
    close() {
      if (closed) return;
      closed = true;
      for (const joined of [...presences]) joined.leave();
      if (typeof document !== 'undefined') {
        document.removeEventListener('freeze', frozen);
        document.removeEventListener('resume', active);
        removeEventListener('pagehide', frozen);
        removeEventListener('pageshow', active);
      }
      void attached
        .then(async (tab) => {
          await tab.detach();
          tab[Comlink.releaseProxy]();
        })
        .finally(() => {
          releaseLock();
          api[Comlink.releaseProxy]();
          worker.close();
        });
    },
  };
}
