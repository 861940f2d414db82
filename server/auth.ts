/**
 * Client identity from the handshake token: a JWT signed by the app's backend.
 * Only HS256 is accepted (an explicit list, so `alg: none` and algorithm swaps are refused).
 */
import { errors, jwtVerify } from 'jose';
import type { ErrorShape } from '../protocol/errors.js';

export interface VerifiedIdentity {
  ok: true;
  /** `sub`, or null for an anonymous development client. */
  user: string | null;
  /** Channel patterns from the `channels` claim; undefined allows every channel. */
  channels: string[] | undefined;
  /** When the token expires (ms since epoch); undefined in development mode. */
  expiresAt: number | undefined;
}

export type Identity = VerifiedIdentity | { ok: false; error: ErrorShape };

export type Authenticate = (token: string | undefined) => Promise<Identity>;

export function createAuthenticator(secret: string | undefined): Authenticate {
  if (secret === undefined) {
    // Development mode: everyone is anonymous; the server warns loudly at start.
    return async () => ({ ok: true, user: null, channels: undefined, expiresAt: undefined });
  }
  const key = new TextEncoder().encode(secret);
  return async (token) => {
    if (token === undefined) return { ok: false, error: { code: 'unauthorized', message: 'a token is required' } };
    try {
      const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] });
      if (typeof payload.sub !== 'string' || payload.sub === '') {
        return { ok: false, error: { code: 'unauthorized', message: 'the token has no subject (sub)' } };
      }
      const claim = payload.channels;
      if (claim !== undefined && !(Array.isArray(claim) && claim.every((c) => typeof c === 'string'))) {
        return { ok: false, error: { code: 'unauthorized', message: 'the channels claim must be an array of strings' } };
      }
      return { ok: true, user: payload.sub, channels: claim as string[] | undefined, expiresAt: (payload.exp ?? 0) * 1000 };
    } catch (cause) {
      const message = cause instanceof errors.JWTExpired ? 'the token has expired' : 'the token is invalid';
      return { ok: false, error: { code: 'unauthorized', message } };
    }
  };
}
