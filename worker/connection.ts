/**
 * Everything the worker keeps for one server URL, wired together: the link, the calls in
 * flight, the writes (worker/writes.ts), tokens and users (worker/tokens.ts), the shared
 * subscriptions and documents, and the tabs that use them. The last tab to leave closes it.
 * The database and the socket class come in from the host, so the engine runs in a test.
 */
import type { ErrorShape } from '../protocol/errors.js';
import * as v from 'valibot';
import { HistoryPage, type ServerMessage } from '../protocol/messages.js';
import type { ReadVersion } from '../protocol/shapes.js';
import type { LocalRead, NewWrite } from './outbox.js';
import type { HostMode, CallOptions, ChannelBatchListener, ChannelListener, DocListener, InspectListener, Inspection, Outcome, PendingWrite, PresenceListener, Status, Tab, TabReadVersion, TransactOutcome } from './api.js';
import type { Database } from './db.js';
import { Documents } from './documents.js';
import { LogRing, type LogLevel } from './log.js';
import { release } from './release.js';
import { PendingRequests } from './requests.js';
import { Presence } from './presence.js';
import { ServerLink, type WebSocketClass } from './socket.js';
import type { TransportKind } from './transport-choice.js';
import { Subscriptions, type ChannelPosition } from './subscriptions.js';
import { Tokens } from './tokens.js';
import { Writes, type Writer, type WriteResult } from './writes.js';

export interface EngineDeps {
  /** Opens the worker's IndexedDB (worker/db.ts's `database` in a browser, fake-indexeddb in tests). */
  database: () => Promise<Database>;
  /** The WebSocket class. @default the global WebSocket */
  WebSocket?: WebSocketClass;
  /** Where warnings go. @default console.warn */
  warn?: (message: string) => void;
  /** What kind of host runs this engine (reported in every status). @default 'shared-worker' */
  mode?: () => HostMode;
  /**
   * The leader id of an elected tab's engine: its writes are stored only while the database names
   * it the leader (db.ts `takeLead`), so a deposed leader that wakes up stores nothing twice.
   */
  fence?: string;
  /** Which transports the link may use, in order of preference. @default WebSocket, then long polling where it is blocked */
  transports?: readonly TransportKind[];
}

/** Statuses are sent to the tabs at most this often. */
const STATUS_INTERVAL_MS = 16;
/** Inspections are sent to the tabs at most this often… */
const INSPECT_INTERVAL_MS = 250;
/** …and again this often while writes wait (their ages and attempts change without an event). */
const INSPECT_REFRESH_MS = 1000;
/** How long one page of a catch-up may take before it is tried again on the next connection. */
const HISTORY_TIMEOUT_MS = 10_000;

interface TabState {
  tab: Tab;
  /** Whose writes this tab makes; known once its token was asked (or failed). */
  user: Promise<string>;
  resolvedUser: string | undefined;
  /** The status last sent to the tab (unchanged ones are not sent again). */
  lastStatus?: Status;
  /** Outcomes of its publishes waiting for the end of the task, to go to the tab together. */
  published: [number, Outcome<{ offset: number | null }>][];
}

export class ServerConnection {
  private readonly tabs = new Map<string, TabState>();
  private readonly requests = new PendingRequests(() => this.publishStatus());
  private readonly link: ServerLink;
  private readonly writes: Writes;
  private readonly tokens: Tokens;
  private readonly subscriptions: Subscriptions;
  private readonly documents: Documents;
  private readonly presence: Presence;
  /** This connection's member id on presence (from the welcome). */
  private selfId: string | undefined;
  private settledWaiters: (() => void)[] = [];
  private statusTimer: ReturnType<typeof setTimeout> | undefined;
  private statusSentAt = 0;
  /** Why the server last refused a handshake; cleared once online. */
  private refusal: ErrorShape | undefined;
  /** The user whose token the current handshake carried (undefined: none could be had). */
  private handshakeUser: string | undefined;
  /** RPC calls sent and not answered, against the server's limit (from the welcome). */
  private rpcInFlight = 0;
  private rpcLimit = Number.POSITIVE_INFINITY;
  private readonly rpcWaiting: (() => void)[] = [];
  /** Ids of calls sent on this connection and not answered by the server yet. */
  private readonly rpcOutstanding = new Set<number>();
  private lastSyncAt: number | null = null;
  /** Tabs the socket already switched users for (see followNewestUser). */
  private readonly followed = new Set<string>();
  private readonly warn: (message: string) => void;
  private readonly mode: () => HostMode;
  /** The inspector's log of this engine (worker/log.ts). */
  private readonly log = new LogRing(undefined, () => this.inspectChanged());
  /** Per tab, its inspector (`TabApi.inspect`). */
  private readonly inspectors = new Map<string, InspectListener>();
  private inspectTimer: ReturnType<typeof setTimeout> | undefined;
  private inspectRefresh: ReturnType<typeof setTimeout> | undefined;
  private inspectSentAt = 0;
  /** The current connection's welcome (session null while not online). */
  private welcomed: { session: string | null; user: string } | undefined;

