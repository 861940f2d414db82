/**
 * `client.inspect()`: what the worker holds for this client's server, as a read-only store that
 * the worker keeps current (at most every 250 ms). One registration per tab however many stores
 * are open: the worker keeps one inspector per tab.
 */
import * as Comlink from 'comlink';
import { createStore, type StoreApi } from 'zustand/vanilla';
import type { Inspection, TabApi } from '../worker/api.js';
import { readonly, type ReadonlyStore } from './readonly-store.js';

/** What `client.inspect()` returns: the worker's state (null until it first arrives, or with an older worker), live. */
export type InspectorStore = ReadonlyStore<Inspection | null> & {
  /** Stops this store's updates (the worker stops sending once every store of the tab is closed). */
  close(): void;
};

export function createInspector(attached: Promise<Comlink.Remote<TabApi>>, apiVersion: () => number) {
  let shared: { store: StoreApi<Inspection | null>; users: number; tab: Promise<Comlink.Remote<TabApi> | undefined> } | undefined;
  return (): InspectorStore => {
    if (!shared) {
      const store = createStore<Inspection | null>()(() => null);
      const tab = attached.then((tab) => {
        if (apiVersion() < 3) {
          console.warn(`[tether] client.inspect(): the worker running for this origin is older (tab API version ${apiVersion()}; inspecting needs 3), so the inspector stays empty; close every tab of this site to start the new worker`);
          return undefined;
        }
        void tab.inspect(Comlink.proxy((inspection: Inspection) => store.setState(inspection, true)));
        return tab;
      }, () => undefined);
      shared = { store, users: 0, tab };
    }
    const current = shared;
    current.users++;
    let open = true;
    return {
      ...readonly(current.store),
      close() {
        if (!open) return;
        open = false;
        if (--current.users > 0 || shared !== current) return;
        shared = undefined;
        void current.tab.then((tab) => tab?.stopInspect());
      },
    };
  };
}
