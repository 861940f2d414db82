/**
 * Client identity from the handshake token: a JWT signed by the app's backend, with HS256
 * (a shared secret) or RS256/ES256 (a public key, or a JWKS file picked by `kid`). The accepted
 * algorithms are an explicit list built from what is configured, so `alg: none` and algorithm
 * swaps (an RS256 public key used as an HS256 secret) are refused.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { ErrorShape } from '../protocol/errors.js';
import { parseGrants, type Grants, type ServerConfig } from './config.js';
import { grantAll, permissionsOf, type Permissions } from './grants.js';

export interface VerifiedIdentity {
  ok: true;
  /** `sub`, or null for an anonymous development client. */
  user: string | null;
  /** What this client may do. */
  permissions: Permissions;
  /** When the token expires (ms since epoch); undefined in development mode. */
  expiresAt: number | undefined;
  /** When the token was issued (`iat`, ms since epoch), to refuse it after a revocation. */
  issuedAt: number | undefined;
}

export type Identity = VerifiedIdentity | { ok: false; error: ErrorShape };

export interface Authenticate {
  (token: string | undefined): Promise<Identity>;
  /** No key configured: every client is anonymous and may do everything. */
  readonly development: boolean;
}

export type AuthSettings = Pick<ServerConfig, 'tokenSecret' | 'tokenPublicKey' | 'tokenJwks' | 'tokenAudience' | 'tokenIssuer' | 'defaultGrants'>;

/** Clock skew tolerated between the backend that signs and this server. */
const CLOCK_TOLERANCE_S = 5;

function refused(message: string): Identity {
  return { ok: false, error: { code: 'unauthorized', message } };
}

function algorithmOf(key: KeyObject): 'RS256' | 'ES256' {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  throw new TypeError('TETHER_TOKEN_PUBLIC_KEY_FILE must hold an RSA (RS256) or P-256 (ES256) public key');
}

export function createAuthenticator(settings: AuthSettings): Authenticate {
  const secret = settings.tokenSecret === undefined ? undefined : new TextEncoder().encode(settings.tokenSecret);
  let publicKey: { key: KeyObject; alg: 'RS256' | 'ES256' } | undefined;
  if (settings.tokenPublicKey !== undefined) {
    let key: KeyObject;
    try {
      key = createPublicKey(settings.tokenPublicKey);
    } catch {
      throw new TypeError('TETHER_TOKEN_PUBLIC_KEY_FILE does not hold a PEM public key');
    }
    publicKey = { key, alg: algorithmOf(key) };
  }
  let jwks: JWTVerifyGetKey | undefined;
  if (settings.tokenJwks !== undefined) {
    try {
      jwks = createLocalJWKSet(JSON.parse(settings.tokenJwks) as Parameters<typeof createLocalJWKSet>[0]);
    } catch {
      throw new TypeError('TETHER_TOKEN_JWKS_FILE does not hold a JSON Web Key Set ({"keys": [...]})');
    }
  }

  if (secret === undefined && publicKey === undefined && jwks === undefined) {
    const anonymous = async (): Promise<Identity> => ({ ok: true, user: null, permissions: grantAll, expiresAt: undefined, issuedAt: undefined });
    return Object.assign(anonymous, { development: true });
  }

  const algorithms: string[] = [];
  if (secret) algorithms.push('HS256');
  if (publicKey) algorithms.push(publicKey.alg);
  if (jwks) algorithms.push('RS256', 'ES256');
  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (header.alg === 'HS256' && secret) return secret;
    if (publicKey && header.alg === publicKey.alg && (header.kid === undefined || !jwks)) return publicKey.key;
    if (jwks) return jwks(header, token);
    throw new errors.JOSEAlgNotAllowed('no key for this algorithm');
  };

  const verify = async (token: string | undefined): Promise<Identity> => {
    if (token === undefined) return refused('a token is required');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        algorithms: [...new Set(algorithms)],
        requiredClaims: ['sub', 'exp'],
        clockTolerance: CLOCK_TOLERANCE_S,
        ...(settings.tokenAudience === undefined ? {} : { audience: settings.tokenAudience }),
        ...(settings.tokenIssuer === undefined ? {} : { issuer: settings.tokenIssuer }),
      }));
    } catch (cause) {
      return refused(reasonOf(cause));
    }
    // The tolerance is for `nbf` (a backend clock slightly ahead); an expired token is not welcomed
    // only to be disconnected a moment later.
    if ((payload.exp ?? 0) * 1000 <= Date.now()) return refused('the token has expired');
    if (typeof payload.sub !== 'string' || payload.sub === '') return refused('the token has no subject (sub)');
    if (payload.sub.length > 200) return refused('the token subject (sub) is longer than 200 characters');
    let grants: Grants;
    try {
      const claims: Record<string, unknown> = {};
      for (const name of ['channels', 'subscribe', 'publish', 'docs', 'docs_read', 'rpc']) {
        if (payload[name] !== undefined) claims[name] = payload[name];
      }
      grants = parseGrants(claims, 'the token');
    } catch (cause) {
      return refused((cause as Error).message);
    }
    return {
      ok: true,
      user: payload.sub,
      permissions: permissionsOf(grants, settings.defaultGrants),
      expiresAt: (payload.exp ?? 0) * 1000,
      issuedAt: payload.iat === undefined ? undefined : payload.iat * 1000,
    };
  };
  return Object.assign(verify, { development: false });
}

function reasonOf(cause: unknown): string {
  if (cause instanceof errors.JWTExpired) return 'the token has expired';
  if (cause instanceof errors.JWTClaimValidationFailed) {
    if (cause.claim === 'nbf') return 'the token is not valid yet (nbf)';
    if (cause.claim === 'aud') return 'the token is for another audience (aud)';
    if (cause.claim === 'iss') return 'the token is from another issuer (iss)';
    if (cause.reason === 'missing') return `the token has no ${cause.claim} claim`;
    return `the token's ${cause.claim} claim is invalid`;
  }
  if (cause instanceof errors.JOSEAlgNotAllowed) return 'the token is signed with an algorithm this server does not accept';
  return 'the token is invalid';
}
