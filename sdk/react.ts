/**
 * React bindings (optional: `import { useDoc, useStatus } from 'tether/react'`), on zustand's
 * `useStore` (useSyncExternalStore underneath): a component re-renders when what it selects changes.
 */
import { useStore } from 'zustand';
import type { ReadonlyStore } from './readonly-store.js';
import type { DocStatus, DocStore } from './documents.js';
import type { Status } from '../worker/api.js';

const identity = <T>(value: T): T => value;

/**
 * The local view of a shared document (or the part `selector` picks):
 * `const board = useDoc(client.state.doc('board'))`.
 */
export function useDoc<T extends Record<string, unknown>>(doc: DocStore<T>): T;
export function useDoc<T extends Record<string, unknown>, U>(doc: DocStore<T>, selector: (view: T) => U): U;
export function useDoc<T extends Record<string, unknown>, U>(doc: DocStore<T>, selector: (view: T) => U = identity as (view: T) => U): U {
  return useStore(doc, selector);
}

/** A document's sync status: `synced`, `pending`, `version`, `conflicts`. */
export function useDocStatus<T extends Record<string, unknown>>(doc: DocStore<T>): DocStatus {
  return useStore(doc.status);
}

/** The client's connection status: `const { connection, pending } = useStatus(client.status)`. */
export function useStatus(status: ReadonlyStore<Status>): Status {
  return useStore(status);
}
