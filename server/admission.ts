/**
 * Who may open a connection, for both transports (a WebSocket upgrade and a long-polling
 * `open`): origin policy, capacity, new connections per second per address, connections per
 * address, shutting down. One function, so the two doors cannot drift apart.
 */
import type { IncomingMessage } from 'node:http';
import type { ErrorCode } from '../protocol/constants.js';
import { TokenBucket } from '../protocol/rate-limit.js';
import type { Logger } from './log.js';
import type { AdmissionRefusal } from './metrics.js';

export interface AdmissionConfig {
  allowedOrigins: string[];
  maxConnections: number;
  maxConnectionsPerIp: number;
  connectRatePerIp: number;
  trustProxy: boolean;
}

/** `any`: every origin; `listed`: TETHER_ALLOWED_ORIGINS; `same-origin`: pages of this server only. */
export type OriginPolicy = 'any' | 'listed' | 'same-origin';

/** Admitted (with the address the connection counts against), or refused with an HTTP status and a typed reason. */
export type Admission =
  | { ok: true; ip: string }
  | { ok: false; status: 403 | 429 | 503; code: ErrorCode; message: string };

export interface Admissions {
  readonly originPolicy: OriginPolicy;
  /** Whether a request's `Origin` may use this server (browsers always send one; other clients none). */
  originAllowed(req: IncomingMessage): boolean;
  /** The refusal a disallowed origin gets, on every request. */
  readonly originRefusal: Extract<Admission, { ok: false }>;
  /** Decides on a new connection; an admitted one must be reported with `opened` once it exists. */
  admit(req: IncomingMessage, kind: string): Admission;
  opened(ip: string): void;
  closed(ip: string): void;
  /** Forgets the connect-rate buckets that are full again (called by the server's sweep). */
  sweep(now: number): void;
}

/** The client's address for per-address limits: the peer, or behind a trusted proxy the address it appended. */
export function clientAddress(req: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const header = req.headers['x-forwarded-for'];
    const last = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',').map((a) => a.trim()).filter(Boolean).at(-1);
    if (last !== undefined) return last;
  }
  return req.socket.remoteAddress ?? 'unknown';
}

export function createAdmissions(options: {
  config: AdmissionConfig;
  development: boolean;
  log: Logger;
  /** Connections open now, over both transports. */
  connections(): number;
  shuttingDown(): boolean;
  /** Told the reason of each refusal (the server's metrics). */
  refused?: (reason: AdmissionRefusal) => void;
}): Admissions {
  const { config, log } = options;
  // No list: anything goes in development mode; with tokens checked, only this server's own pages
  // (a site the user visits cannot open connections with a token it got from the app's backend).
  const originPolicy: OriginPolicy = config.allowedOrigins.includes('*')
    ? 'any'
    : config.allowedOrigins.length > 0
      ? 'listed'
      : options.development
        ? 'any'
        : 'same-origin';
  const allowedOrigins = new Set(config.allowedOrigins);
  const originAllowed = (req: IncomingMessage): boolean => {
    const origin = req.headers.origin;
    // Browsers always send Origin; other clients (no Origin) still need a valid token.
    if (origin === undefined || originPolicy === 'any') return true;
    if (originPolicy === 'listed') return allowedOrigins.has(origin);
    try {
      return new URL(origin).host === req.headers.host;
    } catch {
      return false;
    }
  };
  const why = originPolicy === 'same-origin' ? 'only pages of this server may connect; set TETHER_ALLOWED_ORIGINS' : 'TETHER_ALLOWED_ORIGINS';
  const originRefusal = { ok: false, status: 403, code: 'forbidden', message: `origin not allowed (${why})` } as const;
  const refuse = <R extends Extract<Admission, { ok: false }>>(reason: AdmissionRefusal, refusal: R): R => {
    options.refused?.(reason);
    return refusal;
  };
  const perIp = new Map<string, number>();
  const connectsPerIp = new Map<string, TokenBucket>();

  return {
    originPolicy,
    originAllowed,
    originRefusal,
    admit(req, kind) {
      if (options.shuttingDown()) return refuse('shutting_down', { ok: false, status: 503, code: 'unavailable', message: 'shutting down' });
      if (!originAllowed(req)) {
        log.warn({ origin: req.headers.origin, transport: kind }, 'connection from a disallowed origin refused');
        return refuse('origin', originRefusal);
      }
      if (options.connections() >= config.maxConnections) {
        log.warn({ max: config.maxConnections }, 'connection refused: the server is full');
        return refuse('capacity', { ok: false, status: 503, code: 'unavailable', message: `the server holds its maximum of ${config.maxConnections} connections (TETHER_MAX_CONNECTIONS)` });
      }
      const ip = clientAddress(req, config.trustProxy);
      let connects = connectsPerIp.get(ip);
      if (!connects) connectsPerIp.set(ip, (connects = new TokenBucket(config.connectRatePerIp, config.connectRatePerIp * 2)));
      if (!connects.take()) {
        log.debug({ ip }, 'connection refused: too many new connections from one address');
        return refuse('connect_rate', { ok: false, status: 429, code: 'rate_limited', message: `at most ${config.connectRatePerIp} new connections per second per address (TETHER_CONNECT_RATE_PER_IP); retry later` });
      }
      if ((perIp.get(ip) ?? 0) >= config.maxConnectionsPerIp) {
        log.warn({ ip, max: config.maxConnectionsPerIp }, 'connection refused: too many from one address');
        return refuse('per_address', { ok: false, status: 429, code: 'limit_exceeded', message: `at most ${config.maxConnectionsPerIp} connections per address (TETHER_MAX_CONNECTIONS_PER_IP)` });
      }
      return { ok: true, ip };
    },
    opened(ip) {
      perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
    },
    closed(ip) {
      const left = (perIp.get(ip) ?? 1) - 1;
      if (left > 0) perIp.set(ip, left);
      else perIp.delete(ip);
    },
    sweep(now) {
      for (const [ip, bucket] of connectsPerIp) if (bucket.full(now)) connectsPerIp.delete(ip);
    },
  };
}
