/**
 * `tether/inspector`: a live, framework-free panel of what the worker holds (`client.inspect()`):
 * the connection, the outbox, subscriptions, documents, presence and the worker's log. It lives
 * in a shadow root (the app's CSS cannot reach it) and writes text only (never HTML from data).
 * Colours follow the page's light or dark scheme; `--tether-inspector-*` properties on the host
 * element override them (bg, fg, muted, line, accent).
 *
 * ```ts
 * import { mountInspector } from 'tether/inspector';
 * const unmount = mountInspector(document.getElementById('drawer')!, client);
 * ```
 * @packageDocumentation
 */
import type { Inspection } from '../worker/api.js';
import type { TetherClient } from './client.js';

const MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';
const STYLE = `
:host { all: initial; display: block; }
.panel {
  --bg: var(--tether-inspector-bg, #ffffff); --fg: var(--tether-inspector-fg, #1f2328);
  --muted: var(--tether-inspector-muted, #656d76); --line: var(--tether-inspector-line, #d8dee4);
  --soft: var(--tether-inspector-soft, #f6f8fa); --accent: var(--tether-inspector-accent, #1a7f37);
  --warn: #9a6700; --bad: #cf222e;
  font: 12px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg);
  border: 1px solid var(--line); border-radius: 8px; overflow: hidden; min-width: 0;
}
@media (prefers-color-scheme: dark) {
  .panel { --bg: var(--tether-inspector-bg, #0d1117); --fg: var(--tether-inspector-fg, #e6edf3); --muted: var(--tether-inspector-muted, #8d96a0);
    --line: var(--tether-inspector-line, #30363d); --soft: var(--tether-inspector-soft, #161b22); --accent: var(--tether-inspector-accent, #3fb950);
    --warn: #d29922; --bad: #f85149; }
}
header { padding: 8px 10px; background: var(--soft); border-bottom: 1px solid var(--line); }
.top { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; }
.state { display: inline-flex; align-items: center; gap: 6px; font-weight: 600; font-size: 13px; margin-right: 4px; }
.dot { width: 8px; height: 8px; border-radius: 50%; background: var(--warn); }
.online .dot { background: var(--accent); } .offline .dot { background: var(--bad); }
.chip { border: 1px solid var(--line); border-radius: 999px; padding: 0 7px; font-size: 11px; color: var(--muted); }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr) max-content minmax(0, 1fr); gap: 1px 10px; margin: 6px 0 0; }
dt { color: var(--muted); } dd { margin: 0; font-family: ${MONO}; font-size: 11px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.problem { color: var(--bad); margin-top: 6px; }
section { padding: 6px 10px 8px; border-bottom: 1px solid var(--line); }
section:last-child { border-bottom: 0; }
h3 { display: flex; align-items: center; gap: 6px; margin: 0 0 4px; font-size: 11px; font-weight: 600; letter-spacing: .05em; text-transform: uppercase; color: var(--muted); }
.badge { border-radius: 999px; padding: 0 6px; background: var(--soft); border: 1px solid var(--line); color: var(--fg); letter-spacing: 0; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th { text-align: left; font-weight: 500; color: var(--muted); padding: 1px 6px 2px 0; border-bottom: 1px solid var(--line); }
td { padding: 2px 6px 2px 0; font-family: ${MONO}; font-size: 11px; white-space: nowrap; max-width: 18em; overflow: hidden; text-overflow: ellipsis; }
.n { text-align: right; }
.user td { font-family: inherit; color: var(--muted); padding-top: 4px; }
.empty { color: var(--muted); font-style: italic; }
.log { max-height: 16em; overflow: auto; padding: 4px 6px; border-radius: 6px; background: var(--soft); font-family: ${MONO}; font-size: 11px; }
.line { white-space: pre-wrap; overflow-wrap: anywhere; }
.line time { color: var(--muted); margin-right: 6px; }
.debug { color: var(--muted); } .warn { color: var(--warn); } .error { color: var(--bad); }
`;

