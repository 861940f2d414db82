/**
 * React bindings (optional: `import { useDoc, useStatus, usePresence } from 'tether/react'`), on
 * useSyncExternalStore (zustand's `useStore` for the stores a component is given): a component
 * re-renders when what it reads changes.
 */
import { useCallback, useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import { useStore } from 'zustand';
import type { ReadonlyStore } from './readonly-store.js';
import type { DocStatus, DocStore } from './documents.js';
import type { TetherClient } from './client.js';
import type { InspectorStore } from './inspector.js';
import type { PresenceStore } from './presence.js';
import type { ErrorShape } from '../protocol/errors.js';
import type { Inspection, PresenceSnapshot, Status } from '../worker/api.js';

const identity = <T>(value: T): T => value;

/** A TetherError (or anything thrown) as its code and message. */
function toShape(error: unknown): ErrorShape {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return typeof code === 'string' && typeof message === 'string' ? { code: code as ErrorShape['code'], message } : { code: 'internal', message: String(error) };
}

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

/** What `usePresence` returns: the channel's presence as this tab sees it, and why the last state was refused. */
export interface PresenceView extends PresenceSnapshot {
  /** Why the last `state` given to the hook was refused (`message_too_big`, `invalid_argument`, …); null once one is taken. */
  stateError: ErrorShape | null;
}

/**
 * Joins `channel`'s presence while the component is mounted, leaves when it unmounts, and
 * returns who is there: `const { members } = usePresence(client, 'board', { typing })`.
 * `state`, when given, is set whenever its JSON changes. Each mount joins with a store of its
 * own, so StrictMode's mount, unmount and mount again ends joined once.
 */
export function usePresence(client: Pick<TetherClient, 'presence'>, channel: string, state?: unknown): PresenceView {
  const [joined, setJoined] = useState<{ client: Pick<TetherClient, 'presence'>; store: PresenceStore } | null>(null);
  const [stateError, setStateError] = useState<ErrorShape | null>(null);
  useEffect(() => {
    const store = client.presence(channel);
    setJoined({ client, store });
    setStateError(null);
    return () => store.leave();
  }, [client, channel]);
  // A store of an earlier client or channel is not shown while the new one is being joined.
  const store = joined && joined.client === client && joined.store.channel === channel ? joined.store : null;
  // By value: a literal `{ typing }` is a new object on every render. Not JSON: said, not thrown.
  const { json, invalid } = useMemo(() => jsonOf(state), [state]);
  useEffect(() => {
    if (!store || json === undefined) return;
    let current = true;
    store.set(JSON.parse(json)).then(
      () => current && setStateError(null),
      (error: unknown) => {
        // Left meanwhile (unmounted, or the channel changed): nothing to report. (By shape, not
        // instanceof: this bundle does not share the SDK's TetherError class.)
        const shape = toShape(error);
        if (current && shape.code !== 'closed') setStateError(shape);
      },
    );
    return () => {
      current = false;
    };
  }, [store, json]);
  const idle = useMemo<PresenceSnapshot>(() => ({ channel, joined: false, members: [], total: 0, error: null }), [channel]);
  const snapshot = useSyncExternalStore(
    useCallback((onChange: () => void) => (store ? store.subscribe(onChange) : () => {}), [store]),
    () => (store ? store.getState() : idle),
    () => idle,
  );
  const error = invalid ?? stateError;
  return useMemo(() => ({ ...snapshot, stateError: error }), [snapshot, error]);
}

/** `state` as JSON text (undefined: no state given), or why it is not JSON. */
function jsonOf(state: unknown): { json?: string; invalid?: ErrorShape } {
  if (state === undefined) return {};
  try {
    const json = JSON.stringify(state);
    if (json !== undefined) return { json };
  } catch (cause) {
    return { invalid: { code: 'invalid_argument', message: `usePresence(state): state must be JSON (${String(cause)})` } };
  }
  return { invalid: { code: 'invalid_argument', message: 'usePresence(state): state must be JSON' } };
}

/**
 * What the worker holds (`client.inspect()`), live while the component is mounted; null until
 * the first inspection arrives: `const inspection = useInspection(client)`.
 */
export function useInspection(client: Pick<TetherClient, 'inspect'>): Inspection | null {
  const [store, setStore] = useState<InspectorStore | null>(null);
  useEffect(() => {
    const opened = client.inspect();
    setStore(opened);
    return () => opened.close();
  }, [client]);
  return useSyncExternalStore(
    useCallback((onChange: () => void) => (store ? store.subscribe(onChange) : () => {}), [store]),
    () => (store ? store.getState() : null),
    () => null,
  );
}
