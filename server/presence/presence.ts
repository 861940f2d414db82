/**
 * Presence: who is on a channel, one entry per person across their tabs and browsers.
 *
 * Each server process owns the presence of its own connections (their *contributions*: one per
 * connection and channel, with the connection's tab count and state). A member is the union of
 * the contributions of one person (a user, or in development mode one anonymous browser), from
 * every process; members.ts computes it. A contribution whose connection leaves or closes
 * *lingers* for `lingerMs` with its last counts, so that a reload or a reconnect is not seen by
 * the others as a leave and a join; the same device coming back within that time takes its place.
 *
 * Two implementations: in process (local-presence.ts) and across processes through Redis
 * (redis-presence.ts). Sessions only see this interface.
 */
import type { PresenceMember } from '../../protocol/messages.js';

/** Who a connection is, for presence. */
export interface PresenceConnection {
  /** The session id: one per connection. */
  id: string;
  /** The member key: the user (token `sub`), or `client:<clientId>` / `session:<id>` for an anonymous development client. */
  member: string;
  /** `sub` of the token, or null in development mode. */
  user: string | null;
  /** The device key: the handshake's clientId (one per browser profile), else `session:<id>`. */
  device: string;
}

/** A channel's presence: the first PRESENCE_MAX_MEMBERS members, oldest first, and how many in all. */
export interface PresenceSnapshot {
  members: PresenceMember[];
  total: number;
}

/**
 * Receives a channel's `presence` frame after each change (coalesced), and once on watching:
 * the whole list first, then the changes since the previous one (see PresenceMembers). Each
 * frame is encoded once and shared by every listener of the process; `snapshot` is the list after it.
 */
export type PresenceListener = (frame: string, snapshot: PresenceSnapshot) => void;

export interface PresenceHealth {
  kind: 'local' | 'redis';
  ok: boolean;
  /** Why not ok, for operators. */
  detail?: string;
}

export interface PresenceHub {
  /**
   * The connection's presence on `channel`: `tabs > 0` joins or updates, `tabs: 0` leaves (its
   * contribution lingers). `state` replaces the connection's previous state (null: none).
   */
  set(connection: PresenceConnection, channel: string, tabs: number, state: unknown): void;
  /** The connection closed: every contribution it has lingers. */
  disconnect(connectionId: string): void;
  /** Calls `listener` with the channel's frame soon (even if nothing changes), then after every change. */
  watch(channel: string, listener: PresenceListener): () => void;
  /** The channel's members now (the HTTP API). */
  members(channel: string): Promise<PresenceSnapshot>;
  health(): PresenceHealth;
  /** Stops timers; the Redis hub writes its connections' contributions as lingering first. */
  close(): Promise<void>;
}

/** Options every hub takes. */
export interface PresenceOptions {
  /** How long a contribution lingers after its connection leaves or closes. @default 5000 */
  lingerMs: number;
  /** At most one frame per channel per this many ms (changes in between are coalesced). @default 50 */
  intervalMs?: number;
}

/** The default coalescing interval: at most one frame per channel per 50 ms. */
export const PRESENCE_INTERVAL_MS = 50;

/** The member and device keys of a connection (see PROTOCOL.md "Presence"). */
export function presenceIdentity(session: { id: string; user: string | null; clientId: string | undefined }): PresenceConnection {
  const device = session.clientId ?? `session:${session.id}`;
  const member = session.user ?? (session.clientId === undefined ? `session:${session.id}` : `client:${session.clientId}`);
  return { id: session.id, member, user: session.user, device };
}
