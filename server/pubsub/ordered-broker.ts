/**
 * Fan-out for a networked events DB, and across server processes through Redis pub/sub.
 *
 * Redis only carries notifications: every process delivers each channel (document) in offset
 * (version) order with no gap and no repeat by checking positions against the events DB
 * (ordered-streams.ts), so a notification that Redis reorders, loses, or never gets (a process
 * killed between its commit and its publish, a Redis outage) costs a store read, never an event.
 * The store's positions are polled for the channels and documents this process's clients follow:
 * every 2 s while Redis works (and without Redis, for commits whose acknowledgement was lost on
 * the way back from PostgreSQL), every 250 ms while Redis is unreachable.
 *
 * Document notifications from other processes are only hints: the change itself is read from
 * the store. Channel notifications carry the event and are checked against the channel's epoch.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { BrokerMetrics } from '../metrics.js';
import type { DocChange, EventStore, StoredEvent } from '../storage/event-store.js';
import type { Broker, BrokerHealth, ChannelReset, DocListener, EventListener, Subscription } from './broker.js';
import { docFrame, eventFrame } from './frames.js';
import { OrderedStreams } from './ordered-streams.js';

export interface OrderedBrokerOptions {
  store: EventStore;
  log: Logger;
  /** Without it, one process: ordering and polling still guard against lost commit acknowledgements. */
  redis?: {
    url: string;
    /** Prepended to every Redis channel name: clusters sharing one Redis stay apart. */
    prefix: string;
  };
  /** How often the store's positions are checked for missed notifications while Redis works. @default 2000 */
  pollMs?: number;
  /** …and while Redis is unreachable. @default 250 */
  degradedPollMs?: number;
  /** A Redis connection that does not answer a ping in this time is taken for down and reconnected. @default 1000 */
  pingTimeoutMs?: number;
  /** Told how long each Redis notification took from its publisher to this process. */
  metrics?: BrokerMetrics;
}

/** Events read per store round trip while filling a gap. */
const FILL_PAGE = 500;
/** A positions read that does not answer in this time is abandoned (the next poll tries again). */
const POLL_TIMEOUT_MS = 10_000;

type ChannelItem = { event: StoredEvent } | { reset: ChannelReset };

interface DocItem {
  change: DocChange;
  /** A state read from the store after pruned tombstones: the client replaces its copy. */
  full: boolean;
}

function resetFrame(reset: ChannelReset): string {
  return JSON.stringify({ type: 'reset', channel: reset.channel, epoch: reset.epoch, offset: reset.offset });
}

