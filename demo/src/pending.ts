/**
 * What the server has not acknowledged yet, for the "pending" badges: this user's outbox
 * (`client.pubsub.pending()`: every tab's writes, across reloads) plus this tab's writes from the
 * moment they are made (a transaction shows in the view before the worker has stored it).
 *
 * The outbox is read again whenever something may have changed it: the status (its `pending`
 * count), a document snapshot, a chat event, and each of this tab's writes settling.
 */
import { useStore } from 'zustand';
import { createStore, type StoreApi } from 'zustand/vanilla';
import type { TetherClient } from '../../sdk/index.js';

type PendingWrite = Awaited<ReturnType<TetherClient['pubsub']['pending']>>[number];

interface LocalWrite {
  id: number;
  doc?: string;
  keys?: string[];
  channel?: string;
  data?: unknown;
}

interface PendingState {
  outbox: PendingWrite[];
  local: LocalWrite[];
}

export interface PendingTracker {
  store: StoreApi<PendingState>;
  /** Reads the outbox again (coalesced: at most one read in flight, one more queued). */
  refresh(): void;
  /** Shows a write of this tab as pending until `promise` settles. */
  track<T>(write: Omit<LocalWrite, 'id'>, promise: Promise<T>): Promise<T>;
}

const trackers = new WeakMap<TetherClient, PendingTracker>();

export function pendingTracker(client: TetherClient): PendingTracker {
  const existing = trackers.get(client);
  if (existing) return existing;
  const store = createStore<PendingState>()(() => ({ outbox: [], local: [] }));
  let reading = false;
  let again = false;
  let nextId = 1;
  const refresh = () => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    again = false;
    client.pubsub.pending().then(
      (outbox) => store.setState({ outbox }),
      () => {}, // the host is changing (leader election): the next status change reads it again
    ).finally(() => {
      reading = false;
      if (again) refresh();
    });
  };
  const track = <T,>(write: Omit<LocalWrite, 'id'>, promise: Promise<T>): Promise<T> => {
    const id = nextId++;
    store.setState((s) => ({ local: [...s.local, { ...write, id }] }));
    const settle = () => {
      store.setState((s) => ({ local: s.local.filter((w) => w.id !== id) }));
      refresh();
    };
    promise.then(settle, settle);
    return promise;
  };
  client.status.subscribe(refresh);
  refresh();
  const tracker = { store, refresh, track };
  trackers.set(client, tracker);
  return tracker;
}

/** Keys of document `doc` that a write not yet acknowledged changes. */
export function usePendingKeys(client: TetherClient, doc: string): ReadonlySet<string> {
  const { outbox, local } = useStore(pendingTracker(client).store);
  const keys = new Set<string>();
  for (const write of outbox) if (write.op === 'transact' && write.doc === doc) for (const key of Object.keys(write.writes)) keys.add(key);
  for (const write of local) if (write.doc === doc) for (const key of write.keys ?? []) keys.add(key);
  return keys;
}

/** The data of every publish on `channel` not yet acknowledged, oldest first. */
export function usePendingPublishes(client: TetherClient, channel: string): unknown[] {
  const { outbox, local } = useStore(pendingTracker(client).store);
  return [
    ...outbox.filter((w) => w.op === 'publish' && w.channel === channel).map((w) => (w.op === 'publish' ? w.data : undefined)),
    ...local.filter((w) => w.channel === channel).map((w) => w.data),
  ];
}
