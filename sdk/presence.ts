/**
 * Presence on the tab side: `client.presence(channel)` joins the channel's presence from this
 * tab and returns a read-only zustand store of its members (one per person, with their tabs and
 * browsers), with `set` for this user's state there and `leave`.
 */
import * as Comlink from 'comlink';
import { createStore } from 'zustand/vanilla';
import { readonly, type ReadonlyStore } from './readonly-store.js';
import { TetherError } from '../protocol/errors.js';
import type { Outcome, PresenceSnapshot, TabApi } from '../worker/api.js';

export type { PresenceMember, PresenceSnapshot } from '../worker/api.js';

/** A channel's presence as this tab sees it (read-only; change your own entry with `set`). */
export interface PresenceStore extends ReadonlyStore<PresenceSnapshot> {
  readonly channel: string;
  /**
   * Sets this user's presence state on the channel (any JSON value of at most 1,024 bytes as UTF-8: typing, a
   * cursor, the card being edited). The latest set by any of the user's tabs is what others see.
   * Rejects with `message_too_big`, `invalid_argument` or `closed`.
   */
  set(state: unknown): Promise<void>;
  /** Leaves the channel's presence from this tab (idempotent). Closing the tab leaves too. */
  leave(): void;
}

interface Context {
  attached: Promise<Comlink.Remote<TabApi>>;
  apiVersion: () => number;
}

/** Checked here so a state that is not JSON fails in the app, with the reason; its size is checked by the worker (`message_too_big`). */
function checkedState(state: unknown): unknown {
  let json: string | undefined;
  try {
    json = JSON.stringify(state ?? null);
  } catch (cause) {
    throw new TetherError('invalid_argument', `presence.set(state): state must be JSON (${String(cause)})`);
  }
  if (json === undefined) throw new TetherError('invalid_argument', 'presence.set(state): state must be JSON');
  return JSON.parse(json) as unknown;
}

export function createPresenceStore(channel: string, context: Context, onLeave: () => void): PresenceStore {
  const id = crypto.randomUUID();
  const store = createStore<PresenceSnapshot>()(() => ({ channel, joined: false, members: [], total: 0, error: null }));
  let left = false;
  const listener = Comlink.proxy((snapshot: PresenceSnapshot) => {
    if (!left) store.setState(snapshot, true);
  });
  const joined: Promise<Comlink.Remote<TabApi> | undefined> = context.attached.then(async (tab) => {
    if (left) return undefined;
    if (context.apiVersion() < 3) {
      const message = 'the running Tether worker is older than this page and has no presence; it updates once every tab of this site was reloaded';
      store.setState({ error: { code: 'worker_unavailable', message } });
      console.warn(`[tether] presence(${JSON.stringify(channel)}): ${message}`);
      return undefined;
    }
    const outcome = await tab.presenceJoin(id, channel, listener);
    if (!outcome.ok) {
      store.setState({ error: outcome.error });
      return undefined;
    }
    return tab;
  });
  joined.catch(() => {}); // the attach failure surfaces through rpc.call and the status

  return {
    ...readonly(store),
    channel,
    async set(state) {
      if (left) throw new TetherError('closed', `presence(${JSON.stringify(channel)}) was left; join again`);
      const value = checkedState(state);
      const tab = await joined;
      if (!tab) {
        const error = store.getState().error;
        throw error ? TetherError.from(error) : new TetherError('closed', `presence(${JSON.stringify(channel)}) was left; join again`);
      }
      const outcome: Outcome<null> = await tab.presenceSet(id, value);
      if (!outcome.ok) throw TetherError.from(outcome.error);
    },
    leave() {
      if (left) return;
      left = true;
      onLeave();
      void joined.then((tab) => tab?.presenceLeave(id)).catch(() => {});
    },
  };
}
