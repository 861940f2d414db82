/**
 * Fan-out of stored events to the sessions subscribed to their channel. In process by
 * default; a Redis or NATS broker implements the same interface to span several servers.
 */
import type { DocChange, StoredEvent } from '../storage/event-store.js';
import { docFrame, eventFrame } from './frames.js';

export type EventListener = (event: StoredEvent, frame: string) => void;
export type DocListener = (change: DocChange, frame: string) => void;

export interface Broker {
  /** Delivers a stored event to every subscriber of its channel (in offset order per channel). */
  publish(event: StoredEvent): void;
  /** Returns the function that unsubscribes. */
  subscribe(channel: string, listener: EventListener): () => void;
  /** Delivers a committed document change to every session that has the document open. */
  publishDoc(change: DocChange): void;
  subscribeDoc(doc: string, listener: DocListener): () => void;
  close(): Promise<void>;
}

/** A map of topic → listeners that cleans up empty topics. */
class Topics<L> {
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
    subscribe: (channel, listener) => channels.add(channel, listener),
    publishDoc(change) {
      const listeners = docs.get(change.doc);
      if (!listeners) return;
      const frame = docFrame(change, false);
      for (const listener of listeners) listener(change, frame);
    },
    subscribeDoc: (doc, listener) => docs.add(doc, listener),
    async close() {
      channels.clear();
      docs.clear();
    },
  };
}
