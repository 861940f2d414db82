/**
 * Fan-out of stored events to the sessions subscribed to their channel. In process by
 * default; a Redis or NATS broker implements the same interface to span several servers.
 */
import type { StoredEvent } from '../storage/event-store.js';
import { eventFrame } from './frames.js';

export type EventListener = (event: StoredEvent, frame: string) => void;

export interface Broker {
  /** Delivers a stored event to every subscriber of its channel (in offset order per channel). */
  publish(event: StoredEvent): void;
  /** Returns the function that unsubscribes. */
  subscribe(channel: string, listener: EventListener): () => void;
  close(): Promise<void>;
}

export function createLocalBroker(): Broker {
  const channels = new Map<string, Set<EventListener>>();
  return {
    publish(event) {
      const listeners = channels.get(event.channel);
      if (!listeners) return;
      const frame = eventFrame(event.channel, event.offset, event.data); // serialised once for everyone
      for (const listener of listeners) listener(event, frame);
    },
    subscribe(channel, listener) {
      let listeners = channels.get(channel);
      if (!listeners) channels.set(channel, (listeners = new Set()));
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0) channels.delete(channel);
      };
    },
    async close() {
      channels.clear();
    },
  };
}
