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

/** A table row: cells kept by `key` from one push to the next, or a group caption across all columns. */
type Row = { key: string; cells: Cell[] } | { key: string; caption: string };

/**
 * A table whose rows are kept by key (`data-key`): a push changes only the cells whose text
 * changed, moves only the rows out of place and removes only the rows gone, so the rows (and a
 * selection in them) survive the updates. `columns`: names (a leading `#` right-aligns the column).
 */
class KeyedTable {
  readonly element = el('div');
  private readonly empty: HTMLElement;
  private readonly table = el('table');
  private readonly body: HTMLTableSectionElement;
  private readonly rows = new Map<string, HTMLTableRowElement>();
  private readonly numeric: boolean[];

  constructor(private readonly columns: string[], empty: string) {
    this.numeric = columns.map((c) => c.startsWith('#'));
    const head = this.table.createTHead().insertRow();
    columns.forEach((c, i) => head.append(el('th', this.numeric[i] ? 'n' : '', c.replace(/^#/, ''))));
    this.body = this.table.createTBody();
    this.empty = el('div', 'empty', empty);
  }

  update(rows: Row[]): void {
    if (rows.length === 0) {
      this.body.replaceChildren();
      this.rows.clear();
      this.element.replaceChildren(this.empty);
      return;
    }
    if (this.table.parentNode !== this.element) this.element.replaceChildren(this.table);
    const keys = new Set<string>();
    let next: ChildNode | null = this.body.firstChild;
    for (const row of rows) {
      keys.add(row.key);
      let tr = this.rows.get(row.key);
      if (!tr) {
        tr = this.row(row);
        this.rows.set(row.key, tr);
      }
      const texts = 'caption' in row ? [row.caption] : row.cells.map(String);
      texts.forEach((text, i) => {
        const td = tr.cells[i];
        if (td && td.textContent !== text) {
          td.textContent = text;
          if (!('caption' in row)) td.title = text;
        }
      });
      if (tr === next) next = next.nextSibling;
      else this.body.insertBefore(tr, next);
    }
    for (const [key, tr] of this.rows) {
      if (keys.has(key)) continue;
      tr.remove();
      this.rows.delete(key);
    }
  }

  private row(row: Row): HTMLTableRowElement {
    const tr = document.createElement('tr');
    tr.dataset.key = row.key;
    if ('caption' in row) {
      tr.className = 'user';
      const td = el('td');
      td.colSpan = this.columns.length;
      tr.append(td);
    } else {
      tr.append(...this.columns.map((_, i) => el('td', this.numeric[i] ? 'n' : '')));
    }
    return tr;
  }
}

/** A mount's own nodes in a shadow root, and how to stop it, by root: a second mount on an element takes it over. */
const mounts = new WeakMap<ShadowRoot, () => void>();

/**
 * Renders `client.inspect()` into `element` (in its shadow root) and keeps it current; returns
 * the function that removes it and stops the updates. Each push changes only what changed: the
 * log is appended to (a selection in it survives the updates, so lines can be copied while they
 * flow), table rows are kept by key, and a section whose content is the same is not touched.
 * Mounting again on the same element stops the earlier mount and replaces its panel.
 */
export function mountInspector(element: HTMLElement, client: Pick<TetherClient, 'inspect'>): () => void {
  const root = element.shadowRoot ?? element.attachShadow({ mode: 'open' });
  mounts.get(root)?.();
  const panel = el('div', 'panel');
  const style = el('style');
  style.textContent = STYLE;
  // Only this mount's nodes: whatever else the shadow root holds is left alone.
  root.append(style, panel);

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

  // The header's nodes, made once; each push sets their text.
  const waiting = el('div', 'empty', 'waiting for the worker…');
  const state = el('span', 'state');
  state.dataset.field = 'connection';
  const stateText = document.createTextNode('');
  state.append(el('span', 'dot'), stateText);
  const transport = el('span', 'chip');
  const mode = el('span', 'chip');
  const top = el('div', 'top');
  top.append(state, transport, mode);
  const facts = el('dl');
  const fields = new Map<string, HTMLElement>();
  for (const name of ['user', 'tabs', 'client', 'session', 'last sync', 'server']) {
    const dd = el('dd');
    dd.dataset.field = name;
    fields.set(name, dd);
    facts.append(el('dt', '', name), dd);
  }
  const problem = el('div', 'problem');
  header.append(waiting);

  const tables = {
    outbox: new KeyedTable(['#seq', 'kind', 'target', '#age', '#attempts', '#bytes'], 'nothing waits for the server'),
    subscriptions: new KeyedTable(['channel', '#offset', 'epoch', '#tabs', 'live'], 'no channel subscribed'),
    documents: new KeyedTable(['document', '#version', '#pending', '#conflicts', 'synced', '#tabs'], 'no document open'),
    presence: new KeyedTable(['channel', '#members', '#tabs', 'joined'], 'no presence joined'),
  };
  const sections = {} as Record<keyof typeof tables | 'log', { badge: HTMLElement; body: HTMLElement }>;
  for (const name of ['outbox', 'subscriptions', 'documents', 'presence', 'log'] as const) {
    sections[name] = part(name);
    if (name !== 'log') sections[name].body.append(tables[name].element);
  }
  const lines = el('div', 'log');
  sections.log.body.append(lines);

  /** What each part last rendered, as text: a part whose input is the same is not touched. */
  const rendered = new Map<string, string>();
  const changed = (part: string, input: unknown): boolean => {
    const text = JSON.stringify(input);
    if (rendered.get(part) === text) return false;
    rendered.set(part, text);
    return true;
  };
  const setText = (node: Node, text: string) => {
    if (node.textContent !== text) node.textContent = text;
  };

  /** The last log line rendered, and how many rendered lines share its time (lines of one millisecond keep their order). */
  let tail: { at: number; same: number } | undefined;
  const renderLog = (log: Inspection['log']) => {
    setText(sections.log.badge, String(log.length));
    const last = log.at(-1);
    // Another log (a new worker): drawn again from its start.
    const restart = tail !== undefined && (last === undefined || last.at < tail.at);
    let from = 0;
    if (tail && !restart) {
      from = log.length;
      while (from > 0 && log[from - 1]!.at > tail.at) from--;
      let same = 0;
      while (from - same > 0 && log[from - same - 1]!.at === tail.at) same++;
      from -= Math.max(0, same - tail.same);
    }
    if (from === log.length && !restart) return;
    // One layout read, before this push writes anything; none when no line is new.
    const atBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8;
    if (restart) lines.replaceChildren();
    lines.append(
      ...log.slice(from).map((line) => {
        const div = el('div', `line ${line.level}`);
        div.append(el('time', '', clock(line.at)), line.message);
        return div;
      }),
    );
    // The worker keeps its last few hundred lines: so does the panel.
    for (let extra = lines.childElementCount - log.length; extra > 0; extra--) lines.firstElementChild?.remove();
    let same = 0;
    while (last && same < log.length && log[log.length - 1 - same]!.at === last.at) same++;
    tail = last && { at: last.at, same };
    // Newest at the bottom; a reader scrolled up is left where they are.
    if (atBottom) lines.scrollTop = lines.scrollHeight;
  };

  const render = (i: Inspection | null) => {
    if (!i) {
      if (waiting.parentNode !== header) header.replaceChildren(waiting);
      rendered.delete('header');
      return;
    }
    renderLog(i.log);
    const now = Date.now();
    const header_ = {
      connection: i.connection, transport: i.transport ?? 'no transport', mode: i.mode,
      user: i.user === null ? '—' : i.user === '' ? '(anonymous)' : i.user, tabs: String(i.tabs),
      client: [short(i.clientId), i.clientId ?? ''], session: [short(i.session), i.session ?? ''],
      sync: i.lastSyncAt === null ? 'never' : `${age(now - i.lastSyncAt)} ago`, server: i.url,
      problem: i.error ? `${i.error.code}: ${i.error.message}` : '',
    };
    if (changed('header', header_)) {
      if (top.parentNode !== header) header.replaceChildren(top, facts);
      state.className = `state ${header_.connection}`;
      setText(stateText, header_.connection);
      setText(transport, header_.transport);
      setText(mode, header_.mode);
      const fact = (name: string, [text, full]: [string, string?]) => {
        const dd = fields.get(name)!;
        setText(dd, text);
        dd.title = full ?? text;
      };
      fact('user', [header_.user]);
      fact('tabs', [header_.tabs]);
      fact('client', header_.client as [string, string]);
      fact('session', header_.session as [string, string]);
      fact('last sync', [header_.sync]);
      fact('server', [header_.server]);
      setText(problem, header_.problem);
      if (header_.problem && problem.parentNode !== header) header.append(problem);
      else if (!header_.problem) problem.remove();
    }

    const several = i.outbox.filter((o) => o.count > 0).length > 1;
    const parts: [keyof typeof tables, number, Row[]][] = [
      ['outbox', i.outbox.reduce((sum, o) => sum + o.count, 0), i.outbox.flatMap((o) => [
        ...(several && o.count > 0 ? [{ key: `user ${o.user}`, caption: `user ${o.user === '' ? '(anonymous)' : o.user}` }] : []),
        ...o.writes.map((w, n) => ({ key: `${o.user}\n${w.seq ?? `#${n}`}`, cells: [w.seq ?? '—', w.kind, w.target, age(now - w.createdAt), w.attempts, w.bytes] })),
        ...(o.count > o.writes.length ? [{ key: `more ${o.user}`, caption: `… and ${o.count - o.writes.length} more` }] : []),
      ])],
      ['subscriptions', i.subscriptions.length, i.subscriptions.map((s) => ({ key: s.channel, cells: [s.channel, s.offset ?? '—', short(s.epoch), s.tabs, s.live ? 'live' : 'waiting'] }))],
      ['documents', i.documents.length, i.documents.map((d) => ({ key: d.doc, cells: [d.doc, d.version, d.pending, d.conflicts, d.synced ? 'yes' : 'no', d.tabs] }))],
      ['presence', i.presence.length, i.presence.map((p) => ({ key: p.channel, cells: [p.channel, p.members, p.tabs, p.joined ? 'yes' : 'no'] }))],
    ];
    for (const [name, count, rows] of parts) {
      if (!changed(name, [count, rows])) continue;
      setText(sections[name].badge, String(count));
      tables[name].update(rows);
    }
  };

  const store = client.inspect();
  render(store.getState());
  const unsubscribe = store.subscribe(render);
  let mounted = true;
  const unmount = () => {
    if (!mounted) return;
    mounted = false;
    unsubscribe();
    store.close();
    style.remove();
    panel.remove();
    if (mounts.get(root) === unmount) mounts.delete(root);
  };
  mounts.set(root, unmount);
  return unmount;
}