  /** The transports this connection may use (undefined: the default). */
  readonly transports: readonly TransportKind[] | undefined;

  constructor(
    readonly url: string,
    deps: EngineDeps,
  ) {
    const { database } = deps;
    this.transports = deps.transports;
    const warn = deps.warn ?? ((message) => console.warn(`[tether] ${message}`));
    this.warn = (message) => {
      this.log.add('warn', message);
      warn(message);
    };
    this.mode = deps.mode ?? (() => 'shared-worker');
    this.tokens = new Tokens(url, database, () => {
      if (this.tokens.error) this.log.add('warn', `token: ${this.tokens.error.message}`);
      else this.log.add('info', 'token: the token function works again');
      this.publishStatus();
    });
    this.link = new ServerLink(
      url,
      {
        getHandshake: async () => {
          const answer = await this.tokens.forHandshake([...this.tabs.values()].map((t) => t.tab));
          // No token, no writes: calls and subscriptions may still work in development mode.
          if (!answer.ok) return { token: undefined, clientId: undefined, firstSeq: undefined, user: undefined };
          const writer = await this.writes.writer(answer.user);
          return { token: answer.token, clientId: writer.identity.clientId, firstSeq: await this.writes.firstSeq(answer.user), user: answer.user };
        },
        busy: () => this.requests.size > 0 || this.writes.busy(),
        quiet: () => this.requests.size === 0,
        onState: (state) => {
          if (state === 'online') this.refusal = undefined;
          else {
            if (this.welcomed) this.welcomed.session = null;
            const why = this.link.lastClose;
            this.link.lastClose = undefined;
            this.log.add(state === 'offline' ? 'warn' : 'info', `${state}${why === undefined ? '' : ` (${why})`}`);
            this.writes.offline();
            this.presence.offline();
            // The server forgets the calls of a closed connection: their slots are free again.
            this.releaseRpcSlots(this.rpcOutstanding.size);
            this.rpcOutstanding.clear();
            this.requests.failAll({
              code: 'connection_lost',
              message: 'the connection to the server was lost before the answer arrived; the call may or may not have run',
            });
          }
          for (const wake of this.settledWaiters.splice(0)) wake();
          this.publishStatus();
        },
        onMessage: (message) => this.receive(message),
        onInvalid: (error) => this.warn(`${url}: ${error.message}`),
        log: (level, message) => this.log.add(level, message),
        onRefused: (error) => {
          this.log.add('error', `the server refused the handshake: ${error.code}: ${error.message}`);
          this.refusal = error;
          this.publishStatus();
        },
      },
      deps.WebSocket,
      deps.transports,
    );
    const send = this.link.send.bind(this.link);
    this.writes = new Writes(url, database, {
      send,
      queueChanged: (user, entry) => {
        this.publishStatus();
        if (entry.op === 'transact' && user === this.viewUser()) this.documents.changed(entry.doc);
      },
      committed: (entry, version) => this.documents.committed(entry.doc, entry.writes, version, entry),
      rejected: (conflict, entry, reportable) => this.documents.rejected(conflict, entry, reportable),
      warn: this.warn,
      log: (level, message) => this.log.add(level, message),
      attached: (tabId) => this.tabs.has(tabId),
    }, deps.fence);
    this.subscriptions = new Subscriptions(url, database, send, (channel, since, limit) => this.history(channel, since, limit));
    this.documents = new Documents(url, database, send, () => this.writes.queueOf(this.viewUser()));
    this.presence = new Presence({ send, selfId: () => this.selfId, changed: () => this.inspectChanged() });
  }

  /** The status as the tab `tabId` sees it: `pending` counts its user's writes. */
  status(tabId?: string): Status {
    const user = tabId === undefined ? this.viewUser() : this.tabs.get(tabId)?.resolvedUser;
    const pending = this.requests.size + this.writes.queueOf(user).length;
    const error = this.tokens.error ?? this.refusal ?? null;
    return { connection: this.link.state, pending, lastSyncAt: this.lastSyncAt, error, mode: this.mode(), transport: this.link.transport };
  }

