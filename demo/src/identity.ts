/**
 * Who "you" are in the demo. It runs in development mode (anonymous clients), so the display name
 * is the demo's own: a friendly generated name and colour, editable, kept in this browser.
 */
import { useSyncExternalStore } from 'react';

export interface Identity {
  name: string;
  color: string;
  /** This browser (stays when the name changes): its messages are "mine" in each of its tabs. */
  uid: string;
  /** The user confirmed or chose the name (the welcome prompt is not shown again). */
  confirmed: boolean;
}

/** Colours that keep white initials readable (contrast ≥ 4.5:1) and stay apart from each other. */
export const PALETTE_NAMES = ['red', 'orange', 'amber', 'green', 'emerald', 'teal', 'blue', 'indigo', 'violet', 'plum', 'pink', 'slate'];
export const PALETTE = ['#b42318', '#c4320a', '#a15c07', '#3b7c0f', '#067647', '#0e7090', '#175cd3', '#3538cd', '#6938ef', '#9e1f63', '#c11574', '#475467'];

const ADJECTIVES = ['Brave', 'Calm', 'Clever', 'Curious', 'Eager', 'Gentle', 'Happy', 'Keen', 'Lively', 'Lucky', 'Nimble', 'Quick', 'Quiet', 'Sunny', 'Swift', 'Witty'];
const ANIMALS = ['Badger', 'Crane', 'Dolphin', 'Falcon', 'Fox', 'Heron', 'Koala', 'Lynx', 'Marten', 'Otter', 'Owl', 'Panda', 'Puffin', 'Robin', 'Seal', 'Wren'];

const KEY = 'tether-demo:identity';
const pick = <T,>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

function load(): Identity {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? 'null') as Partial<Identity> | null;
    if (saved && typeof saved.name === 'string' && saved.name.trim() && typeof saved.color === 'string') {
      const uid = typeof saved.uid === 'string' ? saved.uid : crypto.randomUUID();
      return { name: saved.name.slice(0, 40), color: saved.color, uid, confirmed: saved.confirmed === true };
    }
  } catch {
    // No storage (a sandboxed frame): a name for this page only.
  }
  const fresh = { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(PALETTE), uid: crypto.randomUUID(), confirmed: false };
  save(fresh);
  return fresh;
}

function save(identity: Identity): void {
  try {
    localStorage.setItem(KEY, JSON.stringify(identity));
  } catch {
    // Kept in memory only.
  }
}

let current: Identity = load();
const listeners = new Set<() => void>();

export function getIdentity(): Identity {
  return current;
}

export function setIdentity(change: Partial<Identity>): void {
  const name = (change.name ?? current.name).trim().slice(0, 40) || current.name;
  current = { ...current, ...change, name };
  save(current);
  for (const listener of listeners) listener();
}

// Another tab of this browser renamed you: follow it.
window.addEventListener('storage', (event) => {
  if (event.key !== KEY) return;
  current = load();
  for (const listener of listeners) listener();
});

export function useIdentity(): Identity {
  return useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => current,
  );
}

/** Up to two initials: "Curious Otter" → "CO", "ada" → "A". */
export function initials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0]![0], words[words.length - 1]![0]] : [words[0]?.[0]];
  return letters.filter(Boolean).join('').toUpperCase() || '?';
}

/** A stable colour for a name we only know as text (messages from older clients). */
export function colorOf(name: string): string {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.charCodeAt(0)) | 0;
  return PALETTE[Math.abs(hash) % PALETTE.length]!;
}
