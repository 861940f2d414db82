/**
 * Tether: RPC, pub/sub and shared state for the browser, through one SharedWorker per origin.
 * @packageDocumentation
 */
import { createClient, type TetherClient } from './client.js';
import type { ConnectOptions } from './options.js';

/** Connects this tab to a Tether server through the origin's shared worker. */
export function connect(options: ConnectOptions): TetherClient {
  // App bundlers (Vite, webpack 5) recognise this pattern and ship the worker file; the marker
  // only keeps the SDK's own lib build from rewriting it (vite.config.ts blanks it in the output).
  return createClient(options, new URL(/* @vite-ignore */ './tether-worker.js', import.meta.url).href);
}

export { TetherError, type ErrorShape } from '../protocol/errors.js';
export type { ErrorCode } from '../protocol/constants.js';
export type { ConnectOptions, ConnectMode } from './options.js';
export type { TetherClient, RpcCallOptions, EventMeta, SubscribeOptions, Persistence } from './client.js';
export type { Publisher } from '../protocol/shapes.js';
export type { Status, ConnectionState, HostMode, TransportKind, PendingWrite, DocConflict } from '../worker/api.js';
export type { ReadonlyStore } from './readonly-store.js';
export type { InspectorStore } from './inspector.js';
export type { Inspection, InspectedWrite } from '../worker/api.js';
export type { DocStore, DocStatus, Transaction, TransactOptions } from './documents.js';
export type { PresenceStore, PresenceMember, PresenceSnapshot } from './presence.js';
