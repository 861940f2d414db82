import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';

/**
 * Server settings, read from the environment and validated at start so a typo fails loudly.
 */
export interface ServerConfig {
  /** TCP port; 0 picks a free one. @default 8080 */
  port: number;
  /**
   * Interface to listen on. @default '0.0.0.0' when tokens are checked; '127.0.0.1' in
   * development mode, so that a server that accepts anonymous clients is not reachable from
   * the network unless HOST says so.
   */
  host: string | undefined;
  /** `NODE_ENV=production`: refuse to start without token checking and an origin list. */
  production: boolean;
  /** Key the app's backend uses for the HTTP API. */
  apiKey: string | undefined;
  /** HS256 secret that client JWTs are signed with. No secret and no public key = development mode (anonymous clients). */
  tokenSecret: string | undefined;
  /** PEM text of an RS256/ES256 public key (SPKI) that client JWTs are signed with (TETHER_TOKEN_PUBLIC_KEY_FILE). */
  tokenPublicKey: string | undefined;
  /** JSON text of a JWKS whose keys sign client JWTs, picked by `kid` (TETHER_TOKEN_JWKS_FILE). */
  tokenJwks: string | undefined;
  /** When set, a token's `aud` must include it. */
  tokenAudience: string | undefined;
  /** When set, a token's `iss` must equal it. */
  tokenIssuer: string | undefined;
  /**
   * Grants of a token that carries none (JSON with the claims' shape, e.g. `{"channels":["*"]}`).
   * @default {"rpc":["*"]}: procedures, which check the caller themselves; no channels or documents.
   */
  defaultGrants: Grants;
  /** Secret Tether sends to the RPC proxy (`Authorization: Bearer …`); not the API key. */
  rpcProxySecret: string | undefined;
  /** Path of a Node module whose exports are procedures. */
  proceduresModule: string | undefined;
  /** URL of the backend endpoint that answers proxied procedures. */
  rpcProxyUrl: string | undefined;
  /** Which procedures go to the proxy: comma-separated names, `*` wildcards allowed. @default ['*'] */
  rpcProxyMethods: string[];
  /** Timeout of one proxied call. @default 10000 */
  rpcProxyTimeoutMs: number;
  /** How often clients send a heartbeat while they wait for answers (a dead link is noticed in ~2×). @default 2000 */
  heartbeatMs: number;
  /** How often idle clients send one (nothing in flight); a client silent for 3× this is dropped. @default 25000 */
  idleHeartbeatMs: number;
  /** Largest frame a client may send, in bytes; a bigger one closes the socket with 1009. @default 65536 */
  maxMessageBytes: number;
  /** pino log level. @default 'info' */
  logLevel: string;
  /** SQLite file of the events DB (':memory:' keeps nothing). @default './tether.db' */
  db: string;
  /** `full`: every acknowledged write is on disk (fsync per group commit). `off`: only for measuring what that costs. @default 'full' */
  dbSync: 'full' | 'off';
  /** PostgreSQL events DB (`postgres://…`) shared by every process of a cluster; unset: SQLite at `db`. */
  databaseUrl: string | undefined;
  /** Redis for the fan-out between processes (`redis://…`); unset: in process (one process). */
  redisUrl: string | undefined;
  /** Prefix of Tether's Redis channel names: clusters sharing one Redis stay apart. @default 'tether:' */
  redisPrefix: string;
  /** Events kept per channel. @default 10000 */
  historyMaxEvents: number;
  /** Age after which events are dropped, in seconds. @default 604800 (7 days) */
  historyMaxAgeS: number;
  /** Origins allowed to open a connection (WebSocket or long polling); empty allows all (development). */
  allowedOrigins: string[];
  /** Subscriptions per connection. @default 100 */
  maxSubscriptions: number;
  /** Frames per second per connection (bursts of 2×); above it the socket is closed with 4007. @default 2000 */
  rateLimit: number;
  /** Bytes queued for a client that does not read before it is dropped with 4006. @default 8 MiB */
  maxBufferedBytes: number;
  /** Connections in total (WebSocket and long-polling sessions); more are refused with HTTP 503. @default 10000 */
  maxConnections: number;
  /** Connections (both transports) from one IP address (the socket's peer); more get HTTP 429. @default 500 */
  maxConnectionsPerIp: number;
  /** New connections (WebSocket upgrades and long-polling opens) per second from one IP address (bursts of 2×); more get HTTP 429. @default 50 */
  connectRatePerIp: number;
  /**
   * Behind a reverse proxy: the client's address is the last one in `X-Forwarded-For` (the one
   * the proxy appended), for the per-address limits. Only with a proxy that sets it. @default false
   */
  trustProxy: boolean;
  /** RPC calls one connection may have running; more are refused with limit_exceeded. @default 32 */
  maxRpcInFlight: number;
  /** Bytes of a shared document (its keys and JSON values); a transaction over it is refused. @default 1 MiB */
  maxDocBytes: number;
  /** Time a client has to send a request's headers (slowloris). @default 10000 */
  headersTimeoutMs: number;
  /**
   * How long a long-polling request is held when there is nothing to send (TETHER_LONG_POLL_MS,
   * 1000–25000: below Node's 30 s request timeout and the 30 s many proxies cut idle requests at). @default 20000
   */
  longPollMs: number;
  /**
   * A second listener serving GET /metrics without a key (TETHER_METRICS_PORT; 0 picks a free
   * port); unset: /metrics only on the main port, behind TETHER_API_KEY.
   */
  metricsPort: number | undefined;
  /** Address of that listener (TETHER_METRICS_HOST): keep it private. @default '127.0.0.1' */
  metricsHost: string;
  /**
   * How long a connection's presence lingers after it leaves a channel or closes
   * (TETHER_PRESENCE_LINGER_MS, 0–60000): a reload or a reconnect of the same browser within it is
   * not seen as a leave and a join. @default 5000
   */
  presenceLingerMs: number;
}

