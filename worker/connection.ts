/**
 * Everything the worker keeps for one server URL: the link, the requests in flight, the
 * outbox sender, the shared subscriptions, and the tabs that use them. The last tab to
 * leave closes it.
 */
import { DEFAULT_MAX_MESSAGE_BYTES } from '../protocol/constants.js';
import { TetherError, type ErrorShape } from '../protocol/errors.js';
import type { ServerMessage } from '../protocol/messages.js';
import type { CallOptions, ChannelListener, Outcome, PendingWrite, Status, Tab } from './api.js';
import { database, type OutboxEntry } from './db.js';
import { clientIdentity, userOfToken, type Identity } from './identity.js';
import { Outbox } from './outbox.js';
import { release } from './release.js';
import { PendingRequests } from './requests.js';
import { ServerLink } from './socket.js';
import { Subscriptions } from './subscriptions.js';

/** How long a tab may take to hand over a token before another tab is asked. */
const TOKEN_TIMEOUT_MS = 3000;
/** Writes sent and not yet acknowledged, at most. */
const SEND_WINDOW = 1000;
/** Wait before resending after the server failed to store a write. */
const RETRY_AFTER_MS = 1000;

interface Writer {
  identity: Identity;
  outbox: Outbox;
  /** Mirror of this identity's outbox, in sequence order. */
  queue: OutboxEntry[];
}

type Waiter = { resolve: (offset: number | null) => void; reject: (error: ErrorShape) => void };

export class ServerConnection {
  readonly tabs = new Map<string, Tab>();
  private readonly requests = new PendingRequests(() => this.publishStatus());
  private readonly link: ServerLink;
  private readonly subscriptions: Subscriptions;
  private settledWaiters: (() => void)[] = [];
  /** Why the server last refused a handshake; cleared once online. */
  private refusal: ErrorShape | undefined;
  private writer: Promise<Writer> | undefined;
  private readonly waiters = new Map<string, Waiter>();
  private lastSent = 0;
  /** Writes of the current user not yet acknowledged (mirrors the writer's queue for `status`). */
  private queuedCount = 0;
  private maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;

  constructor(readonly url: string) {
    this.link = new ServerLink(url, {
      getHandshake: async () => {
        const { token, writer } = this.refreshIdentity();
        return { token: await token, clientId: (await writer).identity.clientId };
      },
      onState: (state) => {
        if (state === 'online') this.refusal = undefined;
        else {
          this.requests.failAll({
            code: 'connection_lost',
            message: 'the connection to the server was lost before the answer arrived; the call may or may not have run',
          });
        }
        for (const wake of this.settledWaiters.splice(0)) wake();
        this.publishStatus();
      },
      onMessage: (message) => void this.receive(message),
      onRefused: (error) => (this.refusal = error),
    });
    this.subscriptions = new Subscriptions(url, database, (message) => this.link.send(message));
  }

  get status(): Status {
    return { connection: this.link.state, pending: this.requests.size + this.queuedCount };
  }

  get channels(): string[] {
    return this.subscriptions.live;
  }

  add(tab: Tab): void {
    this.tabs.set(tab.tabId, tab);
  }

