/**
 * Presence in the worker: the tabs of this browser that joined a channel's presence are one
 * connection's contribution (`tabs`, and the state its user set), sent to the server; the
 * members the server sends back go to every joined tab. Nothing here touches the outbox:
 * presence is not durable, and after a reconnect the worker simply joins again.
 *
 * A tab that goes away (closed, reloaded) lowers the count only after a short delay, so a
 * reload does not make the count dip and rise for everyone else; an explicit leave is sent at once.
 *
 * The connection speaks for one user (the newest tab's, worker/connection.ts): a tab of another
 * user on this browser is not counted, and is told so, until the connection is its user's again.
 */
import type { ErrorShape } from '../protocol/errors.js';
import { PRESENCE_STATE_MAX_BYTES } from '../protocol/constants.js';
import { utf8Length } from '../protocol/utf8.js';
import type { PresenceMember, ServerMessage } from '../protocol/messages.js';
import { applyMembersFrame } from '../protocol/presence-list.js';
import type { Outcome, PresenceListener, PresenceSnapshot } from './api.js';
import { release } from './release.js';

/** How long a departed tab still counts (a reload comes back within it). */
export const TAB_GONE_DELAY_MS = 2000;
/** Changes of one channel are sent together: a burst of `set` calls (a cursor) costs one frame per this. */
const SEND_DELAY_MS = 50;

const OTHER_USER: ErrorShape = {
  code: 'unauthorized',
  message: "this browser's connection is signed in as another user (the newest tab's): this tab's presence waits until it is this tab's user again",
};

interface Join {
  tabId: string;
  channel: string;
  listener: PresenceListener;
  /** The user of the tab (undefined: not known yet). */
  user: () => string | undefined;
  state: unknown;
  /** When this tab last set its state (0: never): the latest setter's state is the connection's. */
  setAt: number;
  /** Whether it counted when its tab was last told (undefined: not told yet). */
  counted: boolean | undefined;
}

interface Channel {
  joins: Set<string>;
  /**
   * The counts last sent when tabs went away, each kept as a floor until its delay ends (see
   * TAB_GONE_DELAY_MS): a reloading tab's replacement fills its place, with no dip and no rise.
   */
  floors: number[];
  floorTimers: Set<ReturnType<typeof setTimeout>>;
  /** What the server last confirmed, shown to the tabs. */
  members: PresenceMember[];
  /** `members` is the list this connection was sent for the current join (change frames apply to it). */
  based: boolean;
  total: number;
  joined: boolean;
  error: ErrorShape | null;
  /** The last frame sent on this connection, and its tab count (undefined: none since it opened). */
  sent: string | undefined;
  sentTabs: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export interface PresenceDeps {
  /** Sends a frame if online; false when it could not. */
  send: (message: { type: 'presence'; channel: string; tabs: number; state?: unknown }) => boolean;
  /** The member id of this connection's user: `user`, else `client:<clientId>`, else `session:<id>`. */
  selfId: () => string | undefined;
  /** The user the connection speaks for (undefined: not known: every tab counts). */
  socketUser: () => string | undefined;
  /** A line for the worker's log (refusals). */
  note?: (level: 'info' | 'warn', message: string) => void;
  changed?: () => void;
}

/**
 * A state as the server will take it: JSON (normalised by a round trip) of at most
 * PRESENCE_STATE_MAX_BYTES in UTF-8. Checked where a state enters an engine or a relay, so a
 * refused one is never kept (and never replayed to the next leader).
 */
export function checkedPresenceState(state: unknown): Outcome<unknown> {
  let json: string | undefined;
  try {
    json = JSON.stringify(state ?? null);
  } catch (cause) {
    return { ok: false, error: { code: 'invalid_argument', message: `presence state must be JSON (${String(cause)})` } };
  }
  if (json === undefined) return { ok: false, error: { code: 'invalid_argument', message: 'presence state must be JSON' } };
  const bytes = utf8Length(json);
  if (bytes > PRESENCE_STATE_MAX_BYTES) {
    return { ok: false, error: { code: 'message_too_big', message: `presence state is ${bytes} bytes of JSON (UTF-8); at most ${PRESENCE_STATE_MAX_BYTES}` } };
  }
  return { ok: true, value: JSON.parse(json) as unknown };
}

export class Presence {
  private readonly joins = new Map<string, Join>();
  private readonly channels = new Map<string, Channel>();
  private clock = 0;

