/**
 * The reference server: HTTP (static files, health) and the WebSocket endpoint at /ws.
 * It takes its dependencies so tests can start it on port 0.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
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
import { createHttpApi } from './http-api.js';
import { createLocalBroker, type Broker } from './pubsub/broker.js';
import { WriteQueue } from './pubsub/write-queue.js';
import type { EventStore } from './storage/event-store.js';
import { openSqliteStore } from './storage/sqlite.js';

export interface ServerOptions extends Partial<ServerConfig> {
  /** Extra procedures, added to (and overriding) the built-in ones. */
  procedures?: Record<string, Procedure>;
  /** Directory of the built client files (demo, /tether.js, worker). @default dist/client */
  clientDir?: string;
  logger?: Logger;
  /** The events DB. @default SQLite at `db` */
  store?: EventStore;
  /** Fan-out. @default in process */
  broker?: Broker;
}

export interface TetherServer {
  /** The port actually listened on (useful with port 0). */
  readonly port: number;
  readonly procedures: ProcedureRegistry;
  readonly store: EventStore;
  /** Open WebSocket connections. */
  connectionCount(): number;
  close(): Promise<void>;
}

const DEFAULT_CLIENT_DIR = fileURLToPath(new URL('../../client', import.meta.url));

export async function startServer(options: ServerOptions = {}): Promise<TetherServer> {
  const config: ServerConfig = { ...DEFAULT_CONFIG, ...options };
  const log = options.logger ?? createLogger(config.logLevel);
  if (config.dbSync === 'off') log.warn('TETHER_DB_SYNC=off: acknowledged writes can be lost in a crash. For measurements only.');
  if (config.tokenSecret === undefined) {
    log.warn('TETHER_TOKEN_SECRET is not set: DEVELOPMENT MODE, anonymous clients are accepted. Never run this in production.');
  }

  const proxy = config.rpcProxyUrl === undefined
    ? undefined
    : createHttpProxy({ url: config.rpcProxyUrl, methods: config.rpcProxyMethods, apiKey: config.apiKey, timeoutMs: config.rpcProxyTimeoutMs });
  const procedures = new ProcedureRegistry(log, proxy);
  for (const [name, procedure] of Object.entries({ ...builtinProcedures, ...options.procedures })) procedures.register(name, procedure);

  const clientDir = options.clientDir ?? DEFAULT_CLIENT_DIR;
  const hasClient = existsSync(clientDir);
  if (!hasClient) log.warn({ clientDir }, 'client files not found: run `npm run build` to serve the demo and /tether.js');
  const serveStatic = hasClient ? sirv(clientDir, { etag: true, dev: false }) : undefined;

  const store = options.store ?? openSqliteStore({
    path: config.db,
    synchronous: config.dbSync,
    retention: { maxEvents: config.historyMaxEvents, maxAgeMs: config.historyMaxAgeS * 1000 },
  });
  const broker = options.broker ?? createLocalBroker();
  const writes = new WriteQueue(store, broker);
  const api = createHttpApi({ apiKey: config.apiKey, store, writes, maxBodyBytes: config.maxMessageBytes, log });
  const limits = { maxSubscriptions: config.maxSubscriptions, rateLimit: config.rateLimit, maxBufferedBytes: config.maxBufferedBytes };
  const allowedOrigins = new Set(config.allowedOrigins);

  const sessions = new Set<Session>();
  const authenticate = createAuthenticator(config.tokenSecret);
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxMessageBytes });

  const http = createHttpServer(async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    if (await api(req, res, url)) return;
    if (path === '/api/health') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ ok: true, protocol: PROTOCOL_VERSION, connections: sessions.size }));
      return;
    }
    const notFound = () => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(hasClient ? 'not found' : 'not found (client files are not built: run `npm run build`)');
    };
    if (serveStatic) serveStatic(req, res, notFound);
    else notFound();
  });

  http.on('upgrade', (req, socket, head) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    const origin = req.headers.origin;
    // Browsers always send Origin; other clients (no Origin) still need a valid token.
    if (allowedOrigins.size > 0 && origin !== undefined && !allowedOrigins.has(origin)) {
      log.warn({ origin }, 'WebSocket from a disallowed origin refused');
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\norigin not allowed (TETHER_ALLOWED_ORIGINS)');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session = new Session(ws, { log, authenticate, procedures, store, writes, broker, heartbeatMs: config.heartbeatMs, maxMessageBytes: config.maxMessageBytes, limits });
      sessions.add(session);
      ws.on('close', () => sessions.delete(session));
      ws.on('error', (err) => log.debug({ err, session: session.id }, 'socket error'));
    });
  });

  // One sweep for all sessions: drop those that never handshook or went silent.
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const session of sessions) {
      const silentFor = now - session.lastHeard;
      if (!session.handshaken && silentFor > Math.max(5000, config.heartbeatMs * 3)) {
        session.close(CloseCode.HandshakeTimeout, 'no handshake');
      } else if (silentFor > config.heartbeatMs * 3) {
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

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.port, config.host, resolve);
  });
  const port = (http.address() as AddressInfo).port;
  log.info({ port, host: config.host, protocol: PROTOCOL_VERSION, db: options.store ? 'custom' : config.db }, 'listening');

  return {
    port,
    procedures,
    store,
    connectionCount: () => sessions.size,
    async close() {
      clearInterval(sweep);
      clearInterval(pruner);
      for (const session of sessions) session.close(CloseCode.GoingAway, 'server shutting down');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      await broker.close();
      await store.close();
    },
  };
}
