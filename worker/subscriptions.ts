/**
 * The channels one server connection is subscribed to, shared by every tab: one server
 * subscription per channel however many listeners. The last offset delivered per channel is
 * stored in IndexedDB right after the tabs got the events (deduplicated by offset), so a
 * reconnect, a reload or a new worker resumes after it — no gap; at most a repeat to new tabs
 * when the worker died between delivering and saving.
 */
import { release } from './release.js';
import { HISTORY_PAGE_MAX, type ClientMessage, type HistoryPage, type ServerMessage } from '../protocol/messages.js';
import type { ChannelBatchListener, ChannelDelivery, ChannelListener, Inspection, Outcome } from './api.js';
import type { Database } from './db.js';

interface Listener {
  tabId: string;
  listener: ChannelListener | ChannelBatchListener;
  /** The listener takes arrays of deliveries (one message per burst, not one per event). */
  batched: boolean;
  /** Deliveries waiting for the end of the current task, to go to the listener in one call. */
  outgoing: ChannelDelivery[];
  /** Where this listener's tab left off (a reloaded tab): it catches up from there. */
  since?: ChannelPosition | undefined;
  /** Live deliveries held while this listener catches up; undefined when it is up to date. */
  held?: ChannelDelivery[] | undefined;
  /** The last event offset this listener got (deduplicates the catch-up against live events). */
  delivered?: number;
  /** Its subscription id (a pending retry checks it is still subscribed). */
  id: string;
  /** Pause before the next try of a failed catch-up. */
  retryMs?: number;
}

export interface ChannelPosition {
  offset: number;
  epoch: string;
}

/** Reads stored events of a channel from the server (the `history` request). */
export type FetchHistory = (channel: string, since: ChannelPosition, limit: number) => Promise<Outcome<HistoryPage>>;

interface Channel {
  listeners: Map<string, Listener>;
  /** Last offset delivered (undefined until the server told the head of a new subscription). */
  offset: number | undefined;
  epoch: string | undefined;
  /** The server confirmed the subscription on the current connection. */
  live: boolean;
  /** Reading the saved offset; until then the channel must not be subscribed from the head. */
  loading: boolean;
  loaded: Promise<void>;
}

type Incoming = Extract<ServerMessage, { type: 'event' | 'reset' | 'subscribed' }>;

/** Deliveries this soon after the last ones are part of a stream, gathered for a moment. */
const STREAM_GAP_MS = 2;

