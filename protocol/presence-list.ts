/**
 * A channel's member list on the wire: the server sends the whole list once per join, then only
 * what changed (see PresenceMembers). Both sides use these: the server to make a change frame,
 * the worker (and tests) to apply it. The order is part of the protocol — oldest first, then by
 * id — so the receiver can keep the list in the server's order without being sent positions.
 */
import type { PresenceMember, PresenceMembers } from './messages.js';

/** Oldest first (`since`), then by id: the order of every member list. */
export function compareMembers(a: PresenceMember, b: PresenceMember): number {
  return a.since - b.since || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** What changed from `previous` to `next`: members new or different (whole), and ids gone. `encoded` caches each member's JSON. */
export function membersChange(previous: ReadonlyMap<string, string>, next: readonly PresenceMember[], encoded: Map<string, string> = new Map()): { set: PresenceMember[]; gone: string[]; encoded: Map<string, string> } {
  const set: PresenceMember[] = [];
  for (const member of next) {
    const json = JSON.stringify(member);
    encoded.set(member.id, json);
    if (previous.get(member.id) !== json) set.push(member);
  }
  const gone: string[] = [];
  for (const id of previous.keys()) if (!encoded.has(id)) gone.push(id);
  return { set, gone, encoded };
}

/**
 * The list after `frame`, given the list before it. A whole list replaces; changes apply to
 * `base` and keep the order. Undefined for changes without a base (they belong to an earlier
 * join: the whole list of the current one follows).
 */
export function applyMembersFrame(base: readonly PresenceMember[] | undefined, frame: Pick<PresenceMembers, 'members' | 'set' | 'gone'>): PresenceMember[] | undefined {
  if (frame.members !== undefined) return frame.members;
  if (base === undefined) return undefined;
  const byId = new Map(base.map((member) => [member.id, member]));
  for (const id of frame.gone ?? []) byId.delete(id);
  for (const member of frame.set ?? []) byId.set(member.id, member);
  return [...byId.values()].sort(compareMembers);
}
