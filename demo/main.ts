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

// ---- chat over pub/sub ----------------------------------------------------------------
const chatLog = $('chat-log');
const chatNote = $('chat-note');
function addLine(text: string, className?: string): HTMLLIElement {
  const li = document.createElement('li');
  li.textContent = text;
  if (className) li.className = className;
  chatLog.append(li);
  chatLog.scrollTop = chatLog.scrollHeight;
  return li;
}
client.pubsub.subscribe<{ text: string }>('chat', (message) => addLine(message.text), {
  onReset: () => addLine('(some older messages could not be recovered)', 'reset'),
  onError: (error) => (chatNote.textContent = `chat unavailable: ${error.message}`),
});
$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>('chat-input');
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  // Shown as pending until the server stored it; the subscription then shows it for everyone.
  const line = addLine(`${text} (sending…)`, 'pending');
  client.pubsub.publish('chat', { text }).then(
    () => line.remove(),
    (error: { message?: string }) => {
      line.textContent = `${text} (not sent: ${error.message ?? String(error)})`;
    },
  );
});
void client.persistence.then((answer) => {
  if (answer !== 'persisted') chatNote.textContent = 'This browser may evict unsent messages under storage pressure.';
});

// Exposed for the end-to-end tests and for trying the API from the devtools console.
Object.assign(window, { tether: client });
