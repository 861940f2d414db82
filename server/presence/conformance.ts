/**
 * The presence contract, as a suite every hub runs unchanged (in process, Redis): joins and
 * leaves, tab and device counts, latest state, lingering without flapping, coalesced frames, many
 * channels — and for hubs that span processes, two hubs seeing each other's members, a killed
 * process's members expiring, a shut-down process's members lingering.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { PresenceMember, PresenceMembers } from '../../protocol/messages.js';
import { applyMembersFrame } from '../../protocol/presence-list.js';
import type { PresenceConnection, PresenceHub, PresenceOptions } from './presence.js';

/** Short times for tests: a frame per channel per 20 ms, a linger of 300 ms. */
export const TEST_OPTIONS: Required<PresenceOptions> = { lingerMs: 300, intervalMs: 20 };

export interface PresenceHarness {
  /** A hub (one process). */
  open(options: Required<PresenceOptions>): Promise<PresenceHub>;
  /** For hubs that span processes: `count` hubs sharing presence (`kill(i)` cuts one off as if killed). */
  cluster?(count: number, options: Required<PresenceOptions>): Promise<{ hubs: PresenceHub[]; kill(index: number): Promise<void> }>;
  /** How long a killed process's members may take to vanish. */
  expiryMs?: number;
}

/** A members frame as the watcher's list after it (a change frame applied to the list before it). */
export type SeenFrame = PresenceMembers & { members: PresenceMember[] };

/** Records the frames a watcher receives: as sent (`raw`), and as the list after each (`frames`). */
export class FrameLog {
  readonly raw: PresenceMembers[] = [];
  readonly frames: SeenFrame[] = [];
  /** Frames that did not apply to the list (checked by `until`). */
  readonly problems: string[] = [];
  readonly unwatch: () => void;

  constructor(hub: PresenceHub, readonly channel: string) {
    this.unwatch = hub.watch(channel, (text, snapshot) => {
      const frame = JSON.parse(text) as PresenceMembers;
      this.raw.push(frame);
      // A watcher's first frame is the whole list, and each later one applies to what it has.
      const members = applyMembersFrame(this.frames.at(-1)?.members, frame);
      if (members === undefined) this.problems.push(`a change frame before any list on ${channel}: ${text}`);
      else if (JSON.stringify(members) !== JSON.stringify(snapshot.members)) this.problems.push(`the frame applied gives ${JSON.stringify(members)}, not the list ${JSON.stringify(snapshot.members)}`);
      this.frames.push({ type: 'presence', channel: frame.channel, members: members ?? [], total: frame.total });
    });
  }

  get last(): SeenFrame | undefined {
    return this.frames.at(-1);
  }

  /** Member ids of the last frame. */
  ids(): string[] {
    return this.last?.members.map((m) => m.id) ?? [];
  }

  member(id: string) {
    return this.last?.members.find((m) => m.id === id);
  }

  /** Waits until the last frame satisfies `check` (an expectation that throws until it holds). */
  async until(check: (frame: SeenFrame) => void, timeoutMs = 5000): Promise<SeenFrame> {
    const seen = await eventually(() => {
      const frame = this.last;
      if (!frame) throw new Error(`no presence frame on ${this.channel} yet`);
      check(frame);
      return frame;
    }, timeoutMs);
    expect(this.problems).toEqual([]);
    return seen;
  }
}

export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(10);
    }
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let connections = 0;
/** A connection of `member` on `device` (a new connection id each time: a reconnect is a new connection). */
export function conn(member: string, device = `${member}-device`, user: string | null = member): PresenceConnection {
  return { id: `conn-${++connections}`, member, user, device };
}

