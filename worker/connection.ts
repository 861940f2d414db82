/**
 * Everything the worker keeps for one server URL: the link, the requests in flight, and
 * the tabs that use it. Tabs share it; the last one to leave closes it.
 */
import * as Comlink from 'comlink';
import type { ErrorShape } from '../protocol/errors.js';
import type { ServerMessage } from '../protocol/messages.js';
import type { CallOptions, Outcome, Status, Tab } from './api.js';
import { PendingRequests } from './requests.js';
import { ServerLink } from './socket.js';

/** How long a tab may take to hand over a token before another tab is asked. */
const TOKEN_TIMEOUT_MS = 3000;

export class ServerConnection {
  readonly tabs = new Map<string, Tab>();
  private readonly requests = new PendingRequests(() => this.publish());
  private readonly link: ServerLink;
  private settledWaiters: (() => void)[] = [];
  /** Why the server last refused a handshake; cleared once online. */
  private refusal: ErrorShape | undefined;

  constructor(readonly url: string) {
    this.link = new ServerLink(url, {
      getToken: () => this.token(),
      onState: (state) => {
        if (state === 'online') this.refusal = undefined;
        if (state !== 'online') {
          this.requests.failAll({
            code: 'connection_lost',
            message: 'the connection to the server was lost before the answer arrived; the call may or may not have run',
          });
        }
        for (const wake of this.settledWaiters.splice(0)) wake();
        this.publish();
      },
      onMessage: (message) => this.receive(message),
      onRefused: (error) => (this.refusal = error),
    });
  }

  get status(): Status {
    return { connection: this.link.state, pending: this.requests.size };
  }

  add(tab: Tab): void {
    this.tabs.set(tab.tabId, tab);
  }

  /** Removes a tab; returns true when no tab uses this connection any more. */
  remove(tabId: string): boolean {
    const tab = this.tabs.get(tabId);
    if (tab) {
      this.tabs.delete(tabId);
      release(tab.onStatus);
      if (tab.getToken) release(tab.getToken);
    }
    return this.tabs.size === 0;
  }

  async call(method: string, args: unknown[], { timeoutMs }: CallOptions): Promise<Outcome<unknown>> {
    const deadline = Date.now() + timeoutMs;
    if (this.link.state === 'connecting') await this.settled(timeoutMs);
    if (this.link.state !== 'online') {
      const error: ErrorShape = this.refusal
        ? { code: this.refusal.code, message: `the server refused the connection: ${this.refusal.message}` }
        : { code: 'offline', message: `not connected to ${this.url}; the call was not sent` };
      return { ok: false, error };
    }
    const { id, outcome } = this.requests.open(Math.max(1, deadline - Date.now()));
    if (!this.link.send({ type: 'rpc', id, method, args })) {
      this.requests.settle(id, { ok: false, error: { code: 'offline', message: 'not connected; the call was not sent' } });
    }
    return outcome;
  }

  close(): void {
    this.link.close();
    this.requests.failAll({ code: 'closed', message: 'the client was closed' });
  }

  private receive(message: ServerMessage): void {
    if (message.type === 'result') {
      this.requests.settle(message.id, { ok: true, value: message.value });
    } else if (message.type === 'error' && message.id !== undefined) {
      this.requests.settle(message.id, { ok: false, error: { code: message.code, message: message.message } });
    }
  }

  /** Resolves when the first connection attempt succeeded or failed, or after `timeoutMs`. */
  private settled(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.settledWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Asks the most recently attached tab that has a token provider; skips a tab that does not answer. */
  private async token(): Promise<string | undefined> {
    const providers = [...this.tabs.values()].reverse().flatMap((tab) => (tab.getToken ? [tab.getToken] : []));
    for (const getToken of providers) {
      const token = await Promise.race([
        getToken(),
        new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), TOKEN_TIMEOUT_MS)),
      ]).catch(() => 'timeout' as const);
      if (token !== 'timeout') return token;
    }
    return undefined;
  }

  private publish(): void {
    const status = this.status;
    // Fire and forget: a tab that died without detaching yet simply never reads it.
    for (const tab of this.tabs.values()) void Promise.resolve(tab.onStatus(status)).catch(() => {});
  }
}

function release(proxy: unknown): void {
  const releasable = proxy as { [Comlink.releaseProxy]?: () => void };
  releasable[Comlink.releaseProxy]?.();
}
