/**
 * The worker's presence: what one connection tells the server (its tabs on a channel and the
 * state its user set last), and what the tabs are told. The server side is tested in server/presence.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { PresenceSnapshot } from './api.js';
import { Presence, TAB_GONE_DELAY_MS } from './presence.js';

type Sent = { type: 'presence'; channel: string; tabs: number; state?: unknown };

function setup(online = true) {
  const sent: Sent[] = [];
  const state = { online, self: 'alice' as string | undefined, socketUser: undefined as string | undefined };
  const presence = new Presence({
    send: (message) => {
      if (!state.online) return false;
      sent.push(message);
      return true;
    },
    selfId: () => state.self,
    socketUser: () => state.socketUser,
  });
  const seen = new Map<string, PresenceSnapshot[]>();
  const listener = (name: string) => (snapshot: PresenceSnapshot) => {
    const list = seen.get(name) ?? [];
    list.push(snapshot);
    seen.set(name, list);
  };
  const last = (name: string) => seen.get(name)?.at(-1);
  return { presence, sent, state, listener, last };
}

const member = (id: string, tabs = 1, devices = 1, state: unknown = null) => ({ id, user: id, tabs, devices, state, since: 1 });

describe('worker presence', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('counts each tab once, however many joins it has on the channel, and sends changes together', async () => {
    const { presence, sent } = setup();
    presence.join('tab1', 'a', 'room', () => {});
    presence.join('tab1', 'b', 'room', () => {});
    presence.join('tab2', 'c', 'room', () => {});
    presence.join('tab3', 'd', 'other', () => {});
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual([
      { type: 'presence', channel: 'room', tabs: 2 },
      { type: 'presence', channel: 'other', tabs: 1 },
    ]);
  });

  it("sends the state of the tab that set it last, and drops it when that tab leaves", async () => {
    const { presence, sent } = setup();
    presence.join('tab1', 'a', 'room', () => {});
    presence.join('tab2', 'b', 'room', () => {});
    expect(presence.set('a', { typing: true })).toEqual({ ok: true, value: null });
    expect(presence.set('b', { cursor: [1, 2] })).toEqual({ ok: true, value: null });
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 2, state: { cursor: [1, 2] } });
    presence.set('a', { typing: false });
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 2, state: { typing: false } });
    presence.leave('a');
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 1, state: { cursor: [1, 2] } });
    const before = sent.length;
    // A burst of sets (a cursor moving) costs one frame.
    for (let x = 0; x < 50; x++) presence.set('b', { cursor: [x, x] });
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.length).toBe(before + 1);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 1, state: { cursor: [49, 49] } });
  });

  it('refuses a state that is not JSON or over 1 KB, and keeps the last good one', async () => {
    const { presence, sent } = setup();
    presence.join('tab1', 'a', 'room', () => {});
    presence.set('a', { ok: 1 });
    expect(presence.set('a', { text: 'x'.repeat(1100) })).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
    expect(presence.set('a', 10n)).toMatchObject({ ok: false });
    expect(presence.set('missing', {})).toMatchObject({ ok: false, error: { code: 'closed' } });
    // Exactly at the limit is fine: 1024 bytes of JSON.
    expect(presence.set('a', 'y'.repeat(1022))).toEqual({ ok: true, value: null });
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 1, state: 'y'.repeat(1022) });
    // Measured as the server measures it, in UTF-8 bytes: 255 emoji are 512 characters but 1,022 bytes of JSON.
    expect(presence.set('a', '🧑'.repeat(256))).toMatchObject({ ok: false, error: { code: 'message_too_big', message: 'presence state is 1026 bytes of JSON (UTF-8); at most 1024' } });
    expect(presence.set('a', '🧑'.repeat(255))).toEqual({ ok: true, value: null });
  });

  it('a closed tab still counts for a moment (a reload comes back within it); an explicit leave is sent at once', async () => {
    const { presence, sent } = setup();
    presence.join('tab1', 'a', 'room', () => {});
    presence.join('tab1', 'a2', 'room', () => {});
    presence.join('tab2', 'b', 'room', () => {});
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toMatchObject({ tabs: 2 });
    const count = sent.length;
    presence.removeTab('tab1'); // closed or reloading
    await vi.advanceTimersByTimeAsync(TAB_GONE_DELAY_MS / 2);
    presence.join('tab1b', 'a3', 'room', () => {}); // the reloaded page joins again
    await vi.advanceTimersByTimeAsync(100);
    await vi.advanceTimersByTimeAsync(TAB_GONE_DELAY_MS);
    // The reload neither dipped nor raised the count: nothing was sent at all.
    expect(sent.length).toBe(count);
    // A tab closed for good counts until its delay ends, then not.
    presence.removeTab('tab2');
    await vi.advanceTimersByTimeAsync(TAB_GONE_DELAY_MS - 100);
    expect(sent.length).toBe(count);
    await vi.advanceTimersByTimeAsync(200);
    expect(sent.at(-1)).toMatchObject({ tabs: 1 });
    presence.join('tab2b', 'b', 'room', () => {});
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toMatchObject({ tabs: 2 });
    presence.leave('b');
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toMatchObject({ tabs: 1 });
    presence.leave('a3');
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 0 });
    expect(presence.inspect()).toEqual([]);
  });

  it('joins again on every new connection, and shows the members as last known while offline', async () => {
    const { presence, sent, state, listener, last } = setup(false);
    presence.join('tab1', 'a', 'room', listener('a'));
    presence.set('a', { name: 'Alice' });
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual([]);
    expect(last('a')).toEqual({ channel: 'room', joined: false, members: [], total: 0, error: null });
    state.online = true;
    presence.online();
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual([{ type: 'presence', channel: 'room', tabs: 1, state: { name: 'Alice' } }]);
    presence.handle({ type: 'presence', channel: 'room', members: [member('alice', 1, 1, { name: 'Alice' }), member('bob')], total: 2 });
    expect(last('a')).toMatchObject({ joined: true, total: 2, members: [{ id: 'alice', self: true }, { id: 'bob', self: false }] });
    presence.offline();
    state.online = false;
    expect(last('a')).toMatchObject({ joined: false, total: 2 });
    state.online = true;
    presence.online();
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toHaveLength(2); // the same frame again: a new connection knows nothing
  });

  it('applies change frames to the list this connection was sent; changes without one (an earlier join, another connection) wait for the whole list', async () => {
    const { presence, listener, last } = setup();
    presence.join('tab1', 'a', 'room', listener('a'));
    await vi.advanceTimersByTimeAsync(100);
    // Changes before the whole list of this join: ignored.
    presence.handle({ type: 'presence', channel: 'room', set: [member('zed')], gone: [], total: 9 });
    expect(last('a')).toMatchObject({ joined: false, members: [], total: 0 });
    presence.handle({ type: 'presence', channel: 'room', members: [member('alice'), { ...member('carol'), since: 3 }], total: 2 });
    presence.handle({ type: 'presence', channel: 'room', set: [{ ...member('bob'), since: 2 }, { ...member('alice', 3), state: 'typing' }], gone: [], total: 3 });
    expect(last('a')).toMatchObject({ joined: true, total: 3, members: [{ id: 'alice', tabs: 3, state: 'typing', self: true }, { id: 'bob' }, { id: 'carol' }] });
    presence.handle({ type: 'presence', channel: 'room', set: [], gone: ['bob'], total: 2 });
    expect(last('a')!.members.map((m) => m.id)).toEqual(['alice', 'carol']);
    // A new connection: its changes apply only once it sent its whole list; the last known stays meanwhile.
    presence.offline();
    presence.online();
    presence.handle({ type: 'presence', channel: 'room', set: [], gone: ['carol'], total: 1 });
    expect(last('a')!.members.map((m) => m.id)).toEqual(['alice', 'carol']);
    presence.handle({ type: 'presence', channel: 'room', members: [member('alice')], total: 1 });
    expect(last('a')).toMatchObject({ joined: true, total: 1, members: [{ id: 'alice' }] });
  });

  it('tells the tabs why the server refused (forbidden), without touching other channels', async () => {
    const { presence, listener, last } = setup();
    presence.join('tab1', 'a', 'secret', listener('a'));
    presence.join('tab1', 'b', 'room', listener('b'));
    expect(presence.handle({ type: 'error', presence: 'secret', code: 'forbidden', message: 'you may not join the presence of secret' })).toBe(true);
    expect(last('a')).toMatchObject({ joined: false, error: { code: 'forbidden' } });
    expect(last('b')?.error).toBeNull();
    // Errors about other things are not presence's.
    expect(presence.handle({ type: 'error', channel: 'room', code: 'forbidden', message: 'x' })).toBe(false);
    expect(presence.handle({ type: 'pong', t: 1 })).toBe(false);
  });

  it("a reload whose new tab joins before the old tab's lock is released does not raise the count (the floor is what was sent)", async () => {
    const { presence, sent } = setup();
    presence.join('old', 'a', 'room', () => {});
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.map((m) => m.tabs)).toEqual([1]);
    presence.join('new', 'b', 'room', () => {}); // the reloaded page joins a few ms before the old tab's lock goes
    await vi.advanceTimersByTimeAsync(10);
    presence.removeTab('old');
    await vi.advanceTimersByTimeAsync(TAB_GONE_DELAY_MS + 500);
    expect(sent.map((m) => m.tabs)).toEqual([1]); // others never see 2
  });

  it('close() stops everything: no frame after it, even from a tab that was still counted as departing', async () => {
    const { presence, sent } = setup();
    presence.join('t1', 'a', 'room', () => {});
    presence.join('t2', 'b', 'room', () => {});
    await vi.advanceTimersByTimeAsync(100);
    presence.removeTab('t1');
    await vi.advanceTimersByTimeAsync(100);
    presence.set('b', { typing: true });
    const before = sent.length;
    presence.close();
    await vi.advanceTimersByTimeAsync(TAB_GONE_DELAY_MS + 500);
    expect(sent.length).toBe(before);
  });

  it("a tab of another user than the connection's is not counted and is told why; it counts once the connection is its user's", async () => {
    const { presence, sent, state, listener, last } = setup();
    const users: Record<string, string | undefined> = { alice: 'alice', bob: 'bob' };
    state.socketUser = 'bob'; // Bob's tab is the newest: the connection is his
    state.self = 'bob';
    presence.join('tabA', 'a', 'room', listener('a'), () => users.alice);
    presence.join('tabB', 'b', 'room', listener('b'), () => users.bob);
    expect(presence.set('a', { typing: true })).toMatchObject({ ok: false, error: { code: 'unauthorized' } });
    presence.set('b', { typing: false });
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual([{ type: 'presence', channel: 'room', tabs: 1, state: { typing: false } }]);
    expect(last('a')).toMatchObject({ joined: false, members: [], error: { code: 'unauthorized' } });
    presence.handle({ type: 'presence', channel: 'room', members: [member('bob')], total: 1 });
    expect(last('b')).toMatchObject({ joined: true, members: [{ id: 'bob', self: true }] });
    expect(last('a')).toMatchObject({ joined: false, members: [], error: { code: 'unauthorized' } }); // never Bob's members as hers
    // Bob's tab leaves; the connection becomes Alice's (a new welcome): her tab counts, and is told.
    presence.leave('b');
    state.socketUser = 'alice';
    state.self = 'alice';
    presence.offline();
    presence.online();
    await vi.advanceTimersByTimeAsync(100);
    expect(sent.at(-1)).toEqual({ type: 'presence', channel: 'room', tabs: 1 });
    expect(last('a')).toMatchObject({ error: null });
    expect(presence.set('a', { typing: true })).toEqual({ ok: true, value: null });
  });

  it('after a refusal, set fails with the refusal instead of pretending', async () => {
    const { presence } = setup();
    presence.join('tab1', 'a', 'secret', () => {});
    presence.handle({ type: 'error', presence: 'secret', code: 'forbidden', message: 'you may not join the presence of secret' });
    expect(presence.set('a', { x: 1 })).toEqual({ ok: false, error: { code: 'forbidden', message: 'you may not join the presence of secret' } });
  });

  it('a listener that throws (a tab gone) does not stop the others', async () => {
    const { presence, listener, last } = setup();
    presence.join('tab1', 'a', 'room', () => {
      throw new Error('gone');
    });
    presence.join('tab2', 'b', 'room', listener('b'));
    presence.handle({ type: 'presence', channel: 'room', members: [member('bob')], total: 1 });
    expect(last('b')).toMatchObject({ joined: true, total: 1 });
  });
});
