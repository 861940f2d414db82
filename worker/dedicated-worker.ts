/// <reference lib="webworker" />
/**
 * Dedicated Worker host, one per tab where the browser has no SharedWorker: its tab reaches the
 * engine of the elected leader tab through it (worker/elected-host.ts).
 */
import * as Comlink from 'comlink';
import { ElectedHost } from './elected-host.js';
import type { WorkerStats } from './api.js';
import { database } from './db.js';

declare const self: DedicatedWorkerGlobalScope & { tetherWorkerStats?: () => WorkerStats };

export function startDedicatedWorker(): void {
  const host = new ElectedHost({ database });
  self.tetherWorkerStats = () => host.stats();
  Comlink.expose(host, self);
}
