/**
 * The tab ↔ worker contract: the SDK does `wrap<WorkerApi>(port)`. Types only — no
 * `/// <reference lib="webworker" />` here, so the DOM-side SDK can import it safely.
 */
import type { ErrorShape } from '../protocol/errors.js';
import type { DocConflict, Publisher, ReadVersion } from '../protocol/shapes.js';
import type { ProxyMarked } from 'comlink';

export type ConnectionState = 'connecting' | 'online' | 'offline';

/**
 * Who holds this tab's connection: the origin's SharedWorker (`shared-worker`), or — where
 * there is none — the engine of one elected tab: this tab (`leader`) or another (`follower`).
 */
export type HostMode = 'shared-worker' | 'leader' | 'follower';

/** What `client.status` holds. */
export interface Status {
  /** `connecting` until the first handshake; then `online` or `offline`. */
  connection: ConnectionState;
  /** Operations sent to (or queued for) the server that it has not answered yet. */
  pending: number;
  /** When this client was last fully in sync (online, nothing pending), in ms since the epoch; null if never. */
  lastSyncAt: number | null;
  /**
   * Why this client cannot sync, while it lasts: the token function fails (`unauthorized`:
   * writes are kept and sent once it works), or the server refused the handshake. Null otherwise.
   */
  error: ErrorShape | null;
  /** Who holds the connection (a follower's changes when its leader tab goes away). */
  mode: HostMode;
  /**
   * What carries the connection while online: a WebSocket, or long polling where WebSockets are
   * blocked (it moves back to a WebSocket when one gets through). Null while not online.
   */
  transport: TransportKind | null;
}

/** The transports a connection can use (worker/transport-choice.ts). */
export type TransportKind = 'websocket' | 'long-polling';

/** A result that crosses postMessage without losing the error code (Comlink would drop it). */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: ErrorShape };

export interface Registration {
  /** Random id chosen by the tab. */
  tabId: string;
  /** Name of the Web Lock the tab holds for its lifetime; the worker waits on it to learn the tab is gone. */
  lockName: string;
  /** WebSocket URL of the Tether server. */
  url: string;
  /** The transports the connection may use (`connect({ transports })`); absent: the default. */
  transports?: TransportKind[];
}

/** Called with every status change of the tab's connection (a Comlink proxy into the tab). */
export type StatusListener = (status: Status) => void;
/** How the tab's publishes ended (`publishMany` ids), several at a time (a Comlink proxy into the tab; version 2). */
export type PublishedListener = (settled: [id: number, outcome: Outcome<{ offset: number | null }>][]) => void;
/** Returns a token for the handshake (a Comlink proxy into the tab). */
export type TokenProvider = () => Promise<string | undefined>;

/** A tab as the worker keeps it. */
export interface Tab extends Registration {
  onStatus: StatusListener;
  getToken: TokenProvider | undefined;
  onPublished?: PublishedListener | undefined;
}

export interface CallOptions {
  timeoutMs: number;
}

/** What a subscriber's listener receives from the worker. */
export type ChannelDelivery =
  | { kind: 'event'; channel: string; offset: number; data: unknown; publisher?: Publisher }
  /** The server subscription is live: events after `offset` (of the channel's `epoch`) will arrive. */
  | { kind: 'subscribed'; channel: string; offset: number; epoch: string }
  /** Events up to `offset` were missed and cannot be recovered (history retention, or a reset history). */
  | { kind: 'reset'; channel: string; epoch: string; offset: number }
  /** The subscription was refused (e.g. `forbidden`, `limit_exceeded`). */
  | { kind: 'error'; channel: string; code: ErrorShape['code']; message: string };

export type ChannelListener = (delivery: ChannelDelivery) => void;
/** A listener that takes the deliveries of a burst in one call, in order (one message per burst). */
export type ChannelBatchListener = (deliveries: ChannelDelivery[]) => void;

/**
 * The version of TabApi a worker speaks. A tab of a newer SDK may meet an older worker that is
 * still running (a deploy while tabs are open): it asks, and uses only what the worker has.
 *   1 — (no `apiVersion` method) the first API
 *   2 — `publishMany`; `subscribe(…, batched)`; `transact(…, local)` and `DocSnapshot.seen`
 *   3 — `presenceJoin` / `presenceSet` / `presenceLeave`; `inspect` / `stopInspect`
 */