/** Patterns granted per operation; see README "Security". */
export interface Grants {
  channels?: string[];
  subscribe?: string[];
  publish?: string[];
  docs?: string[];
  docs_read?: string[];
  rpc?: string[];
}

export const GRANT_CLAIMS = ['channels', 'subscribe', 'publish', 'docs', 'docs_read', 'rpc'] as const;

export const DEFAULT_CONFIG: ServerConfig = {
  port: 8080,
  host: undefined,
  production: false,
  apiKey: undefined,
  tokenSecret: undefined,
  tokenPublicKey: undefined,
  tokenJwks: undefined,
  tokenAudience: undefined,
  tokenIssuer: undefined,
  defaultGrants: { rpc: ['*'] },
  rpcProxySecret: undefined,
  proceduresModule: undefined,
  rpcProxyUrl: undefined,
  rpcProxyMethods: ['*'],
  rpcProxyTimeoutMs: 10_000,
  heartbeatMs: 2000,
  idleHeartbeatMs: 25_000,
  maxMessageBytes: 64 * 1024,
  logLevel: 'info',
  db: './tether.db',
  dbSync: 'full',
  databaseUrl: undefined,
  redisUrl: undefined,
  redisPrefix: 'tether:',
  historyMaxEvents: 10_000,
  historyMaxAgeS: 7 * 24 * 3600,
  allowedOrigins: [],
  maxSubscriptions: 100,
  rateLimit: 2000,
  maxBufferedBytes: 8 * 1024 * 1024,
  maxConnections: 10_000,
  maxConnectionsPerIp: 500,
  connectRatePerIp: 50,
  trustProxy: false,
  maxRpcInFlight: 32,
  maxDocBytes: 1024 * 1024,
  headersTimeoutMs: 10_000,
  longPollMs: 20_000,
  metricsPort: undefined,
  metricsHost: '127.0.0.1',
  presenceLingerMs: 5000,
};

