/**
 * Fan-out across server processes through Redis pub/sub. Redis only carries notifications:
 * every node delivers each channel (document) in offset (version) order with no gap and no
 * repeat by checking positions against the events DB (ordered-streams.ts), so a notification
 * that Redis reorders, loses, or never gets (a node killed between its commit and its publish, a
 * Redis outage) costs a store read, never an event. While Redis is unreachable every node polls
 * the store for the channels and documents its clients follow, a little more often.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { DocChange, EventStore, StoredEvent } from '../storage/event-store.js';
import type { Broker, BrokerHealth, DocListener, EventListener, Subscription } from './broker.js';
import { docFrame, eventFrame } from './frames.js';
import { OrderedStreams } from './ordered-streams.js';

export interface RedisBrokerOptions {
  url: string;
  /** Prepended to every Redis channel name: clusters (and tests) sharing one Redis stay apart. */
  prefix: string;
  store: EventStore;
  log: Logger;
  /** How often the store's positions are checked for missed notifications while Redis works. @default 2000 */
  pollMs?: number;
  /** …and while Redis is unreachable. @default 250 */
  degradedPollMs?: number;
  /** A connection that does not answer a ping in this time is taken for down and reconnected. @default 1000 */
  pingTimeoutMs?: number;
}

/** Events read per store round trip while filling a gap. */
const FILL_PAGE = 500;

interface DocItem {
  change: DocChange;
  /** A state read from the store after pruned tombstones: the client replaces its copy. */
  full: boolean;
}

