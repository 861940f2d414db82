/**
 * Presence in one process, and the engine the Redis hub builds on: this process's contributions,
 * the watchers of each channel, lingering, and coalesced frames (at most one per channel per
 * `intervalMs`, encoded once for every watcher of the process: the whole list for new watchers,
 * the changes for the others).
 */
import { counts, computeMembers, sinceOf, type Computed, type Contribution, type Sourced } from './members.js';
import { membersChange } from '../../protocol/presence-list.js';
import { PRESENCE_INTERVAL_MS, type PresenceConnection, type PresenceHub, type PresenceListener, type PresenceOptions, type PresenceSnapshot } from './presence.js';

export interface EngineHooks {
  /** This process's name among the processes sharing presence (ties between processes). */
  node: string;
  /** The contributions of other processes to `channel`, as last read (Redis); none in process. */
  remote?: (channel: string) => Iterable<Sourced>;
  /** This process's contributions to `channel` changed (the Redis hub writes them). */
  localChanged?: (channel: string) => void;
  /** `channel` got its first watcher (`true`) or lost its last (`false`). */
  watching?: (channel: string, watched: boolean) => void;
}

interface Watcher {
  listener: PresenceListener;
  /** Has not had a frame yet: gets the next one even if nothing changed. */
  fresh: boolean;
}

interface ChannelState {
  /** This process's contributions, by connection id (lingering ones stay under their closed connection's id). */
  local: Map<string, Contribution>;
  watchers: Set<Watcher>;
  /** The members last sent, as JSON by id, and the total: the next change frame is against these. */
  listed: Map<string, string>;
  total: number;
  lastFlush: number;
  flush: NodeJS.Timeout | undefined;
  expiry: NodeJS.Timeout | undefined;
  expiryAt: number | undefined;
}

export class PresenceEngine {
  private readonly channels = new Map<string, ChannelState>();
  /** Per connection, the channels where it is present (live). */
  private readonly present = new Map<string, Set<string>>();
  private clock = 0;
  private seq = 0;
  private closed = false;
  private readonly intervalMs: number;

  constructor(
    private readonly options: PresenceOptions,
    private readonly hooks: EngineHooks,
  ) {
    this.intervalMs = options.intervalMs ?? PRESENCE_INTERVAL_MS;
  }

  /** Now, never going back (a clock stepped back must not reorder this process's sets). */
  private now(): number {
    return (this.clock = Math.max(this.clock, Date.now()));
  }

  private channel(name: string): ChannelState {
    let state = this.channels.get(name);
    if (!state) {
      state = { local: new Map(), watchers: new Set(), listed: new Map(), total: 0, lastFlush: 0, flush: undefined, expiry: undefined, expiryAt: undefined };
      this.channels.set(name, state);
    }
    return state;
  }

  private *all(name: string, local: Map<string, Contribution> | undefined, remote: Iterable<Sourced> | undefined): Iterable<Sourced> {
    if (local) for (const entry of local.values()) yield { node: this.hooks.node, entry };
    if (remote) yield* remote;
  }

  set(connection: PresenceConnection, name: string, tabs: number, state: unknown): void {
    if (this.closed) return;
    const channel = this.channels.get(name);
    let mine = channel?.local.get(connection.id);
    if (mine && !counts(mine, Date.now())) {
      // Lingered out but not yet purged: gone, as if the purge had run.
      channel!.local.delete(connection.id);
      mine = undefined;
    }
    if (tabs === 0) {
      // Only a connection that is there can leave; its contribution lingers with its last counts.
      if (!channel || !mine || mine.until !== undefined) return;
      this.linger(name, channel, connection.id, mine);
      return;
    }
    const now = this.now();
    const ch = channel ?? this.channel(name);
    const value = state === undefined ? null : state;
    const seq = ++this.seq;
    if (mine) {
      const changed = JSON.stringify(mine.state) !== JSON.stringify(value);
      Object.assign(mine, { tabs, state: value, at: now, seq, ...(changed ? { stateAt: now, stateSeq: seq } : {}) });
      delete mine.until;
    } else {
      const since = sinceOf(this.all(name, ch.local, this.hooks.remote?.(name)), connection.member, now);
      // The same device back within the linger: it takes its lingering self's place, unseen by others.
      for (const [id, entry] of ch.local) {
        if (entry.until !== undefined && entry.member === connection.member && entry.device === connection.device) ch.local.delete(id);
      }
      ch.local.set(connection.id, { member: connection.member, user: connection.user, device: connection.device, tabs, state: value, stateAt: value === null ? 0 : now, stateSeq: value === null ? 0 : seq, at: now, seq, since });
    }
    let channels = this.present.get(connection.id);
    if (!channels) this.present.set(connection.id, (channels = new Set()));
    channels.add(name);
    this.changed(name, ch, true);
  }

  private linger(name: string, channel: ChannelState, connectionId: string, entry: Contribution): void {
    const now = this.now();
    Object.assign(entry, { until: now + this.options.lingerMs, at: now, seq: ++this.seq });
    this.present.get(connectionId)?.delete(name);
    this.changed(name, channel, true);
  }

  disconnect(connectionId: string): void {
    const names = this.present.get(connectionId);
    if (!names) return;
    for (const name of [...names]) {
      const channel = this.channels.get(name);
      const entry = channel?.local.get(connectionId);
      if (channel && entry && entry.until === undefined) this.linger(name, channel, connectionId, entry);
    }
    this.present.delete(connectionId);
  }