export const TAB_API_VERSION = 3;

/** One person on a channel's presence, as a tab sees it (protocol `PresenceMember`, plus `self`). */
export interface PresenceMember {
  /** The user (token `sub`); in development mode `client:<clientId>`, one per anonymous browser. */
  id: string;
  user: string | null;
  /** Their tabs on the channel, over all their browsers. */
  tabs: number;
  /** Their browsers (devices) on the channel. */
  devices: number;
  /** The state most recently set by any of their tabs (`presence.set`), or null. */
  state: unknown;
  /** When they joined (server clock, ms since the epoch). */
  since: number;
  /** This member is the user of the tab that reads it. */
  self: boolean;
}

/** What a tab's presence store holds. */
export interface PresenceSnapshot {
  channel: string;
  /** The server has confirmed this connection's join and sent the members (false offline, or before). */
  joined: boolean;
  /** One entry per person, oldest first. Kept as last known while offline. */
  members: PresenceMember[];
  /** Members in all (more than `members.length` only on very large channels). */
  total: number;
  /** Why presence is refused (`forbidden`: no subscribe grant on the channel), or null. */
  error: ErrorShape | null;
}

export type PresenceListener = (snapshot: PresenceSnapshot) => void;

/** One write in the outbox, as the inspector shows it. */
export interface InspectedWrite {
  seq: number | null;
  kind: 'publish' | 'transact';
  /** The channel (publish) or document (transact). */
  target: string;
  createdAt: number;
  /** How many times it was sent to a server (0: not yet). */
  attempts: number;
  bytes: number;
}

/** What the worker holds for one server URL, as `client.inspect()` shows it. */
export interface Inspection {
  /** When this snapshot was taken (ms since the epoch). */
  at: number;
  url: string;
  mode: HostMode;
  connection: ConnectionState;
  transport: TransportKind | null;
  /** The user of the socket (token `sub`; '' anonymous; null before any handshake). */
  user: string | null;
  clientId: string | null;
  /** The server's session id of the current connection (null offline). */
  session: string | null;
  lastSyncAt: number | null;
  error: ErrorShape | null;
  tabs: number;
  /**
   * Per user (a browser may hold writes of several): `count` writes wait, the oldest of them (at
   * most 200, so a burst of thousands does not make every snapshot megabytes) in `writes`.
   */
  outbox: { user: string; count: number; writes: InspectedWrite[] }[];
  subscriptions: { channel: string; offset: number | null; epoch: string | null; tabs: number; live: boolean }[];
  documents: { doc: string; version: number; pending: number; conflicts: number; synced: boolean; tabs: number }[];
  presence: { channel: string; tabs: number; members: number; joined: boolean }[];
  /** The worker's last log lines, oldest first (at most a few hundred). */
  log: { at: number; level: 'debug' | 'info' | 'warn' | 'error'; message: string }[];
}

export type InspectListener = (inspection: Inspection) => void;

/** A write still waiting for the server's acknowledgement. */
export type PendingWrite = { seq: number; createdAt: number } & (
  | { op: 'publish'; channel: string; data: unknown }
  | { op: 'transact'; doc: string; writes: Record<string, unknown> }
);

export type { DocConflict } from '../protocol/shapes.js';

/**
 * What a tab's transaction read, as the tab knows it: a ReadVersion, or `{ local: n }` — "the value
 * my own transaction n produced" for a transaction the tab applied to its view before the worker
 * numbered it (the worker turns it into that transaction's `{ seq }` when it stores the read).
 */
export type TabReadVersion = ReadVersion | { local: number };

/** A document as a tab sees it: the confirmed state with this client's pending transactions on top. */
export interface DocSnapshot {
  view: Record<string, unknown>;
  /** Per key, what a transaction reading it now records (see ReadVersion). */
  versions: Record<string, ReadVersion>;
  /** Confirmed document version (0 before the first sync). */
  version: number;
  /** This client's transactions on the document not confirmed yet. */
  pending: number;
  /** Whether the server state was received on this connection (false: cached or empty). */
  synced: boolean;
  conflicts: DocConflict[];
  /**
   * The last transaction number (`transact(…, local)`) of the receiving tab that this snapshot
   * includes — pending, committed or rejected (version 2). The tab shows its later ones on top.
   */
  seen?: number;
}

export type DocListener = (snapshot: DocSnapshot) => void;