  get tabCount(): number {
    return this.tabs.size;
  }

  get channels(): string[] {
    return this.subscriptions.live;
  }

  /**
   * Adds a tab. Its user is asked at once (its token), so that offline, right after a reload,
   * its writes are filed under the right user and `pending` and the documents include them.
   */
  add(tab: Tab): void {
    const state: TabState = { tab, user: Promise.resolve(''), resolvedUser: undefined, published: [] };
    this.log.add('info', `tab ${tab.tabId.slice(0, 8)} attached (${this.tabs.size + 1} in all)`);
    state.user = this.tokens.userOfNewTab(tab).then(async (user) => {
      state.resolvedUser = user;
      await this.writes.writer(user).catch(() => undefined); // load its queue for `pending`
      this.followNewestUser();
      for (const doc of this.documents.open) this.documents.changed(doc);
      this.publishStatus();
      return user;
    });
    this.tabs.set(tab.tabId, state);
  }

  /** Removes a tab; returns true when no tab uses this connection any more. */
  remove(tabId: string): boolean {
    const state = this.tabs.get(tabId);
    if (state) {
      this.tabs.delete(tabId);
      this.log.add('info', `tab ${tabId.slice(0, 8)} detached (${this.tabs.size} left)`);
      this.stopInspect(tabId);
      this.subscriptions.removeTab(tabId);
      this.documents.removeTab(tabId);
      this.presence.removeTab(tabId);
      // Its writes stay queued; how they end is now reported on the document, not to the tab.
      this.writes.forgetTab(tabId);
      this.followed.delete(tabId);
      release(state.tab.onStatus);
      if (state.tab.getToken) release(state.tab.getToken);
      if (state.tab.onPublished) release(state.tab.onPublished);
    }
    return this.tabs.size === 0;
  }

  async call(method: string, args: unknown[], { timeoutMs }: CallOptions): Promise<Outcome<unknown>> {
    const deadline = Date.now() + timeoutMs;
    if (this.link.state === 'connecting') await this.settled(timeoutMs);
    const slot = this.link.state === 'online';
    if (slot && !(await this.rpcSlot(deadline))) {
      const message = `no answer within ${timeoutMs} ms: the call waited for a free slot (the server runs ${this.rpcLimit} calls at once per connection) and was not sent`;
      return { ok: false, error: { code: 'timeout', message } };
    }
    if (this.link.state !== 'online') {
      if (slot) this.releaseRpcSlots();
      const error: ErrorShape = this.refusal
        ? { code: this.refusal.code, message: `the server refused the connection: ${this.refusal.message}` }
        : { code: 'offline', message: `not connected to ${this.url}; the call was not sent` };
      return { ok: false, error };
    }
    const { id, outcome } = this.requests.open(Math.max(1, deadline - Date.now()));
    if (!this.link.send({ type: 'rpc', id, method, args })) {
      this.releaseRpcSlots();
      this.requests.settle(id, { ok: false, error: { code: 'offline', message: 'not connected; the call was not sent' } });
    } else {
      // The slot is the server's until it answers (a call that timed out here still runs there).
      this.rpcOutstanding.add(id);
    }
    return outcome;
  }

  /**
   * Takes one of the server's call slots (its in-flight limit, learned at the welcome), waiting
   * for one until `deadline`: an app that fires 100 calls at once gets 100 answers, not
   * `limit_exceeded` for the ones past the limit.
   */
  private async rpcSlot(deadline: number): Promise<boolean> {
    while (this.rpcInFlight >= this.rpcLimit) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.rpcWaiting.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.rpcInFlight++;
    return true;
  }

  private releaseRpcSlots(count = 1): void {
    this.rpcInFlight = Math.max(0, this.rpcInFlight - count);
    // Every waiter checks again (one that timed out meanwhile must not swallow the wake-up).
    for (const wake of this.rpcWaiting.splice(0)) wake();
  }

  /** Queues a publish durably, sends it when it can, and settles when the server answers it. */
  async publish(tabId: string, channel: string, data: unknown, key?: string): Promise<Outcome<{ offset: number | null }>> {
    const result = await this.enqueue(tabId, { op: 'publish', channel, data }, false, key === undefined ? {} : { key });
    if ('conflict' in result) return { ok: false, error: { code: 'internal', message: 'a publish cannot conflict' } };
    return result.ok ? { ok: true, value: { offset: result.offset } } : result;
  }

