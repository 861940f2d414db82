import { useMemo, useState, type DragEvent, type FormEvent, type KeyboardEvent } from 'react';
import { useDoc, useDocStatus } from '../../sdk/react.js';
import type { DocStore, TetherClient } from '../../sdk/index.js';
import { getIdentity, type Identity } from './identity.js';
import { pendingTracker, usePendingKeys } from './pending.js';
import { Avatar, Icon, PendingBadge } from './ui.js';
import { useNotices } from './notices.js';
import { PresenceBar, useHere } from './Presence.js';

type Column = 'todo' | 'doing' | 'done';
const COLUMNS: { id: Column; title: string }[] = [
  { id: 'todo', title: 'To do' },
  { id: 'doing', title: 'In progress' },
  { id: 'done', title: 'Done' },
];

interface Card {
  text: string;
  done: boolean;
  /** Creation time (the order of cards in a column). */
  at: number;
  /** Missing on cards of older demos: derived from `done`. */
  column?: Column;
  /** Who changed it last, and when. */
  by?: { name: string; color: string; at: number };
}
type CardKey = `card:${string}`;
type BoardDoc = Record<CardKey, Card>;
type Change = (label: string, key: CardKey, fn: Parameters<DocStore<BoardDoc>['transact']>[0]) => void;

const columnOf = (card: Card): Column => card.column ?? (card.done ? 'done' : 'todo');
const stamp = (): NonNullable<Card['by']> => {
  const { name, color } = getIdentity();
  return { name, color, at: Date.now() };
};

/** Shared state: a board of cards in document `board`, every change a transaction. */
export function Board({ client }: { client: TetherClient }) {
  const doc = useMemo(() => client.state.doc<BoardDoc>('board'), [client]);
  const view = useDoc(doc);
  const { pending, conflicts, synced } = useDocStatus(doc);
  const pendingKeys = usePendingKeys(client, 'board');
  const here = useHere(client, 'board');
  const notify = useNotices((s) => s.show);
  const [draft, setDraft] = useState('');
  const [dropTarget, setDropTarget] = useState<Column | null>(null);
  const cards = Object.entries(view)
    .filter(([key]) => key.startsWith('card:'))
    .sort(([, a], [, b]) => a.at - b.at) as [CardKey, Card][];

  /** Runs a transaction; tells the user when it had to run again because of a concurrent change. */
  const change: Change = (label, key, fn) => {
    let runs = 0;
    const done = doc.transact((tx) => {
      runs++;
      return fn(tx);
    });
    pendingTracker(client).track({ doc: 'board', keys: [key] }, done).then(
      () => {
        if (runs > 1)
          notify({
            id: 'board-notice',
            kind: 'conflict',
            title: 'Conflict resolved:',
            text: `“${label}” met a change from someone else and was applied again on the latest version.`,
          });
      },
      (error: { code?: string; message?: string }) =>
        notify({ id: 'board-notice', kind: 'error', title: 'Not applied:', text: `“${label}” — ${error.message ?? String(error)}` }),
    );
  };

  const move = (key: CardKey, card: Card, column: Column) => {
    if (columnOf(card) === column) return;
    change(card.text, key, (tx) => {
      const current = tx.get(key);
      if (current) tx.set(key, { ...current, column, done: column === 'done', by: stamp() });
    });
  };

  function add(event: FormEvent) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft('');
    const key: CardKey = `card:${crypto.randomUUID()}`;
    change(text, key, (tx) => tx.set(key, { text, done: false, at: Date.now(), column: 'todo', by: stamp() }));
  }

  function drop(event: DragEvent, column: Column) {
    event.preventDefault();
    setDropTarget(null);
    const key = event.dataTransfer.getData('application/x-tether-card') as CardKey;
    const card = view[key];
    if (card) move(key, card, column);
  }

  return (
    <section className="panel board-panel" aria-labelledby="board-title">
      <div className="panel-head">
        <h2 id="board-title">
          Board{' '}
          <small className="doc-state" data-synced={synced}>
            {!synced ? 'from this browser' : pending > 0 ? `${pending} unsaved` : ''}
          </small>
        </h2>
        <PresenceBar here={here} label="Board" />
        <form id="card-form" className="composer card-composer" onSubmit={add}>
          <label className="sr-only" htmlFor="card-input">
            new card
          </label>
          <input id="card-input" className="field" placeholder="What needs doing?" autoComplete="off" maxLength={200} value={draft} onChange={(e) => setDraft(e.target.value)} />
          <button type="submit" className="btn btn-primary">
            <Icon name="plus" /> Add
          </button>
        </form>
      </div>
      <div id="board" className="board">
        {COLUMNS.map((column) => {
          const inColumn = cards.filter(([, card]) => columnOf(card) === column.id);
          return (
            <section
              key={column.id}
              className={`column${dropTarget === column.id ? ' drop-target' : ''}`}
              data-column={column.id}
              aria-labelledby={`column-${column.id}`}
              onDragOver={(e) => {
                if (!e.dataTransfer.types.includes('application/x-tether-card')) return;
                e.preventDefault();
                e.dataTransfer.dropEffect = 'move';
                if (dropTarget !== column.id) setDropTarget(column.id);
              }}
              onDragLeave={(e) => {
                if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setDropTarget(null);
              }}
              onDrop={(e) => drop(e, column.id)}
            >
              <h3 id={`column-${column.id}`} className="column-title">
                <span className={`column-mark column-mark-${column.id}`} aria-hidden="true" />
                {column.title} <span className="count">{inColumn.length}</span>
              </h3>
              <ul className="cards">
                {inColumn.map(([key, card]) => (
                  <CardItem key={key} id={key} card={card} pending={pendingKeys.has(key)} change={change} move={move} />
                ))}
              </ul>
              {inColumn.length === 0 && <p className="empty">{column.id === 'todo' ? 'Nothing to do. Add a card above.' : 'Drop cards here'}</p>}
            </section>
          );
        })}
      </div>
      {conflicts.length > 0 && (
        <div id="board-conflicts" className="callout callout-warning" role="alert">
          <p>
            {conflicts.length} change{conflicts.length > 1 ? 's' : ''} made in a closed tab could not be applied: someone else changed the same card first.
          </p>
          <ul>
            {conflicts.map((c) => (
              <li key={c.at}>{Object.values(c.writes).map((w) => (w && typeof w === 'object' && 'text' in w ? String(w.text) : 'a removal')).join(', ')}</li>
            ))}
          </ul>
          <button className="btn btn-quiet" onClick={() => void doc.clearConflicts()}>
            Dismiss
          </button>
        </div>
      )}
    </section>
  );
}

