import type { TetherClient } from '../sdk/index.js';

// `?ws=` points the demo at another Tether server; by default it uses the one that served it.
const wsUrl = new URLSearchParams(location.search).get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client: TetherClient = window.Tether.connect({ url: wsUrl });

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const statusEl = $('status');
const statusText = $('status-text');
const pendingEl = $('pending');

function render(): void {
  const { connection, pending } = client.status.getState();
  statusEl.dataset.connection = connection;
  statusText.textContent = connection === 'connecting' ? 'connecting…' : connection;
  pendingEl.textContent = pending > 0 ? `${pending} pending` : '';
}
client.status.subscribe(render);
render();

$('rpc-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const out = $('rpc-result');
  out.classList.remove('error');
  let args: unknown;
  try {
    args = JSON.parse($<HTMLInputElement>('rpc-args').value);
  } catch {
    out.classList.add('error');
    out.textContent = 'args must be a JSON array';
    return;
  }
  if (!Array.isArray(args)) {
    out.classList.add('error');
    out.textContent = 'args must be a JSON array';
    return;
  }
  out.textContent = '…';
  client.rpc.call($<HTMLInputElement>('rpc-method').value, args).then(
    (value) => (out.textContent = JSON.stringify(value)),
    (error: { code?: string; message?: string }) => {
      out.classList.add('error');
      out.textContent = `${error.code ?? 'error'}: ${error.message ?? String(error)}`;
    },
  );
});

// Exposed for the end-to-end tests and for trying the API from the devtools console.
Object.assign(window, { tether: client });