  constructor(private readonly deps: PresenceDeps) {}

  join(tabId: string, id: string, channel: string, listener: PresenceListener, user: () => string | undefined = () => undefined): Outcome<null> {
    this.leave(id);
    const join: Join = { tabId, channel, listener, user, state: null, setAt: 0, counted: undefined };
    this.joins.set(id, join);
    let entry = this.channels.get(channel);
    if (!entry) {
      entry = { joins: new Set(), floors: [], floorTimers: new Set(), members: [], based: false, total: 0, joined: false, error: null, sent: undefined, sentTabs: 0, timer: undefined };
      this.channels.set(channel, entry);
    }
    entry.joins.add(id);
    entry.error = null;
    this.schedule(channel, entry);
    join.counted = this.counts(join);
    deliver(listener, this.snapshot(channel, entry, join));
    return { ok: true, value: null };
  }

  set(id: string, state: unknown): Outcome<null> {
    const join = this.joins.get(id);
    if (!join) return { ok: false, error: { code: 'closed', message: 'this presence was left; join the channel again' } };
    const refused = this.channels.get(join.channel)?.error;
    if (refused) return { ok: false, error: refused };
    if (!this.counts(join)) return { ok: false, error: OTHER_USER };
    const checked = checkedPresenceState(state);
    if (!checked.ok) return checked;
    join.state = checked.value;
    join.setAt = ++this.clock;
    const entry = this.channels.get(join.channel);
    if (entry) this.schedule(join.channel, entry);
    return { ok: true, value: null };
  }

  /** Leaves at once (the tab called `leave()`). */
  leave(id: string): void {
    const join = this.joins.get(id);
    if (!join) return;
    this.joins.delete(id);
    release(join.listener);
    const entry = this.channels.get(join.channel);
    if (!entry) return;
    entry.joins.delete(id);
    this.schedule(join.channel, entry);
  }

  /**
   * The tab went away (closed, reloading, crashed): its joins go, but each channel keeps showing
   * the count last sent for TAB_GONE_DELAY_MS, so a reloading tab's replacement fills its place
   * (no dip, no rise). The state it set goes at once: nobody is typing in a closed tab.
   */
  removeTab(tabId: string): void {
    const gone = [...this.joins].filter(([, join]) => join.tabId === tabId);
    for (const channel of new Set(gone.map(([, join]) => join.channel))) {
      const entry = this.channels.get(channel);
      if (!entry || entry.sent === undefined) continue; // nothing shown to others: nothing to hold
      const floor = entry.sentTabs;
      entry.floors.push(floor);
      const timer = setTimeout(() => {
        entry.floorTimers.delete(timer);
        entry.floors.splice(entry.floors.indexOf(floor), 1);
        this.schedule(channel, entry);
      }, TAB_GONE_DELAY_MS);
      entry.floorTimers.add(timer);
    }
    for (const [id] of gone) this.leave(id);
  }

  /** A new connection knows nothing of this one's presence (and may be another user's): join again. */
  online(): void {
    for (const [channel, entry] of this.channels) {
      entry.sent = undefined;
      entry.sentTabs = 0;
      entry.based = false; // this connection's join starts with the whole list
      this.schedule(channel, entry);
    }
  }

  /** A tab's user became known, or changed: which joins count may have changed. */
  usersChanged(): void {
    for (const [channel, entry] of this.channels) this.schedule(channel, entry);
  }

  offline(): void {
    for (const [channel, entry] of this.channels) {
      entry.sent = undefined;
      entry.sentTabs = 0;
      entry.based = false;
      if (!entry.joined) continue;
      entry.joined = false;
      this.tell(channel, entry);
    }
  }

