import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { applyMembersFrame, compareMembers, membersChange } from './presence-list.js';
import type { PresenceMember } from './messages.js';

const member = fc.record({
  id: fc.constantFrom('alice', 'bob', 'carol', 'dana', 'erin', 'client:1', 'client:2', 'é👩‍💻'),
  user: fc.option(fc.constantFrom('alice', 'bob'), { nil: null }),
  tabs: fc.integer({ min: 0, max: 5 }),
  devices: fc.integer({ min: 1, max: 3 }),
  state: fc.oneof(fc.constant(null), fc.jsonValue({ maxDepth: 2 })),
  since: fc.integer({ min: 0, max: 5 }),
});
/** A member list as the server sends it: one entry per id, in protocol order. */
const list = fc.uniqueArray(member, { selector: (m) => m.id, maxLength: 8 }).map((members) => members.sort(compareMembers));
const encode = (members: readonly PresenceMember[]) => new Map(members.map((m) => [m.id, JSON.stringify(m)]));

describe('presence member lists', () => {
  it('a chain of lists sent as the first whole and then changes arrives as the same chain (fast-check; TETHER_SEED replays)', () => {
    const seed = Number(process.env.TETHER_SEED ?? Date.now() % 2 ** 31);
    console.log(`presence lists: seed ${seed}`);
    fc.assert(
      fc.property(fc.array(list, { minLength: 1, maxLength: 10 }), (lists) => {
        let received = applyMembersFrame(undefined, { members: lists[0]! });
        let sent = encode(lists[0]!);
        for (const next of lists.slice(1)) {
          const { set, gone, encoded } = membersChange(sent, next);
          sent = encoded;
          // Only what changed goes: every member in `set` is new or different, every id in `gone` was listed.
          for (const m of set) expect(JSON.stringify(received!.find((r) => r.id === m.id))).not.toBe(JSON.stringify(m));
          for (const id of gone) expect(received!.some((r) => r.id === id)).toBe(true);
          received = applyMembersFrame(received, { set, gone });
          expect(received).toEqual(next);
        }
      }),
      { seed, numRuns: 500 },
    );
  });

  it('a whole list replaces; changes without a list are not applied (they belong to an earlier join)', () => {
    const alice = { id: 'alice', user: 'alice', tabs: 1, devices: 1, state: null, since: 2 };
    const bob = { id: 'bob', user: 'bob', tabs: 1, devices: 1, state: null, since: 1 };
    expect(applyMembersFrame([alice], { members: [bob] })).toEqual([bob]);
    expect(applyMembersFrame(undefined, { set: [alice], gone: [] })).toBeUndefined();
    // Kept in protocol order: bob joined first.
    expect(applyMembersFrame([alice], { set: [bob], gone: [] })).toEqual([bob, alice]);
    expect(applyMembersFrame([bob, alice], { set: [], gone: ['bob'] })).toEqual([alice]);
  });
});
