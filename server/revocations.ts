/**
 * Sessions the backend ended (`POST /api/disconnect` with `revoke`): a user's tokens issued up to
 * that second are refused from then on, so a client cannot come back with the token it holds.
 * Kept in the events DB, so that a restart does not let revoked tokens back in.
 */
import type { EventStore } from './storage/event-store.js';

export class Revocations {
  constructor(private readonly store: Pick<EventStore, 'revoke' | 'revokedThrough'>) {}

  /** Refuse every token of `user` issued up to now (to the second, as `iat` counts). */
  revoke(user: string, now = Date.now()): Promise<void> {
    return this.store.revoke(user, Math.floor(now / 1000) * 1000);
  }

  /** Whether a token of `user` issued at `issuedAt` (ms; undefined: no `iat`) was revoked. */
  async refuses(user: string, issuedAt: number | undefined): Promise<boolean> {
    const through = await this.store.revokedThrough(user);
    if (through === undefined) return false;
    return issuedAt === undefined || issuedAt <= through;
  }
}
