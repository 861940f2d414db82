/**
 * The tab side: a thin proxy to the SharedWorker that owns the socket.
 */
import * as Comlink from 'comlink';
import { createStore, type StoreApi } from 'zustand/vanilla';
import { TetherError } from '../protocol/errors.js';
import type { Outcome, Status, WorkerApi } from '../worker/api.js';
import { resolveOptions, type ConnectOptions } from './options.js';

export interface RpcCallOptions {
  /** Reject with `timeout` if no answer arrives in time. @default the client's `timeoutMs` */
  timeoutMs?: number;
}

export interface TetherClient {
  /** Connection status, as a zustand store: `client.status.getState().connection`. */
  readonly status: StoreApi<Status>;
  readonly rpc: {
    /**
     * Calls a procedure on the server. Rejects with a `TetherError` whose `code` is
     * `offline`, `connection_lost`, `timeout`, `not_found`, `forbidden`, `invalid_argument`,
     * `unauthorized`, `unavailable` or `internal`.
     */
    call<T = unknown>(method: string, args?: unknown[], options?: RpcCallOptions): Promise<T>;
  };
  /** Detaches this tab from the worker; other tabs keep their connection. */
  close(): void;
}

function randomId(): string {
  return crypto.randomUUID();
}

export function createClient(options: ConnectOptions, defaultWorkerUrl: string | undefined): TetherClient {
  const resolved = resolveOptions(options, defaultWorkerUrl);
  const status = createStore<Status>()(() => ({ connection: 'connecting', pending: 0 }));

  let worker: SharedWorker;
  try {
    worker = new SharedWorker(resolved.workerUrl, { name: 'tether' });
  } catch (cause) {
    throw new TetherError(
      'worker_unavailable',
      `could not start the SharedWorker at ${resolved.workerUrl} (${String(cause)}); ` +
        'the worker script must be same-origin with the page: host tether-worker.js yourself and pass workerUrl',
    );
  }
  const api = Comlink.wrap<WorkerApi>(worker.port);
  const tabId = randomId();
  let closed = false;
  let releaseLock: () => void = () => {};

  // Hold a Web Lock for the tab's lifetime; the worker waits on it to notice the tab is gone.
  const lockName = `tether-tab-${tabId}`;
  const attached = new Promise<void>((ready, fail) => {
    navigator.locks
      .request(lockName, () => {
        ready();
        return new Promise<void>((release) => (releaseLock = release));
      })
      .catch(fail);
  }).then(async () => {
    const onStatus = Comlink.proxy((next: Status) => status.setState(next, true));
    const registration = { tabId, lockName, url: resolved.url };
    const initial = resolved.token
      ? await api.attach(registration, onStatus, Comlink.proxy(resolved.token))
      : await api.attach(registration, onStatus);
    if (!closed) status.setState(initial, true);
  });
  attached.catch(() => {}); // surfaced through rpc.call

  async function call<T>(method: string, args: unknown[] = [], callOptions: RpcCallOptions = {}): Promise<T> {
    if (closed) throw new TetherError('closed', 'the client was closed');
    if (typeof method !== 'string' || method === '') throw new TypeError('rpc.call(method): method must be a non-empty string');
    if (!Array.isArray(args)) throw new TypeError('rpc.call(method, args): args must be an array');
    const timeoutMs = callOptions.timeoutMs ?? resolved.timeoutMs;
    await attached;
    const outcome: Outcome<unknown> = await api.call(tabId, method, args, { timeoutMs });
    if (!outcome.ok) throw TetherError.from(outcome.error);
    return outcome.value as T;
  }

  return {
    status,
    rpc: { call },
    close() {
      if (closed) return;
      closed = true;
      void attached.then(() => api.detach(tabId)).finally(() => {
        releaseLock();
        api[Comlink.releaseProxy]();
        worker.port.close();
      });
    },
  };
}
