/**
 * Server settings, read from the environment and validated at start so a typo fails loudly.
 */
export interface ServerConfig {
  /** TCP port; 0 picks a free one. @default 8080 */
  port: number;
  /** Interface to listen on. @default '0.0.0.0' */
  host: string;
  /** Key the app's backend uses for the HTTP API, and that Tether sends to the RPC proxy. */
  apiKey: string | undefined;
  /** HS256 secret that client JWTs are signed with; unset = development mode (anonymous clients). */
  tokenSecret: string | undefined;
  /** Path of a Node module whose exports are procedures. */
  proceduresModule: string | undefined;
  /** URL of the backend endpoint that answers proxied procedures. */
  rpcProxyUrl: string | undefined;
  /** Which procedures go to the proxy: comma-separated names, `*` wildcards allowed. @default ['*'] */
  rpcProxyMethods: string[];
  /** Timeout of one proxied call. @default 10000 */
  rpcProxyTimeoutMs: number;
  /** How often clients send a heartbeat; a client silent for 3× is dropped. @default 2000 */
  heartbeatMs: number;
  /** Largest frame a client may send, in bytes; a bigger one closes the socket with 1009. @default 65536 */
  maxMessageBytes: number;
  /** pino log level. @default 'info' */
  logLevel: string;
  /** SQLite file of the events DB (':memory:' keeps nothing). @default './tether.db' */
  db: string;
  /** `full`: every acknowledged write is on disk (fsync per group commit). `off`: only for measuring what that costs. @default 'full' */
  dbSync: 'full' | 'off';
  /** Events kept per channel. @default 10000 */
  historyMaxEvents: number;
  /** Age after which events are dropped, in seconds. @default 604800 (7 days) */
  historyMaxAgeS: number;
  /** Origins allowed to open a WebSocket; empty allows all (development). */
  allowedOrigins: string[];
  /** Subscriptions per connection. @default 100 */
  maxSubscriptions: number;
  /** Frames per second per connection (bursts of 2×); above it the socket is closed with 4007. @default 2000 */
  rateLimit: number;
  /** Bytes queued for a client that does not read before it is dropped with 4006. @default 8 MiB */
  maxBufferedBytes: number;
}

export const DEFAULT_CONFIG: ServerConfig = {
  port: 8080,
  host: '0.0.0.0',
  apiKey: undefined,
  tokenSecret: undefined,
  proceduresModule: undefined,
  rpcProxyUrl: undefined,
  rpcProxyMethods: ['*'],
  rpcProxyTimeoutMs: 10_000,
  heartbeatMs: 2000,
  maxMessageBytes: 64 * 1024,
  logLevel: 'info',
  db: './tether.db',
  dbSync: 'full',
  historyMaxEvents: 10_000,
  historyMaxAgeS: 7 * 24 * 3600,
  allowedOrigins: [],
  maxSubscriptions: 100,
  rateLimit: 2000,
  maxBufferedBytes: 8 * 1024 * 1024,
};

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

function dbSync(raw: string | undefined): 'full' | 'off' {
  if (raw === undefined || raw === 'full') return 'full';
  if (raw === 'off') return 'off';
  throw new TypeError(`TETHER_DB_SYNC must be full or off, got ${JSON.stringify(raw)}`);
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const rpcProxyUrl = text(env, 'TETHER_RPC_PROXY_URL');
  if (rpcProxyUrl !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(rpcProxyUrl);
    } catch {
      throw new TypeError(`TETHER_RPC_PROXY_URL is not a valid URL: ${JSON.stringify(rpcProxyUrl)}`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError('TETHER_RPC_PROXY_URL must be http:// or https://');
  }
  const tokenSecret = text(env, 'TETHER_TOKEN_SECRET');
  if (tokenSecret !== undefined && tokenSecret.length < 32) {
    throw new TypeError('TETHER_TOKEN_SECRET must be at least 32 characters (HS256 needs a 256-bit key)');
  }
  return {
    port: integer(env, 'PORT', DEFAULT_CONFIG.port, 0, 65535),
    host: text(env, 'HOST') ?? DEFAULT_CONFIG.host,
    apiKey: text(env, 'TETHER_API_KEY'),
    tokenSecret,
    proceduresModule: text(env, 'TETHER_PROCEDURES'),
    rpcProxyUrl,
    rpcProxyMethods: (text(env, 'TETHER_RPC_PROXY_METHODS') ?? '*').split(',').map((m) => m.trim()).filter(Boolean),
    rpcProxyTimeoutMs: integer(env, 'TETHER_RPC_PROXY_TIMEOUT_MS', DEFAULT_CONFIG.rpcProxyTimeoutMs, 1, 600_000),
    heartbeatMs: integer(env, 'TETHER_HEARTBEAT_MS', DEFAULT_CONFIG.heartbeatMs, 100, 600_000),
    maxMessageBytes: integer(env, 'TETHER_MAX_MESSAGE_BYTES', DEFAULT_CONFIG.maxMessageBytes, 1024, 16 * 1024 * 1024),
    logLevel: text(env, 'TETHER_LOG_LEVEL') ?? DEFAULT_CONFIG.logLevel,
    db: text(env, 'TETHER_DB') ?? DEFAULT_CONFIG.db,
    dbSync: dbSync(text(env, 'TETHER_DB_SYNC')),
    historyMaxEvents: integer(env, 'TETHER_HISTORY_MAX_EVENTS', DEFAULT_CONFIG.historyMaxEvents, 1, 1e9),
    historyMaxAgeS: integer(env, 'TETHER_HISTORY_MAX_AGE_S', DEFAULT_CONFIG.historyMaxAgeS, 1, 1e10),
    allowedOrigins: (text(env, 'TETHER_ALLOWED_ORIGINS') ?? '').split(',').map((o) => o.trim()).filter(Boolean),
    maxSubscriptions: integer(env, 'TETHER_MAX_SUBSCRIPTIONS', DEFAULT_CONFIG.maxSubscriptions, 1, 100_000),
    rateLimit: integer(env, 'TETHER_RATE_LIMIT', DEFAULT_CONFIG.rateLimit, 1, 1e7),
    maxBufferedBytes: integer(env, 'TETHER_MAX_BUFFERED_BYTES', DEFAULT_CONFIG.maxBufferedBytes, 1024, 2 ** 31),
  };
}
