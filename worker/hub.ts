/**
 * The worker's registry of tabs and connections. A MessagePort has no close event, so each
 * tab holds a Web Lock for its lifetime and the hub queues for the same lock: when the
 * hub is granted it, the tab is gone (closed, navigated or crashed) and is detached.
 */
import type { CallOptions, Outcome, Registration, Status, StatusListener, TokenProvider, WorkerApi, WorkerStats } from './api.js';
import { ServerConnection } from './connection.js';

export class Hub implements WorkerApi {
  private readonly connections = new Map<string, ServerConnection>();
  private readonly tabUrls = new Map<string, string>();

  async attach(registration: Registration, onStatus: StatusListener, getToken?: TokenProvider): Promise<Status> {
    const { tabId, url, lockName } = registration;
    this.detach(tabId); // a re-attach replaces the old registration
    let connection = this.connections.get(url);
    if (!connection) {
      connection = new ServerConnection(url);
      this.connections.set(url, connection);
    }
    connection.add({ ...registration, onStatus, getToken });
    this.tabUrls.set(tabId, url);
    void navigator.locks.request(lockName, async () => this.detach(tabId));
    return connection.status;
  }

  async call(tabId: string, method: string, args: unknown[], options: CallOptions): Promise<Outcome<unknown>> {
    const connection = this.connectionOf(tabId);
    if (!connection) {
      return { ok: false, error: { code: 'closed', message: 'this tab is not attached (was the client closed?)' } };
    }
    return connection.call(method, args, options);
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
        tabs: c.tabs.size,
        state: c.status.connection,
        pending: c.status.pending,
      })),
    };
  }

  private connectionOf(tabId: string): ServerConnection | undefined {
    const url = this.tabUrls.get(tabId);
    return url === undefined ? undefined : this.connections.get(url);
  }
}
