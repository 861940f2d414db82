import { useEffect, useRef, useState, type FormEvent } from 'react';
import type { EventMeta, TetherClient } from '../../sdk/index.js';
import { colorOf, getIdentity, useIdentity } from './identity.js';
import { pendingTracker, usePendingPublishes } from './pending.js';
import { Avatar, Icon, PendingBadge } from './ui.js';
import { PresenceBar, TypingLine, useHere } from './Presence.js';

/** How long after the last keystroke "typing" is cleared. */
const TYPING_IDLE_MS = 4000;

/** What the demo publishes on `chat` (older demos sent `{ text }` only; the HTTP API anything). */
interface ChatData {
  id?: string;
  text: string;
  name?: string;
  color?: string;
  /** The author's browser (its messages are "mine" in every tab of it). */
  uid?: string;
  at?: number;
}

type Entry =
  | { kind: 'message'; key: string; data: ChatData; offset: number; backend: boolean }
  | { kind: 'reset'; key: string; offset: number };

/** The state of a message this tab sent and has not received back yet. */
type Sent = { data: ChatData; state: 'sending' | 'sent' } | { data: ChatData; state: 'failed'; error: string };

function asChatData(data: unknown): ChatData {
  if (typeof data === 'string') return { text: data };
  if (data && typeof data === 'object' && typeof (data as ChatData).text === 'string') return data as ChatData;
  return { text: JSON.stringify(data) };
}

/** Received messages survive a reload of the tab (the subscription resumes after the last one). */
const CACHE = `tether-demo:chat:${location.search}`;
function cached(): Entry[] {
  try {
    const entries = JSON.parse(sessionStorage.getItem(CACHE) ?? '[]') as Entry[];
    return Array.isArray(entries) ? entries : [];
  } catch {
    return [];
  }
}

