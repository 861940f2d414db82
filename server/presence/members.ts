/**
 * From contributions (one per connection and channel, from every process) to members: the pure
 * rules of presence, shared by both hubs.
 *
 *  - A contribution counts while live, or while lingering (until `until`).
 *  - Per device (member + device key), one contribution counts: the latest set live one, else the
 *    latest set lingering one. So a browser that reconnects (same clientId) replaces its lingering
 *    self, even on another process, and a half-open old socket beside the new one is not counted twice.
 *  - A member's tabs are the sum over its devices; `devices` the number of devices; `state` the
 *    most recently *set* state among its devices (a contribution that never set one does not
 *    hide another's); `since` the earliest `since` of its contributions (a new contribution
 *    inherits its member's, so it is kept while the member stays).
 */
import { PRESENCE_MAX_MEMBERS, type PresenceMember } from '../../protocol/messages.js';
import { compareMembers } from '../../protocol/presence-list.js';
import type { PresenceSnapshot } from './presence.js';

/** One connection's presence on one channel, as the process holding the connection records it (and writes to Redis). */
export interface Contribution {
  member: string;
  user: string | null;
  device: string;
  /** Tabs of the connection there (its last count before leaving, while lingering). */
  tabs: number;
  /** The state the connection set (null: none). */
  state: unknown;
  /** When the state was last set to something else (ms, never decreasing per process); 0: never set. */
  stateAt: number;
  /** `seq` when the state was last set to something else: orders state changes within one millisecond. */
  stateSeq: number;
  /** When the contribution was last set (ms, never decreasing per process). */
  at: number;
  /** Per process, increasing with every set: orders sets within one millisecond. */
  seq: number;
  /** When its member joined, as known when it joined (ms since the epoch). */
  since: number;
  /** Lingering until this time (ms since the epoch); absent while the connection is there. */
  until?: number;
}

/** A contribution and the process that owns it (for ties between processes). */
export interface Sourced {
  node: string;
  entry: Contribution;
}

/** Whether a contribution still counts at `now`. */
export function counts(entry: Contribution, now: number): boolean {
  return entry.until === undefined || entry.until > now;
}

/** Whether `a` comes after `b`: by time, then process (ties across processes), then order within the process. */
function later(a: Sourced, b: Sourced, order: (c: Contribution) => readonly [time: number, seq: number]): boolean {
  const [ta, sa] = order(a.entry);
  const [tb, sb] = order(b.entry);
  if (ta !== tb) return ta > tb;
  if (a.node !== b.node) return a.node > b.node;
  return sa > sb;
}
const setOrder = (c: Contribution) => [c.at, c.seq] as const;
const stateOrder = (c: Contribution) => [c.stateAt, c.stateSeq] as const;

export interface Computed extends PresenceSnapshot {
  /** The earliest time a lingering contribution stops counting (recompute then), if any. */
  nextExpiry: number | undefined;
}

/** The members of a channel from every contribution to it, at `now`. */
export function computeMembers(all: Iterable<Sourced>, now: number): Computed {
  let nextExpiry: number | undefined;
  const byMember = new Map<string, { user: string | null; since: number; devices: Map<string, Sourced> }>();
  for (const sourced of all) {
    const { entry } = sourced;
    if (!counts(entry, now)) continue;
    if (entry.until !== undefined && (nextExpiry === undefined || entry.until < nextExpiry)) nextExpiry = entry.until;
    let member = byMember.get(entry.member);
    if (!member) byMember.set(entry.member, (member = { user: entry.user, since: entry.since, devices: new Map() }));
    member.since = Math.min(member.since, entry.since);
    const current = member.devices.get(entry.device);
    const live = entry.until === undefined;
    const currentLive = current?.entry.until === undefined;
    if (!current || (live && !currentLive) || (live === currentLive && later(sourced, current, setOrder))) member.devices.set(entry.device, sourced);
  }
  const members: PresenceMember[] = [];
  for (const [id, member] of byMember) {
    let tabs = 0;
    let stateFrom: Sourced | undefined;
    for (const device of member.devices.values()) {
      tabs += device.entry.tabs;
      if (device.entry.stateAt > 0 && (!stateFrom || later(device, stateFrom, stateOrder))) stateFrom = device;
    }
    members.push({ id, user: member.user, tabs, devices: member.devices.size, state: stateFrom?.entry.state ?? null, since: member.since });
  }
  members.sort(compareMembers);
  return { members: members.slice(0, PRESENCE_MAX_MEMBERS), total: members.length, nextExpiry };
}

/** The `since` a new contribution of `member` takes: its member's, if present, else `now`. */
export function sinceOf(all: Iterable<Sourced>, member: string, now: number): number {
  let since = now;
  for (const { entry } of all) if (entry.member === member && counts(entry, now)) since = Math.min(since, entry.since);
  return since;
}