  /** Removes a tab; returns true when no tab uses this connection any more. */
  remove(tabId: string): boolean {
    const tab = this.tabs.get(tabId);
    if (tab) {
      this.tabs.delete(tabId);
      this.subscriptions.removeTab(tabId);
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

  /** Queues a publish durably, sends it when it can, and settles when the server acknowledges it. */
  async publish(channel: string, data: unknown): Promise<Outcome<{ offset: number | null }>> {
    const size = JSON.stringify({ type: 'publish', seq: Number.MAX_SAFE_INTEGER, channel, data }).length;
    if (size > this.maxMessageBytes) {
      return { ok: false, error: { code: 'message_too_big', message: `the event is ${size} bytes; the server accepts at most ${this.maxMessageBytes}` } };
    }
    const writer = await this.currentWriter();
    let entry: OutboxEntry;
    try {
      entry = await writer.outbox.add({ op: 'publish', channel, data });
    } catch (error) {
      return { ok: false, error: error instanceof TetherError ? error.toJSON() : { code: 'internal', message: String(error) } };
    }
    const settled = new Promise<Outcome<{ offset: number | null }>>((resolve) => {
      this.waiters.set(`${entry.clientId}:${entry.seq}`, {
        resolve: (offset) => resolve({ ok: true, value: { offset } }),
        reject: (error) => resolve({ ok: false, error }),
      });
    });
    // If the user changed meanwhile, the write waits in IndexedDB for its own user's token.
    if ((await this.currentWriter()) === writer) {
      writer.queue.push(entry);
      this.queuedCount = writer.queue.length;
      this.publishStatus();
      this.pump(writer);
    }
    return settled;
  }

  async pendingWrites(): Promise<PendingWrite[]> {
    const writer = await this.currentWriter();
    return (await writer.outbox.list()).map(({ seq, op, channel, data, createdAt }) => ({ seq, op, channel, data, createdAt }));
  }

  subscribe(tabId: string, id: string, channel: string, listener: ChannelListener): Promise<void> {
    return this.subscriptions.add(tabId, id, channel, listener);
  }

  unsubscribe(id: string): void {
    this.subscriptions.remove(id);
  }

  close(): void {
    this.link.close();
    this.requests.failAll({ code: 'closed', message: 'the client was closed' });
  }

  private async receive(message: ServerMessage): Promise<void> {
    if (this.subscriptions.handle(message)) return;
    switch (message.type) {
      case 'welcome': {
        this.maxMessageBytes = message.maxMessageBytes;
        const writer = await this.currentWriter();
        // Writes up to lastSeq were applied before (their acks were lost): done.
        while (writer.queue[0] && writer.queue[0].seq <= message.lastSeq) this.acknowledged(writer, writer.queue[0].seq, null);
        this.lastSent = (writer.queue[0]?.seq ?? message.lastSeq + 1) - 1;
        this.pump(writer);
        this.subscriptions.resubscribeAll();
        return;
      }
      case 'result':
        return this.requests.settle(message.id, { ok: true, value: message.value });
      case 'ack':
        return this.acknowledged(await this.currentWriter(), message.seq, message.offset);
      case 'error':
        if (message.id !== undefined) {
          return this.requests.settle(message.id, { ok: false, error: { code: message.code, message: message.message } });
        }
        if (message.seq !== undefined) return this.writeFailed(await this.currentWriter(), message.seq, message);
        return;
      default:
        return;
    }
  }

  /** Sends queued writes in order, keeping at most SEND_WINDOW unacknowledged. */
  private pump(writer: Writer): void {
    if (this.link.state !== 'online') return;
    const first = writer.queue[0]?.seq ?? 0;
    for (const entry of writer.queue) {
      if (entry.seq <= this.lastSent) continue;
      if (entry.seq - first >= SEND_WINDOW) break;
      if (!this.link.send({ type: 'publish', seq: entry.seq, channel: entry.channel, data: entry.data })) break;
      this.lastSent = entry.seq;
    }
  }

  private acknowledged(writer: Writer, seq: number, offset: number | null): void {
    const index = writer.queue.findIndex((e) => e.seq === seq);
    if (index === -1) return; // a second ack of a resent write
    writer.queue.splice(index, 1);
    writer.outbox.remove(seq);
    this.queuedCount = writer.queue.length;
    this.publishStatus();
    const key = `${writer.identity.clientId}:${seq}`;
    this.waiters.get(key)?.resolve(offset);
    this.waiters.delete(key);
    this.pump(writer);
  }

  private writeFailed(writer: Writer, seq: number, error: ErrorShape): void {
    if (error.code === 'out_of_order' || error.code === 'internal') {
      // Resend from the oldest unacknowledged write (after a pause if the server is struggling).
      const resend = () => {
        this.lastSent = (writer.queue[0]?.seq ?? seq) - 1;
        this.pump(writer);
      };
      if (error.code === 'internal') setTimeout(resend, RETRY_AFTER_MS);
      else resend();
      return;
    }
    // A write that can never succeed (forbidden…): the server moved past it; report it to its caller.
    const index = writer.queue.findIndex((e) => e.seq === seq);
    if (index === -1) return;
    writer.queue.splice(index, 1);
    writer.outbox.remove(seq);
    this.queuedCount = writer.queue.length;
    this.publishStatus();
    const key = `${writer.identity.clientId}:${seq}`;
    const waiter = this.waiters.get(key);
    this.waiters.delete(key);
    if (waiter) waiter.reject({ code: error.code, message: error.message });
    else console.warn(`[tether] a queued write to ${this.url} was refused: ${error.code}: ${error.message}`);
  }

  private currentWriter(): Promise<Writer> {
    return (this.writer ??= this.refreshIdentity().writer);
  }

  /**
   * Asks a tab for a token and derives who the writes belong to. When the user changed, the
   * sender switches to that user's outbox; the other user's writes wait for their own token.
   */
  private refreshIdentity(): { token: Promise<string | undefined>; writer: Promise<Writer> } {
    const token = this.token();
    const previous = this.writer;
    const writer = token.then(async (t) => {
      const user = userOfToken(t);
      const current = previous ? await previous.catch(() => undefined) : undefined;
      if (current && current.identity.user === user) return current;
      const db = await database();
      const identity = await clientIdentity(db, this.url, user);
      const outbox = new Outbox(database, this.url, identity);
      const next: Writer = { identity, outbox, queue: await outbox.list() };
      this.queuedCount = next.queue.length;
      this.publishStatus();
      return next;
    });
    this.writer = writer;
    return { token, writer };
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

  private publishStatus(): void {
    const status = this.status;
    // Fire and forget: a tab that died without detaching yet simply never reads it.
    for (const tab of this.tabs.values()) void Promise.resolve(tab.onStatus(status)).catch(() => {});
  }
}