  /**
   * Several publishes of a tab, in order; each outcome goes to the tab's `onPublished` as soon as
   * it is known (a refusal at once, an acknowledgement when it comes), several per message.
   */
  publishMany(tabId: string, publishes: { id: number; channel: string; data: unknown }[]): void {
    for (const { id, channel, data } of publishes) {
      // Keyed by tab and id: the tab may send it again to the next leader tab (worker/relay.ts).
      void this.publish(tabId, channel, data, `p:${tabId}:${id}`).then((outcome) => this.reportPublished(tabId, id, outcome));
    }
  }

  private reportPublished(tabId: string, id: number, outcome: Outcome<{ offset: number | null }>): void {
    const state = this.tabs.get(tabId);
    if (!state?.tab.onPublished) return; // the tab is gone: nobody to tell
    if (state.published.length === 0) {
      queueMicrotask(() => {
        const settled = state.published;
        state.published = [];
        void Promise.resolve(state.tab.onPublished?.(settled)).catch(() => {});
      });
    }
    state.published.push([id, outcome]);
  }

  /**
   * Applies a transaction optimistically (every tab sees it at once), queues it durably, and
   * settles when the server committed it — or rejected it: then with the fresh state to run on.
   */
  async transact(
    tabId: string,
    doc: string,
    reads: Record<string, TabReadVersion>,
    writes: Record<string, unknown>,
    final: boolean,
    /** The tab's number for it: its snapshots say when they include it (`seen`), later transactions may read what it wrote. */
    local?: number,
  ): Promise<Outcome<TransactOutcome>> {
    // Local names are per tab: `{ local: 3 }` of one tab is not another tab's third transaction.
    const named: Record<string, ReadVersion | LocalRead> = {};
    for (const [key, read] of Object.entries(reads)) named[key] = typeof read === 'object' && 'local' in read ? { local: `${tabId}:${read.local}` } : read;
    const options =
      local === undefined
        ? {}
        : {
            local: `${tabId}:${local}`,
            key: `t:${tabId}:${local}`,
            // The view shows the pending writes of the socket's user only: another user's tab keeps
            // showing its transaction itself until the committed version reaches it.
            onQueued: () => {
              if (this.tabs.get(tabId)?.resolvedUser === this.viewUser()) this.documents.seen(doc, tabId, local);
            },
          };
    const result = await this.enqueue(tabId, { op: 'transact', doc, reads: named, writes }, final, options);
    if ('conflict' in result) {
      return { ok: true, value: { committed: false, snapshot: this.documents.snapshot(doc, tabId), message: `another client changed ${doc} first` } };
    }
    return result.ok ? { ok: true, value: { committed: true, version: result.offset } } : result;
  }

  private async enqueue(tabId: string, write: NewWrite, final = false, options: { local?: string; key?: string; onQueued?: () => void } = {}): Promise<WriteResult> {
    const state = this.tabs.get(tabId);
    if (!state) return { ok: false, error: { code: 'closed', message: 'this tab is not attached (was the client closed?)' } };
    const refused = this.writes.refusal(write); // at once, before waiting for the tab's user
    if (refused) {
      this.log.add('warn', `a ${write.op} to ${write.op === 'publish' ? write.channel : write.doc} was refused before it was queued: ${refused.code}: ${refused.message}`);
      return { ok: false, error: refused };
    }
    return this.writes.enqueue(await state.user, tabId, write, final, options);
  }

  /** The outbox of `user` (for diagnostics and tests). */
  writerOf(user: string): Promise<Writer> {
    return this.writes.writer(user);
  }

