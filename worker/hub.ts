/**
 * The worker's registry of tabs and connections. A MessagePort has no close event, so each
 * tab holds a Web Lock for its lifetime and the hub queues for the same lock: when the
 * hub is granted it, the tab is gone (closed, navigated or crashed) and is detached.
 */
import * as Comlink from 'comlink';
import { TAB_API_VERSION, type Outcome, type PublishedListener, type Registration, type StatusListener, type TabApi, type TokenProvider, type WorkerApi, type WorkerStats } from './api.js';
import { ServerConnection, type EngineDeps } from './connection.js';

const NOT_ATTACHED = { ok: false, error: { code: 'closed', message: 'this tab is not attached (was the client closed?)' } } as const;

export class Hub implements WorkerApi {
  private readonly connections = new Map<string, ServerConnection>();
  private readonly tabUrls = new Map<string, string>();

  constructor(private readonly deps: EngineDeps) {}

  async attach(registration: Registration, onStatus: StatusListener, getToken?: TokenProvider, onPublished?: PublishedListener): Promise<TabApi & Comlink.ProxyMarked> {
    const { tabId, url, lockName, transports } = registration;
    this.detach(tabId); // a re-attach replaces the old registration
    // One connection per URL: two would share one outbox and client id and send the same writes.
    // The first tab's choice of transports holds until the connection closes.
    let connection = this.connections.get(url);
    if (!connection) {
      connection = new ServerConnection(url, { ...this.deps, ...(transports === undefined ? {} : { transports }) });
      this.connections.set(url, connection);
    } else if (String(connection.transports ?? '') !== String(transports ?? '')) {
      connection.note('warn', `${url}: this tab asked for transports ${JSON.stringify(transports ?? 'default')}, but the connection other tabs opened uses ${JSON.stringify(connection.transports ?? 'default')}; it is kept (one connection per server URL)`);
    }
    connection.add({ ...registration, onStatus, getToken, onPublished });
    this.tabUrls.set(tabId, url);
    void navigator.locks.request(lockName, async () => this.detach(tabId));
    return Comlink.proxy(this.tabApi(tabId));
  }

  /** The API of one tab: each call finds the tab's connection (gone once the tab detached). */
  private tabApi(tabId: string): TabApi {
    const on = <T>(act: (connection: ServerConnection) => Promise<Outcome<T>>): Promise<Outcome<T>> => {
      const connection = this.connectionOf(tabId);
      return connection ? act(connection) : Promise.resolve(NOT_ATTACHED);
    };
    const done = <T>(work: Promise<T>): Promise<Outcome<null>> => work.then(() => ({ ok: true, value: null }));
    return {
      status: () => this.connectionOf(tabId)?.status(tabId) ?? { connection: 'offline', pending: 0, lastSyncAt: null, error: NOT_ATTACHED.error, mode: this.deps.mode?.() ?? 'shared-worker', transport: null },
      call: (method, args, options) => on((c) => c.call(method, args, options)),
      apiVersion: () => TAB_API_VERSION,
      publish: (channel, data) => on((c) => c.publish(tabId, channel, data)),
      publishMany: (publishes) => {
        const connection = this.connectionOf(tabId);
        // The call rejects in the tab, which fails each of these publishes.
        if (!connection) throw new Error(NOT_ATTACHED.error.message);
        connection.publishMany(tabId, publishes);
      },
      subscribe: (id, channel, listener, since, batched) => on((c) => done(c.subscribe(tabId, id, channel, listener, since, batched))),
      unsubscribe: (id) => this.connectionOf(tabId)?.unsubscribe(id),
      pendingWrites: () => on(async (c) => ({ ok: true, value: await c.pendingWrites(tabId) })),
      openDoc: (id, doc, listener) => on((c) => done(c.openDoc(tabId, id, doc, listener))),
      closeDoc: (id) => this.connectionOf(tabId)?.closeDoc(id),
      transact: (doc, reads, writes, final, local) => on((c) => c.transact(tabId, doc, reads, writes, final, local)),
      clearConflicts: async (doc) => this.connectionOf(tabId)?.clearConflicts(doc),
      presenceJoin: (id, channel, listener) => on(async (c) => c.presenceJoin(tabId, id, channel, listener)),
      presenceSet: (id, state) => on(async (c) => c.presenceSet(id, state)),
      presenceLeave: (id) => this.connectionOf(tabId)?.presenceLeave(id),
      inspect: (listener) => on(async (c) => (c.startInspect(tabId, listener), { ok: true, value: null })),
      stopInspect: () => this.connectionOf(tabId)?.stopInspect(tabId),
      detach: () => this.detach(tabId),
    };
  }

  detach(tabId: string): void {
    const connection = this.connectionOf(tabId);
    this.tabUrls.delete(tabId);
    if (connection?.remove(tabId)) {
      connection.close();
      this.connections.delete(connection.url);
    }
  }

  /** Detaches every tab: the connections close (this worker no longer leads, worker/elected-host.ts). */
  close(): void {
    for (const tabId of [...this.tabUrls.keys()]) this.detach(tabId);
  }

  stats(): WorkerStats {
    return {
      tabs: this.tabUrls.size,
      connections: [...this.connections.values()].map((c) => ({
        url: c.url,
        tabs: c.tabCount,
        state: c.status().connection,
        pending: c.status().pending,
        channels: c.channels,
      })),
    };
  }

  private connectionOf(tabId: string): ServerConnection | undefined {
    const url = this.tabUrls.get(tabId);
    return url === undefined ? undefined : this.connections.get(url);
  }
}
