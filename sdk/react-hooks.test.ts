// @vitest-environment happy-dom
/**
 * The hooks that join and leave (usePresence, useInspection) run effects, so they are rendered
 * into a DOM here (happy-dom), in StrictMode, which mounts, unmounts and mounts again: the
 * client below counts what was joined and left. The real client behind them is proven in a
 * browser by the demo's tests (its board and chat use usePresence).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StrictMode, act, createElement, useState, type ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { createStore, type StoreApi } from 'zustand/vanilla';
import { usePresence, useInspection, type PresenceView } from './react.js';
import { readonly } from './readonly-store.js';
import { TetherError } from '../protocol/errors.js';
import type { PresenceStore } from './presence.js';
import type { InspectorStore } from './inspector.js';
import type { Inspection, PresenceSnapshot } from '../worker/api.js';

declare global {
  // eslint-disable-next-line no-var
  var IS_REACT_ACT_ENVIRONMENT: boolean;
}
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

/** A client whose presence stores are plain zustand stores, each recording what was set and whether it was left. */
function presenceClient(refuse?: (state: unknown) => TetherError | undefined) {
  const joined: { channel: string; store: StoreApi<PresenceSnapshot>; sets: unknown[]; left: boolean }[] = [];
  const client = {
    presence(channel: string): PresenceStore {
      const store = createStore<PresenceSnapshot>()(() => ({ channel, joined: false, members: [], total: 0, error: null }));
      const entry = { channel, store, sets: [] as unknown[], left: false };
      joined.push(entry);
      return {
        ...readonly(store),
        channel,
        async set(state) {
          if (entry.left) throw new TetherError('closed', 'left');
          const refusal = refuse?.(state);
          if (refusal) throw refusal;
          entry.sets.push(state);
        },
        leave() {
          entry.left = true;
        },
      };
    },
  };
  return { client, joined, open: () => joined.filter((j) => !j.left) };
}

let root: Root | undefined;
afterEach(() => {
  act(() => root?.unmount());
  root = undefined;
});

function render(node: ReactNode): void {
  const container = document.createElement('div');
  document.body.append(container);
  root = createRoot(container);
  act(() => root!.render(createElement(StrictMode, null, node)));
}

describe('usePresence', () => {
  it('joins once per mounted component under StrictMode, sets the state by value, and leaves on unmount', async () => {
    const { client, open } = presenceClient();
    const seen: PresenceView[] = [];
    let setTyping: (typing: boolean) => void = () => {};
    function Board() {
      const [typing, set] = useState(false);
      setTyping = set;
      const view = usePresence(client, 'board', { name: 'Alice', typing });
      seen.push(view);
      return null;
    }
    render(createElement(Board));
    await act(async () => {});
    expect(open().map((j) => j.channel)).toEqual(['board']);
    const [here] = open();
    expect(here!.sets).toEqual([{ name: 'Alice', typing: false }]);

    // The store's changes reach the component.
    const alice = { id: 'alice', user: 'alice', tabs: 2, devices: 1, state: { name: 'Alice' }, since: 1, self: true };
    act(() => here!.store.setState({ joined: true, members: [alice], total: 1 }));
    expect(seen.at(-1)).toMatchObject({ channel: 'board', joined: true, total: 1, stateError: null });
    expect(seen.at(-1)!.members).toEqual([alice]);

    // A re-render with an equal state sets nothing; a changed one is set once.
    act(() => setTyping(false));
    await act(async () => {});
    expect(here!.sets).toHaveLength(1);
    act(() => setTyping(true));
    await act(async () => {});
    expect(here!.sets).toEqual([{ name: 'Alice', typing: false }, { name: 'Alice', typing: true }]);

    act(() => root!.unmount());
    root = undefined;
    expect(open()).toEqual([]);
  });

  it('a refused state is returned as stateError, cleared by the next state taken; another channel is joined and the old one left', async () => {
    const { client, open } = presenceClient((state) => (JSON.stringify(state).length > 20 ? new TetherError('message_too_big', 'too big') : undefined));
    let view: PresenceView | undefined;
    let change: (next: { channel: string; state: unknown }) => void = () => {};
    function Chat() {
      const [props, set] = useState<{ channel: string; state: unknown }>({ channel: 'chat', state: 'x'.repeat(30) });
      change = set;
      view = usePresence(client, props.channel, props.state);
      return null;
    }
    render(createElement(Chat));
    await act(async () => {});
    expect(view!.stateError).toEqual(expect.objectContaining({ code: 'message_too_big' }));
    act(() => change({ channel: 'chat', state: 'short' }));
    await act(async () => {});
    expect(view!.stateError).toBeNull();

    act(() => change({ channel: 'room', state: 'short' }));
    await act(async () => {});
    expect(open().map((j) => j.channel)).toEqual(['room']);
    expect(view).toMatchObject({ channel: 'room', joined: false, members: [] });
    expect(open()[0]!.sets).toEqual(['short']);
  });
});

