/**
 * Presence across server processes through Redis.
 *
 * Each process owns the contributions of its own connections and writes them, per channel, to
 * one field of a hash:
 *
 *   {prefix}presence:{channel}        hash   field = process id, value = {"entries": [contribution…]}
 *   {prefix}presence-node:{process}   string refreshed every `refreshMs`, expires after `expiryMs`
 *   {prefix}presence:{channel}        pub/sub topic: a process id, after that process wrote the channel
 *
 * A write (HSET, or HDEL when nothing is left, and a PUBLISH) follows a change, coalesced: at
 * most one per channel per `intervalMs`. A process that watches a channel (it has a connection
 * there) subscribes to its topic and re-reads the hash on every notification but its own; it
 * counts another process's field only while that process's node key lives (its remaining TTL is
 * read with PTTL), so a killed process's members vanish within `expiryMs`, and the next reader
 * deletes its fields (atomically: only if the node key is still gone). Redis traffic is bounded:
 * one SET and one PTTL batch per process per `refreshMs` whatever the number of channels, one
 * write per change and interval, one read per channel per notification; every `rewriteMs` each
 * process rewrites its fields (renewing the hash TTL) and re-reads what it watches, in case a
 * notification was lost.
 *
 * Redis down: this process's connections see each other as before (its own contributions never
 * go through Redis); other processes' members drop out once their node keys' last known TTL has
 * run out; health says degraded. When Redis is back every field is written and read again.
 * A process that shuts down writes its contributions as lingering, so clients moving to another
 * process within the linger are not seen to leave.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { PresenceEngine } from './local-presence.js';
import type { Contribution, Sourced } from './members.js';
import type { PresenceHub, PresenceOptions } from './presence.js';

export interface RedisPresenceOptions extends PresenceOptions {
  url: string;
  /** Prepended to every key and topic: clusters sharing one Redis stay apart. */
  prefix: string;
  log: Logger;
  /** How often this process says it is alive (and checks the others). @default 2000 */
  refreshMs?: number;
  /** A process not heard of for this long is gone, with its members. @default 3 × refreshMs */
  expiryMs?: number;
  /** How often owned fields are rewritten and watched channels re-read (lost notifications). @default 20000 */
  rewriteMs?: number;
  /** A process id (tests); @default a random UUID */
  node?: string;
}

/** Deletes a dead process's field, only if its node key is still absent (it may have come back since it was checked). */
const DROP_DEAD = "if redis.call('EXISTS', KEYS[2]) == 0 then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

function isContribution(value: unknown): value is Contribution {
  if (typeof value !== 'object' || value === null) return false;
  const c = value as Record<string, unknown>;
  const finite = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
  return typeof c.member === 'string' && typeof c.device === 'string' && (c.user === null || typeof c.user === 'string')
    && Number.isSafeInteger(c.tabs) && (c.tabs as number) >= 0 && finite(c.stateAt) && finite(c.stateSeq) && finite(c.at) && finite(c.seq) && finite(c.since)
    && (c.until === undefined || finite(c.until));
}