  handle(message: ServerMessage): boolean {
    if (message.type === 'presence') {
      const entry = this.channels.get(message.channel);
      if (!entry) return true; // left meanwhile
      // Changes apply to the list this connection was sent; changes without one belong to an
      // earlier join (left and joined again): the whole list of this join follows.
      const members = applyMembersFrame(entry.based ? entry.members : undefined, message);
      if (members === undefined) return true;
      entry.members = members;
      entry.based = true;
      entry.total = message.total;
      entry.joined = entry.joins.size > 0;
      entry.error = null;
      this.tell(message.channel, entry);
      return true;
    }
    if (message.type === 'error' && message.presence !== undefined) {
      this.deps.note?.('warn', `presence on ${message.presence} refused: ${message.code}: ${message.message}`);
      const entry = this.channels.get(message.presence);
      if (!entry) return true;
      entry.error = { code: message.code, message: message.message };
      entry.joined = false;
      this.tell(message.presence, entry);
      return true;
    }
    return false;
  }

  /** The channels this worker is present on, for the inspector. */
  inspect(): { channel: string; tabs: number; members: number; joined: boolean }[] {
    return [...this.channels].map(([channel, entry]) => ({ channel, tabs: this.tabsOf(entry), members: entry.total, joined: entry.joined }));
  }

  close(): void {
    for (const id of [...this.joins.keys()]) this.leave(id);
    for (const entry of this.channels.values()) {
      clearTimeout(entry.timer);
      entry.timer = undefined;
      for (const timer of entry.floorTimers) clearTimeout(timer);
      entry.floorTimers.clear();
    }
    this.channels.clear();
  }

  /** Whether a join counts: its tab's user is the one the connection speaks for. */
  private counts(join: Join): boolean {
    const socketUser = this.deps.socketUser();
    const user = join.user();
    return socketUser === undefined || user === undefined || user === socketUser;
  }

  /** Tabs joined and counted (a tab that joined twice counts once). */
  private tabsOf(entry: Channel): number {
    const tabs = new Set<string>();
    for (const id of entry.joins) {
      const join = this.joins.get(id);
      if (join && this.counts(join)) tabs.add(join.tabId);
    }
    return tabs.size;
  }

  private schedule(channel: string, entry: Channel): void {
    if (entry.timer !== undefined) return;
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      this.flush(channel, entry);
    }, SEND_DELAY_MS);
  }

  private flush(channel: string, entry: Channel): void {
    const tabs = Math.max(this.tabsOf(entry), ...entry.floors);
    let latest: Join | undefined;
    for (const id of entry.joins) {
      const join = this.joins.get(id);
      if (join && this.counts(join) && join.setAt > (latest?.setAt ?? 0)) latest = join;
    }
    const message = { type: 'presence' as const, channel, tabs, ...(latest ? { state: latest.state } : {}) };
    const frame = JSON.stringify(message);
    if (tabs === 0 && entry.joins.size === 0) {
      if (entry.sent !== undefined) this.deps.send(message);
      this.channels.delete(channel);
      this.deps.changed?.();
      return;
    }
    // Joins whose counting changed (the connection changed users) are told, whatever the server says.
    const switched = [...entry.joins].some((id) => {
      const join = this.joins.get(id);
      return join !== undefined && join.counted !== this.counts(join);
    });
    if (switched) this.tell(channel, entry);
    if (frame === entry.sent || (tabs === 0 && entry.sent === undefined)) return;
    if (this.deps.send(message)) {
      entry.sent = frame;
      entry.sentTabs = tabs;
    }
    this.deps.changed?.();
  }

  private snapshot(channel: string, entry: Channel, join: Join): PresenceSnapshot {
    if (!this.counts(join)) return { channel, joined: false, members: [], total: 0, error: OTHER_USER };
    const self = this.deps.selfId();
    return {
      channel,
      joined: entry.joined,
      members: entry.members.map((member) => ({ ...member, self: member.id === self })),
      total: entry.total,
      error: entry.error,
    };
  }

  private tell(channel: string, entry: Channel): void {
    for (const id of entry.joins) {
      const join = this.joins.get(id);
      if (!join) continue;
      join.counted = this.counts(join);
      deliver(join.listener, this.snapshot(channel, entry, join));
    }
    this.deps.changed?.();
  }
}

/** Calls a tab's listener (a Comlink proxy): a tab that went away is detached by its lock, not here. */
function deliver(listener: PresenceListener, snapshot: PresenceSnapshot): void {
  try {
    void Promise.resolve(listener(snapshot)).catch(() => {});
  } catch {
    // the tab is gone; its lock's release removes it
  }
}
