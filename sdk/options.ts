import type { TransportKind } from '../worker/api.js';

/** Options of `connect()`. */
export interface ConnectOptions {
  /** WebSocket URL of the Tether server, e.g. `wss://rt.example.com/ws`. */
  url: string;
  /**
   * A JWT signed by your backend, or a function that returns one (called again on every
   * reconnect). Optional while the server runs in development mode.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * URL of the worker script, which must be same-origin with the page.
   * @default `tether-worker.js` next to the SDK script
   */
  workerUrl?: string | URL;
  /**
   * Default timeout of `rpc.call`.
   * @default 10000
   */
  timeoutMs?: number;
  /**
   * Who holds the connection. `auto`: the origin's SharedWorker, or where the browser has none
   * (or it cannot start), a leader tab elected among the tabs (`leader-election`: each tab runs
   * the worker script as a dedicated Worker; one holds the socket, the others reach it over a
   * BroadcastChannel and take over when it goes away). Force one to test, or to avoid
   * SharedWorker where it misbehaves. `client.status` says which is in use (`mode`).
   * @default 'auto'
   */
  mode?: ConnectMode;
  /**
   * Which transports may carry the connection, in order of preference. By default a WebSocket,
   * and where one cannot get through (a proxy refuses or kills the upgrade) HTTP long polling to
   * the same URL, moving back to a WebSocket as soon as one gets through. `['websocket']` never
   * falls back; `['long-polling']` never tries WebSockets (a network known to block them);
   * `['long-polling', 'websocket']` uses a WebSocket only while long polling fails.
   * `client.status` says which is in use (`transport`). Tabs of one browser share one connection
   * per URL: the first tab's choice holds (a tab asking otherwise gets a console warning).
   * @default ['websocket', 'long-polling']
   */
  transports?: TransportKind[];
}

export type ConnectMode = 'auto' | 'shared-worker' | 'leader-election';

export interface ResolvedOptions {
  url: string;
  token: (() => Promise<string | undefined>) | undefined;
  workerUrl: string;
  timeoutMs: number;
  mode: ConnectMode;
  /** Undefined: the default (both, WebSocket first). */
  transports: TransportKind[] | undefined;
}

export const DEFAULTS = { timeoutMs: 10_000 } as const;

/** Validates options at once so mistakes surface at `connect()`, not at the first call. */
export function resolveOptions(options: ConnectOptions, defaultWorkerUrl: string | undefined): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError('connect(options): options must be an object');
  const base = typeof location === 'undefined' ? undefined : location.href;
  let url: URL;
  try {
    url = new URL(options.url, base);
  } catch {
    throw new TypeError(`connect(options): url ${JSON.stringify(options.url)} is not a valid URL`);
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') url.protocol = url.protocol === 'http:' ? 'ws:' : 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new TypeError(`connect(options): url must be ws:// or wss://, got ${url.protocol}`);
  }
  const timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new TypeError('connect(options): timeoutMs must be a positive number');
  const { token } = options;
  if (token !== undefined && typeof token !== 'string' && typeof token !== 'function') {
    throw new TypeError('connect(options): token must be a string or a function returning one');
  }
  const mode = options.mode ?? 'auto';
  if (mode !== 'auto' && mode !== 'shared-worker' && mode !== 'leader-election') {
    throw new TypeError(`connect(options): mode must be 'auto', 'shared-worker' or 'leader-election', got ${JSON.stringify(mode)}`);
  }
  const { transports } = options;
  if (transports !== undefined && (!Array.isArray(transports) || transports.length === 0 || transports.length > 2 || new Set(transports).size !== transports.length || transports.some((t) => t !== 'websocket' && t !== 'long-polling'))) {
    throw new TypeError(`connect(options): transports must list 'websocket' and/or 'long-polling' (each once), got ${JSON.stringify(transports)}`);
  }
  const workerUrl = options.workerUrl ?? defaultWorkerUrl;
  if (workerUrl === undefined) throw new TypeError('connect(options): workerUrl is required when the SDK cannot locate its script');
  return {
    url: url.href,
    token: token === undefined ? undefined : async () => (typeof token === 'string' ? token : await token()),
    workerUrl: new URL(workerUrl, base).href,
    timeoutMs,
    mode,
    transports: transports === undefined ? undefined : [...transports],
  };
}
