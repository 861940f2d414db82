/**
 * What every store records the same way: the fingerprint an `Idempotency-Key` is bound to, the
 * publisher of backend writes, and new epochs.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { WriteRequest } from './event-store.js';

/** The publisher of events written through the HTTP API. */
export const BACKEND_PUBLISHER = '{"backend":true}';

/** A new channel or documents epoch: 12 hex characters. */
export function newEpoch(): string {
  return randomBytes(6).toString('hex');
}

/** What an `Idempotency-Key` is bound to: the kind of write, its target and its body. */
export function fingerprint(request: Exclude<WriteRequest, { kind: 'skip' }>): string {
  const body = request.kind === 'publish'
    ? ['publish', request.channel, request.data]
    : ['transact', request.doc, JSON.stringify(request.reads), JSON.stringify(request.writes)];
  return createHash('sha256').update(JSON.stringify(body)).digest('base64url');
}
