/// <reference lib="webworker" />
/**
 * The worker script (tether-worker.js): one file for both hosts, so an app hosts one URL. Started
 * as a SharedWorker it serves every tab of the origin; started as a dedicated Worker (a browser
 * without SharedWorker) it joins the election of a leader tab.
 */
import { startDedicatedWorker } from './dedicated-worker.js';
import { startSharedWorker } from './shared-worker.js';

if (typeof SharedWorkerGlobalScope !== 'undefined' && self instanceof SharedWorkerGlobalScope) startSharedWorker();
else startDedicatedWorker();
