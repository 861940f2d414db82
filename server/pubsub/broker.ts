/**
 * Fan-out of stored events to the sessions subscribed to their channel. In process by
 * default; a Redis or NATS broker implements the same interface to span several servers.
 */
import type { DocChange, StoredEvent } from '../storage/event-store.js';
import { docFrame, eventFrame } from './frames.js';

/**
 * Events the store no longer has were skipped (retention overtook a node that could not read in
 * time): delivery resumes after `offset`, and the frame says so (a `reset`), never a silent gap.
 */
export interface ChannelReset {
  reset: true;
  channel: string;
  epoch: string;
  offset: number;
}

export type EventListener = (event: StoredEvent | ChannelReset, frame: string) => void;
export type DocListener = (change: DocChange, frame: string) => void;

export interface Subscription {
  /**
   * Resolves once the listener gets, in order and once, every event (change) after a point no
   * later than the store's head at that moment: a subscriber reads its history after this, and
   * the two meet with nothing in between. Rejects when the broker cannot tell (store down).
   */
  ready: Promise<void>;
  unsubscribe(): void;
}

export interface BrokerHealth {
  kind: 'local' | 'redis';
  ok: boolean;
  /** Why not ok, for operators. */
  detail?: string;
}

export interface Broker {
  /** Delivers a stored event to every subscriber of its channel (in offset order per channel, each once, no gap). */
  publish(event: StoredEvent): void;
  subscribe(channel: string, listener: EventListener): Subscription;
  /** Delivers a committed document change to every session that has the document open (in version order). */
  publishDoc(change: DocChange): void;
  subscribeDoc(doc: string, listener: DocListener): Subscription;
  health(): BrokerHealth;
  close(): Promise<void>;
}

const READY: Promise<void> = Promise.resolve();

/** A map of topic → listeners that cleans up empty topics. */
export class Topics<L> {
  private readonly topics = new Map<string, Set<L>>();
  get(topic: string): Set<L> | undefined {
    return this.topics.get(topic);
  }
  add(topic: string, listener: L): () => void {
    let listeners = this.topics.get(topic);
    if (!listeners) this.topics.set(topic, (listeners = new Set()));
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) this.topics.delete(topic);
    };
  }
  clear(): void {
    this.topics.clear();
  }
}

export function createLocalBroker(): Broker {
  const channels = new Topics<EventListener>();
  const docs = new Topics<DocListener>();
  return {
    publish(event) {
      const listeners = channels.get(event.channel);
      if (!listeners) return;
      const frame = eventFrame(event.channel, event.offset, event.data, event.publisher); // serialised once for everyone
      for (const listener of listeners) listener(event, frame);
    },
    // One process: events are published in commit order, so a listener is complete at once.
    subscribe: (channel, listener) => ({ ready: READY, unsubscribe: channels.add(channel, listener) }),
    publishDoc(change) {
      const listeners = docs.get(change.doc);
      if (!listeners) return;
      const frame = docFrame(change, false);
      for (const listener of listeners) listener(change, frame);
    },
    subscribeDoc: (doc, listener) => ({ ready: READY, unsubscribe: docs.add(doc, listener) }),
    health: () => ({ kind: 'local', ok: true }),
    async close() {
      channels.clear();
      docs.clear();
    },
  };
}
