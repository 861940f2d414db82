/**
 * Random sequences of joins, updates, leaves, closes, reconnects (a new connection of a device
 * seen before) and waits, on the in-process hub under fake timers, against a plain model:
 *  - after every step (once a frame could go out), every member with a connection there is
 *    listed (no flapping), and nobody is listed whose every contribution has lingered out;
 *  - once the lingers settle, the members are exactly the model's: ids, tabs, devices, state, since.
 * Replay a run with TETHER_SEED=<seed printed below>.
 */
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import type { PresenceMember, PresenceMembers } from '../../protocol/messages.js';
import { applyMembersFrame } from '../../protocol/presence-list.js';
import { createLocalPresence } from './local-presence.js';
import type { PresenceConnection } from './presence.js';

const LINGER = 1000;
const INTERVAL = 50;
const CHANNEL = 'room';
/** (member, device) pairs: two members with two browsers each, one with one. */
const IDENTITIES = [
  ['alice', 'a1'],
  ['alice', 'a2'],
  ['bob', 'b1'],
  ['bob', 'b2'],
  ['carol', 'c1'],
] as const;

type Step =
  | { op: 'connect'; identity: number }
  | { op: 'set'; k: number; tabs: number; state: string | undefined }
  | { op: 'leave'; k: number }
  | { op: 'close'; k: number }
  | { op: 'wait'; ms: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('connect' as const), identity: fc.integer({ min: 0, max: IDENTITIES.length - 1 }) }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('set' as const), k: fc.nat(), tabs: fc.integer({ min: 1, max: 3 }), state: fc.option(fc.constantFrom('x', 'y', 'z'), { nil: undefined }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('leave' as const), k: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('close' as const), k: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: LINGER * 2 }) }) },
);

/** The model's contribution of one connection. */
interface Entry {
  member: string;
  device: string;
  tabs: number;
  state: string | null;
  stateSeq: number;
  setSeq: number;
  since: number;
  until: number | undefined;
}

beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] }));
afterEach(() => void vi.useRealTimers());

it('presence matches a model of lingering contributions over random sequences', async () => {
  const seed = Number(process.env.TETHER_SEED ?? Date.now() % 2 ** 31);
  console.log(`presence model: seed ${seed} (TETHER_SEED=${seed} npx vitest run server/presence/model.test.ts to replay)`);
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }), async (steps, pauses) => {
      vi.setSystemTime(1_000_000);
      const hub = createLocalPresence({ lingerMs: LINGER, intervalMs: INTERVAL });
      // The list as this watcher has it: the whole list first, then each change frame applied to it.
      let last: { type: 'presence'; channel: string; members: PresenceMember[]; total: number } | undefined;
      const unwatch = hub.watch(CHANNEL, (text) => {
        const frame = JSON.parse(text) as PresenceMembers;
        const members = applyMembersFrame(last?.members, frame);
        if (members === undefined) throw new Error(`a change frame before the whole list: ${text}`);
        last = { type: 'presence', channel: frame.channel, members, total: frame.total };
      });
      const open: PresenceConnection[] = [];
      const entries = new Map<string, Entry>();
      let counter = 0;
      let ids = 0;
      const counts = (e: Entry, now: number) => e.until === undefined || e.until > now;
      const alive = () => {
        const now = Date.now();
        for (const [id, e] of entries) if (!counts(e, now)) entries.delete(id);
        return [...entries.values()];
      };
      const pick = (k: number) => (open.length === 0 ? undefined : open[k % open.length]);

      /** The members the model expects now, lingering contributions included. */
      const expectedMembers = (): PresenceMember[] => {
        const current = alive();
        const expected: PresenceMember[] = [];
        for (const member of new Set(current.map((e) => e.member))) {
          const mine = current.filter((e) => e.member === member);
          // One per device: a live one before a lingering one, then the latest set.
          const devices = new Map<string, Entry>();
          const rank = (e: Entry) => (e.until === undefined ? 1e9 : 0) + e.setSeq;
          for (const e of mine) if (rank(devices.get(e.device) ?? { ...e, until: 0, setSeq: -1 }) < rank(e)) devices.set(e.device, e);
          const reps = [...devices.values()];
          const stateFrom = reps.filter((e) => e.stateSeq > 0).sort((a, b) => b.stateSeq - a.stateSeq)[0];
          expected.push({ id: member, user: member, tabs: reps.reduce((n, e) => n + e.tabs, 0), devices: devices.size, state: stateFrom?.state ?? null, since: Math.min(...mine.map((e) => e.since)) });
        }
        return expected.sort((a, b) => a.since - b.since || (a.id < b.id ? -1 : 1));
      };

      for (const [i, s] of steps.entries()) {
        const now = Date.now();
        alive();
        switch (s.op) {
          case 'connect': {
            const [member, device] = IDENTITIES[s.identity]!;
            open.push({ id: `c${++ids}`, member, user: member, device });
            break;
          }
          case 'set': {
            const c = pick(s.k);
            if (!c) break;
            hub.set(c, CHANNEL, s.tabs, s.state);
            const state = s.state ?? null;
            const mine = entries.get(c.id);
            if (mine) {
              Object.assign(mine, { tabs: s.tabs, stateSeq: mine.state === state ? mine.stateSeq : ++counter, state, setSeq: ++counter, until: undefined });
            } else {
              const present = alive().filter((e) => e.member === c.member);
              const since = Math.min(now, ...present.map((e) => e.since));
              for (const [id, e] of entries) if (e.until !== undefined && e.member === c.member && e.device === c.device) entries.delete(id);
              entries.set(c.id, { member: c.member, device: c.device, tabs: s.tabs, state, stateSeq: state === null ? 0 : ++counter, setSeq: ++counter, since, until: undefined });
            }
            break;
          }
          case 'leave':
          case 'close': {
            const c = pick(s.k);
            if (!c) break;
            if (s.op === 'leave') hub.set(c, CHANNEL, 0, undefined);
            else {
              hub.disconnect(c.id);
              open.splice(open.indexOf(c), 1);
            }
            const mine = entries.get(c.id);
            if (mine && mine.until === undefined) Object.assign(mine, { until: now + LINGER, setSeq: ++counter });
            break;
          }
          case 'wait':
            await vi.advanceTimersByTimeAsync(s.ms);
            break;
        }
        // Some steps come in the same millisecond (ties); after the others, once a frame could have
        // gone out: everyone there is listed (no flapping), nobody whose contributions all lingered
        // out, with the counts and state the model says.
        if (!pauses[i]) continue;
        await vi.advanceTimersByTimeAsync(INTERVAL + 1);
        const due = [...entries.values()].some((e) => e.until !== undefined && Math.abs(e.until - Date.now()) <= INTERVAL + 2);
        const current = alive();
        const listed = new Set(last?.members.map((m) => m.id));
        for (const e of current) if (e.until === undefined) expect(listed.has(e.member), `${e.member} is there`).toBe(true);
        // A contribution lingering out about now may be in the frame or not: compare when none is.
        if (!due) expect(last?.members).toEqual(expectedMembers());
      }

      // Let every linger run out: the members are exactly the live contributions'.
      await vi.advanceTimersByTimeAsync(LINGER + INTERVAL + 2);
      const expected = expectedMembers();
      expect(last).toEqual({ type: 'presence', channel: CHANNEL, members: expected, total: expected.length });
      expect(await hub.members(CHANNEL)).toEqual({ members: expected, total: expected.length });
      unwatch();
      await hub.close();
    }),
    { seed, numRuns: 150 },
  );
}, 60_000);