const time = (at: number | undefined) => (at ? new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');

/** Pub/sub: a chat on channel `chat`. Offline messages wait in the outbox and are sent once. */
export function Chat({ client }: { client: TetherClient }) {
  const me = useIdentity();
  const [entries, setEntries] = useState<Entry[]>(cached);
  const [sent, setSent] = useState<Map<string, Sent>>(new Map());
  const [draft, setDraft] = useState('');
  const [note, setNote] = useState('');
  const log = useRef<HTMLOListElement>(null);
  const waiting = usePendingPublishes(client, 'chat').map(asChatData);
  // Typing: while the composer has focus and text, until a few seconds without a keystroke or a send.
  const [typing, setTyping] = useState(false);
  const idle = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const here = useHere(client, 'chat', { typing });
  const stopTyping = () => {
    clearTimeout(idle.current);
    setTyping(false);
  };
  const typed = (text: string) => {
    setDraft(text);
    if (!text.trim()) return stopTyping();
    setTyping(true);
    clearTimeout(idle.current);
    idle.current = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
  };
  useEffect(() => () => clearTimeout(idle.current), []);

  useEffect(
    () =>
      client.pubsub.subscribe<unknown>(
        'chat',
        (raw, meta: EventMeta) => {
          const data = asChatData(raw);
          setEntries((all) => (all.some((e) => e.key === `m${meta.offset}`) ? all : [...all, { kind: 'message', key: `m${meta.offset}`, data, offset: meta.offset, backend: !!(meta.publisher && 'backend' in meta.publisher) }]));
          pendingTracker(client).refresh();
        },
        {
          onReset: (info) => setEntries((all) => [...all, { kind: 'reset', key: `r${info.epoch}:${info.offset}`, offset: info.offset }]),
          onError: (error) => setNote(`Chat unavailable: ${error.message}`),
        },
      ),
    [client],
  );
  useEffect(() => {
    try {
      sessionStorage.setItem(CACHE, JSON.stringify(entries.slice(-200)));
    } catch {
      // Not kept across reloads.
    }
  }, [entries]);
  useEffect(() => {
    void client.persistence.then((answer) => {
      if (answer !== 'persisted') setNote('This browser may evict unsent messages under storage pressure.');
    });
  }, [client]);

  // What is shown: the channel's messages, then ours not received back yet — pending while the
  // server has not acknowledged them (from the outbox: every tab's, across reloads).
  const received = new Set(entries.flatMap((e) => (e.kind === 'message' && e.data.id ? [e.data.id] : [])));
  const pendingIds = new Set(waiting.flatMap((d) => (d.id ? [d.id] : [])));
  const ours: { data: ChatData; state: 'pending' | 'sent' | 'failed'; error?: string }[] = [];
  const listed = new Set<string>();
  for (const data of waiting) {
    if (!data.id || received.has(data.id) || listed.has(data.id)) continue;
    listed.add(data.id);
    ours.push({ data, state: 'pending' });
  }
  for (const [id, s] of sent) {
    if (received.has(id) || listed.has(id)) continue;
    listed.add(id);
    if (s.state === 'failed') ours.push({ data: s.data, state: 'failed', error: s.error });
    // Stored by the server (not in the outbox any more): shown without a badge until it arrives.
    else ours.push({ data: s.data, state: pendingIds.has(id) || s.state === 'sending' ? 'pending' : 'sent' });
  }
  ours.sort((a, b) => (a.data.at ?? 0) - (b.data.at ?? 0));
  const count = entries.length + ours.length;

  useEffect(() => {
    log.current?.scrollTo({ top: log.current.scrollHeight });
  }, [count]);

  function send(event: FormEvent) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft('');
    stopTyping();
    const { name, color, uid } = getIdentity();
    const data: ChatData = { id: crypto.randomUUID(), text, name, color, uid, at: Date.now() };
    const id = data.id!;
    setSent((all) => new Map(all).set(id, { data, state: 'sending' }));
    pendingTracker(client)
      .track({ channel: 'chat', data }, client.pubsub.publish('chat', data))
      .then(
        () => setSent((all) => new Map(all).set(id, { data, state: 'sent' })),
        (error: { message?: string }) => setSent((all) => new Map(all).set(id, { data, state: 'failed', error: error.message ?? String(error) })),
      );
  }

  let previous: { author: string; at: number } | undefined;
  const bubble = (key: string, data: ChatData, extra: { state?: 'pending' | 'sent' | 'failed'; error?: string | undefined; backend?: boolean; offset?: number }) => {
    const author = data.name ?? (extra.backend ? 'Backend' : 'Someone');
    const color = data.color ?? colorOf(author);
    const mine = data.uid !== undefined && data.uid === me.uid;
    const at = data.at ?? 0;
    // Consecutive messages of one author within 5 minutes form a group (one name, one avatar).
    const continued = previous !== undefined && previous.author === `${author}${color}` && at - previous.at < 5 * 60_000;
    previous = { author: `${author}${color}`, at };
    const state = extra.state ?? 'message';
    return (
      <li key={key} className={`msg ${state}${mine ? ' mine' : ''}${continued ? ' continued' : ''}`} data-offset={extra.offset} data-pending={state === 'pending' || undefined}>
        {!mine && (continued ? <span className="avatar-gap" /> : <Avatar name={author} color={color} size="sm" />)}
        <div className="msg-body">
          {!continued && (
            <div className="msg-meta">
              <span className="msg-author" style={mine ? undefined : { color }}>
                {mine ? 'You' : author}
              </span>
              <time dateTime={at ? new Date(at).toISOString() : undefined}>{time(data.at)}</time>
            </div>
          )}
          <div className="bubble">
            <span className="msg-text">{data.text}</span>
          </div>
          {state === 'pending' && <PendingBadge title="Saved in this browser; the server has not stored it yet" />}
          {state === 'failed' && <span className="msg-error">Not sent: {extra.error}</span>}
        </div>
      </li>
    );
  };

  return (
    <section className="panel chat-panel" aria-labelledby="chat-title">
      <div className="panel-head">
        <h2 id="chat-title">Team chat</h2>
        <PresenceBar here={here} label="Chat" />
      </div>
      <ol id="chat-log" className="chat" ref={log} aria-live="polite" aria-relevant="additions">
        {count === 0 && <li className="chat-empty">Messages from now on show here. Say hello to the team.</li>}
        {entries.map((entry) =>
          entry.kind === 'reset' ? (
            <li key={entry.key} className="reset">
              Some older messages could not be recovered.
            </li>
          ) : (
            bubble(entry.key, entry.data, { backend: entry.backend, offset: entry.offset })
          ),
        )}
        {ours.map((o) => bubble(`p${o.data.id}`, o.data, { state: o.state, error: o.error }))}
      </ol>
      <TypingLine here={here} />
      <form id="chat-form" className="composer chat-composer" onSubmit={send}>
        <label className="sr-only" htmlFor="chat-input">
          message
        </label>
        <input id="chat-input" className="field" placeholder={`Message the team as ${me.name}`} autoComplete="off" maxLength={500} value={draft} onChange={(e) => typed(e.target.value)} onBlur={stopTyping} onFocus={(e) => typed(e.target.value)} />
        <button type="submit" className="btn btn-primary" disabled={!draft.trim()}>
          <Icon name="send" /> Send
        </button>
      </form>
      {note && (
        <p id="chat-note" className="note">
          {note}
        </p>
      )}
    </section>
  );
}