export class Subscriptions {
  private readonly channels = new Map<string, Channel>();
  /** Listeners with deliveries waiting for the end of the task (see `call`). */
  private readonly flushing = new Set<Listener>();
  /** Channels whose delivered offset is not saved yet; one save runs at a time. */
  private readonly unsaved = new Map<string, Channel>();
  private saving = false;
  /** When deliveries last went to the tabs. */
  private flushedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly url: string,
    private readonly db: () => Promise<Database>,
    private readonly send: (message: ClientMessage) => boolean,
    private readonly fetchHistory: FetchHistory,
  ) {}

  /** Channels whose server subscription is live on the current connection. */
  get live(): string[] {
    return [...this.channels].filter(([, c]) => c.live).map(([name]) => name);
  }

  /** Each channel's position and who listens, for the inspector. */
  inspect(): Inspection['subscriptions'] {
    return [...this.channels].map(([channel, c]) => ({
      channel,
      offset: c.offset ?? null,
      epoch: c.epoch ?? null,
      tabs: new Set([...c.listeners.values()].map((l) => l.tabId)).size,
      live: c.live,
    }));
  }

  /**
   * Adds a listener. With `since` (where its tab left off before a reload), it first gets what it
   * missed from there — from the server's history — then the live events, each once.
   */
  async add(tabId: string, id: string, name: string, listener: ChannelListener | ChannelBatchListener, since?: ChannelPosition, batched = false): Promise<void> {
    const entry: Listener = since === undefined ? { id, tabId, listener, batched, outgoing: [] } : { id, tabId, listener, batched, outgoing: [], since, held: [] };
    let channel = this.channels.get(name);
    if (!channel) {
      const created: Channel = {
        listeners: new Map(),
        offset: undefined,
        epoch: undefined,
        live: false,
        loading: true,
        loaded: Promise.resolve(),
      };
      created.loaded = this.db()
        .then((db) => db.get('offsets', [this.url, name]))
        .then((saved) => {
          if (saved && created.offset === undefined) {
            created.offset = saved.offset;
            created.epoch = saved.epoch;
          }
        })
        .catch(() => {}) // no saved offset: start from the head
        .finally(() => (created.loading = false));
      this.channels.set(name, (channel = created));
      channel.listeners.set(id, entry);
      await channel.loaded;
      if (this.channels.get(name) === channel) this.subscribe(name);
    } else {
      channel.listeners.set(id, entry);
      await channel.loaded;
      // Joining a live subscription: this listener gets events from now on (after its catch-up).
      if (channel.live && channel.offset !== undefined) {
        this.call(entry, { kind: 'subscribed', channel: name, offset: entry.since?.offset ?? channel.offset, epoch: channel.epoch ?? '' });
      }
    }
    if (channel.live) void this.catchUp(name, channel, entry);
  }

  /**
   * Brings a listener that came back with its own position up to the channel's: the events
   * between are read from the server page by page, while live ones are held for it. Offline it
   * waits for the next connection (`resubscribeAll`).
   */
  private async catchUp(name: string, channel: Channel, entry: Listener): Promise<void> {
    const since = entry.since;
    const target = channel.offset;
    if (!since || !entry.held || target === undefined) return;
    entry.since = undefined; // one catch-up at a time
    let position = since;
    try {
      if (since.epoch === channel.epoch && since.offset >= target) return;
      while (position.offset < target || position.epoch !== channel.epoch) {
        const page = await this.fetchHistory(name, position, HISTORY_PAGE_MAX);
        if (!page.ok) throw new Error(page.error.message);
        const { epoch, reset, from, events } = page.value;
        if (reset) this.call(entry, { kind: 'reset', channel: name, epoch, offset: from });
        for (const event of events) {
          if (event.offset > target) break;
          this.call(entry, { kind: 'event', channel: name, offset: event.offset, data: event.data, ...(event.publisher ? { publisher: event.publisher } : {}) });
        }
        const last = events.at(-1)?.offset;
        position = { offset: last === undefined ? Math.max(from, position.offset) : Math.min(last, target), epoch };
        // A page can be short because the server cuts pages by bytes: only an empty one ends early.
        if (last === undefined) break;
      }
    } catch {
      // Try again from where it got to: on the next connection, or after a pause while online
      // (a timeout, a server error), so that a listener is never held for good.
      entry.since = position;
      entry.retryMs = Math.min(30_000, (entry.retryMs ?? 500) * 2);
      setTimeout(() => {
        if (this.channels.get(name) === channel && channel.listeners.has(entry.id) && channel.live) void this.catchUp(name, channel, entry);
      }, entry.retryMs);
      return;
    } finally {
      if (entry.since === undefined) this.release(entry);
    }
  }

  /** The listener is up to date: what was held for it follows, each event once. */
  private release(entry: Listener): void {
    const held = entry.held ?? [];
    entry.held = undefined;
    for (const delivery of held) this.call(entry, delivery);
  }

  remove(id: string): void {
    for (const [name, channel] of this.channels) {
      const entry = channel.listeners.get(id);
      if (!entry) continue;
      channel.listeners.delete(id);
      this.flushing.delete(entry); // nothing more goes to a listener that is released
      entry.outgoing = [];
      release(entry.listener);
      if (channel.listeners.size === 0) {
        this.channels.delete(name);
        this.send({ type: 'unsubscribe', channel: name });
      }
    }
  }

  removeTab(tabId: string): void {
    for (const channel of this.channels.values()) {
      for (const [id, entry] of channel.listeners) if (entry.tabId === tabId) this.remove(id);
    }
  }

  /** After every (re)connect: resume each channel after its last delivered offset. */
  resubscribeAll(): void {
    for (const [name, channel] of this.channels) {
      channel.live = false;
      if (!channel.loading) this.subscribe(name); // a loading channel subscribes once its offset is read
    }
  }

  handle(message: ServerMessage): boolean {
    if (message.type === 'event' || message.type === 'reset' || message.type === 'subscribed') {
      this.apply(message);
      return true;
    }
    if (message.type === 'error' && message.channel !== undefined && message.id === undefined && message.seq === undefined) {
      const channel = this.channels.get(message.channel);
      if (channel) this.deliver(channel, { kind: 'error', channel: message.channel, code: message.code, message: message.message });
      return true;
    }
    return false;
  }

  private subscribe(name: string): void {
    const channel = this.channels.get(name);
    if (!channel) return;
    const since = channel.offset === undefined ? undefined : { offset: channel.offset, epoch: channel.epoch ?? '' };
    this.send(since === undefined ? { type: 'subscribe', channel: name } : { type: 'subscribe', channel: name, since });
  }

  /**
   * Delivers an incoming message at once, then keeps the channel's offset: saved in the
   * background, one save at a time covering every channel touched meanwhile, so a stream of
   * events never waits for IndexedDB. A worker that dies before the save gets these events again
   * after its restart (its tabs are new then, and skip what they had): repeated, never lost.
   */
  private apply(message: Incoming): void {
    const channel = this.channels.get(message.channel);
    if (!channel) return; // unsubscribed meanwhile
    if (message.type === 'subscribed') {
      // A new subscription starts at the head; a resumed one keeps its offset.
      channel.offset ??= message.offset;
      channel.epoch = message.epoch;
      channel.live = true;
      this.deliver(channel, { kind: 'subscribed', channel: message.channel, offset: channel.offset, epoch: message.epoch });
    } else if (message.type === 'reset') {
      channel.offset = message.offset;
      channel.epoch = message.epoch;
      channel.live = true;
      this.deliver(channel, { kind: 'reset', channel: message.channel, epoch: message.epoch, offset: message.offset });
    } else {
      if (channel.offset !== undefined && message.offset <= channel.offset) return; // already delivered
      channel.offset = message.offset;
      this.deliver(channel, { kind: 'event', channel: message.channel, offset: message.offset, data: message.data, ...(message.publisher ? { publisher: message.publisher } : {}) });
    }
    // Listeners that came back with their own position catch up once the channel is live.
    if (channel.live) for (const entry of channel.listeners.values()) if (entry.since) void this.catchUp(message.channel, channel, entry);
    this.unsaved.set(message.channel, channel);
    if (!this.saving) void this.save();
  }

  private async save(): Promise<void> {
    this.saving = true;
    while (this.unsaved.size > 0) {
      const touched = [...this.unsaved];
      this.unsaved.clear();
      try {
        const db = await this.db();
        const tx = db.transaction('offsets', 'readwrite');
        await Promise.all([...touched.map(([name, c]) => tx.store.put({ url: this.url, channel: name, offset: c.offset ?? 0, epoch: c.epoch ?? '' })), tx.done]);
      } catch {
        // Not saved: after a restart these events come again rather than being lost.
      }
    }
    this.saving = false;
  }

  private deliver(channel: Channel, delivery: ChannelDelivery): void {
    for (const entry of channel.listeners.values()) {
      // Catching up: events wait until after the ones it missed; a refusal is told at once.
      if (entry.held && delivery.kind !== 'error') entry.held.push(delivery);
      else this.call(entry, delivery);
    }
  }

  /**
   * Passes a delivery to a listener at the end of the current task, with the others of the same
   * task: one message to the tab per burst (a socket message carries one event, a history page
   * hundreds), in order.
   */
  private call(entry: Listener, delivery: ChannelDelivery): void {
    if (delivery.kind === 'event') {
      if (entry.delivered !== undefined && delivery.offset <= entry.delivered) return; // got it in its catch-up
      entry.delivered = delivery.offset;
    } else if (delivery.kind === 'reset') entry.delivered = delivery.offset;
    entry.outgoing.push(delivery);
    if (this.flushing.size === 0) {
      // A lone event goes at the end of this task; in a stream (the last flush was just now), the
      // events of the next few socket messages go together: one message to each tab per
      // millisecond or so, not one per event.
      if (performance.now() - this.flushedAt < STREAM_GAP_MS) setTimeout(() => this.flush(), 1);
      else queueMicrotask(() => this.flush());
    }
    this.flushing.add(entry);
  }

  private flush(): void {
    this.flushedAt = performance.now();
    const entries = [...this.flushing];
    this.flushing.clear();
    for (const entry of entries) {
      const deliveries = entry.outgoing;
      entry.outgoing = [];
      if (deliveries.length === 0) continue;
      if (entry.batched) void Promise.resolve((entry.listener as ChannelBatchListener)(deliveries)).catch(() => {});
      else for (const delivery of deliveries) void Promise.resolve((entry.listener as ChannelListener)(delivery)).catch(() => {});
    }
  }
}
