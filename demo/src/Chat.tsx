import { useEffect, useRef, useState, type FormEvent } from 'react';
import type { TetherClient } from '../../sdk/index.js';

interface Line {
  key: string;
  text: string;
  kind: 'message' | 'pending' | 'failed' | 'reset';
}

/** Pub/sub: a chat on channel `chat`. Offline messages wait in the outbox and are sent once. */
export function Chat({ client }: { client: TetherClient }) {
  const [lines, setLines] = useState<Line[]>([]);
  const [draft, setDraft] = useState('');
  const [note, setNote] = useState('');
  const log = useRef<HTMLOListElement>(null);

  useEffect(
    () =>
      client.pubsub.subscribe<{ text: string }>(
        'chat',
        (message, meta) => setLines((all) => [...all, { key: `m${meta.offset}`, text: message.text, kind: 'message' }]),
        {
          onReset: (info) => setLines((all) => [...all, { key: `r${info.offset}`, text: 'some older messages could not be recovered', kind: 'reset' }]),
          onError: (error) => setNote(`chat unavailable: ${error.message}`),
        },
      ),
    [client],
  );
  useEffect(() => {
    log.current?.scrollTo({ top: log.current.scrollHeight });
  }, [lines]);
  useEffect(() => {
    void client.persistence.then((answer) => {
      if (answer !== 'persisted') setNote('This browser may evict unsent messages under storage pressure.');
    });
  }, [client]);

  function send(event: FormEvent) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft('');
    // Shown as pending until the server stored it; the subscription then shows it for everyone.
    const key = `p${crypto.randomUUID()}`;
    setLines((all) => [...all, { key, text: `${text} (sending…)`, kind: 'pending' }]);
    client.pubsub.publish('chat', { text }).then(
      () => setLines((all) => all.filter((l) => l.key !== key)),
      (error: { message?: string }) =>
        setLines((all) => all.map((l) => (l.key === key ? { ...l, text: `${text} (not sent: ${error.message ?? String(error)})`, kind: 'failed' } : l))),
    );
  }

  return (
    <section>
      <h2>Chat</h2>
      <ol id="chat-log" className="chat" ref={log} aria-live="polite">
        {lines.map((line) => (
          <li key={line.key} className={line.kind}>
            {line.text}
          </li>
        ))}
      </ol>
      <form id="chat-form" onSubmit={send}>
        <label>
          message <input id="chat-input" autoComplete="off" maxLength={500} value={draft} onChange={(e) => setDraft(e.target.value)} />
        </label>
        <button type="submit">Send</button>
      </form>
      <p id="chat-note" className="note">{note}</p>
    </section>
  );
}