export function createRedisPresence(options: RedisPresenceOptions): PresenceHub {
  const { prefix, log } = options;
  const node = options.node ?? randomUUID();
  const intervalMs = options.intervalMs ?? 50;
  const refreshMs = options.refreshMs ?? 2000;
  const expiryMs = options.expiryMs ?? refreshMs * 3;
  const rewriteMs = options.rewriteMs ?? 20_000;
  /** A channel hash nobody rewrote for this long is removed by Redis (every process is gone). */
  const keyTtlMs = rewriteMs * 3;
  const channelKey = (channel: string) => `${prefix}presence:${channel}`;
  const nodeKey = (id: string) => `${prefix}presence-node:${id}`;

  /** Other processes' contributions to the channels this process watches, as last read. */
  const remote = new Map<string, Map<string, Contribution[]>>();
  /** Until when each other process is known to be alive (local clock: now + the PTTL of its node key). */
  const aliveUntil = new Map<string, number>();
  const dirty = new Set<string>();
  let closed = false;
  let lastError: string | undefined;

  const engine = new PresenceEngine(options, {
    node,
    *remote(channel) {
      const fields = remote.get(channel);
      if (!fields) return;
      const now = Date.now();
      for (const [id, entries] of fields) {
        if (id === node || (aliveUntil.get(id) ?? 0) <= now) continue;
        for (const entry of entries) yield { node: id, entry } satisfies Sourced;
      }
    },
    localChanged(channel) {
      dirty.add(channel);
      scheduleWrites();
    },
    watching(channel, watched) {
      if (watched) {
        subscriber.subscribe(channelKey(channel)).catch((error: unknown) => log.debug({ err: error, channel }, 'presence subscribe failed; asked again when Redis is back'));
        read(channel);
      } else {
        remote.delete(channel);
        subscriber.unsubscribe(channelKey(channel)).catch(() => undefined);
      }
    },
  });

  const redisOptions = {
    // Presence is only worth sending now: while Redis is down nothing queues, it is all written again when it is back.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: Math.max(1000, refreshMs),
    retryStrategy: (attempt: number) => Math.min(100 * attempt, 2000),
  };
  const command = new Redis(options.url, { ...redisOptions, connectionName: 'tether-presence' });
  const subscriber = new Redis(options.url, { ...redisOptions, connectionName: 'tether-presence-subscribe', autoResubscribe: true });
  for (const client of [command, subscriber]) {
    client.on('error', (error: Error) => {
      if (lastError === undefined && !closed) log.error({ err: error }, 'Redis is unreachable: presence shows only this process\'s connections until it returns');
      lastError = error.message;
    });
  }
  const ready = () => command.status === 'ready' && subscriber.status === 'ready';
  const onReady = () => {
    if (!ready() || closed) return;
    if (lastError !== undefined) log.info('Redis is back: presence is shared again');
    lastError = undefined;
    // Whatever changed meanwhile, or was removed as a dead process's: write and read everything again.
    for (const channel of engine.ownedChannels()) dirty.add(channel);
    void tick().then(() => writes());
    for (const channel of engine.watchedChannels()) {
      subscriber.subscribe(channelKey(channel)).catch(() => undefined);
      read(channel);
    }
  };
  command.on('ready', onReady);
  subscriber.on('ready', onReady);
  subscriber.on('message', (topic: string, from: string) => {
    if (from === node || !topic.startsWith(`${prefix}presence:`)) return;
    const channel = topic.slice(`${prefix}presence:`.length);
    if (engine.isWatched(channel)) read(channel);
  });

  /** Reads the remaining life of other processes. */
  async function checkNodes(ids: Iterable<string>): Promise<void> {
    const list = [...ids].filter((id) => id !== node);
    if (list.length === 0) return;
    const pipeline = command.pipeline();
    for (const id of list) pipeline.pttl(nodeKey(id));
    const results = (await pipeline.exec()) ?? [];
    const now = Date.now();
    list.forEach((id, i) => {
      const [error, ttl] = results[i] ?? [new Error('no answer'), null];
      if (error) throw error;
      if (typeof ttl === 'number' && ttl > 0) aliveUntil.set(id, now + ttl);
      else aliveUntil.delete(id);
    });
  }

  /** Every other process's contributions to `channel` that count (their node lives), read now. */
  async function fetchChannel(channel: string): Promise<Map<string, Contribution[]>> {
    const raw = await command.hgetall(channelKey(channel));
    const fields = new Map<string, Contribution[]>();
    for (const [id, value] of Object.entries(raw)) {
      if (id === node) continue;
      try {
        const parsed = JSON.parse(value) as { entries?: unknown };
        if (!Array.isArray(parsed.entries) || !parsed.entries.every(isContribution)) throw new TypeError('not presence entries');
        fields.set(id, parsed.entries);
      } catch (error) {
        log.warn({ err: error, channel, node: id }, 'ignored malformed presence in Redis (another program on this prefix?)');
      }
    }
    const now = Date.now();
    await checkNodes([...fields.keys()].filter((id) => (aliveUntil.get(id) ?? 0) <= now));
    for (const id of fields.keys()) {
      if ((aliveUntil.get(id) ?? 0) > Date.now()) continue;
      fields.delete(id);
      command.eval(DROP_DEAD, 2, channelKey(channel), nodeKey(id), id).catch(() => undefined);
    }
    return fields;
  }

  /** Reads in flight per channel; `true`: read again when it ends (a notification came meanwhile). */
  const reading = new Map<string, boolean>();
  function read(channel: string): void {
    if (closed) return;
    if (reading.has(channel)) return void reading.set(channel, true);
    reading.set(channel, false);
    fetchChannel(channel)
      .then((fields) => {
        if (!engine.isWatched(channel)) return;
        remote.set(channel, fields);
        engine.changed(channel);
      }, (error: unknown) => log.debug({ err: error, channel }, 'presence read failed; read again when Redis is back'))
      .finally(() => {
        const again = reading.get(channel);
        reading.delete(channel);
        if (again) read(channel);
      });
  }

  let writeTimer: NodeJS.Timeout | undefined;
  let writing: Promise<void> | undefined;
  function scheduleWrites(): void {
    if (writeTimer !== undefined || closed) return;
    writeTimer = setTimeout(() => {
      writeTimer = undefined;
      void writes();
    }, intervalMs);
    writeTimer.unref();
  }
  /** Writes the dirty channels' fields (one pipeline); a failed write stays dirty for when Redis is back. */
  function writes(notify = true): Promise<void> {
    if (writing) return writing.then(() => writes(notify));
    if (dirty.size === 0) return Promise.resolve();
    const channels = [...dirty];
    dirty.clear();
    const pipeline = command.pipeline();
    for (const channel of channels) {
      const entries = engine.localEntries(channel);
      if (entries.length === 0) pipeline.hdel(channelKey(channel), node);
      else pipeline.hset(channelKey(channel), node, JSON.stringify({ entries })).pexpire(channelKey(channel), keyTtlMs);
      if (notify) pipeline.publish(channelKey(channel), node);
    }
    writing = pipeline
      .exec()
      .then((results) => {
        if (results?.some(([error]) => error)) throw results.find(([error]) => error)![0];
      })
      .catch((error: unknown) => {
        for (const channel of channels) dirty.add(channel);
        log.debug({ err: error }, 'presence write failed; written again when Redis is back');
      })
      .finally(() => (writing = undefined));
    return writing;
  }

  let sinceRewrite = 0;
  /** The other processes counted at the last tick: a channel is computed again when one comes or goes. */
  let counted = new Set<string>();
  async function tick(): Promise<void> {
    if (closed) return;
    const known = new Set<string>();
    for (const fields of remote.values()) for (const id of fields.keys()) known.add(id);
    try {
      await command.set(nodeKey(node), '1', 'PX', expiryMs);
      await checkNodes(known);
      if (ready()) lastError = undefined;
    } catch (error) {
      // Other processes whose life could not be renewed drop out as it runs out.
      lastError ??= error instanceof Error ? error.message : String(error);
      // A partitioned connection (no RST) stays 'ready' for ever: reconnect it.
      if (command.status === 'ready' && /timed out/i.test(lastError)) {
        command.disconnect(true);
        subscriber.disconnect(true);
      }
    }
    const now = Date.now();
    const alive = new Set([...known].filter((id) => (aliveUntil.get(id) ?? 0) > now));
    const flipped = (id: string) => alive.has(id) !== counted.has(id);
    for (const [channel, fields] of remote) if ([...fields.keys()].some(flipped)) engine.changed(channel);
    counted = alive;
  }
  const ticker = setInterval(() => {
    void tick();
    sinceRewrite += refreshMs;
    if (sinceRewrite < rewriteMs) return;
    sinceRewrite = 0;
    for (const channel of engine.ownedChannels()) dirty.add(channel);
    void writes(false);
    for (const channel of engine.watchedChannels()) read(channel);
  }, refreshMs);
  ticker.unref();
  void tick();

  return {
    set: (connection, channel, tabs, state) => engine.set(connection, channel, tabs, state),
    disconnect: (connectionId) => engine.disconnect(connectionId),
    watch: (channel, listener) => engine.watch(channel, listener),
    async members(channel) {
      if (engine.isWatched(channel) && remote.has(channel)) return engine.snapshot(channel);
      let fields: Map<string, Contribution[]> = new Map();
      try {
        fields = await fetchChannel(channel);
      } catch (error) {
        log.debug({ err: error, channel }, 'presence read failed: answering with this process\'s members only');
      }
      const now = Date.now();
      const entries: Sourced[] = [];
      for (const [id, list] of fields) if ((aliveUntil.get(id) ?? 0) > now) for (const entry of list) entries.push({ node: id, entry });
      return engine.snapshot(channel, entries);
    },
    health: () => (ready() && lastError === undefined ? { kind: 'redis', ok: true } : { kind: 'redis', ok: false, detail: lastError ?? `connection ${command.status}` }),
    async close() {
      if (closed) return;
      clearInterval(ticker);
      clearTimeout(writeTimer);
      writeTimer = undefined;
      // Connections moving to another process within the linger must not be seen to leave.
      engine.lingerAll();
      for (const channel of engine.ownedChannels()) dirty.add(channel);
      if (ready()) {
        await writes().catch(() => undefined);
        // The node key outlives the lingering contributions, so that others still count them.
        await command.set(nodeKey(node), '1', 'PX', options.lingerMs + expiryMs).catch(() => undefined);
      }
      closed = true;
      engine.close();
      command.disconnect();
      subscriber.disconnect();
    },
  };
}
