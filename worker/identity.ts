/**
 * Who the worker writes as. The user is read from the token's `sub` without verifying it:
 * the server verifies every token; the worker only needs it to keep each user's writes apart
 * (they are never sent under another user's token).
 */
import type { Database } from './db.js';

export interface Identity {
  /** The token's `sub`, or '' when anonymous. */
  user: string;
  clientId: string;
}

export function userOfToken(token: string | undefined): string {
  if (token === undefined) return '';
  const payload = token.split('.')[1];
  if (!payload) return '';
  try {
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '='));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : '';
  } catch {
    return '';
  }
}

/** The durable client id of `user` for `url`, created on first use. */
export async function clientIdentity(db: Database, url: string, user: string): Promise<Identity> {
  const tx = db.transaction('clients', 'readwrite', { durability: 'strict' });
  let record = await tx.store.get([url, user]);
  if (!record) {
    record = { url, user, clientId: crypto.randomUUID(), nextSeq: 1 };
    await tx.store.put(record);
  }
  await tx.done;
  return { user, clientId: record.clientId };
}
