/**
 * Per-node order for a fan-out that does not keep it. Notifications from several publishing
 * nodes (Redis pub/sub) arrive late, early, twice or never; the store has every committed item
 * in order (offsets per channel, versions per document are assigned in the database, and a
 * position is only taken by a transaction that commits before the next one gets the next
 * position). So each stream keeps a cursor — the last position delivered on this node — and:
 *   - a notification at or below the cursor is dropped (seen),
 *   - the next one is delivered,
 *   - one further ahead waits while the gap is read from the store, in order,
 *   - and a poll of the store's positions finds what no notification announced (a publisher
 *     killed between its commit and its publish, a fan-out outage).
 * Listeners therefore get every item after the cursor they joined at, once, in order.
 */
import type { Logger } from '../log.js';

/** Notifications held ahead of a gap, per stream. */
const MAX_EARLY = 1000;

export interface StreamSource<T> {
  /**
   * A stream's position now (its head offset or version): where a new cursor starts; and its
   * epoch, when items carry one (a notification of another epoch — another events DB on the same
   * Redis, a restored backup — is never delivered: the store is read instead).
   */
  head(key: string): Promise<{ position: number; epoch?: string }>;
  /** What the store has after `from`, in order: one page, and whether more follows at once. */
  readAfter(key: string, from: number): Promise<{ items: T[]; more: boolean }>;
  position(item: T): number;
  epoch?(item: T): string | undefined;
}

export type ItemListener<T> = (item: T) => void;

interface Stream<T> {
  listeners: Set<ItemListener<T>>;
  /** Last position delivered; undefined until the head was read. */
  cursor: number | undefined;
  epoch: string | undefined;
  ready: Promise<void>;
  /** Notifications ahead of the cursor, by position. */
  early: Map<number, T>;
  /** A read from the store runs (one at a time per stream). */
  filling: boolean;
  /** Read again after the current fill: something past it is known to exist. */
  refill: boolean;
}

export class OrderedStreams<T> {
  private readonly streams = new Map<string, Stream<T>>();
  /** Store reads made to fill gaps, for tests and metrics. */
  fills = 0;

  constructor(
    private readonly source: StreamSource<T>,
    private readonly log: Logger,
    /** Failures of the store while filling are retried by the next poll. */
    private readonly what: string,
  ) {}

  /** Keys with listeners on this node. */
  keys(): string[] {
    return [...this.streams.keys()];
  }

  has(key: string): boolean {
    return this.streams.has(key);
  }

  /**
   * Adds a listener. The first one of a stream reads its head: the cursor starts there, and
   * `ready` resolves once it is known (items after it all reach the listener).
   */
  listen(key: string, listener: ItemListener<T>): { ready: Promise<void>; stop: () => boolean } {
    let stream = this.streams.get(key);
    if (!stream) {
      const created: Stream<T> = { listeners: new Set(), cursor: undefined, epoch: undefined, ready: Promise.resolve(), early: new Map(), filling: false, refill: false };
      created.ready = this.source.head(key).then(
        (head) => {
          if (this.streams.get(key) !== created) return;
          created.cursor = head.position;
          created.epoch = head.epoch;
          this.drainEarly(key, created);
        },
        (error: unknown) => {
          // Nobody can be served on this stream without its head: forget it, the next listener retries.
          if (this.streams.get(key) === created) this.streams.delete(key);
          throw error;
        },
      );
      // A listener whose catch-up has not reached `await ready` yet (queued, or gone) must not
      // turn a failed head read into an unhandled rejection; those that await it still see it.
      created.ready.catch(() => undefined);
      stream = created;
      this.streams.set(key, stream);
    }
    const joined = stream;
    joined.listeners.add(listener);
    return {
      ready: joined.ready,
      /** Returns true when it was the stream's last listener (the transport may unsubscribe). */
      stop: () => {
        joined.listeners.delete(listener);
        if (joined.listeners.size > 0 || this.streams.get(key) !== joined) return false;
        this.streams.delete(key);
        return true;
      },
    };
  }

  /** A notification (from this node or another). */
  offer(key: string, item: T): void {
    const stream = this.streams.get(key);
    if (!stream) return;
    const position = this.source.position(item);
    const epoch = this.source.epoch?.(item);
    if (epoch !== undefined && stream.epoch !== undefined && epoch !== stream.epoch) {
      // Not this events DB's (another deployment on the same Redis and prefix?): the store decides.
      this.log.warn({ [this.what]: key }, `ignored a ${this.what} notification of another epoch (is another deployment using the same Redis prefix?)`);
      return this.fill(key, stream);
    }
    if (stream.cursor === undefined || stream.filling) {
      if (stream.cursor === undefined || position > stream.cursor) this.hold(stream, position, item);
      return;
    }
    if (position <= stream.cursor) return;
    if (position === stream.cursor + 1) {
      this.deliver(stream, item);
      return this.drainEarly(key, stream);
    }
    this.hold(stream, position, item);
    this.fill(key, stream);
  }

  /** Held notifications are only a shortcut (the store has them all): past a bound they are dropped and read back. */
  private hold(stream: Stream<T>, position: number, item: T): void {
    if (stream.early.size >= MAX_EARLY) {
      stream.early.clear();
      stream.refill = true;
    }
    stream.early.set(position, item);
  }

  /** The store says `key` is at `position`: read what this node has not delivered. */
  known(key: string, position: number): void {
    const stream = this.streams.get(key);
    if (!stream || stream.cursor === undefined) return;
    if (position > stream.cursor) this.fill(key, stream);
  }

  clear(): void {
    this.streams.clear();
  }

  private deliver(stream: Stream<T>, item: T): void {
    stream.cursor = this.source.position(item);
    for (const listener of stream.listeners) listener(item);
  }

  /** Delivers held notifications that are next in line; a gap still open starts a fill. */
  private drainEarly(key: string, stream: Stream<T>): void {
    if (this.takeEarly(stream)) this.fill(key, stream);
  }

  /** Delivers the held notifications next in line; returns whether a gap remains before others. */
  private takeEarly(stream: Stream<T>): boolean {
    if (stream.cursor === undefined) return false;
    for (const position of [...stream.early.keys()].sort((a, b) => a - b)) {
      const item = stream.early.get(position)!;
      stream.early.delete(position);
      if (position <= stream.cursor) continue;
      if (position !== stream.cursor + 1) {
        stream.early.set(position, item);
        return true;
      }
      this.deliver(stream, item);
    }
    return false;
  }

  private fill(key: string, stream: Stream<T>): void {
    if (stream.filling) {
      stream.refill = true;
      return;
    }
    stream.filling = true;
    this.fills++;
    void (async () => {
      try {
        for (;;) {
          stream.refill = false;
          const before = stream.cursor!;
          const { items, more } = await this.source.readAfter(key, before);
          if (this.streams.get(key) !== stream) return;
          for (const item of items) if (this.source.position(item) > stream.cursor!) this.deliver(stream, item);
          const gap = this.takeEarly(stream);
          // Done when caught up; a read that found nothing new waits for the next poll rather than spin.
          if (stream.cursor === before || (!more && !gap && !stream.refill)) break;
        }
      } catch (error) {
        // The store is down: what is missing stays missing until the next poll reads it.
        this.log.warn({ err: error, [this.what]: key }, `could not read missed ${this.what} items from the events DB; the next poll retries`);
      } finally {
        stream.filling = false;
      }
    })();
  }
}
