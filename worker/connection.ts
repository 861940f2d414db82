/**
 * Everything the worker keeps for one server URL: the link, the requests in flight, the
 * outbox sender, the shared subscriptions, and the tabs that use them. The last tab to
 * leave closes it.
 */
import { DEFAULT_MAX_MESSAGE_BYTES } from '../protocol/constants.js';
import { TetherError, type ErrorShape } from '../protocol/errors.js';
import type { ClientMessage, ServerMessage } from '../protocol/messages.js';
import type { CallOptions, ChannelListener, DocListener, Outcome, PendingWrite, Status, Tab, TransactOutcome } from './api.js';
import { database, type OutboxEntry, type ReadVersion, type WriteOp } from './db.js';
import { Documents } from './documents.js';
import { clientIdentity, userOfToken, type Identity } from './identity.js';
import { Outbox } from './outbox.js';
import { release } from './release.js';
import { PendingRequests } from './requests.js';
import { ServerLink } from './socket.js';
import { Subscriptions } from './subscriptions.js';

/** A token asked for at attach may serve the first handshake for this long. */
const UNUSED_TOKEN_MAX_AGE_MS = 10_000;
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

/** How a queued write ended, for whoever waits on it. */
type WriteResult = { ok: true; offset: number | null } | { ok: false; error: ErrorShape } | { conflict: true };
/** Who waits for a write: the tab that made it (its answer is lost if the tab is gone). */
type Waiter = { tabId: string; final: boolean; settle: (result: WriteResult) => void };

export class ServerConnection {
  readonly tabs = new Map<string, Tab>();
  private readonly requests = new PendingRequests(() => this.publishStatus());
  private readonly link: ServerLink;
  private readonly subscriptions: Subscriptions;
  private readonly documents: Documents;
  /** The resolved current writer (for synchronous reads of the pending queue). */
  private active: Writer | undefined;
  private settledWaiters: (() => void)[] = [];
  /** Why the server last refused a handshake; cleared once online. */
  private refusal: ErrorShape | undefined;
  private writer: Promise<Writer> | undefined;
  private readonly waiters = new Map<string, Waiter>();
  private lastSent = 0;
  private maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  private lastSyncAt: number | null = null;
  private unused: { token: Promise<string | undefined>; writer: Promise<Writer>; at: number } | undefined;

