/**
 * The reference server: HTTP (static files, health) and the client endpoint at /ws, over a
 * WebSocket or long polling (POST /ws).
 * It takes its dependencies so tests can start it on port 0.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import sirv from 'sirv';
import { WebSocketServer } from 'ws';
import { CloseCode, PROTOCOL_VERSION } from '../protocol/constants.js';
import { createAuthenticator } from './auth.js';
import { DEFAULT_CONFIG, type ServerConfig } from './config.js';
import { createLogger, type Logger } from './log.js';
import { builtinProcedures } from './rpc/builtin.js';
import { createHttpProxy } from './rpc/http-proxy.js';
import type { Procedure } from './rpc/procedure.js';
import { ProcedureRegistry } from './rpc/registry.js';
import { Session } from './session.js';
import { WebSocketTransport } from './transports/websocket.js';
import { createAdmissions } from './admission.js';
import { createLongPollingEndpoint } from './long-polling-endpoint.js';
import type { Transport } from './transports/transport.js';
import { Revocations } from './revocations.js';
import { createHttpApi } from './http-api.js';
import { createLocalBroker, type Broker } from './pubsub/broker.js';
import { createOrderedBroker } from './pubsub/ordered-broker.js';
import { openPostgresStore } from './storage/postgres.js';
import { WriteQueue } from './pubsub/write-queue.js';
import type { EventStore } from './storage/event-store.js';
import { openSqliteStore } from './storage/sqlite.js';
import { createMetrics, httpRoute } from './metrics.js';
import { createMetricsHandler, startAdminListener, type AdminListener } from './metrics-endpoint.js';
import type { PresenceHub } from './presence/presence.js';
import { createLocalPresence } from './presence/local-presence.js';
import { createRedisPresence } from './presence/redis-presence.js';

export interface ServerOptions extends Partial<ServerConfig> {
  /** Extra procedures, added to (and overriding) the built-in ones. */
  procedures?: Record<string, Procedure>;
  /** Directory of the built client files (demo, /tether.js, worker). @default server/dist/client */
  clientDir?: string;
  logger?: Logger;
  /** The events DB. @default SQLite at `db` */
  store?: EventStore;
  /** Fan-out. @default in process */
  broker?: Broker;
  /** Presence. @default through Redis when `redisUrl` is set, else in process */
  presence?: PresenceHub;
}

export interface TetherServer {
  /** The port actually listened on (useful with port 0). */
  readonly port: number;
  readonly procedures: ProcedureRegistry;
  readonly store: EventStore;
  /** Open connections, over both transports (WebSocket and long polling). */
  connectionCount(): number;
  /** The port of the key-less metrics listener (TETHER_METRICS_PORT), if there is one. */
  readonly metricsPort: number | undefined;
  close(): Promise<void>;
}

/** Whole-request limit (an API body trickled byte by byte). */
const REQUEST_TIMEOUT_MS = 30_000;

/** Sent with every HTTP answer: no MIME sniffing, not framed by other sites, no referrer leaks. */
const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'content-security-policy': "frame-ancestors 'self'",
  'x-frame-options': 'SAMEORIGIN',
  'referrer-policy': 'no-referrer',
};

/** Sockets beyond the connection cap that plain HTTP requests (health, the API, static files) may hold. */
const HTTP_HEADROOM = 1000;

/** The request target as a URL, or undefined when it cannot be one (`GET //[`): never a throw. */
function requestUrl(req: IncomingMessage): URL | undefined {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return undefined;
  }
}

/** The built demo and SDK bundles, beside the compiled server (server/dist/client). */
const DEFAULT_CLIENT_DIR = fileURLToPath(new URL('../client', import.meta.url));

/** A clear error for a listener that could not start (its port taken, a host not on this machine). */
function listenError(what: string, port: number, host: string, error: unknown): Error {
  const reason = error instanceof Error ? error.message : String(error);
  return Object.assign(new Error(`${what} could not listen on ${host}:${port}: ${reason}`, { cause: error }), { code: (error as NodeJS.ErrnoException | undefined)?.code });
}

/**
 * Starts the server. If anything fails on the way (a port in use, an events DB that does not
 * answer), what was already opened is closed again before the error is thrown: no Redis
 * connection, database handle or listener is left behind.
 */
