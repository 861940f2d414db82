/**
 * The worker's registry of tabs and connections. A MessagePort has no close event, so each
 * tab holds a Web Lock for its lifetime and the hub queues for the same lock: when the
 * hub is granted it, the tab is gone (closed, navigated or crashed) and is detached.
 */
import type {
  CallOptions,
  ChannelListener,
  DocListener,
  TransactOutcome,
  Outcome,
  PendingWrite,
  Registration,
  Status,
  StatusListener,
  TokenProvider,
  WorkerApi,
  WorkerStats,
} from './api.js';
import type { ReadVersion } from '../protocol/shapes.js';
import { ServerConnection, type EngineDeps } from './connection.js';

const NOT_ATTACHED = { ok: false, error: { code: 'closed', message: 'this tab is not attached (was the client closed?)' } } as const;

export class Hub implements WorkerApi {
  private readonly connections = new Map<string, ServerConnection>();
  private readonly tabUrls = new Map<string, string>();

  constructor(private readonly deps: EngineDeps) {}

  async attach(registration: Registration, onStatus: StatusListener, getToken?: TokenProvider): Promise<Status> {
    const { tabId, url, lockName } = registration;
    this.detach(tabId); // a re-attach replaces the old registration
    let connection = this.connections.get(url);
    if (!connection) {
      connection = new ServerConnection(url, this.deps);
      this.connections.set(url, connection);
    }
    connection.add({ ...registration, onStatus, getToken });
    this.tabUrls.set(tabId, url);
    void navigator.locks.request(lockName, async () => this.detach(tabId));
    return connection.status(tabId);
  }

  async call(tabId: string, method: string, args: unknown[], options: CallOptions): Promise<Outcome<unknown>> {
    const connection = this.connectionOf(tabId);
    return connection ? connection.call(method, args, options) : NOT_ATTACHED;
  }

  async publish(tabId: string, channel: string, data: unknown): Promise<Outcome<{ offset: number | null }>> {
    const connection = this.connectionOf(tabId);
    return connection ? connection.publish(tabId, channel, data) : NOT_ATTACHED;
  }

  async subscribe(tabId: string, id: string, channel: string, listener: ChannelListener, since?: { offset: number; epoch: string }): Promise<Outcome<null>> {
    const connection = this.connectionOf(tabId);
    if (!connection) return NOT_ATTACHED;
    await connection.subscribe(tabId, id, channel, listener, since);
    return { ok: true, value: null };
  }

  unsubscribe(tabId: string, id: string): void {
    this.connectionOf(tabId)?.unsubscribe(id);
  }

  async pendingWrites(tabId: string): Promise<Outcome<PendingWrite[]>> {
    const connection = this.connectionOf(tabId);
    return connection ? { ok: true, value: await connection.pendingWrites(tabId) } : NOT_ATTACHED;
  }

  async openDoc(tabId: string, id: string, doc: string, listener: DocListener): Promise<Outcome<null>> {
    const connection = this.connectionOf(tabId);
    if (!connection) return NOT_ATTACHED;
    await connection.openDoc(tabId, id, doc, listener);
    return { ok: true, value: null };
  }

  closeDoc(tabId: string, id: string): void {
    this.connectionOf(tabId)?.closeDoc(id);
  }

  async transact(
    tabId: string,
    doc: string,
    reads: Record<string, ReadVersion>,
    writes: Record<string, unknown>,
    final: boolean,
  ): Promise<Outcome<TransactOutcome>> {
    const connection = this.connectionOf(tabId);
    return connection ? connection.transact(tabId, doc, reads, writes, final) : NOT_ATTACHED;
  }

  async clearConflicts(tabId: string, doc: string): Promise<void> {
    await this.connectionOf(tabId)?.clearConflicts(doc);
  }

  detach(tabId: string): void {
    const connection = this.connectionOf(tabId);
    this.tabUrls.delete(tabId);
    if (connection?.remove(tabId)) {
      connection.close();
      this.connections.delete(connection.url);
    }
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
