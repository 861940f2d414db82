/**
 * Presence through a follower tab's relay (no SharedWorker: another tab's engine holds the
 * connection): on a new leader the join is asked again with the state the tab set last —
 * never an older one — and a leader of an older worker says it has no presence.
 */
import { describe, expect, it } from 'vitest';
import type { Outcome, PresenceListener, Registration, TabApi } from './api.js';
import type { LeaderApi } from './bus.js';
import { TabRelay } from './relay.js';

/** A leader's engine that applies calls as they arrive and answers them when pumped, in order. */
function fakeLeader(apiVersion = 3) {
  const applied: string[] = [];
  let state: unknown;
  const answers: (() => void)[] = [];
  const later = <T>(value: T) => new Promise<T>((resolve) => answers.push(() => resolve(value)));
  const ok: Outcome<null> = { ok: true, value: null };
  const tab: Partial<TabApi> = {
    status: () => ({ connection: 'online', pending: 0, lastSyncAt: null, error: null, transport: 'websocket', mode: 'leader' }),
    apiVersion: () => apiVersion,
    presenceJoin: (_id: string, channel: string, _listener: PresenceListener) => {
      applied.push(`join ${channel}`);
      return later(ok);
    },
    presenceSet: (_id: string, value: unknown) => {
      applied.push(`set ${String(value)}`);
      state = value;
      return later(ok);
    },
    presenceLeave: () => {},
    detach: () => {},
  };
  const api = { attach: async () => tab } as unknown as LeaderApi;
  const pump = async () => {
    for (let i = 0; i < 20; i++) {
      while (answers.length > 0) answers.shift()!();
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  };
  return { api, applied, pump, state: () => state };
}

const registration = { tabId: 't', url: 'ws://x', lockName: 'l' } satisfies Registration;

describe('presence through the relay', () => {
  it('a set made while the join is on its way to a new leader is not overwritten by the older state', async () => {
    const relay = new TabRelay(registration, () => {}, undefined, undefined, () => {});
    const one = fakeLeader();
    await relay.bind(one.api, 'follower');
    const joined = relay.presenceJoin('p', 'room', () => {});
    await one.pump();
    expect(await joined).toEqual({ ok: true, value: null });
    const first = relay.presenceSet('p', 'old');
    await one.pump();
    await first;

    const two = fakeLeader();
    await relay.bind(two.api, 'follower');
    const second = relay.presenceSet('p', 'new'); // the user types right as the leader changes
    await two.pump();
    expect(await second).toEqual({ ok: true, value: null });
    await two.pump();
    expect(two.state()).toBe('new');
    expect(two.applied[0]).toBe('join room');
    expect(two.applied.at(-1)).toBe('set new');
  });

  it('a refused state (over the size limit) is refused at once, with or without a leader, and the next leader gets the last good one', async () => {
    const relay = new TabRelay(registration, () => {}, undefined, undefined, () => {});
    // No leader bound yet: refused now, not taken and dropped later.
    const joined = relay.presenceJoin('p', 'room', () => {});
    expect(await relay.presenceSet('p', '€'.repeat(400))).toEqual({ ok: false, error: { code: 'message_too_big', message: 'presence state is 1202 bytes of JSON (UTF-8); at most 1024' } });
    const one = fakeLeader();
    await relay.bind(one.api, 'follower');
    await one.pump();
    await joined;
    const good = relay.presenceSet('p', 'Alice');
    await one.pump();
    expect(await good).toEqual({ ok: true, value: null });
    expect(await relay.presenceSet('p', '€'.repeat(400))).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
    expect(one.applied).toEqual(['join room', 'set Alice']);

    const two = fakeLeader();
    await relay.bind(two.api, 'follower');
    await two.pump();
    expect(two.applied).toEqual(['join room', 'set Alice']);
  });

  it('a leader tab of an older worker: the join fails with worker_unavailable, not a silent nothing', async () => {
    const relay = new TabRelay(registration, () => {}, undefined, undefined, () => {});
    const old = fakeLeader(2);
    await relay.bind(old.api, 'follower');
    const joined = relay.presenceJoin('p', 'room', () => {});
    await old.pump();
    expect(await joined).toMatchObject({ ok: false, error: { code: 'worker_unavailable' } });
    expect(old.applied).toEqual([]);
  });
});
