/**
 * Who is here: one avatar per person on a channel's presence (initials in their colour, from the
 * state the demo sets: your name and colour), with their tabs and browsers, you marked.
 */
import { useEffect, useRef, useState } from 'react';
import { usePresence, type PresenceView } from '../../sdk/react.js';
import type { PresenceMember, PresenceSnapshot, TetherClient } from '../../sdk/index.js';
import { colorOf, useIdentity } from './identity.js';
import { Avatar } from './ui.js';

/** What the demo sets as its presence state on every channel. */
export interface PresenceState {
  name: string;
  color: string;
  typing?: boolean;
}

/** Joins `channel` while the component lives (tether/react's usePresence), with your name and colour (and typing) as state. */
export function useHere(client: TetherClient, channel: string, extra: Partial<PresenceState> = {}): PresenceView {
  const me = useIdentity();
  const state: PresenceState = extra.typing === true ? { name: me.name, color: me.color, typing: true } : { name: me.name, color: me.color };
  return usePresence(client, channel, state);
}

export function stateOf(member: PresenceMember): PresenceState {
  const s = member.state as Partial<PresenceState> | null;
  const name = typeof s?.name === 'string' && s.name.trim() ? s.name : 'Someone';
  return { name, color: typeof s?.color === 'string' ? s.color : colorOf(member.id), ...(s?.typing === true ? { typing: true } : {}) };
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const people = (n: number) => plural(n, 'person', 'people');
/** "3 tabs · 2 browsers" */
export const spread = (m: PresenceMember) => `${plural(m.tabs, 'tab')} · ${plural(m.devices, 'browser')}`;

/** The avatars of who is on `store`'s channel; a click lists them with their tabs and browsers. */
export function PresenceBar({ here, label }: { here: PresenceSnapshot; label: string }) {
  const { channel, members, total, joined, error } = here;
  const [open, setOpen] = useState(false);
  const root = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const close = (e: MouseEvent) => {
      if (!root.current?.contains(e.target as Node)) setOpen(false);
    };
    const escape = (e: KeyboardEvent) => {
      if (e.key === 'Escape') setOpen(false);
    };
    document.addEventListener('mousedown', close);
    document.addEventListener('keydown', escape);
    return () => {
      document.removeEventListener('mousedown', close);
      document.removeEventListener('keydown', escape);
    };
  }, [open]);
  // Refused, or never joined (a server without presence, offline since the page opened): nothing to show.
  if (error || (!joined && members.length === 0)) return null;
  // You first, then by arrival.
  const everyone = [...members].sort((a, b) => Number(b.self) - Number(a.self) || a.since - b.since);
  const shown = everyone.slice(0, 5);
  const more = total - shown.length;
  const id = `presence-${channel}`;
  return (
    <div className="presence" ref={root} data-channel={channel} data-joined={joined}>
      <button
        className="presence-stack"
        aria-expanded={open}
        aria-controls={`${id}-list`}
        aria-label={`${label}: ${people(total)} here`}
        onClick={() => setOpen(!open)}
        title={joined ? `${people(total)} here` : 'Last known (not connected)'}
      >
        {shown.map((m, i) => {
          const s = stateOf(m);
          return (
            // The first (you) on top of the next: each avatar's initials stay readable.
            <span key={m.id} className={`presence-person${m.self ? ' self' : ''}`} style={{ zIndex: shown.length - i }} data-member={s.name} data-tabs={m.tabs} data-devices={m.devices}>
              <Avatar name={s.name} color={s.color} size="sm" title={`${s.name}${m.self ? ' (you)' : ''}: ${spread(m)}`} />
              {m.tabs > 1 && (
                <span className="presence-tabs" aria-hidden="true">
                  {m.tabs}
                </span>
              )}
            </span>
          );
        })}
        {more > 0 && <span className="presence-more">+{more}</span>}
        <span className="presence-count">{total} here</span>
      </button>
      {open && (
        <div id={`${id}-list`} className="popover presence-list" role="dialog" aria-label={`${label}: who is here`}>
          <p className="presence-list-title">
            {label} · {people(total)} here{joined ? '' : ' (last known)'}
          </p>
          <ul>
            {everyone.map((m) => {
              const s = stateOf(m);
              return (
                <li key={m.id} data-member={s.name}>
                  <Avatar name={s.name} color={s.color} size="sm" />
                  <span className="presence-name">
                    {s.name}
                    {m.self && <span className="you"> (you)</span>}
                  </span>
                  <span className="presence-spread">{spread(m)}</span>
                </li>
              );
            })}
          </ul>
        </div>
      )}
    </div>
  );
}

/** "Bob is typing…" from the others' presence state. */
export function TypingLine({ here }: { here: PresenceSnapshot }) {
  const { members } = here;
  const names = members.filter((m) => !m.self && stateOf(m).typing).map((m) => stateOf(m).name);
  const text =
    names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : `${names.length} people are typing…`;
  return (
    <p id="typing" className="typing" aria-live="polite">
      {text && (
        <>
          <span className="typing-dots" aria-hidden="true">
            <i />
            <i />
            <i />
          </span>
          {text}
        </>
      )}
    </p>
  );
}