  /** Something changed on `name` (locally, or another process's contributions): a frame follows, coalesced. */
  changed(name: string, channel = this.channels.get(name), local = false): void {
    if (!channel || this.closed) return;
    if (local) this.hooks.localChanged?.(name);
    if (channel.flush !== undefined) return;
    const delay = Math.max(0, channel.lastFlush + this.intervalMs - Date.now());
    channel.flush = setTimeout(() => this.flush(name, channel), delay);
    channel.flush.unref();
  }

  private flush(name: string, channel: ChannelState): void {
    channel.flush = undefined;
    if (this.closed || this.channels.get(name) !== channel) return;
    const now = Date.now();
    channel.lastFlush = now;
    let purged = false;
    for (const [id, entry] of channel.local) {
      if (!counts(entry, now)) {
        channel.local.delete(id);
        purged = true;
      }
    }
    if (purged) this.hooks.localChanged?.(name);
    const computed = this.compute(name, channel.local, this.hooks.remote?.(name), now);
    this.expireAt(name, channel, computed.nextExpiry, now);
    const { members, total } = computed;
    const { set, gone, encoded } = membersChange(channel.listed, members);
    const changed = set.length > 0 || gone.length > 0 || total !== channel.total;
    channel.listed = encoded;
    channel.total = total;
    // Encoded once each, for every watcher: a new watcher gets the whole list, the others the
    // changes (or the whole list when that is smaller: most members changed).
    let whole: string | undefined;
    let changes: string | undefined;
    const wholeFrame = () => (whole ??= JSON.stringify({ type: 'presence', channel: name, members, total }));
    const changeFrame = () => {
      if (changes !== undefined) return changes;
      let wholeBytes = 0;
      for (const json of encoded.values()) wholeBytes += json.length + 1;
      let changeBytes = 0;
      for (const member of set) changeBytes += encoded.get(member.id)!.length + 1;
      for (const id of gone) changeBytes += id.length + 3;
      return (changes = changeBytes < wholeBytes ? JSON.stringify({ type: 'presence', channel: name, set, gone, total }) : wholeFrame());
    };
    const snapshot: PresenceSnapshot = { members, total };
    for (const watcher of channel.watchers) {
      if (!changed && !watcher.fresh) continue;
      const frame = watcher.fresh ? wholeFrame() : changeFrame();
      watcher.fresh = false;
      watcher.listener(frame, snapshot);
    }
    if (channel.local.size === 0 && channel.watchers.size === 0 && channel.expiry === undefined) this.channels.delete(name);
  }

  /** A lingering contribution stops counting at `at`: compute again then. */
  private expireAt(name: string, channel: ChannelState, at: number | undefined, now: number): void {
    if (at === channel.expiryAt) return;
    clearTimeout(channel.expiry);
    channel.expiry = undefined;
    channel.expiryAt = at;
    if (at === undefined) return;
    channel.expiry = setTimeout(() => {
      channel.expiry = undefined;
      channel.expiryAt = undefined;
      this.changed(name, channel);
    }, Math.max(0, at - now) + 1);
    channel.expiry.unref();
  }

  private compute(name: string, local: Map<string, Contribution> | undefined, remote: Iterable<Sourced> | undefined, now: number): Computed {
    return computeMembers(this.all(name, local, remote), now);
  }

  watch(name: string, listener: PresenceListener): () => void {
    const channel = this.channel(name);
    const watcher: Watcher = { listener, fresh: true };
    channel.watchers.add(watcher);
    if (channel.watchers.size === 1) this.hooks.watching?.(name, true);
    this.changed(name, channel);
    return () => {
      if (!channel.watchers.delete(watcher)) return;
      if (channel.watchers.size > 0) return;
      this.hooks.watching?.(name, false);
      this.changed(name, channel); // drops the channel's state once nothing is left in it
    };
  }

  /** The channel's members now; `remote` instead of the hooks' (a channel this process does not watch). */
  snapshot(name: string, remote?: Iterable<Sourced>): PresenceSnapshot {
    const { members, total } = this.compute(name, this.channels.get(name)?.local, remote ?? this.hooks.remote?.(name), Date.now());
    return { members, total };
  }

  /** This process's contributions to `name` that still count (what the Redis hub writes). */
  localEntries(name: string): Contribution[] {
    const now = Date.now();
    return [...(this.channels.get(name)?.local.values() ?? [])].filter((entry) => counts(entry, now));
  }

  /** Channels where this process has contributions. */
  ownedChannels(): string[] {
    return [...this.channels].filter(([, channel]) => channel.local.size > 0).map(([name]) => name);
  }

  isWatched(name: string): boolean {
    return (this.channels.get(name)?.watchers.size ?? 0) > 0;
  }

  /** Every connection's contributions linger (the process is shutting down). */
  lingerAll(): void {
    for (const id of [...this.present.keys()]) this.disconnect(id);
  }

  watchedChannels(): string[] {
    return [...this.channels].filter(([, channel]) => channel.watchers.size > 0).map(([name]) => name);
  }

  close(): void {
    this.closed = true;
    for (const channel of this.channels.values()) {
      clearTimeout(channel.flush);
      clearTimeout(channel.expiry);
    }
  }
}

/** Presence for a single server process. */
export function createLocalPresence(options: PresenceOptions): PresenceHub {
  const engine = new PresenceEngine(options, { node: 'local' });
  return {
    set: (connection, channel, tabs, state) => engine.set(connection, channel, tabs, state),
    disconnect: (connectionId) => engine.disconnect(connectionId),
    watch: (channel, listener) => engine.watch(channel, listener),
    members: (channel) => Promise.resolve(engine.snapshot(channel)),
    health: () => ({ kind: 'local', ok: true }),
    close: () => Promise.resolve(engine.close()),
  };
}
