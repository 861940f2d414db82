/**
 * Sessions the backend ended (`POST /api/disconnect` with `revoke`): a user's tokens issued up to
 * that second are refused from then on, so a client cannot come back with the token it holds.
 * Kept in memory of this process; a token lives at most until its `exp`, so an entry is useful
 * only while tokens signed before it can still be valid.
 */
export class Revocations {
  private readonly revokedThrough = new Map<string, number>();

  /** Refuse every token of `user` issued up to now (to the second, as `iat` counts). */
  revoke(user: string, now = Date.now()): void {
    this.revokedThrough.set(user, Math.floor(now / 1000) * 1000);
  }

  /** Whether a token of `user` issued at `issuedAt` (ms; undefined: no `iat`) was revoked. */
  refuses(user: string, issuedAt: number | undefined): boolean {
    const through = this.revokedThrough.get(user);
    if (through === undefined) return false;
    return issuedAt === undefined || issuedAt <= through;
  }
}
