/**
 * The channels one server connection is subscribed to, shared by every tab: one server
 * subscription per channel however many listeners. The last offset delivered per channel is
 * stored in IndexedDB right after the tabs got the events (deduplicated by offset), so a
 * reconnect, a reload or a new worker resumes after it — no gap; at most a repeat to new tabs
 * when the worker died between delivering and saving.
 */
import { release } from './release.js';
import type { ClientMessage, ServerMessage } from '../protocol/messages.js';
import type { ChannelDelivery, ChannelListener } from './api.js';
import type { Database } from './db.js';

interface Listener {
  tabId: string;
  listener: ChannelListener;
}

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

export class Subscriptions {
  private readonly channels = new Map<string, Channel>();
  private inbox: Incoming[] = [];
  private draining = false;

  constructor(
    private readonly url: string,
    private readonly db: () => Promise<Database>,
    private readonly send: (message: ClientMessage) => boolean,
  ) {}

  /** Channels whose server subscription is live on the current connection. */
  get live(): string[] {
    return [...this.channels].filter(([, c]) => c.live).map(([name]) => name);
  }

  async add(tabId: string, id: string, name: string, listener: ChannelListener): Promise<void> {
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
      channel.listeners.set(id, { tabId, listener });
      await channel.loaded;
      if (this.channels.get(name) === channel) this.subscribe(name);
    } else {
      channel.listeners.set(id, { tabId, listener });
      await channel.loaded;
      // Joining a live subscription: this listener gets events from now on.
      if (channel.live && channel.offset !== undefined) {
        void Promise.resolve(listener({ kind: 'subscribed', channel: name, offset: channel.offset })).catch(() => {});
      }
    }
  }

  remove(id: string): void {
    for (const [name, channel] of this.channels) {
      const entry = channel.listeners.get(id);
      if (!entry) continue;
      channel.listeners.delete(id);
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
      this.inbox.push(message);
      if (!this.draining) void this.drain();
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

  /** Applies incoming messages in order, a batch at a time: offsets saved first, then delivered. */
  private async drain(): Promise<void> {
    this.draining = true;
    while (this.inbox.length > 0) {
      const batch = this.inbox;
      this.inbox = [];
      const deliveries: [Channel, ChannelDelivery][] = [];
      const touched = new Map<string, Channel>();
      for (const message of batch) {
        const channel = this.channels.get(message.channel);
        if (!channel) continue; // unsubscribed meanwhile
        if (message.type === 'subscribed') {
          // A new subscription starts at the head; a resumed one keeps its offset.
          channel.offset ??= message.offset;
          channel.epoch = message.epoch;
          channel.live = true;
          deliveries.push([channel, { kind: 'subscribed', channel: message.channel, offset: channel.offset }]);
        } else if (message.type === 'reset') {
          channel.offset = message.offset;
          channel.epoch = message.epoch;
          channel.live = true;
          deliveries.push([channel, { kind: 'reset', channel: message.channel, epoch: message.epoch, offset: message.offset }]);
        } else {
          if (channel.offset !== undefined && message.offset <= channel.offset) continue; // already delivered
          channel.offset = message.offset;
          deliveries.push([channel, { kind: 'event', channel: message.channel, offset: message.offset, data: message.data }]);
        }
        touched.set(message.channel, channel);
      }
      // Deliver first, then keep the offset of what was delivered: a worker that dies in between
      // gets these events again after its restart (its tabs are new then), never loses them.
      for (const [channel, delivery] of deliveries) this.deliver(channel, delivery);
      try {
        const db = await this.db();
        const tx = db.transaction('offsets', 'readwrite');
        await Promise.all([
          ...[...touched].map(([name, c]) => tx.store.put({ url: this.url, channel: name, offset: c.offset ?? 0, epoch: c.epoch ?? '' })),
          tx.done,
        ]);
      } catch {
        // Not saved: after a restart these events come again rather than being lost.
      }
    }
    this.draining = false;
  }

  private deliver(channel: Channel, delivery: ChannelDelivery): void {
    for (const { listener } of channel.listeners.values()) void Promise.resolve(listener(delivery)).catch(() => {});
  }
}
