import { createRoot } from 'react-dom/client';
import { registerSW } from 'virtual:pwa-register';
import { connect } from '../../sdk/index.js';
import { App } from './App.js';

// `?ws=` points the demo at another Tether server; by default it uses the one that served it.
const url = new URLSearchParams(location.search).get('ws') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
// The npm build finds its worker next to itself; an app bundle hosts it at a path of its own.
// `?mode=leader-election` runs it as on a browser without SharedWorker (one tab holds the socket).
const mode = new URLSearchParams(location.search).get('mode') === 'leader-election' ? 'leader-election' : 'auto';
// `?transports=long-polling` carries it over HTTP long polling, as where WebSockets are blocked.
const forced = new URLSearchParams(location.search).get('transports') === 'long-polling';
const client = connect({ url, workerUrl: '/tether-worker.js', mode, ...(forced ? { transports: ['long-polling' as const] } : {}) });

// The offline app shell: the page, /tether.js and the worker come from the cache without a network.
registerSW({ immediate: true });

// Exposed for the end-to-end tests and for trying the API from the devtools console.
window.tether = client;

createRoot(document.getElementById('root')!).render(<App client={client} />);