/** Every setting read from the environment; any other TETHER_* variable is a typo. */
const KNOWN = new Set([
  'TETHER_API_KEY', 'TETHER_TOKEN_SECRET', 'TETHER_TOKEN_PUBLIC_KEY_FILE', 'TETHER_TOKEN_JWKS_FILE', 'TETHER_TOKEN_AUDIENCE',
  'TETHER_TOKEN_ISSUER', 'TETHER_DEFAULT_GRANTS', 'TETHER_PROCEDURES', 'TETHER_RPC_PROXY_URL', 'TETHER_RPC_PROXY_SECRET',
  'TETHER_RPC_PROXY_METHODS', 'TETHER_RPC_PROXY_TIMEOUT_MS', 'TETHER_HEARTBEAT_MS', 'TETHER_IDLE_HEARTBEAT_MS', 'TETHER_MAX_MESSAGE_BYTES', 'TETHER_LOG_LEVEL',
  'TETHER_DB', 'TETHER_DB_SYNC', 'TETHER_DATABASE_URL', 'TETHER_REDIS_URL', 'TETHER_REDIS_PREFIX', 'TETHER_HISTORY_MAX_EVENTS', 'TETHER_HISTORY_MAX_AGE_S', 'TETHER_ALLOWED_ORIGINS',
  'TETHER_MAX_SUBSCRIPTIONS', 'TETHER_RATE_LIMIT', 'TETHER_MAX_BUFFERED_BYTES', 'TETHER_MAX_CONNECTIONS',
  'TETHER_MAX_CONNECTIONS_PER_IP', 'TETHER_CONNECT_RATE_PER_IP', 'TETHER_TRUST_PROXY', 'TETHER_MAX_RPC_IN_FLIGHT', 'TETHER_MAX_DOC_BYTES', 'TETHER_HEADERS_TIMEOUT_MS',
  'TETHER_LONG_POLL_MS', 'TETHER_METRICS_PORT', 'TETHER_METRICS_HOST', 'TETHER_PRESENCE_LINGER_MS',
]);

/** Settings of other tools that share the prefix (tests, the CLI tools); not server settings. */
const OTHER_TOOLS = /^TETHER_(URL|MODEL_|FUZZ_|BENCH|E2E|SOAK)/;

/** Names of TETHER_* variables that are set but mean nothing to the server (most likely typos). */
export function unknownSettings(env: NodeJS.ProcessEnv): string[] {
  return Object.keys(env).filter((name) => name.startsWith('TETHER_') && !KNOWN.has(name) && !OTHER_TOOLS.test(name));
}

/** Patterns must be non-empty strings; `*` matches any run of characters. */
export function parseGrants(value: unknown, where: string): Grants {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TypeError(`${where} must be a JSON object such as {"channels":["room:*"]}`);
  const grants: Grants = {};
  for (const [claim, patterns] of Object.entries(value)) {
    if (!(GRANT_CLAIMS as readonly string[]).includes(claim)) throw new TypeError(`${where}: unknown grant ${JSON.stringify(claim)} (known: ${GRANT_CLAIMS.join(', ')})`);
    if (!Array.isArray(patterns) || !patterns.every((p) => typeof p === 'string' && p !== '' && p.length <= 200)) {
      throw new TypeError(`${where}: ${claim} must be an array of patterns (1–200 characters each)`);
    }
    grants[claim as keyof Grants] = patterns as string[];
  }
  return grants;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function text(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? undefined : raw.trim();
}

/** A secret: set and blank is a mistake (it would silently mean "no secret"), so it fails. */
function secret(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined) return undefined;
  if (raw.trim() === '') throw new TypeError(`${name} is set but blank; unset it or give it a value`);
  if (raw !== raw.trim()) throw new TypeError(`${name} starts or ends with whitespace; remove it (copied with a newline?)`);
  return raw;
}

function file(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const path = text(env, name);
  if (path === undefined) return undefined;
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new TypeError(`${name}: cannot read ${path} (${cause instanceof Error ? cause.message : String(cause)})`);
  }
}