  /** The writes of the tab's user that the server has not answered yet, oldest first. */
  async pendingWrites(tabId: string): Promise<PendingWrite[]> {
    const state = this.tabs.get(tabId);
    if (!state) return [];
    const writer = await this.writes.writer(await state.user);
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

  subscribe(tabId: string, id: string, channel: string, listener: ChannelListener, since?: ChannelPosition): Promise<void>;
  subscribe(tabId: string, id: string, channel: string, listener: ChannelListener | ChannelBatchListener, since: ChannelPosition | undefined, batched: boolean | undefined): Promise<void>;
  subscribe(tabId: string, id: string, channel: string, listener: ChannelListener | ChannelBatchListener, since?: ChannelPosition, batched = false): Promise<void> {
    return this.subscriptions.add(tabId, id, channel, listener, since, batched);
  }

  /** One page of a channel's stored events, read from the server (validated like every frame). */
  private async history(channel: string, since: ChannelPosition, limit: number): Promise<Outcome<HistoryPage>> {
    if (this.link.state !== 'online') return { ok: false, error: { code: 'offline', message: 'not connected' } };
    const { id, outcome } = this.requests.open(HISTORY_TIMEOUT_MS);
    if (!this.link.send({ type: 'history', id, channel, since, limit })) {
      this.requests.settle(id, { ok: false, error: { code: 'offline', message: 'not connected; the request was not sent' } });
    }
    const result = await outcome;
    if (!result.ok) return result;
    const page = v.safeParse(HistoryPage, result.value);
    return page.success ? { ok: true, value: page.output } : { ok: false, error: { code: 'invalid_message', message: 'the server answered history with something else' } };
  }

  unsubscribe(id: string): void {
    this.subscriptions.remove(id);
  }

  /** Joins `channel`'s presence from a tab (worker/presence.ts). */
  presenceJoin(tabId: string, id: string, channel: string, listener: PresenceListener): Outcome<null> {
    return this.presence.join(tabId, id, channel, listener);
  }

  presenceSet(id: string, state: unknown): Outcome<null> {
    return this.presence.set(id, state);
  }

  presenceLeave(id: string): void {
    this.presence.leave(id);
  }

  /** A line for the inspector's log (`warn` also goes to the console, as every warning). */
  note(level: LogLevel, message: string): void {
    if (level === 'warn') this.warn(message);
    else this.log.add(level, message);
  }

  /** What this engine holds now, as `client.inspect()` shows it. */
  inspect(): Inspection {
    const status = this.status();
    return {
      at: Date.now(),
      url: this.url,
      mode: status.mode,
      connection: status.connection,
      transport: status.transport,
      user: this.welcomed?.user ?? null,
      clientId: this.writes.clientIdOf(this.handshakeUser ?? this.viewUser()) ?? null,
      session: this.welcomed?.session ?? null,
      lastSyncAt: status.lastSyncAt,
      error: status.error,
      tabs: this.tabs.size,
      outbox: this.writes.inspect(),
      // A channel is live on the current connection only (its flag is reset at the next welcome).
      subscriptions: this.subscriptions.inspect().map((sub) => ({ ...sub, live: sub.live && status.connection === 'online' })),
      documents: this.documents.inspect(),
      presence: this.inspectPresence(),
      log: this.log.list(),
    };
  }

  /** Presence as the inspector shows it: filled in by the presence engine (worker/presence.ts). */
  private inspectPresence(): Inspection['presence'] {
    return this.presence.inspect();
  }

  /** Sends `listener` the inspection now and after changes (at most every INSPECT_INTERVAL_MS); replaces the tab's previous one. */
  startInspect(tabId: string, listener: InspectListener): void {
    this.stopInspect(tabId);
    this.inspectors.set(tabId, listener);
    void Promise.resolve(listener(this.inspect())).catch(() => {});
    this.inspected();
  }

  stopInspect(tabId: string): void {
    const listener = this.inspectors.get(tabId);
    if (!listener) return;
    this.inspectors.delete(tabId);
    release(listener);
  }

  /**
   * Something an inspector shows changed: one snapshot for the whole burst, taken when it is sent
   * (so the last change of a burst is never lost), at most every INSPECT_INTERVAL_MS.
   */
  private inspectChanged(): void {
    if (this.inspectors.size === 0 || this.inspectTimer !== undefined) return;
    const wait = Math.max(0, this.inspectSentAt + INSPECT_INTERVAL_MS - Date.now());
    this.inspectTimer = setTimeout(() => {
      this.inspectTimer = undefined;
      const inspection = this.inspect();
      for (const listener of this.inspectors.values()) void Promise.resolve(listener(inspection)).catch(() => {});
      this.inspected();
    }, wait);
  }

  /** An inspection went out: the next one waits INSPECT_INTERVAL_MS, or INSPECT_REFRESH_MS with nothing new while writes wait. */
  private inspected(): void {
    this.inspectSentAt = Date.now();
    clearTimeout(this.inspectRefresh);
    this.inspectRefresh = this.inspectors.size > 0 && this.writes.busy() ? setTimeout(() => this.inspectChanged(), INSPECT_REFRESH_MS) : undefined;
  }

  close(): void {
    clearTimeout(this.inspectTimer);
    clearTimeout(this.inspectRefresh);
    for (const tabId of [...this.inspectors.keys()]) this.stopInspect(tabId);
    clearTimeout(this.statusTimer);
    this.presence.close();
    this.link.close();
    this.writes.close();
    this.requests.failAll({ code: 'closed', message: 'the client was closed' });
  }

  private receive(message: ServerMessage): void {
    if (message.type === 'reset') this.log.add('warn', `${message.channel}: events up to offset ${message.offset} cannot be recovered (history retention or a reset history; epoch ${message.epoch})`);
    else if (message.type === 'error' && message.channel !== undefined && message.id === undefined && message.seq === undefined) this.log.add('warn', `subscription to ${message.channel} refused: ${message.code}: ${message.message}`);
    if (message.type === 'event' || message.type === 'subscribed' || message.type === 'reset' || message.type === 'doc') this.inspectChanged();
    if (this.subscriptions.handle(message)) return;
    if (this.writes.handle(message)) return;
    if (this.presence.handle(message)) return;
    switch (message.type) {
      case 'welcome': {
        // The user of the hello this welcome answers (never of a handshake abandoned meanwhile).
        this.handshakeUser = this.link.sentUser;
        // As the server keys presence members: the user, else this browser's client id.
        const clientId = this.link.sentClientId;
        this.selfId = message.user ?? (clientId === undefined ? `session:${message.session}` : `client:${clientId}`);
        this.presence.online();
        this.welcomed = { session: message.session, user: message.user ?? '' };
        this.log.add('info', `online over ${this.link.attempted}: session ${message.session}, user ${message.user === null ? '(anonymous)' : message.user}`);
        this.rpcLimit = message.maxRpcInFlight ?? Number.POSITIVE_INFINITY;
        void this.writes.online(this.handshakeUser, message).then(() => this.publishStatus());
        this.followNewestUser();
        this.subscriptions.resubscribeAll();
        this.documents.reopenAll();
        return;
      }
      case 'doc':
        return this.documents.handle(message);
      case 'result':
        if (this.rpcOutstanding.delete(message.id)) this.releaseRpcSlots();
        return this.requests.settle(message.id, { ok: true, value: message.value });
      case 'error':
        if (message.id !== undefined) {
          if (this.rpcOutstanding.delete(message.id)) this.releaseRpcSlots();
          return this.requests.settle(message.id, { ok: false, error: { code: message.code, message: message.message } });
        }
        return;
      default:
        return;
    }
  }

  /**
   * The socket follows the newest tab with a token: when its user is not the one on the socket,
   * reconnect with its token, so the writes of a user who just signed in flow at once. Checked
   * when a tab's user is known and after every welcome (a tab may arrive during a handshake).
   */
  private followNewestUser(): void {
    if (this.link.state !== 'online') return;
    const newest = [...this.tabs.values()].reverse().find((t) => t.tab.getToken !== undefined);
    if (newest?.resolvedUser === undefined || newest.resolvedUser === this.handshakeUser) return;
    // Once per tab: if its token fails, the handshake falls back to an older tab, and must not loop.
    if (this.followed.has(newest.tab.tabId)) return;
    this.followed.add(newest.tab.tabId);
    this.link.reconnect();
  }

  /** Documents show the writes of the socket's user, or offline of the newest tab's user. */
  private viewUser(): string | undefined {
    if (this.handshakeUser !== undefined) return this.handshakeUser;
    return [...this.tabs.values()].reverse().find((t) => t.resolvedUser !== undefined)?.resolvedUser;
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

  /**
   * Tells the tabs the status, once per burst of changes: a stream of writes changes `pending`
   * twice per write, and a message to every tab each time would cost more than the writes.
   */
  private publishStatus(): void {
    this.inspectChanged();
    if (this.statusTimer !== undefined) return;
    // At most one status per animation frame: nobody sees more, and a tab's main thread is not a free queue.
    const wait = Math.max(0, this.statusSentAt + STATUS_INTERVAL_MS - Date.now());
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.statusSentAt = Date.now();
      if (this.link.state === 'online' && this.status().pending === 0) this.lastSyncAt = Date.now();
      for (const [tabId, state] of this.tabs) {
        const status = this.status(tabId);
        const last = state.lastStatus;
        if (last && last.connection === status.connection && last.pending === status.pending && last.lastSyncAt === status.lastSyncAt && last.error === status.error && last.mode === status.mode && last.transport === status.transport) continue;
        state.lastStatus = status;
        // Fire and forget: a tab that died without detaching yet simply never reads it.
        void Promise.resolve(state.tab.onStatus(status)).catch(() => {});
      }
    }, wait);
  }
}