export async function startServer(options: ServerOptions = {}): Promise<TetherServer> {
  const undo: (() => unknown)[] = [];
  try {
    return await openServer(options, undo);
  } catch (error) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // Closing what was half opened: the error that stopped the start is the one to report.
      }
    }
    throw error;
  }
}

/** `startServer`, pushing onto `undo` how to close each thing it opens. */
async function openServer(options: ServerOptions, undo: (() => unknown)[]): Promise<TetherServer> {
  const config: ServerConfig = { ...DEFAULT_CONFIG, ...options };
  const log = options.logger ?? createLogger(config.logLevel);
  if (config.dbSync === 'off') log.warn('TETHER_DB_SYNC=off: acknowledged writes can be lost in a crash. For measurements only.');
  const authenticate = createAuthenticator(config);
  const mode = authenticate.development ? 'development' : 'secure';
  // Development mode accepts anyone: keep it off the network unless HOST says otherwise.
  const host = config.host ?? (authenticate.development ? '127.0.0.1' : '0.0.0.0');
  if (authenticate.development) {
    log.warn({ host }, 'no TETHER_TOKEN_SECRET / TETHER_TOKEN_PUBLIC_KEY_FILE / TETHER_TOKEN_JWKS_FILE: DEVELOPMENT MODE, anonymous clients may do everything. Never run this in production.');
  } else if (config.allowedOrigins.length === 0) {
    log.warn('TETHER_ALLOWED_ORIGINS is not set: only pages served by this server itself may open connections; list your app\'s origins (or * for any site)');
  }

  const proxy = config.rpcProxyUrl === undefined
    ? undefined
    : createHttpProxy({ url: config.rpcProxyUrl, methods: config.rpcProxyMethods, secret: config.rpcProxySecret, timeoutMs: config.rpcProxyTimeoutMs });
  const procedures = new ProcedureRegistry(log, proxy);
  for (const [name, procedure] of Object.entries({ ...builtinProcedures, ...options.procedures })) procedures.register(name, procedure);

  const clientDir = options.clientDir ?? DEFAULT_CLIENT_DIR;
  const hasClient = existsSync(clientDir);
  if (!hasClient) log.warn({ clientDir }, 'client files not found: run `npm run build` to serve the demo and /tether.js');
  const serveStatic = hasClient ? sirv(clientDir, { etag: true, dev: false }) : undefined;

  const metrics = createMetrics();
  // The admin listener first: if its port is taken, nothing else (events DB, Redis) was opened yet.
  let admin: AdminListener | undefined;
  if (config.metricsPort !== undefined) {
    const { metricsPort, metricsHost } = config;
    admin = await startAdminListener({ metrics, port: metricsPort, host: metricsHost, log }).catch((error: unknown) => {
      throw listenError('the metrics listener (TETHER_METRICS_PORT)', metricsPort, metricsHost, error);
    });
    undo.push(admin.close);
  }
  const retention = { maxEvents: config.historyMaxEvents, maxAgeMs: config.historyMaxAgeS * 1000 };
  const store = metrics.timeStore(options.store ?? (config.databaseUrl === undefined
    ? openSqliteStore({ path: config.db, synchronous: config.dbSync, maxDocBytes: config.maxDocBytes, retention })
    : await openPostgresStore({ url: config.databaseUrl, maxDocBytes: config.maxDocBytes, retention })));
  undo.push(() => store.close());
  // A networked events DB (or Redis) needs the ordered broker: it checks positions against the
  // store, so a commit whose acknowledgement was lost, or another process's event, is never a gap.
  const broker = options.broker ?? (config.redisUrl === undefined && config.databaseUrl === undefined
    ? createLocalBroker()
    : createOrderedBroker({ store, log, metrics, ...(config.redisUrl === undefined ? {} : { redis: { url: config.redisUrl, prefix: config.redisPrefix } }) }));
  undo.push(() => broker.close());
  if (config.databaseUrl !== undefined && config.redisUrl === undefined) {
    log.warn('TETHER_DATABASE_URL without TETHER_REDIS_URL: events of other processes reach this one only by polling the events DB (every 2 s); set TETHER_REDIS_URL to run several processes');
  }
  const writes = new WriteQueue(store, broker, metrics);
  const presence = options.presence ?? (config.redisUrl === undefined
    ? createLocalPresence({ lingerMs: config.presenceLingerMs })
    : createRedisPresence({ url: config.redisUrl, prefix: config.redisPrefix, lingerMs: config.presenceLingerMs, log }));
  undo.push(() => presence.close());
  const pingStore = async (): Promise<{ kind: EventStore['kind']; ok: boolean; detail?: string }> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([store.ping(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no answer in 2 s')), 2000)))]);
      return { kind: store.kind, ok: true };
    } catch (error) {
      return { kind: store.kind, ok: false, detail: error instanceof Error ? error.message : String(error) };
    } finally {
      clearTimeout(timer);
    }
  };
  const revocations = new Revocations(store);
  const api = createHttpApi({
    apiKey: config.apiKey, store, writes, maxBodyBytes: config.maxMessageBytes, log, presence: (channel) => presence.members(channel),
    async disconnect(user, revoke) {
      // Stored before the connections close, so that their reconnects are refused.
      if (revoke) await revocations.revoke(user);
      let closed = 0;
      for (const session of sessions) {
        if (session.user !== user) continue;
        session.close(CloseCode.Unauthorized, revoke ? 'session revoked by the backend' : 'disconnected by the backend');
        closed++;
      }
      log.info({ user, revoke, closed }, 'user disconnected by the backend');
      return closed;
    },
  });
  const limits = { maxSubscriptions: config.maxSubscriptions, rateLimit: config.rateLimit, maxBufferedBytes: config.maxBufferedBytes, maxRpcInFlight: config.maxRpcInFlight };

  /** Sessions over both transports: one sweep, one cap, one shutdown. */
  const sessions = new Set<Session>();
  const byTransport = { websocket: 0, longPolling: 0 };
  let shuttingDown = false;
  const admissions = createAdmissions({ config, development: authenticate.development, log, connections: () => sessions.size, shuttingDown: () => shuttingDown, refused: metrics.admissionRefused });
  metrics.connectionsFrom(() => ({ websocket: byTransport.websocket, 'long-polling': byTransport.longPolling }));
  const serveMetrics = createMetricsHandler({ metrics, apiKey: config.apiKey, development: authenticate.development });
  const originPolicy = admissions.originPolicy;
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxMessageBytes });
  undo.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));

  /** A new session over `transport`, counted against `ip` until the transport closes. */
  function startSession(transport: Transport, ip: string): Session {
    const session = new Session(transport, { log, authenticate, revocations, procedures, store, writes, broker, presence, heartbeatMs: config.heartbeatMs, idleHeartbeatMs: config.idleHeartbeatMs, maxMessageBytes: config.maxMessageBytes, limits, metrics });
    metrics.sessionOpened(transport.kind);
    const kind = transport.kind === 'websocket' ? 'websocket' : 'longPolling';
    sessions.add(session);
    admissions.opened(ip);
    byTransport[kind]++;
    transport.onClose(() => {
      sessions.delete(session);
      admissions.closed(ip);
      byTransport[kind]--;
    });
    return session;
  }

  const longPolling = createLongPollingEndpoint({
    log, admissions, pollMs: config.longPollMs, heartbeatMs: config.heartbeatMs, maxMessageBytes: config.maxMessageBytes,
    start: (transport, ip) => void startSession(transport, ip),
  });
  undo.push(() => longPolling.close());

  const http = createHttpServer({
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: REQUEST_TIMEOUT_MS,
    // How often the timeouts above are checked (Node's default, 30 s, lets a slowloris stay 3× longer).
    connectionsCheckingInterval: 1000,
  }, (req: IncomingMessage, res: ServerResponse) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    handle(req, res).catch((err: unknown) => {
      log.error({ err, url: req.url }, 'HTTP request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error');
    });
  });
  // Every socket counts, upgraded or not: idle or trickling sockets cannot exhaust file descriptors.
  // A long-polling client holds up to two (a held poll and a send).
  http.maxConnections = config.maxConnections * 2 + HTTP_HEADROOM;
  http.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    log.debug({ code: err.code }, 'malformed HTTP request');
    if (socket.writable) socket.end(err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT' ? 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n' : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = requestUrl(req);
    if (url === undefined) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('bad request target');
      return;
    }
    const path = url.pathname;
    const route = httpRoute(path);
    if (route !== undefined) {
      // Counted once, when the answer is written ('finish') or the connection ends ('close'):
      // 'finish' never comes when the socket went first (a client that aborted, a 413 whose
      // connection was cut while the body was still arriving).
      let counted = false;
      const count = () => {
        if (counted) return;
        counted = true;
        metrics.httpRequest(route, res.headersSent ? res.statusCode : 'aborted');
      };
      res.once('finish', count);
      res.once('close', count);
    }
    if (path === '/metrics') return serveMetrics(req, res);
    // A WebSocket is a GET with Upgrade (the 'upgrade' event); a POST to the same URL is long polling.
    if (path === '/ws' && (req.method === 'POST' || req.method === 'OPTIONS')) return longPolling.handle(req, res);
    if (await api(req, res, url)) return;
    if (path === '/api/health') {
      // 503 when the events DB does not answer: a load balancer sends new clients elsewhere.
      // A broker outage keeps 200: delivery goes on from the store, only slower.
      const storeHealth = await pingStore();
      res.writeHead(storeHealth.ok ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({
        ok: storeHealth.ok, protocol: PROTOCOL_VERSION, mode, connections: sessions.size, transports: { ...byTransport },
        allowedOrigins: originPolicy, store: storeHealth, broker: broker.health(), presence: presence.health(),
      }));
      return;
    }
    // Source maps carry the sources: served outside production only.
    if (config.production && path.endsWith('.map')) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    const notFound = () => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(hasClient ? 'not found' : 'not found (client files are not built: run `npm run build`)');
    };
    if (serveStatic) serveStatic(req, res, notFound);
    else notFound();
  }

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (err) => log.debug({ err }, 'upgrade socket error'));
    const refuse = (status: string, text: string) => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${text}`);
    };
    if (shuttingDown) return refuse('503 Service Unavailable', 'shutting down');
    const url = requestUrl(req);
    if (url === undefined) return refuse('400 Bad Request', 'bad request target');
    if (url.pathname !== '/ws') return refuse('404 Not Found', 'not found');
    const admission = admissions.admit(req, 'websocket');
    if (!admission.ok) return refuse(`${admission.status} ${STATUS_CODES[admission.status]}`, admission.message);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session = startSession(new WebSocketTransport(ws), admission.ip);
      ws.on('error', (err: Error & { code?: string }) => {
        log.debug({ err, session: session.id }, 'socket error');
        // ws closes a frame over maxPayload itself, without the session.
        if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') metrics.closed(CloseCode.TooBig);
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    http.once('error', (error) => reject(listenError('the server', config.port, host, error)));
    http.listen(config.port, host, resolve);
  });
  const port = (http.address() as AddressInfo).port;

  // One sweep for all sessions: drop those that never handshook or went silent.
  const sweep = setInterval(() => {
    const now = Date.now();
    admissions.sweep(now);
    for (const session of sessions) {
      const silentFor = now - session.lastHeard;
      if (!session.handshaken && silentFor > Math.max(5000, config.heartbeatMs * 3)) {
        session.close(CloseCode.HandshakeTimeout, 'no handshake');
      } else if (silentFor > config.idleHeartbeatMs * 3) {
        session.close(CloseCode.IdleTimeout, 'no heartbeat');
      }
    }
  }, config.heartbeatMs);
  sweep.unref();
  const pruneHistory = () =>
    store.prune().then(
      (removed) => removed > 0 && log.info({ removed }, 'pruned old events'),
      (err: unknown) => log.error({ err }, 'pruning failed'),
    );
  void pruneHistory();
  const pruner = setInterval(pruneHistory, 60_000);
  pruner.unref();

  log.info({ port, host, mode, protocol: PROTOCOL_VERSION, db: options.store ? 'custom' : config.db, ...(admin ? { metricsPort: admin.port } : {}) }, 'listening');

  return {
    port,
    procedures,
    store,
    connectionCount: () => sessions.size,
    metricsPort: admin?.port,
    async close() {
      // Stop taking connections first: a client that reconnects at once (they do, after 1001)
      // must not land in a server that waits for its connections to end.
      shuttingDown = true;
      clearInterval(sweep);
      clearInterval(pruner);
      const httpClosed = new Promise<void>((resolve) => http.close(() => resolve()));
      for (const session of sessions) session.close(CloseCode.GoingAway, 'server shutting down');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      // Held polls were answered with the 1001: let those answers out before the sockets go.
      await longPolling.close();
      http.closeAllConnections();
      await httpClosed;
      await admin?.close();
      await presence.close();
      await broker.close();
      await store.close();
    },
  };
}
