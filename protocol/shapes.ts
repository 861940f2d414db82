/**
 * Shapes shared by the worker, the SDK and the server that are not wire messages themselves:
 * one definition each, so the sides cannot drift apart.
 */
export type { ReadVersion, Publisher } from './messages.js';
import type { ReadVersion } from './messages.js';

/** A queued write as the app made it, before the outbox numbers it. */
export type WriteOp =
  | { op: 'publish'; channel: string; data: unknown }
  /** `null` in writes deletes the key. */
  | { op: 'transact'; doc: string; reads: Record<string, ReadVersion>; writes: Record<string, unknown> };

/** A transaction the server rejected whose function could not run again (its tab was gone, or it gave up). */
export interface DocConflict {
  /** The rejected transaction's writes. */
  writes: Record<string, unknown>;
  /** The confirmed values it met (`undefined`: the key does not exist). */
  current: Record<string, unknown>;
  at: number;
}
