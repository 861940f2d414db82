/// <reference lib="webworker" />
/**
 * SharedWorker host: one instance per origin serves every tab through Comlink.
 */
import * as Comlink from 'comlink';
import { Hub } from './hub.js';
import type { WorkerStats } from './api.js';
import { database } from './db.js';

declare const self: SharedWorkerGlobalScope & { tetherWorkerStats?: () => WorkerStats };

export function startSharedWorker(): void {
  const hub = new Hub({ database });
  self.tetherWorkerStats = () => hub.stats();
  self.addEventListener('connect', (event) => {
    const port = event.ports[0];
    if (port) Comlink.expose(hub, port);
  });
}
