/**
 * `client.inspect()`: what the worker holds for this client's server, as a read-only store that
 * the worker keeps current (at most every 250 ms). One registration per tab however many stores
 * are open: the worker keeps one inspector per tab.
 *
 * The worker is told `inspect` / `stopInspect` only from `sync()`, which compares what is open
 * right now with what the worker was last told and sends the difference at once. Comlink keeps
 * the calls of one port in order, so the worker ends registered exactly when a store is open,
 * whatever the sequence of opens and closes (React StrictMode mounts, unmounts and mounts again
 * before the tab is even attached).
 */
import * as Comlink from 'comlink';
import { createStore, type StoreApi } from 'zustand/vanilla';
import type { Inspection, Outcome, TabApi } from '../worker/api.js';
import { readonly, type ReadonlyStore } from './readonly-store.js';

/** What `client.inspect()` returns: the worker's state (null until it first arrives, or with an older worker), live. */
export type InspectorStore = ReadonlyStore<Inspection | null> & {
  /** Stops this store's updates (the worker stops sending once every store of the tab is closed). */
  close(): void;
};

/**
 * `client.inspect` for one client: `attached` is the tab's API in the worker (rejects if it never
 * attaches), `apiVersion` the worker's TabApi version once attached, and `closed` true once
 * `client.close()` ran (the tab detached and its proxy is released: nothing is sent any more).
 */
export function createInspector(attached: Promise<Comlink.Remote<TabApi>>, apiVersion: () => number, closed: () => boolean = () => false): () => InspectorStore {
  /** The stores open now share one zustand store; undefined when none is open. */
  let shared: { store: StoreApi<Inspection | null>; users: number } | undefined;
  /** The tab's API once attached; null if it never attached or its worker cannot inspect. */
  let tab: Comlink.Remote<TabApi> | null | undefined;
  /** The store whose listener the worker was last given (undefined: none, or stopInspect sent since). */
  let registered: StoreApi<Inspection | null> | undefined;
  let warned = false;

  const warn = (what: string, reason: unknown) => {
    // After client.close() the worker dropped this tab's inspector itself: nothing is wrong.
    if (warned || closed()) return;
    warned = true;
    console.warn(`[tether] client.inspect(): ${what} failed, so the inspector may not update: ${reason instanceof Error ? reason.message : String(reason)}`);
  };

  /** Calls the worker without ever leaving a rejection unhandled (a released proxy throws at once). */
  const send = <T>(what: string, call: () => T | PromiseLike<T>): Promise<T | undefined> => {
    try {
      return Promise.resolve(call()).catch((error: unknown) => (warn(what, error), undefined));
    } catch (error) {
      warn(what, error);
      return Promise.resolve(undefined);
    }
  };

  const sync = () => {
    if (!tab || closed()) return;
    const wanted = shared?.store;
    if (wanted === registered) return;
    registered = wanted;
    if (!wanted) {
      void send('stopInspect', () => tab!.stopInspect());
      return;
    }
    // Replaces any listener the worker holds for this tab.
    const listener = Comlink.proxy((inspection: Inspection) => wanted.setState(inspection, true));
    void send<Outcome<null>>('inspect', () => tab!.inspect(listener)).then((outcome) => {
      if (outcome && !outcome.ok) warn('inspect', `${outcome.error.code}: ${outcome.error.message}`);
    });
  };

  attached.then(
    (attachedTab) => {
      if (apiVersion() < 3) {
        tab = null;
        console.warn(`[tether] client.inspect(): the worker running for this origin is older (tab API version ${apiVersion()}; inspecting needs 3), so the inspector stays empty; close every tab of this site to start the new worker`);
        return;
      }
      tab = attachedTab;
      sync();
    },
    () => {
      tab = null; // surfaced through rpc.call
    },
  );

  return () => {
    const current = (shared ??= { store: createStore<Inspection | null>()(() => null), users: 0 });
    current.users++;
    sync();
    let open = true;
    return {
      ...readonly(current.store),
      close() {
        if (!open) return;
        open = false;
        if (--current.users > 0) return;
        shared = undefined;
        sync();
      },
    };
  };
}