export function createOrderedBroker(options: OrderedBrokerOptions): Broker {
  const { store, log } = options;
  const prefix = options.redis?.prefix ?? '';
  let closed = false;
  /**
   * Notifications carry when (`t`, ms since the epoch) and by which process (`o`) they were
   * published, for the delivery lag metric; other fields are what they always were.
   */
  const origin = randomUUID();
  const lag = (message: { t?: unknown; o?: unknown }) => {
    if (options.metrics === undefined || typeof message.t !== 'number') return;
    options.metrics.deliveryLag(message.o === origin ? 'self' : 'other', Math.max(0, Date.now() - message.t) / 1000);
  };

  const channels = new OrderedStreams<ChannelItem>(
    {
      head: async (channel) => {
        const page = await store.history(channel, undefined, 0);
        return { position: page.head, epoch: page.epoch };
      },
      readAfter: async (channel, from) => {
        const page = await store.history(channel, { offset: from }, FILL_PAGE);
        const items: ChannelItem[] = page.events.map((e) => ({ event: { channel, offset: e.offset, epoch: page.epoch, data: e.data, publisher: e.publisher } }));
        // Retention overtook this process (it could not read for long): the subscribers are told.
        if (page.reset) items.unshift({ reset: { reset: true, channel, epoch: page.epoch, offset: page.from } });
        return { items, more: page.events.length === FILL_PAGE };
      },
      position: (item) => ('event' in item ? item.event.offset : item.reset.offset),
      epoch: (item) => ('event' in item ? item.event.epoch : item.reset.epoch),
    },
    log,
    'channel',
  );
  const docs = new OrderedStreams<DocItem>(
    {
      head: async (doc) => ({ position: (await store.positions([], [doc])).docs.get(doc) ?? 0 }),
      readAfter: async (doc, from) => {
        const state = await store.document(doc, from);
        if (state.version <= from) return { items: [], more: false };
        return { items: [{ change: { doc, version: state.version, keys: state.keys }, full: state.full }], more: false };
      },
      position: (item) => item.change.version,
    },
    log,
    'doc',
  );

  const redis = options.redis === undefined ? undefined : connectRedis(options.redis.url);
  const channelTopic = (channel: string) => `${prefix}ch:${channel}`;
  const docTopic = (doc: string) => `${prefix}doc:${doc}`;

  /**
   * Session listeners of one stream share one ordered feed: each item is serialised once and
   * handed to all of them, as the local broker does.
   */
  function fanOut<T, L>(streams: OrderedStreams<T>, topic: (key: string) => string, call: (listener: L, item: T) => void) {
    const groups = new Map<string, { listeners: Set<L>; ready: Promise<void>; stop: () => boolean }>();
    const join = (key: string, listeners: Set<L>) =>
      streams.listen(key, (item) => {
        for (const each of listeners) call(each, item);
      });
    return {
      subscribe(key: string, listener: L): Subscription {
        let group = groups.get(key);
        if (!group) {
          const listeners = new Set<L>();
          const joined = join(key, listeners);
          group = { listeners, ready: joined.ready, stop: joined.stop };
          groups.set(key, group);
          redis?.subscribe(topic(key));
        } else if (!streams.has(key)) {
          // The stream's head could not be read and it was dropped: the same group starts it again.
          const joined = join(key, group.listeners);
          group.ready = joined.ready;
          group.stop = joined.stop;
        }
        const mine = group;
        mine.listeners.add(listener);
        return {
          ready: mine.ready,
          unsubscribe() {
            mine.listeners.delete(listener);
            if (mine.listeners.size > 0 || groups.get(key) !== mine) return;
            groups.delete(key);
            mine.stop();
            redis?.unsubscribe(topic(key));
          },
        };
      },
      topics: () => [...groups.keys()].map(topic),
      clear: () => groups.clear(),
    };
  }

  const eventFanOut = fanOut<ChannelItem, EventListener>(channels, channelTopic, (() => {
    // One frame per item for every listener of the process (the item object is shared, so is its frame).
    const frames = new WeakMap<ChannelItem, string>();
    return (listener: EventListener, item: ChannelItem) => {
      let frame = frames.get(item);
      if (frame === undefined) {
        frame = 'event' in item ? eventFrame(item.event.channel, item.event.offset, item.event.data, item.event.publisher) : resetFrame(item.reset);
        frames.set(item, frame);
      }
      listener('event' in item ? item.event : item.reset, frame);
    };
  })());
  const docFanOut = fanOut<DocItem, DocListener>(docs, docTopic, (() => {
    const frames = new WeakMap<DocItem, string>();
    return (listener: DocListener, item: DocItem) => {
      let frame = frames.get(item);
      if (frame === undefined) frames.set(item, (frame = docFrame(item.change, item.full)));
      listener(item.change, frame);
    };
  })());

  let polling: Promise<void> | undefined;
  function poll(): Promise<void> {
    if (polling) return polling;
    polling = (async () => {
      const channelKeys = channels.keys();
      const docKeys = docs.keys();
      if (channelKeys.length === 0 && docKeys.length === 0) return;
      let timer: NodeJS.Timeout | undefined;
      try {
        const positions = await Promise.race([
          store.positions(channelKeys, docKeys),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${POLL_TIMEOUT_MS} ms`)), POLL_TIMEOUT_MS))),
        ]);
        for (const [channel, head] of positions.channels) channels.known(channel, head);
        for (const [doc, version] of positions.docs) docs.known(doc, version);
      } catch (error) {
        log.warn({ err: error }, 'could not read positions from the events DB; retrying');
      } finally {
        clearTimeout(timer);
      }
    })().finally(() => (polling = undefined));
    return polling;
  }
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    if (closed) return;
    timer = setTimeout(() => void poll().finally(schedule), redis === undefined || redis.healthy() ? options.pollMs ?? 2000 : options.degradedPollMs ?? 250);
    timer.unref();
  };
  schedule();

  /** Redis pub/sub: two connections, a ping watchdog, resubscription and a poll when it returns. */
  function connectRedis(url: string) {
    const redisOptions = {
      // Notifications are only worth sending now; an outage is covered by polling the store.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Reconnect for ever, at most every 2 s.
      retryStrategy: (attempt: number) => Math.min(100 * attempt, 2000),
    };
    const publisher = new Redis(url, { ...redisOptions, connectionName: 'tether-publish' });
    const subscriber = new Redis(url, { ...redisOptions, connectionName: 'tether-subscribe', autoResubscribe: true });
    let lastError: string | undefined;
    let lostAt: number | undefined;
    /** A connection stopped answering pings (a partition): said once per outage. */
    let stalled = false;
    for (const [name, client] of [['publish', publisher], ['subscribe', subscriber]] as const) {
      client.on('error', (error: Error) => {
        // ioredis reports every failed reconnect: log the first of an outage, not each retry.
        if (lastError === undefined) log.error({ err: error, connection: name }, 'Redis is unreachable: delivering across processes from the events DB until it returns');
        lastError = error.message;
      });
      client.on('close', () => (lostAt ??= Date.now()));
    }
    const onReady = () => {
      if (publisher.status !== 'ready' || subscriber.status !== 'ready') return;
      if (lastError !== undefined) log.info({ downMs: lostAt === undefined ? undefined : Date.now() - lostAt }, 'Redis is back');
      lastError = undefined;
      lostAt = undefined;
      stalled = false;
    };
    publisher.on('ready', onReady);
    subscriber.on('ready', () => {
      // Subscribes refused while it was down are not in ioredis's resubscribe list: ask again (idempotent).
      for (const topic of [...eventFanOut.topics(), ...docFanOut.topics()]) subscribe(topic);
      // Whatever was published while the subscription was down: read it now.
      void poll();
      onReady();
    });
    subscriber.on('message', (topic: string, message: string) => {
      try {
        if (topic.startsWith(`${prefix}ch:`)) {
          const notice = JSON.parse(message) as StoredEvent & { t?: unknown; o?: unknown };
          const valid = channelTopic(notice.channel) === topic && Number.isSafeInteger(notice.offset) && typeof notice.data === 'string'
            && typeof notice.epoch === 'string' && (notice.publisher === null || typeof notice.publisher === 'string');
          if (!valid) throw new TypeError('not a stored event');
          lag(notice);
          const event: StoredEvent = { channel: notice.channel, offset: notice.offset, epoch: notice.epoch, data: notice.data, publisher: notice.publisher };
          channels.offer(event.channel, { event });
        } else if (topic.startsWith(`${prefix}doc:`)) {
          const notice = JSON.parse(message) as { doc: unknown; version: unknown; t?: unknown; o?: unknown };
          const { doc, version } = notice;
          if (typeof doc !== 'string' || docTopic(doc) !== topic || !Number.isSafeInteger(version)) throw new TypeError('not a document change');
          lag(notice);
          docs.known(doc, version as number);
        }
      } catch (error) {
        log.warn({ err: error, topic }, 'ignored a malformed notification on Redis (another program on this prefix?)');
      }
    });

    // A partitioned Redis (no RST, no answer) leaves ioredis 'ready' for ever: ping both connections,
    // and one that does not answer in time counts as down and is reconnected.
    const pingTimeoutMs = options.pingTimeoutMs ?? 1000;
    const watchdog = setInterval(() => {
      for (const client of [publisher, subscriber]) {
        if (client.status !== 'ready') continue;
        let answered = false;
        client.ping().then(() => (answered = true), () => undefined);
        setTimeout(() => {
          if (answered || client.status !== 'ready' || closed) return;
          if (!stalled) log.error('Redis does not answer: delivering across processes from the events DB until it does');
          stalled = true;
          lastError ??= 'Redis does not answer pings';
          client.disconnect(true);
        }, pingTimeoutMs).unref();
      }
    }, pingTimeoutMs);
    watchdog.unref();

    function subscribe(topic: string): void {
      subscriber.subscribe(topic).catch((error: unknown) => {
        // Not subscribed now: it is asked again when Redis is back, and polling covers the time between.
        log.debug({ err: error, topic }, 'Redis subscribe failed; the store is polled meanwhile');
      });
    }
    return {
      subscribe,
      unsubscribe(topic: string): void {
        subscriber.unsubscribe(topic).catch(() => undefined); // gone with the connection anyway
      },
      publish(topic: string, message: string): void {
        if (publisher.status !== 'ready') return; // the other processes poll the store meanwhile
        publisher.publish(topic, message).catch((error: unknown) => log.debug({ err: error, topic }, 'Redis publish failed; other processes find the event by polling'));
      },
      healthy: () => publisher.status === 'ready' && subscriber.status === 'ready' && lastError === undefined,
      health(): BrokerHealth {
        return this.healthy() ? { kind: 'redis', ok: true } : { kind: 'redis', ok: false, detail: lastError ?? `connection ${subscriber.status}` };
      },
      close(): void {
        clearInterval(watchdog);
        publisher.disconnect();
        subscriber.disconnect();
      },
    };
  }

  return {
    publish(event) {
      // The other processes first (delivering to this one's subscribers can take milliseconds the
      // PUBLISH would wait behind), then this process's subscribers; the echo from Redis is dropped as seen.
      redis?.publish(channelTopic(event.channel), JSON.stringify({ channel: event.channel, offset: event.offset, epoch: event.epoch, data: event.data, publisher: event.publisher, t: Date.now(), o: origin }));
      channels.offer(event.channel, { event });
    },
    subscribe: (channel, listener) => eventFanOut.subscribe(channel, listener),
    publishDoc(change) {
      // Other processes read the change from the store: the notification says only where it is.
      redis?.publish(docTopic(change.doc), JSON.stringify({ doc: change.doc, version: change.version, t: Date.now(), o: origin }));
      docs.offer(change.doc, { change, full: false });
    },
    subscribeDoc: (doc, listener) => docFanOut.subscribe(doc, listener),
    health: () => redis?.health() ?? { kind: 'local', ok: true },
    async close() {
      closed = true;
      clearTimeout(timer);
      channels.clear();
      docs.clear();
      eventFanOut.clear();
      docFanOut.clear();
      redis?.close();
    },
  };
}
