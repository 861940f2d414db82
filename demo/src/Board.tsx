import { useMemo, useState, type FormEvent } from 'react';
import { useDoc, useDocStatus } from '../../sdk/react.js';
import type { DocStore, TetherClient } from '../../sdk/index.js';

interface Card {
  text: string;
  done: boolean;
  at: number;
}
type BoardDoc = Record<`card:${string}`, Card>;

/** Shared state: a board of cards in document `board`, every change a transaction. */
export function Board({ client }: { client: TetherClient }) {
  const doc = useMemo(() => client.state.doc<BoardDoc>('board'), [client]);
  const view = useDoc(doc);
  const { pending, conflicts, synced } = useDocStatus(doc);
  const [draft, setDraft] = useState('');
  const [notice, setNotice] = useState('');
  const cards = Object.entries(view)
    .filter(([key]) => key.startsWith('card:'))
    .sort(([, a], [, b]) => a.at - b.at) as [keyof BoardDoc & string, Card][];

  /** Runs a transaction; tells the user when it had to run again because of a concurrent change. */
  function change(label: string, fn: Parameters<DocStore<BoardDoc>['transact']>[0]) {
    let runs = 0;
    void doc
      .transact((tx) => {
        runs++;
        return fn(tx);
      })
      .then(
        () => {
          if (runs > 1) setNotice(`Conflict resolved: “${label}” met a change from someone else and was applied again on the latest version.`);
        },
        (error: { code?: string; message?: string }) => setNotice(`“${label}” was not applied: ${error.message ?? String(error)}`),
      );
  }

  function add(event: FormEvent) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft('');
    const key = `card:${crypto.randomUUID()}` as const;
    change(text, (tx) => tx.set(key, { text, done: false, at: Date.now() }));
  }

  return (
    <section>
      <h2>
        Board <small className="doc-state">{!synced ? '(from this browser)' : pending > 0 ? `(${pending} unsaved)` : ''}</small>
      </h2>
      <ul id="board" className="board">
        {cards.map(([key, card]) => (
          <CardItem key={key} id={key} card={card} change={change} />
        ))}
      </ul>
      <form id="card-form" onSubmit={add}>
        <label>
          new card <input id="card-input" autoComplete="off" maxLength={200} value={draft} onChange={(e) => setDraft(e.target.value)} />
        </label>
        <button type="submit">Add</button>
      </form>
      {notice && (
        <p id="board-notice" className="notice" role="status">
          {notice} <button onClick={() => setNotice('')}>OK</button>
        </p>
      )}
      {conflicts.length > 0 && (
        <div id="board-conflicts" className="conflicts" role="alert">
          <p>
            {conflicts.length} change{conflicts.length > 1 ? 's' : ''} made in a closed tab could not be applied: someone else changed the same
            card first.
          </p>
          <ul>
            {conflicts.map((c) => (
              <li key={c.at}>{Object.values(c.writes).map((w) => (w && typeof w === 'object' && 'text' in w ? String(w.text) : 'a removal')).join(', ')}</li>
            ))}
          </ul>
          <button onClick={() => void doc.clearConflicts()}>Dismiss</button>
        </div>
      )}
    </section>
  );
}

function CardItem({ id, card, change }: { id: `card:${string}`; card: Card; change: (label: string, fn: Parameters<DocStore<BoardDoc>['transact']>[0]) => void }) {
  const [editing, setEditing] = useState<string | null>(null);
  function save(event: FormEvent) {
    event.preventDefault();
    const text = (editing ?? '').trim();
    setEditing(null);
    if (!text || text === card.text) return;
    change(text, (tx) => {
      const current = tx.get(id);
      if (current) tx.set(id, { ...current, text });
    });
  }
  return (
    <li data-card={card.text} className={card.done ? 'done' : ''}>
      <input
        type="checkbox"
        aria-label={`done: ${card.text}`}
        checked={card.done}
        onChange={() =>
          change(card.text, (tx) => {
            const current = tx.get(id);
            if (current) tx.set(id, { ...current, done: !current.done });
          })
        }
      />
      {editing === null ? (
        <>
          <span className="card-text">{card.text}</span>
          <button aria-label={`edit: ${card.text}`} onClick={() => setEditing(card.text)}>
            Edit
          </button>
          <button aria-label={`remove: ${card.text}`} onClick={() => change(card.text, (tx) => tx.delete(id))}>
            Remove
          </button>
        </>
      ) : (
        <form onSubmit={save} className="card-edit">
          <input aria-label={`text of ${card.text}`} value={editing} onChange={(e) => setEditing(e.target.value)} autoFocus />
          <button type="submit">Save</button>
        </form>
      )}
    </li>
  );
}