function CardItem({ id, card, pending, change, move }: { id: CardKey; card: Card; pending: boolean; change: Change; move: (key: CardKey, card: Card, column: Column) => void }) {
  const [editing, setEditing] = useState<string | null>(null);
  const column = columnOf(card);
  const index = COLUMNS.findIndex((c) => c.id === column);
  const previous = COLUMNS[index - 1];
  const next = COLUMNS[index + 1];

  function save(event: FormEvent) {
    event.preventDefault();
    const text = (editing ?? '').trim();
    setEditing(null);
    if (!text || text === card.text) return;
    change(text, id, (tx) => {
      const current = tx.get(id);
      if (current) tx.set(id, { ...current, text, by: stamp() });
    });
  }
  function cancelOnEscape(event: KeyboardEvent) {
    if (event.key === 'Escape') setEditing(null);
  }

  return (
    <li
      data-card={card.text}
      data-pending={pending || undefined}
      className={`card${card.done ? ' done' : ''}${pending ? ' is-pending' : ''}`}
      draggable={editing === null}
      onDragStart={(e) => {
        e.dataTransfer.setData('application/x-tether-card', id);
        e.dataTransfer.effectAllowed = 'move';
      }}
    >
      <div className="card-row">
        <input
          type="checkbox"
          className="check"
          aria-label={`done: ${card.text}`}
          checked={card.done}
          onChange={() =>
            change(card.text, id, (tx) => {
              const current = tx.get(id);
              if (current) {
                const done = !current.done;
                tx.set(id, { ...current, done, column: done ? 'done' : columnOf(current) === 'done' ? 'todo' : columnOf(current), by: stamp() });
              }
            })
          }
        />
        {editing === null ? (
          <span className="card-text">{card.text}</span>
        ) : (
          <form onSubmit={save} className="card-edit">
            <input className="field field-small" aria-label={`text of ${card.text}`} value={editing} maxLength={200} onChange={(e) => setEditing(e.target.value)} onKeyDown={cancelOnEscape} autoFocus />
            <button type="submit" className="btn btn-primary btn-small">
              Save
            </button>
            <button type="button" className="btn btn-quiet btn-small" onClick={() => setEditing(null)}>
              Cancel
            </button>
          </form>
        )}
      </div>
      <div className="card-foot">
        {card.by ? <Byline who={card.by} /> : <span className="byline" />}
        {pending && <PendingBadge title="Saved in this browser; the server has not confirmed it yet" />}
        {editing === null && (
          <span className="card-actions">
            {previous && (
              <button className="icon-btn" aria-label={`move ${card.text} to ${previous.title}`} title={`Move to ${previous.title}`} onClick={() => move(id, card, previous.id)}>
                <Icon name="left" />
              </button>
            )}
            {next && (
              <button className="icon-btn" aria-label={`move ${card.text} to ${next.title}`} title={`Move to ${next.title}`} onClick={() => move(id, card, next.id)}>
                <Icon name="right" />
              </button>
            )}
            <button className="icon-btn" aria-label={`edit: ${card.text}`} title="Edit" onClick={() => setEditing(card.text)}>
              <Icon name="edit" />
            </button>
            <button className="icon-btn icon-btn-danger" aria-label={`remove: ${card.text}`} title="Remove" onClick={() => change(card.text, id, (tx) => tx.delete(id))}>
              <Icon name="trash" />
            </button>
          </span>
        )}
      </div>
    </li>
  );
}

function Byline({ who }: { who: NonNullable<Card['by']> }) {
  const me = getIdentity();
  return (
    <span className="byline" title={`Last changed by ${who.name} at ${new Date(who.at).toLocaleTimeString()}`}>
      <Avatar name={who.name} color={who.color} size="xs" />
      <span className="byline-name">{sameAs(me, who) ? 'you' : who.name}</span>
    </span>
  );
}

const sameAs = (me: Identity, who: { name: string; color: string }) => me.name === who.name && me.color === who.color;