/** http:// only to the same machine: anything else would send the proxy secret and users' identities in clear text. */
export function checkProxyUrl(raw: string): void {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new TypeError(`TETHER_RPC_PROXY_URL is not a valid URL: ${JSON.stringify(raw)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError('TETHER_RPC_PROXY_URL must be http:// or https://');
  // An IP literal in 127.0.0.0/8 or ::1, or `localhost`: a name like 127.0.0.1.example.com is not loopback.
  const loopback = parsed.hostname === 'localhost' || parsed.hostname === '[::1]' || (isIPv4(parsed.hostname) && parsed.hostname.startsWith('127.'));
  if (parsed.protocol === 'http:' && !loopback) {
    throw new TypeError('TETHER_RPC_PROXY_URL: http:// is allowed only to localhost/127.0.0.1/[::1]; use https:// for another host');
  }
}

/** A connection URL of one of `protocols`; the message never repeats it (it may hold a password). */
function serviceUrl(env: NodeJS.ProcessEnv, name: string, protocols: string[]): string | undefined {
  const raw = text(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new TypeError(`${name} is not a valid URL (expected ${protocols.map((p) => `${p}//…`).join(' or ')})`);
  }
  if (!protocols.includes(parsed.protocol)) throw new TypeError(`${name} must start with ${protocols.map((p) => `${p}//`).join(' or ')}, not ${parsed.protocol}//`);
  return raw;
}

function flag(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = text(env, name);
  if (raw === undefined || raw === 'false' || raw === '0') return false;
  if (raw === 'true' || raw === '1') return true;
  throw new TypeError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

function dbSync(raw: string | undefined): 'full' | 'off' {
  if (raw === undefined || raw === 'full') return 'full';
  if (raw === 'off') return 'off';
  throw new TypeError(`TETHER_DB_SYNC must be full or off, got ${JSON.stringify(raw)}`);
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const rpcProxyUrl = text(env, 'TETHER_RPC_PROXY_URL');
  if (rpcProxyUrl !== undefined) checkProxyUrl(rpcProxyUrl);
  const tokenSecret = secret(env, 'TETHER_TOKEN_SECRET');
  if (tokenSecret !== undefined && tokenSecret.length < 32) {
    throw new TypeError('TETHER_TOKEN_SECRET must be at least 32 characters (HS256 needs a 256-bit key)');
  }
  const tokenPublicKey = file(env, 'TETHER_TOKEN_PUBLIC_KEY_FILE');
  const tokenJwks = file(env, 'TETHER_TOKEN_JWKS_FILE');
  const production = env.NODE_ENV === 'production';
  const allowedOrigins = (text(env, 'TETHER_ALLOWED_ORIGINS') ?? '').split(',').map((o) => o.trim()).filter(Boolean);
  if (production && tokenSecret === undefined && tokenPublicKey === undefined && tokenJwks === undefined) {
    throw new TypeError('NODE_ENV=production needs TETHER_TOKEN_SECRET, TETHER_TOKEN_PUBLIC_KEY_FILE or TETHER_TOKEN_JWKS_FILE: refusing to accept anonymous clients');
  }
  if (production && allowedOrigins.length === 0) {
    throw new TypeError('NODE_ENV=production needs TETHER_ALLOWED_ORIGINS (the origins of your app, comma-separated; * allows every site)');
  }
  const rawGrants = text(env, 'TETHER_DEFAULT_GRANTS');
  let defaultGrants = DEFAULT_CONFIG.defaultGrants;
  if (rawGrants !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(rawGrants);
    } catch {
      throw new TypeError(`TETHER_DEFAULT_GRANTS is not JSON: ${JSON.stringify(rawGrants)}`);
    }
    defaultGrants = parseGrants(json, 'TETHER_DEFAULT_GRANTS');
  }
  const rpcProxySecret = secret(env, 'TETHER_RPC_PROXY_SECRET');
  if (rpcProxyUrl !== undefined && rpcProxySecret === undefined) {
    throw new TypeError('TETHER_RPC_PROXY_URL needs TETHER_RPC_PROXY_SECRET: the backend must be able to tell Tether from anyone else');
  }
  const heartbeatMs = integer(env, 'TETHER_HEARTBEAT_MS', DEFAULT_CONFIG.heartbeatMs, 100, 600_000);
  return {
    port: integer(env, 'PORT', DEFAULT_CONFIG.port, 0, 65535),
    host: text(env, 'HOST'),
    production,
    apiKey: secret(env, 'TETHER_API_KEY'),
    tokenSecret,
    tokenPublicKey,
    tokenJwks,
    tokenAudience: text(env, 'TETHER_TOKEN_AUDIENCE'),
    tokenIssuer: text(env, 'TETHER_TOKEN_ISSUER'),
    defaultGrants,
    rpcProxySecret,
    proceduresModule: text(env, 'TETHER_PROCEDURES'),
    rpcProxyUrl,
    rpcProxyMethods: (text(env, 'TETHER_RPC_PROXY_METHODS') ?? '*').split(',').map((m) => m.trim()).filter(Boolean),
    rpcProxyTimeoutMs: integer(env, 'TETHER_RPC_PROXY_TIMEOUT_MS', DEFAULT_CONFIG.rpcProxyTimeoutMs, 1, 600_000),
    heartbeatMs,
    idleHeartbeatMs: integer(env, 'TETHER_IDLE_HEARTBEAT_MS', Math.max(DEFAULT_CONFIG.idleHeartbeatMs, heartbeatMs), heartbeatMs, 600_000),
    maxMessageBytes: integer(env, 'TETHER_MAX_MESSAGE_BYTES', DEFAULT_CONFIG.maxMessageBytes, 1024, 16 * 1024 * 1024),
    logLevel: text(env, 'TETHER_LOG_LEVEL') ?? DEFAULT_CONFIG.logLevel,
    db: text(env, 'TETHER_DB') ?? DEFAULT_CONFIG.db,
    dbSync: dbSync(text(env, 'TETHER_DB_SYNC')),
    databaseUrl: serviceUrl(env, 'TETHER_DATABASE_URL', ['postgres:', 'postgresql:']),
    redisUrl: serviceUrl(env, 'TETHER_REDIS_URL', ['redis:', 'rediss:']),
    redisPrefix: text(env, 'TETHER_REDIS_PREFIX') ?? DEFAULT_CONFIG.redisPrefix,
    historyMaxEvents: integer(env, 'TETHER_HISTORY_MAX_EVENTS', DEFAULT_CONFIG.historyMaxEvents, 1, 1e9),
    historyMaxAgeS: integer(env, 'TETHER_HISTORY_MAX_AGE_S', DEFAULT_CONFIG.historyMaxAgeS, 1, 1e10),
    allowedOrigins,
    maxSubscriptions: integer(env, 'TETHER_MAX_SUBSCRIPTIONS', DEFAULT_CONFIG.maxSubscriptions, 1, 100_000),
    rateLimit: integer(env, 'TETHER_RATE_LIMIT', DEFAULT_CONFIG.rateLimit, 1, 1e7),
    maxBufferedBytes: integer(env, 'TETHER_MAX_BUFFERED_BYTES', DEFAULT_CONFIG.maxBufferedBytes, 1024, 2 ** 31),
    maxConnections: integer(env, 'TETHER_MAX_CONNECTIONS', DEFAULT_CONFIG.maxConnections, 1, 1e7),
    maxConnectionsPerIp: integer(env, 'TETHER_MAX_CONNECTIONS_PER_IP', DEFAULT_CONFIG.maxConnectionsPerIp, 1, 1e7),
    connectRatePerIp: integer(env, 'TETHER_CONNECT_RATE_PER_IP', DEFAULT_CONFIG.connectRatePerIp, 1, 1e7),
    trustProxy: flag(env, 'TETHER_TRUST_PROXY'),
    maxRpcInFlight: integer(env, 'TETHER_MAX_RPC_IN_FLIGHT', DEFAULT_CONFIG.maxRpcInFlight, 1, 100_000),
    maxDocBytes: integer(env, 'TETHER_MAX_DOC_BYTES', DEFAULT_CONFIG.maxDocBytes, 1024, 2 ** 30),
    headersTimeoutMs: integer(env, 'TETHER_HEADERS_TIMEOUT_MS', DEFAULT_CONFIG.headersTimeoutMs, 1000, 600_000),
    longPollMs: integer(env, 'TETHER_LONG_POLL_MS', DEFAULT_CONFIG.longPollMs, 1000, 25_000),
    metricsPort: text(env, 'TETHER_METRICS_PORT') === undefined ? undefined : integer(env, 'TETHER_METRICS_PORT', 0, 0, 65535),
    metricsHost: text(env, 'TETHER_METRICS_HOST') ?? DEFAULT_CONFIG.metricsHost,
    presenceLingerMs: integer(env, 'TETHER_PRESENCE_LINGER_MS', DEFAULT_CONFIG.presenceLingerMs, 0, 60_000),
  };
}
