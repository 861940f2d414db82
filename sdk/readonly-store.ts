/**
 * The stores an app gets are read-only: zustand's `setState` stays inside the SDK, so an app
 * cannot write a document's view (or the status) around a transaction. Works with zustand's
 * `useStore` and anything else that reads `getState`/`getInitialState`/`subscribe`.
 */
import type { StoreApi } from 'zustand/vanilla';

/** A zustand store an app can read and subscribe to, but not write. */
export type ReadonlyStore<T> = Pick<StoreApi<T>, 'getState' | 'getInitialState' | 'subscribe'>;

export function readonly<T>(store: StoreApi<T>): ReadonlyStore<T> {
  return { getState: store.getState, getInitialState: store.getInitialState, subscribe: store.subscribe };
}