type Cell = string | number;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: Cell): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** "now", "4 s", "3 min", "2 h" */
function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 1 ? 'now' : s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h`;
}

function clock(at: number): string {
  const d = new Date(at);
  return `${d.toTimeString().slice(0, 8)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

const short = (id: string | null) => (id === null ? '—' : id.length > 12 ? `${id.slice(0, 8)}…` : id);

/** A table: `columns` names (a leading `#` right-aligns the column), one row per entry (a string row is a group caption). */
function table(columns: string[], rows: (Cell[] | string | { cells: Cell[]; key: string })[], empty: string): HTMLElement {
  if (rows.length === 0) return el('div', 'empty', empty);
  const numeric = columns.map((c) => c.startsWith('#'));
  const t = el('table');
  const head = t.createTHead().insertRow();
  columns.forEach((c, i) => head.append(el('th', numeric[i] ? 'n' : '', c.replace(/^#/, ''))));
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    if (typeof row === 'string') {
      tr.className = 'user';
      const td = el('td', '', row);
      td.colSpan = columns.length;
      tr.append(td);
      continue;
    }
    const cells = Array.isArray(row) ? row : row.cells;
    if (!Array.isArray(row)) tr.dataset.key = row.key;
    cells.forEach((cell, i) => {
      const td = el('td', numeric[i] ? 'n' : '', cell);
      td.title = String(cell);
      tr.append(td);
    });
  }
  return t;
}

/**
 * Renders `client.inspect()` into `element` (in its shadow root) and keeps it current; returns
 * the function that removes it and stops the updates.
 */
export function mountInspector(element: HTMLElement, client: Pick<TetherClient, 'inspect'>): () => void {
  const root = element.shadowRoot ?? element.attachShadow({ mode: 'open' });
  const panel = el('div', 'panel');
  const style = el('style');
  style.textContent = STYLE;
  root.replaceChildren(style, panel);

  const header = el('header');
  const part = (name: string) => {
    const section = el('section');
    section.dataset.section = name;
    const title = el('h3', '', name);
    const badge = el('span', 'badge');
    title.append(badge);
    const body = el('div');
    section.append(title, body);
    panel.append(section);
    return { badge, body };
  };
  panel.append(header);
  const outbox = part('outbox');
  const subscriptions = part('subscriptions');
  const documents = part('documents');
  const presence = part('presence');
  const log = part('log');
  const lines = el('div', 'log');
  log.body.append(lines);

  const render = (i: Inspection | null) => {
    if (!i) {
      header.replaceChildren(el('div', 'empty', 'waiting for the worker…'));
      return;
    }
    const now = Date.now();
    const state = el('span', `state ${i.connection}`);
    state.dataset.field = 'connection';
    state.append(el('span', 'dot'), i.connection);
    const top = el('div', 'top');
    top.append(state, ...[i.transport ?? 'no transport', i.mode].map((text) => el('span', 'chip', text)));
    const facts = el('dl');
    const fact = (name: string, value: Cell, full: string = String(value)) => {
      const dd = el('dd', '', value);
      dd.title = full;
      dd.dataset.field = name;
      facts.append(el('dt', '', name), dd);
    };
    fact('user', i.user === null ? '—' : i.user === '' ? '(anonymous)' : i.user);
    fact('tabs', i.tabs);
    fact('client', short(i.clientId), i.clientId ?? '');
    fact('session', short(i.session), i.session ?? '');
    fact('last sync', i.lastSyncAt === null ? 'never' : `${age(now - i.lastSyncAt)} ago`);
    fact('server', i.url);
    header.replaceChildren(top, facts);
    if (i.error) header.append(el('div', 'problem', `${i.error.code}: ${i.error.message}`));

    const pending = i.outbox.reduce((sum, o) => sum + o.count, 0);
    outbox.badge.textContent = String(pending);
    const several = i.outbox.filter((o) => o.count > 0).length > 1;
    outbox.body.replaceChildren(
      table(
        ['#seq', 'kind', 'target', '#age', '#attempts', '#bytes'],
        i.outbox.flatMap((o) => [
          ...(several && o.count > 0 ? [`user ${o.user === '' ? '(anonymous)' : o.user}`] : []),
          ...o.writes.map((w) => ({ key: String(w.seq), cells: [w.seq ?? '—', w.kind, w.target, age(now - w.createdAt), w.attempts, w.bytes] })),
          ...(o.count > o.writes.length ? [`… and ${o.count - o.writes.length} more`] : []),
        ]),
        'nothing waits for the server',
      ),
    );
    subscriptions.badge.textContent = String(i.subscriptions.length);
    subscriptions.body.replaceChildren(
      table(
        ['channel', '#offset', 'epoch', '#tabs', 'live'],
        i.subscriptions.map((s) => ({ key: s.channel, cells: [s.channel, s.offset ?? '—', short(s.epoch), s.tabs, s.live ? 'live' : 'waiting'] })),
        'no channel subscribed',
      ),
    );
    documents.badge.textContent = String(i.documents.length);
    documents.body.replaceChildren(
      table(
        ['document', '#version', '#pending', '#conflicts', 'synced', '#tabs'],
        i.documents.map((d) => ({ key: d.doc, cells: [d.doc, d.version, d.pending, d.conflicts, d.synced ? 'yes' : 'no', d.tabs] })),
        'no document open',
      ),
    );
    presence.badge.textContent = String(i.presence.length);
    presence.body.replaceChildren(
      table(
        ['channel', '#members', '#tabs', 'joined'],
        i.presence.map((p) => ({ key: p.channel, cells: [p.channel, p.members, p.tabs, p.joined ? 'yes' : 'no'] })),
        'no presence joined',
      ),
    );
    log.badge.textContent = String(i.log.length);
    // Newest at the bottom; a reader scrolled up is left where they are.
    const atBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8;
    lines.replaceChildren(
      ...i.log.map((line) => {
        const div = el('div', `line ${line.level}`);
        div.append(el('time', '', clock(line.at)), line.message);
        return div;
      }),
    );
    if (atBottom) lines.scrollTop = lines.scrollHeight;
  };

  const store = client.inspect();
  render(store.getState());
  const unsubscribe = store.subscribe(render);
  return () => {
    unsubscribe();
    store.close();
    root.replaceChildren();
  };
}