export function describePresence(name: string, harness: PresenceHarness): void {
  let hubs: PresenceHub[] = [];
  afterEach(async () => {
    await Promise.all(hubs.map((hub) => hub.close()));
    hubs = [];
  });
  async function open(options: Partial<PresenceOptions> = {}): Promise<PresenceHub> {
    const hub = await harness.open({ ...TEST_OPTIONS, ...options });
    hubs.push(hub);
    return hub;
  }
  let channels = 0;
  const channel = () => `presence-${++channels}-${Math.random().toString(36).slice(2, 8)}`;
  const { lingerMs } = TEST_OPTIONS;

  describe(name, () => {
    it('a join is seen by every watcher, itself included, with its counts; an explicit leave lingers, then the member is gone', async () => {
      const hub = await open();
      const ch = channel();
      const alice = conn('alice');
      hub.set(alice, ch, 1, undefined);
      const own = new FrameLog(hub, ch);
      const other = new FrameLog(hub, ch);
      for (const log of [own, other]) {
        await log.until((f) => expect(f).toMatchObject({ type: 'presence', channel: ch, total: 1, members: [{ id: 'alice', user: 'alice', tabs: 1, devices: 1, state: null }] }));
      }
      const since = own.member('alice')!.since;
      expect(since).toBeGreaterThan(Date.now() - 5000);
      const left = Date.now();
      hub.set(alice, ch, 0, undefined);
      await sleep(lingerMs / 2);
      expect(own.ids()).toEqual(['alice']); // lingering, with its last counts
      expect(own.member('alice')).toMatchObject({ tabs: 1, devices: 1, since });
      await own.until((f) => expect(f.members).toEqual([]), lingerMs * 10);
      expect(Date.now() - left).toBeGreaterThanOrEqual(lingerMs - 5);
      expect(own.last!.total).toBe(0);
      expect(await hub.members(ch)).toEqual({ members: [], total: 0 });
    });

    it('a watcher gets the whole list first, then only what changed: one member\'s state, a member gone; a late watcher gets the whole list', async () => {
      const hub = await open();
      const ch = channel();
      const people = ['alice', 'bob', 'carol', 'dana', 'erin'].map((name) => conn(name));
      for (const person of people) hub.set(person, ch, 1, undefined);
      const log = new FrameLog(hub, ch);
      await log.until((f) => expect(f.total).toBe(5));
      expect(log.raw[0]).toEqual({ type: 'presence', channel: ch, members: log.frames[0]!.members, total: 5 });
      const before = log.raw.length;
      hub.set(people[2]!, ch, 1, { typing: true });
      await log.until((f) => expect(f.members.find((m) => m.id === 'carol')?.state).toEqual({ typing: true }));
      expect(log.raw.slice(before)).toEqual([{ type: 'presence', channel: ch, set: [log.member('carol')], gone: [], total: 5 }]);
      hub.set(people[1]!, ch, 0, undefined);
      await log.until((f) => expect(f.total).toBe(4), lingerMs * 10);
      expect(log.raw.at(-1)).toEqual({ type: 'presence', channel: ch, set: [], gone: ['bob'], total: 4 });
      expect(log.ids()).toEqual(['alice', 'carol', 'dana', 'erin']);
      // Most of the list changed: the whole list is smaller than the changes, so it goes whole.
      for (const person of [people[0]!, people[2]!, people[3]!, people[4]!]) hub.set(person, ch, 2, undefined);
      await log.until((f) => expect(f.members.every((m) => m.tabs === 2)).toBe(true));
      expect(log.raw.at(-1)).toMatchObject({ members: log.last!.members, total: 4 });
      expect(log.raw.at(-1)).not.toHaveProperty('set');
      const late = new FrameLog(hub, ch);
      await late.until((f) => expect(f.total).toBe(4));
      expect(late.raw).toEqual([{ type: 'presence', channel: ch, members: log.last!.members, total: 4 }]);
    });

    it('one member per person: tabs add up over devices, devices count distinct device keys; oldest first', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      hub.set(conn('alice', 'laptop'), ch, 2, undefined);
      await log.until((f) => expect(f.total).toBe(1));
      await sleep(5); // a later `since` for bob
      hub.set(conn('bob', 'phone'), ch, 1, undefined);
      hub.set(conn('alice', 'phone'), ch, 3, undefined);
      const frame = await log.until((f) => expect(f.members).toMatchObject([
        { id: 'alice', tabs: 5, devices: 2 },
        { id: 'bob', tabs: 1, devices: 1 },
      ]));
      expect(frame.members[0]!.since).toBeLessThan(frame.members[1]!.since);
      expect(frame.total).toBe(2);
      expect(await hub.members(ch)).toEqual({ members: frame.members, total: 2 });
    });

    it('two connections of one device (a reconnect while the old socket is not yet seen closed) count as one device with the latest tab count', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      const old = conn('alice', 'browser-1');
      hub.set(old, ch, 2, undefined);
      await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', tabs: 2, devices: 1 }]));
      hub.set(conn('alice', 'browser-1'), ch, 3, undefined);
      await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', tabs: 3, devices: 1 }]));
      // The old socket is seen closed at last: it lingers, but the live one of the device is what counts.
      hub.disconnect(old.id);
      await sleep(lingerMs / 2);
      expect(log.last!.members).toMatchObject([{ id: 'alice', tabs: 3, devices: 1 }]);
    });

    it('anonymous members (development mode) are one per browser, keyed client:<clientId>', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      hub.set(conn('client:aaaaaaaa', 'aaaaaaaa', null), ch, 1, undefined);
      hub.set(conn('client:bbbbbbbb', 'bbbbbbbb', null), ch, 2, undefined);
      await log.until((f) => expect(f.members).toEqual(expect.arrayContaining([
        expect.objectContaining({ id: 'client:aaaaaaaa', user: null, tabs: 1, devices: 1 }),
        expect.objectContaining({ id: 'client:bbbbbbbb', user: null, tabs: 2, devices: 1 }),
      ])));
    });

    it('state: the most recently set among a member\'s devices wins; a frame without state means no state; a device that never set one hides nothing', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      const laptop = conn('alice', 'laptop');
      const phone = conn('alice', 'phone');
      hub.set(laptop, ch, 1, { typing: 'laptop' });
      await log.until((f) => expect(f.members[0]?.state).toEqual({ typing: 'laptop' }));
      hub.set(phone, ch, 1, { typing: 'phone' });
      await log.until((f) => expect(f.members[0]?.state).toEqual({ typing: 'phone' }));
      // The laptop opens a tab and says the same state again: not a new state, the phone's stays.
      hub.set(laptop, ch, 2, { typing: 'laptop' });
      await log.until((f) => expect(f.members[0]).toMatchObject({ tabs: 3, state: { typing: 'phone' } }));
      hub.set(laptop, ch, 2, { typing: 'laptop again' });
      await log.until((f) => expect(f.members[0]?.state).toEqual({ typing: 'laptop again' }));
      // A third device with no state does not hide the laptop's.
      hub.set(conn('alice', 'tablet'), ch, 1, undefined);
      await log.until((f) => expect(f.members[0]).toMatchObject({ devices: 3, state: { typing: 'laptop again' } }));
      // The laptop's frame without state: its state is gone (null is the latest set).
      hub.set(laptop, ch, 2, undefined);
      await log.until((f) => expect(f.members[0]?.state).toBeNull());
      // Falsy states are states.
      hub.set(phone, ch, 1, 0);
      await log.until((f) => expect(f.members[0]?.state).toBe(0));
      // All within one millisecond: the order of the sets decides, and resending a state is no new set.
      hub.set(laptop, ch, 1, 'first');
      hub.set(phone, ch, 1, 'second');
      hub.set(laptop, ch, 2, 'first');
      await log.until((f) => expect(f.members[0]).toMatchObject({ tabs: 4, state: 'second' }));
    });

    it('no flapping: a connection that closes and comes back on the same device within the linger is never seen to leave; since is kept', async () => {
      const hub = await open();
      const ch = channel();
      const bob = conn('bob');
      hub.set(bob, ch, 1, undefined);
      const watcher = new FrameLog(hub, ch);
      await sleep(5); // joins later than bob
      let alice = conn('alice', 'browser-1');
      hub.set(alice, ch, 2, { at: 1 });
      const joined = await watcher.until((f) => expect(f.members.map((m) => m.id)).toEqual(['bob', 'alice']));
      const since = joined.members[1]!.since;
      for (let round = 0; round < 3; round++) {
        hub.disconnect(alice.id);
        await sleep(lingerMs / 3);
        alice = conn('alice', 'browser-1'); // the same browser, a new connection
        hub.set(alice, ch, 1, { at: 2 });
        await watcher.until((f) => expect(f.members[1]).toMatchObject({ id: 'alice', tabs: 1, devices: 1, state: { at: 2 } }));
        hub.set(alice, ch, 2, { at: 2 });
      }
      await sleep(lingerMs * 2); // the lingering entries' time passes: nothing leaves
      await watcher.until((f) => expect(f.members[1]).toMatchObject({ id: 'alice', tabs: 2, devices: 1, since }));
      const first = watcher.frames.findIndex((f) => f.members.length === 2);
      for (const frame of watcher.frames.slice(first)) expect(frame.members.map((m) => m.id)).toEqual(['bob', 'alice']);
    });

    it('another device of the member within the linger is another device: the lingering one still counts until it runs out', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      const laptop = conn('alice', 'laptop');
      hub.set(laptop, ch, 1, undefined);
      await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', devices: 1 }]));
      const since = log.member('alice')!.since;
      hub.disconnect(laptop.id);
      hub.set(conn('alice', 'phone'), ch, 1, undefined);
      await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', tabs: 2, devices: 2, since }]));
      await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', tabs: 1, devices: 1, since }]), lingerMs * 10);
    });

    it('a closed connection lingers, and its member leaves after the linger, not before', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      const alice = conn('alice');
      hub.set(alice, ch, 1, undefined);
      hub.set(conn('bob'), ch, 1, undefined);
      await log.until((f) => expect(f.total).toBe(2));
      const closedAt = Date.now();
      hub.disconnect(alice.id);
      hub.disconnect(alice.id); // twice: harmless
      await log.until((f) => expect(f.members.map((m) => m.id)).toEqual(['bob']), lingerMs * 10);
      expect(Date.now() - closedAt).toBeGreaterThanOrEqual(lingerMs - 5);
    });

    it('a linger of 0 drops a leaving connection at once', async () => {
      const hub = await open({ lingerMs: 0 });
      const ch = channel();
      const log = new FrameLog(hub, ch);
      const alice = conn('alice');
      hub.set(alice, ch, 1, undefined);
      await log.until((f) => expect(f.total).toBe(1));
      hub.set(alice, ch, 0, undefined);
      await log.until((f) => expect(f.total).toBe(0), 200);
    });

    it('a leave from a channel the connection is not on changes nothing', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      await log.until((f) => expect(f.total).toBe(0));
      hub.set(conn('ghost'), ch, 0, undefined);
      await sleep(50);
      expect(log.frames).toHaveLength(1);
    });

    it('frames are coalesced: a burst of changes gives few frames, the last one right; a new watcher gets one even when nothing changes', async () => {
      const hub = await open();
      const ch = channel();
      const log = new FrameLog(hub, ch);
      await log.until((f) => expect(f.total).toBe(0));
      const before = log.frames.length;
      const alice = conn('alice');
      for (let i = 1; i <= 200; i++) hub.set(alice, ch, 1 + (i % 7), { i });
      await log.until((f) => expect(f.members[0]).toMatchObject({ state: { i: 200 }, tabs: 1 + (200 % 7) }));
      await sleep(TEST_OPTIONS.intervalMs * 3);
      expect(log.frames.length - before).toBeLessThanOrEqual(3);
      // Changes spread over time: at most about one frame per interval.
      const spreadStart = log.frames.length;
      const startedAt = Date.now();
      for (let i = 1; i <= 40; i++) {
        hub.set(alice, ch, 1, { spread: i });
        await sleep(4);
      }
      await log.until((f) => expect(f.members[0]?.state).toEqual({ spread: 40 }));
      const intervals = (Date.now() - startedAt) / TEST_OPTIONS.intervalMs;
      expect(log.frames.length - spreadStart).toBeLessThanOrEqual(Math.ceil(intervals) + 2);
      hub.set(alice, ch, 1 + (200 % 7), { i: 200 });
      await log.until((f) => expect(f.members[0]?.state).toEqual({ i: 200 }));
      const late = new FrameLog(hub, ch);
      await late.until((f) => expect(f.members[0]?.state).toEqual({ i: 200 }));
      await sleep(TEST_OPTIONS.intervalMs * 3);
      expect(late.frames).toHaveLength(1);
      const count = log.frames.length;
      log.unwatch();
      hub.set(alice, ch, 4, { i: 201 });
      await late.until((f) => expect(f.members[0]?.state).toEqual({ i: 201 }));
      expect(log.frames.length).toBe(count); // unwatched: nothing more
    });

    it('many channels keep apart', async () => {
      const hub = await open();
      const names = Array.from({ length: 60 }, () => channel());
      const logs = names.map((name) => new FrameLog(hub, name));
      names.forEach((name, i) => hub.set(conn(`user-${i}`), name, 1 + (i % 3), { i }));
      const shared = conn('everywhere');
      await sleep(5); // joins later than each channel's own member
      for (const name of names) hub.set(shared, name, 1, undefined);
      for (const [i, log] of logs.entries()) {
        await log.until((f) => expect(f.members).toMatchObject([{ id: `user-${i}`, tabs: 1 + (i % 3), state: { i } }, { id: 'everywhere' }]));
      }
      hub.disconnect(shared.id);
      for (const log of logs) await log.until((f) => expect(f.total).toBe(1), lingerMs * 10);
      expect((await hub.members(names[7]!)).members).toMatchObject([{ id: 'user-7' }]);
    });

    if (harness.cluster !== undefined) {
      const cluster = async (count: number, options: Partial<PresenceOptions> = {}) => {
        const made = await harness.cluster!(count, { ...TEST_OPTIONS, ...options });
        hubs.push(...made.hubs);
        return made;
      };

      it('two processes see each other\'s members, one member per person across them', async () => {
        const { hubs: [a, b, elsewhere] } = await cluster(3);
        const ch = channel();
        const onA = new FrameLog(a!, ch);
        const onB = new FrameLog(b!, ch);
        a!.set(conn('alice', 'laptop'), ch, 1, { where: 'a' });
        await sleep(5);
        b!.set(conn('bob', 'phone'), ch, 2, undefined);
        b!.set(conn('alice', 'phone'), ch, 1, undefined);
        for (const log of [onA, onB]) {
          await log.until((f) => expect(f.members).toMatchObject([
            { id: 'alice', tabs: 2, devices: 2, state: { where: 'a' } },
            { id: 'bob', tabs: 2, devices: 1 },
          ]));
        }
        // State across processes: the latest set wins.
        await sleep(5);
        b!.set(conn('alice', 'tablet'), ch, 1, { where: 'b' });
        for (const log of [onA, onB]) await log.until((f) => expect(f.members[0]).toMatchObject({ devices: 3, state: { where: 'b' } }));
        // The HTTP API of either process answers the same, watched or not.
        expect(await elsewhere!.members(ch)).toEqual({ members: onA.last!.members, total: 2 });
        expect(await a!.members(ch)).toEqual({ members: onA.last!.members, total: 2 });
      });

      it('a device moving to another process within the linger is never seen to leave', async () => {
        const { hubs: [a, b] } = await cluster(2);
        const ch = channel();
        const onA = new FrameLog(a!, ch);
        const onB = new FrameLog(b!, ch);
        const first = conn('alice', 'browser-1');
        a!.set(first, ch, 2, undefined);
        for (const log of [onA, onB]) await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', tabs: 2, devices: 1 }]));
        a!.disconnect(first.id);
        await sleep(lingerMs / 3);
        b!.set(conn('alice', 'browser-1'), ch, 1, undefined);
        for (const log of [onA, onB]) await log.until((f) => expect(f.members).toMatchObject([{ id: 'alice', tabs: 1, devices: 1 }]));
        await sleep(lingerMs * 2);
        for (const log of [onA, onB]) {
          expect(log.last!.members).toMatchObject([{ id: 'alice', tabs: 1, devices: 1 }]);
          for (const frame of log.frames.slice(1)) expect(frame.members.map((m) => m.id)).toEqual(['alice']);
        }
      });

      it('a killed process\'s members vanish once it stops refreshing; a closed process\'s linger first', async () => {
        const { hubs: [a, b, c], kill } = await cluster(3);
        const ch = channel();
        const onA = new FrameLog(a!, ch);
        a!.set(conn('alice'), ch, 1, undefined);
        b!.set(conn('bob'), ch, 1, undefined);
        c!.set(conn('carol'), ch, 1, undefined);
        await onA.until((f) => expect(f.members.map((m) => m.id).sort()).toEqual(['alice', 'bob', 'carol']));
        await kill(1);
        const killedAt = Date.now();
        await onA.until((f) => expect(f.members.map((m) => m.id).sort()).toEqual(['alice', 'carol']), (harness.expiryMs ?? 1000) * 4);
        expect(Date.now() - killedAt).toBeLessThanOrEqual((harness.expiryMs ?? 1000) * 3);
        // A shutdown: its connections linger as after any close.
        await c!.close();
        const closedAt = Date.now();
        await sleep(lingerMs / 2);
        expect(onA.ids().sort()).toEqual(['alice', 'carol']);
        await onA.until((f) => expect(f.members.map((m) => m.id)).toEqual(['alice']), lingerMs * 10);
        expect(Date.now() - closedAt).toBeGreaterThanOrEqual(lingerMs - 5);
      });
    }
  });
}