/** The end of one run of a transaction: committed, or rejected with the fresh state to run again on. */
export type TransactOutcome = { committed: true; version: number | null } | { committed: false; snapshot: DocSnapshot; message: string };

export interface WorkerApi {
  /**
   * Registers a tab and returns its own API (a Comlink proxy): every later call is about this
   * tab, so none carries a tab id. Callbacks are separate arguments because Comlink only proxies
   * top-level arguments. The status arrives through `onStatus` (and `tab.status()`).
   */
  attach(registration: Registration, onStatus: StatusListener, getToken?: TokenProvider, onPublished?: PublishedListener): Promise<TabApi & ProxyMarked>;
  /**
   * The tab is being frozen or put in the back/forward cache (`frozen`), or is back (`active`).
   * A leader tab's worker hands the connection to another tab first (leader election only).
   */
  lifecycle?(state: 'frozen' | 'active'): void;
}

/** What one tab can ask of the worker (the object `attach` returns). */
export interface TabApi {
  /** The current status of the tab's connection. */
  status(): Status;
  /** Calls a procedure on the tab's server. */
  call(method: string, args: unknown[], options: CallOptions): Promise<Outcome<unknown>>;
  /** The TabApi version of this worker (TAB_API_VERSION; a worker without this method speaks 1). */
  apiVersion(): number;
  /** Stores the write durably, then resolves with its offset once the server stored it. */
  publish(channel: string, data: unknown): Promise<Outcome<{ offset: number | null }>>;
  /**
   * Several publishes of the tab at once, in order (stored in one IndexedDB transaction, sent in
   * few frames). Each one's outcome goes to the tab's `onPublished` (given to `attach`) as soon
   * as it is known, with its id.
   */
  publishMany(publishes: { id: number; channel: string; data: unknown }[]): void;
  /**
   * Adds a listener for a channel; the worker shares one server subscription among its tabs.
   * `since`: where this tab left off (before a reload): it gets the events after it first.
   */
  subscribe(
    subscriptionId: string,
    channel: string,
    listener: ChannelListener | ChannelBatchListener,
    since?: { offset: number; epoch: string },
    /** The listener is a ChannelBatchListener (version 2). */
    batched?: boolean,
  ): Promise<Outcome<null>>;
  unsubscribe(subscriptionId: string): void;
  /** The writes of the tab's user that the server has not acknowledged yet, oldest first. */
  pendingWrites(): Promise<Outcome<PendingWrite[]>>;
  /** Opens a document; the listener gets its snapshot now and after every change. */
  openDoc(listenerId: string, doc: string, listener: DocListener): Promise<Outcome<null>>;
  closeDoc(listenerId: string): void;
  /** Applies a transaction optimistically, queues it durably, and settles when the server decided. */
  transact(
    doc: string,
    reads: Record<string, TabReadVersion>,
    writes: Record<string, unknown>,
    /** The caller's last run: if it conflicts, the conflict is listed on the document. */
    final: boolean,
    /** The tab's number for this transaction (increasing per tab): snapshots report it in `seen` once included (version 2). */
    local?: number,
  ): Promise<Outcome<TransactOutcome>>;
  /** Forgets the conflicts reported on a document. */
  clearConflicts(doc: string): Promise<void>;
  /**
   * Joins `channel`'s presence from this tab (version 3); the listener gets the members now and
   * after every change. `id` names this join for `presenceSet`/`presenceLeave`.
   */
  presenceJoin(id: string, channel: string, listener: PresenceListener): Promise<Outcome<null>>;
  /** Sets the presence state of this tab's user on the join's channel (JSON, at most 1,024 bytes in UTF-8). */
  presenceSet(id: string, state: unknown): Promise<Outcome<null>>;
  presenceLeave(id: string): void;
  /** Sends what the worker holds to `listener` now and after every change, at most every 250 ms (version 3). */
  inspect(listener: InspectListener): Promise<Outcome<null>>;
  stopInspect(): void;
  /** Unregisters the tab and releases what it held (idempotent). */
  detach(): void;
}

/** Diagnostics the worker exposes as `globalThis.tetherWorkerStats()` (for tests and devtools). */
export interface WorkerStats {
  tabs: number;
  /** `channels`: those whose server subscription is live. */
  connections: { url: string; tabs: number; state: ConnectionState; pending: number; channels: string[] }[];
}