describe('usePresence with what is not JSON, and with a new client', () => {
  it('a state that is not JSON (a BigInt, a function) is returned as stateError, never thrown in render; a new client shows nothing of the old one', async () => {
    const first = presenceClient();
    const second = presenceClient();
    let view: PresenceView | undefined;
    let change: (next: { client: ReturnType<typeof presenceClient>['client']; state: unknown }) => void = () => {};
    function Card() {
      const [props, set] = useState<{ client: ReturnType<typeof presenceClient>['client']; state: unknown }>({ client: first.client, state: { n: 10n } });
      change = set;
      view = usePresence(props.client, 'board', props.state);
      renders.push({ second: props.client === second.client, total: view.total });
      return null;
    }
    const renders: { second: boolean; total: number }[] = [];
    render(createElement(Card));
    await act(async () => {});
    expect(view!.stateError).toMatchObject({ code: 'invalid_argument', message: expect.stringContaining('usePresence(state): state must be JSON') });
    expect(first.open()[0]!.sets).toEqual([]);
    act(() => change({ client: first.client, state: () => 1 }));
    expect(view!.stateError).toMatchObject({ code: 'invalid_argument' });
    act(() => change({ client: first.client, state: 'ok' }));
    await act(async () => {});
    expect(view!.stateError).toBeNull();
    expect(first.open()[0]!.sets).toEqual(['ok']);
    act(() => first.open()[0]!.store.setState({ joined: true, total: 1, members: [{ id: 'a', user: 'a', tabs: 1, devices: 1, state: 'ok', since: 1, self: true }] }));
    expect(view!.total).toBe(1);

    // Another client, same channel: the first one's store is left, and not shown in any render meanwhile.
    act(() => change({ client: second.client, state: 'ok' }));
    await act(async () => {});
    expect(first.open()).toEqual([]);
    expect(second.open().map((j) => j.channel)).toEqual(['board']);
    expect(renders.filter((r) => r.second).length).toBeGreaterThan(0);
    expect(renders.filter((r) => r.second && r.total !== 0)).toEqual([]);
  });
});

describe('useInspection', () => {
  it('opens one inspector per mounted component under StrictMode, shows what it pushes, and closes it on unmount', async () => {
    const opened: { store: StoreApi<Inspection | null>; closed: boolean }[] = [];
    const client = {
      inspect(): InspectorStore {
        const store = createStore<Inspection | null>()(() => null);
        const entry = { store, closed: false };
        opened.push(entry);
        return { ...readonly(store), close: () => void (entry.closed = true) };
      },
    };
    const seen: (Inspection | null)[] = [];
    function Panel() {
      seen.push(useInspection(client));
      return null;
    }
    render(createElement(Panel));
    await act(async () => {});
    const live = opened.filter((o) => !o.closed);
    expect(live).toHaveLength(1);
    expect(seen.at(-1)).toBeNull();
    const inspection = { at: 1 } as unknown as Inspection;
    act(() => live[0]!.store.setState(inspection, true));
    expect(seen.at(-1)).toBe(inspection);
    act(() => root!.unmount());
    root = undefined;
    expect(opened.every((o) => o.closed)).toBe(true);
  });
});
