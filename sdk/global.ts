/**
 * Script-tag build: `<script src="/tether.js">` defines `window.Tether`.
 * The worker is found next to this script unless `workerUrl` is given.
 */
import { createClient, type TetherClient } from './client.js';
import type { ConnectOptions } from './options.js';
import { TetherError } from '../protocol/errors.js';

const script = typeof document !== 'undefined' ? document.currentScript : null;
const defaultWorkerUrl = script instanceof HTMLScriptElement && script.src ? new URL('tether-worker.js', script.src).href : undefined;

export function connect(options: ConnectOptions): TetherClient {
  return createClient(options, defaultWorkerUrl);
}

export { TetherError };
