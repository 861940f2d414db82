/**
 * GET /metrics: the server's metrics in the Prometheus text format, on the main port behind the
 * HTTP API's key, and optionally on an admin listener without one (TETHER_METRICS_PORT).
 *
 *   API key set                       → the key is required (Authorization: Bearer $TETHER_API_KEY), as for /api
 *   no API key, development mode      → open (the server listens on 127.0.0.1 unless HOST says otherwise)
 *   no API key, secure mode           → 401, saying how to enable it
 *   TETHER_METRICS_PORT               → also served there without a key (bind it to a private address)
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hasApiKey } from './http-api.js';
import type { Logger } from './log.js';
import type { ServerMetrics } from './metrics.js';

export interface MetricsEndpointOptions {
  metrics: ServerMetrics;
  apiKey: string | undefined;
  /** No token verification: clients are anonymous, and so may be a scraper without a key. */
  development: boolean;
}

function json(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify({ error: { code, message } }));
}

async function expose(req: IncomingMessage, res: ServerResponse, metrics: ServerMetrics): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, 'invalid_message', `${req.method} is not allowed on /metrics`, { allow: 'GET, HEAD' });
  const text = await metrics.registry.metrics();
  res.writeHead(200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : text);
}

/** Answers GET /metrics on the main port (the key check first). */
export function createMetricsHandler(options: MetricsEndpointOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    if (options.apiKey === undefined) {
      if (!options.development) {
        return json(res, 401, 'unauthorized', '/metrics needs TETHER_API_KEY (then send Authorization: Bearer <TETHER_API_KEY>), or set TETHER_METRICS_PORT to serve it without a key on a separate listener (127.0.0.1 unless TETHER_METRICS_HOST says otherwise)');
      }
    } else if (!hasApiKey(req, options.apiKey)) {
      return json(res, 401, 'unauthorized', 'missing or wrong API key (Authorization: Bearer <TETHER_API_KEY>)', { 'www-authenticate': 'Bearer' });
    }
    return expose(req, res, options.metrics);
  };
}

export interface AdminListener {
  readonly port: number;
  close(): Promise<void>;
}

/** The admin listener: /metrics without a key, nothing else. */
export async function startAdminListener(options: { metrics: ServerMetrics; port: number; host: string; log: Logger }): Promise<AdminListener> {
  const http = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return json(res, 404, 'not_found', 'only /metrics is served here');
    expose(req, res, options.metrics).catch((err: unknown) => {
      options.log.error({ err }, 'metrics request failed');
      if (!res.headersSent) json(res, 500, 'internal', 'the metrics could not be collected; see the server log');
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(options.port, options.host, resolve);
  });
  const port = (http.address() as AddressInfo).port;
  options.log.info({ port, host: options.host }, 'metrics listening (GET /metrics, no key)');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      }),
  };
}
