/**
 * Presence through the real engine and a real server (development mode: one member per browser,
 * `client:<clientId>`), with the network cut and the server restarted under it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { PresenceSnapshot } from './api.js';
import { Engine, Harness, eventually, type EngineTab } from './testing/harness.js';
import { TAB_GONE_DELAY_MS } from './presence.js';

const LINGER_MS = 600;

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

/** A tab's presence on a channel: every snapshot it was given, and each membership change. */
function joinFrom(engine: Engine, tab: EngineTab, channel: string, id = `${tab.tabId}-${channel}`) {
  const snapshots: PresenceSnapshot[] = [];
  const memberships: string[] = [];
  const outcome = engine.connection.presenceJoin(tab.tabId, id, channel, (snapshot) => {
    snapshots.push(snapshot);
    if (!snapshot.joined) return;
    const ids = snapshot.members.map((m) => m.id).sort().join(','); // as a set: a rejoin may change the order
    if (memberships.at(-1) !== ids) memberships.push(ids);
  });
  expect(outcome).toEqual({ ok: true, value: null });
  return { id, snapshots, memberships, last: () => snapshots.at(-1)! };
}

async function online(engine: Engine, tab: EngineTab): Promise<void> {
  await eventually(() => engine.status(tab).connection === 'online', 10_000, 'online');
}

describe('presence through the engine', () => {
  it('one member per browser, with its tabs; self is marked; a closed tab counts a moment longer; a closed worker leaves after the linger', async () => {
    harness = await Harness.start({ presenceLingerMs: LINGER_MS });
    const first = harness.engine();
    const second = harness.engine();
    const [a1, a2] = [first.attach(), first.attach()];
    const b1 = second.attach();
    await online(first, a1);
    await online(second, b1);
    const pa1 = joinFrom(first, a1, 'room');
    const pa2 = joinFrom(first, a2, 'room');
    const pb1 = joinFrom(second, b1, 'room');
    await eventually(() => pb1.last().members.length === 2 && pa1.last().members.length === 2, 5000, 'both members');
    // Members are listed oldest first; both joined at about the same moment, so look them up by `self`.
    const view = (p: typeof pb1) => {
      const members = p.last().members;
      const pick = (self: boolean) => members.filter((m) => m.self === self).map((m) => ({ tabs: m.tabs, devices: m.devices, client: m.id.startsWith('client:') }));
      return { self: pick(true), others: pick(false) };
    };
    expect(view(pb1)).toEqual({ self: [{ tabs: 1, devices: 1, client: true }], others: [{ tabs: 2, devices: 1, client: true }] });
    expect(view(pa2)).toEqual({ self: [{ tabs: 2, devices: 1, client: true }], others: [{ tabs: 1, devices: 1, client: true }] });
    expect(view(pa1)).toEqual(view(pa2));

    // A tab closes: its browser still shows 2 tabs for a moment, then 1.
    first.connection.remove(a2.tabId);
    const closed = Date.now();
    await eventually(() => pb1.last().members.find((m) => !m.self)?.tabs === 1, 5000, 'one tab left');
    expect(Date.now() - closed).toBeGreaterThanOrEqual(TAB_GONE_DELAY_MS - 100);

    // The whole first browser goes (its worker closes): gone after the linger, and not before.
    first.close();
    const gone = Date.now();
    await eventually(() => pb1.last().members.length === 1, 5000, 'first browser gone');
    expect(Date.now() - gone).toBeGreaterThanOrEqual(LINGER_MS - 100);
    // Two members, then one: the first browser left once, after its linger.
    expect(pb1.memberships.slice(-2).map((ids) => ids.split(',').length)).toEqual([2, 1]);
  });

  it('a cut shorter than the linger is not seen by others; a longer one is, and the member comes back on reconnect', async () => {
    harness = await Harness.start({ presenceLingerMs: 1500 });
    // The watcher connects directly, not through the proxy the test cuts.
    const watcher = new Engine(`ws://127.0.0.1:${harness.server.port}/ws`, Harness.newDatabase());
    const cut = harness.engine();
    try {
      const w = watcher.attach();
      const c = cut.attach();
      await online(watcher, w);
      await online(cut, c);
      const pw = joinFrom(watcher, w, 'room');
      const pc = joinFrom(cut, c, 'room');
      await eventually(() => pw.last().members.length === 2 && pc.last().members.length === 2, 5000, 'two members');
      const both = pw.memberships.at(-1)!;
      // From here on (the watcher may have seen itself alone before the other joined).
      const from = pw.memberships.length - 1;
      const seen = () => pw.memberships.slice(from);
      const [self, other] = [pw.last().members.find((m) => m.self)!.id, pw.last().members.find((m) => !m.self)!.id];

      harness.proxy.refuse();
      await eventually(() => cut.status(c).connection === 'offline', 5000, 'offline');
      expect(pc.last().joined).toBe(false);
      expect(pc.last().members).toHaveLength(2); // the last known members, while offline
      await harness.proxy.restore();
      await online(cut, c);
      await eventually(() => pc.last().joined, 5000, 'joined again');
      await new Promise((resolve) => setTimeout(resolve, 2000)); // past the linger
      expect(seen()).toEqual([both]);

      // Down for longer than the linger: the watcher sees the member leave, and come back with the connection.
      harness.proxy.refuse();
      await eventually(() => cut.status(c).connection === 'offline', 5000, 'offline again');
      await eventually(() => pw.last().members.length === 1, 5000, 'left after the linger');
      await harness.proxy.restore();
      await eventually(() => pw.last().members.length === 2, 10_000, 'back');
      expect(seen()).toEqual([both, self, both]);
      expect(other.startsWith('client:')).toBe(true);
    } finally {
      watcher.close();
    }
  });

  it('after a server restart the worker joins again by itself, with the state it had set', async () => {
    harness = await Harness.start({ presenceLingerMs: LINGER_MS });
    const engine = harness.engine();
    const tab = engine.attach();
    await online(engine, tab);
    const p = joinFrom(engine, tab, 'room');
    expect(engine.connection.presenceSet(p.id, { name: 'Ada', typing: false })).toEqual({ ok: true, value: null });
    await eventually(() => p.last().joined && (p.last().members[0]?.state as { name?: string } | null)?.name === 'Ada', 5000, 'state seen');
    await harness.restartServer();
    await online(engine, tab);
    await eventually(() => p.last().joined && p.last().members.length === 1 && (p.last().members[0]?.state as { name?: string } | null)?.name === 'Ada', 10_000, 'joined again');
    expect(p.last().members[0]!.self).toBe(true);
  });
});