export function createRedisBroker(options: RedisBrokerOptions): Broker {
  const { store, log, prefix } = options;
  const redisOptions = {
    // Notifications are only worth sending now; an outage is covered by polling the store.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // Reconnect for ever, at most every 2 s.
    retryStrategy: (attempt: number) => Math.min(100 * attempt, 2000),
    lazyConnect: false,
  };
  const publisher = new Redis(options.url, { ...redisOptions, connectionName: 'tether-publish' });
  const subscriber = new Redis(options.url, { ...redisOptions, connectionName: 'tether-subscribe', autoResubscribe: true });
  let lastError: string | undefined;
  let lostAt: number | undefined;
  /** A connection stopped answering pings (a partition): said once per outage. */
  let stalled = false;
  for (const [name, client] of [['publish', publisher], ['subscribe', subscriber]] as const) {
    client.on('error', (error: Error) => {
      // ioredis reports every failed reconnect: log the first of an outage, not each retry.
      if (lastError === undefined) log.error({ err: error, connection: name }, 'Redis is unreachable: delivering across nodes from the events DB until it returns');
      lastError = error.message;
    });
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
    for (const topic of [...eventFanOut.topics(), ...docFanOut.topics()]) subscribeTopic(topic);
    // Whatever was published while the subscription was down: read it now.
    void poll();
    onReady();
  });
  for (const client of [publisher, subscriber]) client.on('close', () => (lostAt ??= Date.now()));

  const channelTopic = (channel: string) => `${prefix}ch:${channel}`;
  const docTopic = (doc: string) => `${prefix}doc:${doc}`;

  const channels = new OrderedStreams<StoredEvent>(
    {
      head: async (channel) => (await store.history(channel, undefined, 0)).head,
      readAfter: async (channel, from) => {
        const page = await store.history(channel, { offset: from }, FILL_PAGE);
        // A reset (retention overtook this node): the subscribers' own catch-up reports it; here only order matters.
        return page.events.map((e) => ({ channel, offset: e.offset, epoch: page.epoch, data: e.data, publisher: e.publisher }));
      },
      position: (event) => event.offset,
    },
    log,
    'channel',
  );
  const docs = new OrderedStreams<DocItem>(
    {
      head: async (doc) => (await store.positions([], [doc])).docs.get(doc) ?? 0,
      readAfter: async (doc, from) => {
        const state = await store.document(doc, from);
        if (state.version <= from) return [];
        return [{ change: { doc, version: state.version, keys: state.keys }, full: state.full }];
      },
      position: (item) => item.change.version,
    },
    log,
    'doc',
  );

  function subscribeTopic(topic: string): void {
    subscriber.subscribe(topic).catch((error: unknown) => {
      // Not subscribed now: autoResubscribe does it on reconnect, and polling covers the time between.
      log.debug({ err: error, topic }, 'Redis subscribe failed; the store is polled meanwhile');
    });
  }
  function unsubscribeTopic(topic: string): void {
    subscriber.unsubscribe(topic).catch(() => undefined); // gone with the connection anyway
  }

  /**
   * Session listeners of one stream share one ordered feed: each item is serialised once and
   * handed to all of them, as the local broker does.
   */
  function fanOut<T, L extends (item: never, frame: string) => void>(
    streams: OrderedStreams<T>,
    topic: (key: string) => string,
    call: (listener: L, item: T) => void,
  ) {
    const groups = new Map<string, { listeners: Set<L>; ready: Promise<void>; stop: () => boolean }>();
    return {
      subscribe(key: string, listener: L): Subscription {
        let group = groups.get(key);
        // A stream whose head could not be read was dropped: the next subscriber starts it again.
        if (!group || !streams.has(key)) {
          const listeners: Set<L> = group?.listeners ?? new Set();
          const joined = streams.listen(key, (item) => {
            for (const each of listeners) call(each, item);
          });
          if (!group) subscribeTopic(topic(key));
          group = { listeners, ready: joined.ready, stop: joined.stop };
          groups.set(key, group);
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
            unsubscribeTopic(topic(key));
          },
        };
      },
      topics: () => [...groups.keys()].map(topic),
      clear: () => groups.clear(),
    };
  }

  const eventFanOut = fanOut<StoredEvent, EventListener>(channels, channelTopic, (() => {
    // One frame per event for every listener of the node (the item object is shared, so is its frame).
    const frames = new WeakMap<StoredEvent, string>();
    return (listener: EventListener, event: StoredEvent) => {
      let frame = frames.get(event);
      if (frame === undefined) frames.set(event, (frame = eventFrame(event.channel, event.offset, event.data, event.publisher)));
      listener(event, frame);
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

  subscriber.on('message', (topic: string, message: string) => {
    try {
      if (topic.startsWith(`${prefix}ch:`)) {
        const event = JSON.parse(message) as StoredEvent;
        if (channelTopic(event.channel) !== topic || !Number.isSafeInteger(event.offset) || typeof event.data !== 'string') throw new TypeError('not a stored event');
        channels.offer(event.channel, event);
      } else if (topic.startsWith(`${prefix}doc:`)) {
        const change = JSON.parse(message) as DocChange;
        if (docTopic(change.doc) !== topic || !Number.isSafeInteger(change.version) || typeof change.keys !== 'object' || change.keys === null) throw new TypeError('not a document change');
        docs.offer(change.doc, { change, full: false });
      }
    } catch (error) {
      log.warn({ err: error, topic }, 'ignored a malformed notification on Redis (another program on this prefix?)');
    }
  });

  let polling: Promise<void> | undefined;
  async function poll(): Promise<void> {
    if (polling) return polling;
    polling = (async () => {
      const channelKeys = channels.keys();
      const docKeys = docs.keys();
      if (channelKeys.length === 0 && docKeys.length === 0) return;
      try {
        const positions = await store.positions(channelKeys, docKeys);
        for (const [channel, head] of positions.channels) channels.known(channel, head);
        for (const [doc, version] of positions.docs) docs.known(doc, version);
      } catch (error) {
        log.warn({ err: error }, 'could not read positions from the events DB; retrying');
      }
    })().finally(() => (polling = undefined));
    return polling;
  }
  // A partitioned Redis (no RST, no answer) leaves ioredis 'ready' for ever: ping both connections,
  // and one that does not answer in time counts as down and is reconnected.
  const watchdog = setInterval(() => {
    for (const client of [publisher, subscriber]) {
      if (client.status !== 'ready') continue;
      let answered = false;
      client.ping().then(() => (answered = true), () => undefined);
      setTimeout(() => {
        if (answered || client.status !== 'ready') return;
        if (!stalled) log.error('Redis does not answer: delivering across nodes from the events DB until it does');
        stalled = true;
        lastError ??= 'Redis does not answer pings';
        client.disconnect(true);
      }, options.pingTimeoutMs ?? 1000).unref();
    }
  }, options.pingTimeoutMs ?? 1000);
  watchdog.unref();

  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    const healthy = subscriber.status === 'ready' && publisher.status === 'ready' && lastError === undefined;
    timer = setTimeout(() => void poll().finally(schedule), healthy ? options.pollMs ?? 2000 : options.degradedPollMs ?? 250);
    timer.unref();
  };
  schedule();

  function publishTo(topic: string, message: string): void {
    if (publisher.status !== 'ready') return; // the other nodes poll the store meanwhile
    publisher.publish(topic, message).catch((error: unknown) => log.debug({ err: error, topic }, 'Redis publish failed; other nodes find the event by polling'));
  }

  return {
    publish(event) {
      // This node's subscribers at once (the echo from Redis is dropped as seen), the others through Redis.
      channels.offer(event.channel, event);
      publishTo(channelTopic(event.channel), JSON.stringify(event));
    },
    subscribe: (channel, listener) => eventFanOut.subscribe(channel, listener),
    publishDoc(change) {
      docs.offer(change.doc, { change, full: false });
      publishTo(docTopic(change.doc), JSON.stringify(change));
    },
    subscribeDoc: (doc, listener) => docFanOut.subscribe(doc, listener),
    health(): BrokerHealth {
      const ok = publisher.status === 'ready' && subscriber.status === 'ready' && lastError === undefined;
      return ok ? { kind: 'redis', ok } : { kind: 'redis', ok, detail: lastError ?? `connection ${subscriber.status}` };
    },
    async close() {
      clearTimeout(timer);
      clearInterval(watchdog);
      channels.clear();
      docs.clear();
      eventFanOut.clear();
      docFanOut.clear();
      publisher.disconnect();
      subscriber.disconnect();
    },
  };
}