  constructor(readonly url: string) {
    this.link = new ServerLink(url, {
      getHandshake: async () => {
        // A token fetched at attach and not used yet serves the first handshake (one ask, not two).
        const fresh = this.unused && Date.now() - this.unused.at < UNUSED_TOKEN_MAX_AGE_MS ? this.unused : undefined;
        this.unused = undefined;
        const { token, writer } = fresh ?? this.refreshIdentity();
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
    this.documents = new Documents(url, database, (message) => this.link.send(message), () => this.active?.queue ?? []);
  }

  get status(): Status {
    return { connection: this.link.state, pending: this.pending, lastSyncAt: this.lastSyncAt };
  }

  /** Calls in flight and the current user's unacknowledged writes. */
  private get pending(): number {
    return this.requests.size + (this.active?.queue.length ?? 0);
  }

  get channels(): string[] {
    return this.subscriptions.live;
  }

  add(tab: Tab): void {
    this.tabs.set(tab.tabId, tab);
    // Load the outbox at once (with the tab's token to know whose it is), so that offline, right
    // after a reload, `pending` and the documents' views already include the queued writes.
    if (!this.writer) {
      this.unused = { ...this.refreshIdentity(), at: Date.now() };
      this.unused.writer.catch(() => {});
    }
  }

  /** Removes a tab; returns true when no tab uses this connection any more. */
  remove(tabId: string): boolean {
    const tab = this.tabs.get(tabId);
    if (tab) {
      this.tabs.delete(tabId);
      this.subscriptions.removeTab(tabId);
      this.documents.removeTab(tabId);
      // Its writes stay queued; how they end is now reported on the document, not to the tab.
      for (const [key, waiter] of this.waiters) if (waiter.tabId === tabId) this.waiters.delete(key);
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
  async publish(tabId: string, channel: string, data: unknown): Promise<Outcome<{ offset: number | null }>> {
    const result = await this.enqueue(tabId, { op: 'publish', channel, data });
    if ('conflict' in result) return { ok: false, error: { code: 'internal', message: 'a publish cannot conflict' } };
    return result.ok ? { ok: true, value: { offset: result.offset } } : result;
  }

  /**
   * Applies a transaction optimistically (every tab sees it at once), queues it durably, and
   * settles when the server committed it — or rejected it: then with the fresh state to run on.
   */
  async transact(
    tabId: string,
    doc: string,
    reads: Record<string, ReadVersion>,
    writes: Record<string, unknown>,
    final: boolean,
  ): Promise<Outcome<TransactOutcome>> {
    const result = await this.enqueue(tabId, { op: 'transact', doc, reads, writes }, final);
    if ('conflict' in result) {
      return { ok: true, value: { committed: false, snapshot: this.documents.snapshot(doc), message: `another client changed ${doc} first` } };
    }
    return result.ok ? { ok: true, value: { committed: true, version: result.offset } } : result;
  }

  /** Stores a write in the outbox, sends it when it can, and resolves with how it ended. */
  private async enqueue(tabId: string, write: WriteOp, final = false): Promise<WriteResult> {
    const size = JSON.stringify({ ...write, type: write.op, seq: Number.MAX_SAFE_INTEGER }).length;
    if (size > this.maxMessageBytes) {
      return { ok: false, error: { code: 'message_too_big', message: `the write is ${size} bytes; the server accepts at most ${this.maxMessageBytes}` } };
    }
    const writer = await this.currentWriter();
    let entry: OutboxEntry;
    try {
      entry = await writer.outbox.add(write);
    } catch (error) {
      return { ok: false, error: error instanceof TetherError ? error.toJSON() : { code: 'internal', message: String(error) } };
    }
    const settled = new Promise<WriteResult>((resolve) => this.waiters.set(`${entry.clientId}:${entry.seq}`, { tabId, final, settle: resolve }));
    // If the user changed meanwhile, the write waits in IndexedDB for its own user's token.
    if ((await this.currentWriter()) === writer) {
      writer.queue.push(entry);
      this.queueChanged(entry);
      this.pump(writer);
    }
    return settled;
  }

  async pendingWrites(): Promise<PendingWrite[]> {
    const writer = await this.currentWriter();
    return (await writer.outbox.list()).map((entry): PendingWrite =>
      entry.op === 'publish'
        ? { seq: entry.seq, createdAt: entry.createdAt, op: 'publish', channel: entry.channel, data: entry.data }
        : { seq: entry.seq, createdAt: entry.createdAt, op: 'transact', doc: entry.doc, writes: entry.writes },
    );
  }

  openDoc(tabId: string, id: string, doc: string, listener: DocListener): Promise<void> {
    return this.documents.add(tabId, id, doc, listener);
  }

  closeDoc(id: string): void {
    this.documents.remove(id);
  }

  clearConflicts(doc: string): Promise<void> {
    return this.documents.clearConflicts(doc);
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
        // Resend everything unacknowledged: the server answers writes it applied before with
        // their first outcome (offset, version or conflict), without applying them again.
        this.lastSent = (writer.queue[0]?.seq ?? 1) - 1;
        this.pump(writer);
        this.subscriptions.resubscribeAll();
        this.documents.reopenAll();
        return;
      }
      case 'doc':
        return this.documents.handle(message);
      case 'conflict': {
        const writer = await this.currentWriter();
        const entry = this.settle(writer, message.seq, { conflict: true }, (canRetry, taken) => {
          this.documents.rejected(message, taken?.op === 'transact' ? taken : undefined, !canRetry);
        });
        if (entry?.op === 'transact') this.documents.changed(entry.doc);
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
      const frame: ClientMessage =
        entry.op === 'publish'
          ? { type: 'publish', seq: entry.seq, channel: entry.channel, data: entry.data }
          : { type: 'transact', seq: entry.seq, doc: entry.doc, reads: entry.reads, writes: entry.writes };
      if (!this.link.send(frame)) break;
      this.lastSent = entry.seq;
    }
  }

  private acknowledged(writer: Writer, seq: number, offset: number | null): void {
    this.settle(writer, seq, { ok: true, offset }, (_, entry) => {
      if (entry.op === 'transact' && offset !== null) this.documents.committed(entry.doc, entry.writes, offset);
    });
    this.pump(writer);
  }

  /**
   * Ends a queued write: out of the queue and the outbox, its waiter told. `before` runs first
   * (with whether the waiter can still act on it), so state it changes is visible to the waiter.
   */
  private settle(
    writer: Writer,
    seq: number,
    result: WriteResult,
    before?: (canRetry: boolean, entry: OutboxEntry) => void,
  ): OutboxEntry | undefined {
    const index = writer.queue.findIndex((e) => e.seq === seq);
    if (index === -1) return undefined; // a second answer to a resent write
    const [entry] = writer.queue.splice(index, 1) as [OutboxEntry];
    writer.outbox.remove(seq);
    const key = `${writer.identity.clientId}:${seq}`;
    const waiter = this.waiters.get(key);
    this.waiters.delete(key);
    // Whoever waits may still act on the outcome (run the transaction again) unless it said this was its last try.
    before?.(waiter !== undefined && !waiter.final, entry);
    this.queueChanged(entry);
    if (waiter) waiter.settle(result);
    return entry;
  }

  private queueChanged(entry: OutboxEntry): void {
    this.publishStatus();
    if (entry.op === 'transact') this.documents.changed(entry.doc);
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
    this.settle(writer, seq, { ok: false, error: { code: error.code, message: error.message } }, (canRetry) => {
      if (!canRetry) console.warn(`[tether] a queued write to ${this.url} was refused: ${error.code}: ${error.message}`);
    });
    this.pump(writer);
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
      this.active = next;
      this.publishStatus();
      for (const doc of this.documents.open) this.documents.changed(doc);
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
    if (this.link.state === 'online' && this.pending === 0) this.lastSyncAt = Date.now();
    const status = this.status;
    // Fire and forget: a tab that died without detaching yet simply never reads it.
    for (const tab of this.tabs.values()) void Promise.resolve(tab.onStatus(status)).catch(() => {});
  }
}
