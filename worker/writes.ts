/**
 * The write pipeline of one server connection: per user, the outbox and its in-memory mirror;
 * the send window; the answers (ack, conflict, refusal) routed to whoever waits; resends.
 *
 * Rules it keeps:
 * - a write is in IndexedDB before anything else happens to it, and leaves it only on the
 *   server's answer (so whatever happens in between, it is resent, and the server dedupes);
 * - only the writes of the user whose token is on the socket are sent;
 * - every answer that carries a `seq` ends that write (a refusal fails it to its caller), so no
 *   write blocks the ones behind it;
 * - disagreement about sequences (`out_of_order`) and store failures (`internal`) lead to ONE
 *   resend of the window, after a growing pause, with the window reloaded from the outbox.
 */
import { DEFAULT_MAX_MESSAGE_BYTES } from '../protocol/constants.js';
import { TokenBucket } from '../protocol/rate-limit.js';
import { TetherError, type ErrorShape } from '../protocol/errors.js';
import { MAX_WRITE_BATCH, WRITES_PER_RATE_TOKEN, type ClientMessage, type Conflict, type ServerMessage, type Welcome, type WriteMessage } from '../protocol/messages.js';
import type { Database, OutboxEntry } from './db.js';
import { clientIdentity, type Identity } from './identity.js';
import { Outbox, type NewWrite } from './outbox.js';
import type { WriteOp } from '../protocol/shapes.js';
import type { InspectedWrite } from './api.js';

/** Writes sent and not yet answered, at most. */
const SEND_WINDOW = 1000;
/** First pause before resending after `out_of_order`/`internal`; doubles while it repeats, up to the max. */
const RESEND_MIN_MS = 50;
const RESEND_MAX_MS = 30_000;

export type TransactEntry = Extract<OutboxEntry, { op: 'transact' }>;

/** How a queued write ended, for whoever waits on it. */
export type WriteResult = { ok: true; offset: number | null } | { ok: false; error: ErrorShape } | { conflict: true };

export interface WriteEvents {
  /** Sends a frame if the link is online; false when it was not sent. */
  send(message: ClientMessage): boolean;
  /** A user's queue changed (a write queued or ended): status and document views follow. */
  queueChanged(user: string, entry: OutboxEntry): void;
  /** One of this client's transactions committed at `version`. */
  committed(entry: TransactEntry, version: number): void;
  /** A transaction was rejected; `reportable`: nobody can run it again (list it as a conflict). */
  rejected(conflict: Conflict, entry: TransactEntry, reportable: boolean): void;
  /** Something the developer should know about (a write refused with nobody left to tell). */
  warn(message: string): void;
  /** A line for the inspector's log (never a write's data). */
  log?(level: 'info' | 'warn', message: string): void;
  /** Whether the tab is still attached (its caller can still hear how its write ended). */
  attached(tabId: string): boolean;
}

export interface Writer {
  identity: Identity;
  outbox: Outbox;
  /** Mirror of this identity's outbox, in sequence order. */
  queue: OutboxEntry[];
  /** The queued entries that carry a key (OutboxEntry.key), by key. */
  byKey: Map<string, OutboxEntry>;
}

/** Outcomes of keyed writes kept after they ended, at most: a tab resending one learns it is done. */
const SETTLED_KEYS_KEPT = 10_000;

/** Indexes the keyed entries of a queue, and names the transactions for later local reads. */
function indexKeys(writer: Writer, entries: readonly OutboxEntry[]): void {
  for (const entry of entries) {
    if (entry.key === undefined) continue;
    writer.byKey.set(entry.key, entry);
    if (entry.op === 'transact' && entry.key.startsWith('t:')) writer.outbox.remember(entry.key.slice(2), entry.seq);
  }
}

/** Who waits for a write: the tab that made it (its answer goes nowhere once the tab is gone). */
interface Waiter {
  tabId: string;
  /** The caller will not run the transaction again: a conflict is listed on the document. */
  final: boolean;
  settle: (result: WriteResult) => void;
}

const encoder = new TextEncoder();

/**
 * Whether a frame is over `limit` UTF-8 bytes (what the server counts, not JavaScript's UTF-16
 * length), and its size when it is. A UTF-16 code unit is at most 3 UTF-8 bytes, so most
 * frames are cleared without encoding them.
 */
function oversized(message: ClientMessage, limit: number): number | undefined {
  const bytes = frameBytes(message, limit);
  return bytes > limit ? bytes : undefined;
}

/**
 * The frame's size in UTF-8 bytes, or an upper bound of it (3 bytes per UTF-16 unit) when that
 * stays under `limit`: most frames are sized without encoding them.
 */
function frameBytes(message: ClientMessage, limit: number): number {
  const json = JSON.stringify(message);
  return json.length * 3 <= limit ? json.length * 3 : encoder.encode(json).length;
}

function writeFrame(entry: OutboxEntry): WriteMessage {
  return entry.op === 'publish'
    ? { type: 'publish', seq: entry.seq, channel: entry.channel, data: entry.data }
    : { type: 'transact', seq: entry.seq, doc: entry.doc, reads: entry.reads, writes: entry.writes };
}

/** Writes per user the inspector lists, at most (a burst of 10,000 would make every snapshot megabytes). */
export const INSPECTED_WRITES = 200;

/** What the inspector shows of a write, without its data. */
function describeWrite(entry: OutboxEntry): string {
  return entry.op === 'publish' ? `publish #${entry.seq} to ${entry.channel}` : `transaction #${entry.seq} on ${entry.doc}`;
}

export class Writes {
  /** Per queued write: how many times it was sent (in memory: a new worker counts from 0) and its frame's JSON length. */
  private readonly sends = new WeakMap<OutboxEntry, { attempts: number; bytes: number }>();
  private readonly writers = new Map<string, Promise<Writer>>();
  private readonly loaded = new Map<string, Writer>();
  private readonly waiters = new Map<string, Waiter>();
  /** How keyed writes ended, the newest SETTLED_KEYS_KEPT (see enqueue's `key`). */
  private readonly settledKeys = new Map<string, WriteResult>();
  /** The writer whose token is on the socket (set by `welcome`, cleared when offline). */
  private sender: Writer | undefined;
  private lastSent = 0;
  private maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  /** Writes per frame the server takes (its welcome's `maxWriteBatch`; 1 for a server that offers none). */
  private maxWriteBatch = 1;
  private resendTimer: ReturnType<typeof setTimeout> | undefined;
  private resendDelay = 0;
  /** Paces writes below the server's rate limit (set by `welcome`), so a long drain is never cut off with 4007. */
  private budget: { bucket: TokenBucket; refillMs: number } | undefined;
  private paceTimer: ReturnType<typeof setTimeout> | undefined;
  private pumpQueued = false;
  /** Tells the other workers of this origin (a deploy runs two) that the outbox grew. */
  private readonly peers: BroadcastChannel | undefined;
  private closed = false;
  private announcing = false;
  /** Counts connections, so that an `online()` outrun by a disconnect does not resume. */
  private connection = 0;

  constructor(
    private readonly url: string,
    private readonly db: () => Promise<Database>,
    private readonly events: WriteEvents,
    /** EngineDeps.fence. */
    private readonly fence?: string,
  ) {
    if (typeof BroadcastChannel !== 'undefined') {
      this.peers = new BroadcastChannel('tether-outbox');
      this.peers.onmessage = (event: MessageEvent<{ url: string; clientId: string }>) => {
        const sender = this.sender;
        if (!sender || event.data.url !== url || event.data.clientId !== sender.identity.clientId) return;
        void this.reload(sender).then(() => this.pump(), (error: unknown) => this.events.warn(`could not reload the outbox: ${String(error)}`));
      };
    }
  }

  /** Tells the other workers of the origin once per burst of writes, not once per write. */
  private announce(clientId: string): void {
    if (this.closed || !this.peers || this.announcing) return;
    this.announcing = true;
    setTimeout(() => {
      this.announcing = false;
      if (!this.closed) this.peers?.postMessage({ url: this.url, clientId });
    }, 0);
  }

  close(): void {
    this.closed = true;
    this.offline();
    this.peers?.close();
    for (const writer of this.loaded.values()) writer.outbox.close();
  }

  /** The outbox of `user` for this server, loaded once. */
  writer(user: string): Promise<Writer> {
    let writer = this.writers.get(user);
    if (!writer) {
      writer = (async () => {
        const identity = await clientIdentity(await this.db(), this.url, user);
        const outbox = new Outbox(this.db, this.url, identity, this.fence);
        const loadedWriter: Writer = { identity, outbox, queue: await outbox.list(), byKey: new Map() };
        indexKeys(loadedWriter, loadedWriter.queue);
        this.loaded.set(user, loadedWriter);
        return loadedWriter;
      })();
      // A failed load (IndexedDB unavailable) is tried again by the next caller.
      writer.catch(() => this.writers.delete(user));
      this.writers.set(user, writer);
    }
    return writer;
  }

  private sent(entry: OutboxEntry): { attempts: number; bytes: number } {
    let sent = this.sends.get(entry);
    if (!sent) this.sends.set(entry, (sent = { attempts: 0, bytes: JSON.stringify(writeFrame(entry)).length }));
    return sent;
  }

  /** The queued writes per user, oldest first (the first INSPECTED_WRITES of each), for the inspector. */
  inspect(): { user: string; count: number; writes: InspectedWrite[] }[] {
    return [...this.loaded].map(([user, writer]) => ({
      user,
      count: writer.queue.length,
      writes: writer.queue.slice(0, INSPECTED_WRITES).map((entry) => {
        const { attempts, bytes } = this.sent(entry);
        return { seq: entry.seq, kind: entry.op, target: entry.op === 'publish' ? entry.channel : entry.doc, createdAt: entry.createdAt, attempts, bytes };
      }),
    }));
  }

  /** The client id of `user`'s outbox (undefined until loaded). */
  clientIdOf(user: string | undefined): string | undefined {
    return user === undefined ? undefined : this.loaded.get(user)?.identity.clientId;
  }

  /** Writes wait for the server's answer (or to be sent): the link is watched closely meanwhile. */
  busy(): boolean {
    for (const writer of this.loaded.values()) if (writer.queue.length > 0) return true;
    return false;
  }

  /** `user`'s unacknowledged writes, in order ([] until loaded). */
  queueOf(user: string | undefined): readonly OutboxEntry[] {
    return user === undefined ? [] : (this.loaded.get(user)?.queue ?? []);
  }

  /** The first sequence `user` still holds unanswered, for the handshake (`firstSeq`). */
  async firstSeq(user: string): Promise<number> {
    return (await this.writer(user)).outbox.firstUnanswered();
  }

  /** Why a write cannot be queued (over the server's size limit, in UTF-8 bytes), or undefined. */
  refusal(write: NewWrite): ErrorShape | undefined {
    // A local read is sized as the `{ "seq": … }` it becomes.
    const sized: WriteOp =
      write.op === 'transact'
        ? { ...write, reads: Object.fromEntries(Object.entries(write.reads).map(([key, read]) => [key, typeof read === 'object' && 'local' in read ? { seq: Number.MAX_SAFE_INTEGER } : read])) }
        : write;
    const bytes = oversized(writeFrame({ ...sized, seq: Number.MAX_SAFE_INTEGER } as OutboxEntry), this.maxMessageBytes);
    if (bytes === undefined) return undefined;
    return { code: 'message_too_big', message: `the write is ${bytes} bytes (UTF-8); the server accepts at most ${this.maxMessageBytes}` };
  }

  /**
   * Checks, stores and sends a write; resolves with how it ended. `local` names a transaction
   * for later reads of the same tab (LocalRead); `onQueued` runs once it is stored and queued,
   * before anyone is told the queue changed. `key` names the write for its maker: the same key
   * again (a tab sending its writes again to a new leader tab) waits for the write already
   * stored, or gets how it ended, instead of storing it twice.
   */
  async enqueue(
    user: string,
    tabId: string,
    write: NewWrite,
    final = false,
    options: { local?: string; key?: string; onQueued?: (entry: OutboxEntry) => void } = {},
  ): Promise<WriteResult> {
    const refused = this.refusal(write);
    if (refused) return { ok: false, error: refused };
    let writer: Writer;
    let entry: OutboxEntry;
    try {
      writer = await this.writer(user);
      const key = options.key;
      const known = key === undefined ? undefined : (writer.byKey.get(key) ?? this.settledKeys.get(key));
      if (known !== undefined) {
        if (!('seq' in known)) return known; // it ended already
        options.onQueued?.(known);
        return new Promise<WriteResult>((resolve) => {
          if (this.events.attached(tabId)) this.waiters.set(`${known.clientId}:${known.seq}`, { tabId, final, settle: resolve });
        });
      }
      entry = await writer.outbox.add(write, options.local, key);
    } catch (error) {
      const failure: ErrorShape = error instanceof TetherError ? error.toJSON() : { code: 'internal', message: `the write could not be stored (${String(error)}); nothing was sent` };
      this.events.log?.('warn', `a ${write.op} was not stored: ${failure.code}: ${failure.message}`);
      return { ok: false, error: failure };
    }
    // A tab closed while its write was being stored has nobody to tell: no waiter, so the
    // outcome is reported on the document (a conflict) or warned (a refusal), as for any closed tab.
    const settled = new Promise<WriteResult>((resolve) => {
      if (this.events.attached(tabId)) this.waiters.set(`${entry.clientId}:${entry.seq}`, { tabId, final, settle: resolve });
    });
    writer.queue.push(entry);
    if (entry.key !== undefined) writer.byKey.set(entry.key, entry);
    this.announce(entry.clientId);
    options.onQueued?.(entry);
    this.events.queueChanged(user, entry);
    if (writer === this.sender) this.pumpSoon();
    return settled;
  }

  /** The handshake made for `user` (undefined: none, e.g. no token) was welcomed: resend all. */
  async online(user: string | undefined, welcome: Welcome): Promise<void> {
    const connection = ++this.connection;
    this.sender = undefined; // nothing is sent until the window below is ready
    this.maxMessageBytes = welcome.maxMessageBytes;
    this.maxWriteBatch = Math.max(1, Math.min(MAX_WRITE_BATCH, Math.floor(welcome.maxWriteBatch ?? 1)));
    // 80% of the average and half the burst: room is left for pings, calls and subscribes.
    const rate = welcome.rateLimit === undefined ? undefined : Math.max(1, welcome.rateLimit * 0.8);
    const burst = rate === undefined ? undefined : Math.max(1, rate);
    this.budget = rate === undefined ? undefined : { bucket: new TokenBucket(rate, burst!), refillMs: Math.ceil(1000 / rate) };
    // A frame of writes must fit the pacing bucket whole (a tiny rate limit means small frames).
    if (burst !== undefined) this.maxWriteBatch = Math.min(this.maxWriteBatch, Math.max(1, Math.floor(burst) * WRITES_PER_RATE_TOKEN));
    this.cancelResend();
    this.resendDelay = 0;
    const sender = user === undefined ? undefined : await this.writer(user);
    if (sender) {
      // The server may know later writes of this client id than this browser's counter does. First
      // thing after the welcome: continueAfter raises the in-memory floor at once, so a write made
      // while the window is reloaded is numbered after them too.
      const counted = sender.outbox.continueAfter(welcome.lastSeq).catch((error: unknown) => this.events.warn(`could not update the write counter: ${String(error)}`));
      await this.reload(sender);
      await counted;
    }
    if (connection !== this.connection) return; // offline again, or a newer welcome took over
    // Resend everything unanswered: the server answers writes it applied before with their
    // first outcome (offset, version, conflict or refusal), without applying them again.
    this.sender = sender;
    this.rewind();
    this.pump();
  }

  /**
   * Takes in the writes another worker of this origin stored in the shared outbox (during a
   * deploy the old and the new worker both run): they are sent from here too, deduplicated by
   * the server, so none waits for a worker that is about to die.
   */
  private async reload(writer: Writer): Promise<void> {
    const stored = await writer.outbox.list();
    const known = new Set(writer.queue.map((e) => e.seq));
    const added = stored.filter((e) => !known.has(e.seq));
    if (added.length === 0) return;
    writer.queue = [...writer.queue, ...added].sort((a, b) => a.seq - b.seq);
    indexKeys(writer, added);
    // Writes numbered below what this worker already sent (the other worker's, maybe answered on
    // its socket and not deleted yet) are sent from here too: else nobody answers them here and
    // they hold the window. The server answers the resends without applying anything twice.
    if (writer === this.sender && added[0]!.seq <= this.lastSent) this.lastSent = added[0]!.seq - 1;
    for (const entry of added) this.events.queueChanged(writer.identity.user, entry);
  }

  offline(): void {
    this.connection++;
    this.sender = undefined;
    this.cancelResend();
  }

  /** Forgets the waiters of a closed tab; its writes stay queued and are still sent. */
  forgetTab(tabId: string): void {
    for (const [key, waiter] of this.waiters) if (waiter.tabId === tabId) this.waiters.delete(key);
  }

  /** Routes an answer about a write; returns false for messages that are not about writes. */
  handle(message: ServerMessage): boolean {
    const sender = this.sender;
    switch (message.type) {
      case 'answers':
        for (const answer of message.answers) this.handle(answer);
        return true;
      case 'ack':
        if (sender) this.acknowledged(sender, message.seq, message.offset);
        return true;
      case 'conflict':
        if (sender) {
          this.settle(sender, message.seq, { conflict: true }, (canRetry, entry) => {
            this.events.log?.('info', `${describeWrite(entry)} conflicted: ${canRetry ? 'its tab runs it again' : 'listed on the document'}`);
            if (entry.op === 'transact') this.events.rejected(message, entry, !canRetry);
          });
          this.pump();
        }
        return true;
      case 'error':
        if (message.seq === undefined || message.id !== undefined) return false;
        if (sender) this.failed(sender, message.seq, { code: message.code, message: message.message });
        return true;
      default:
        return false;
    }
  }

  /** Pumps once the writes stored together have all been queued (they resolve one microtask each). */
  private pumpSoon(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  /**
   * Sends queued writes in order, keeping at most SEND_WINDOW unanswered: consecutive writes go
   * in `writes` frames of up to maxWriteBatch (when the server offers them) and maxMessageBytes.
   */
  private pump(): void {
    const writer = this.sender;
    if (!writer || this.resendTimer !== undefined) return;
    const first = writer.queue[0]?.seq ?? 0;
    let batch: WriteMessage[] = [];
    let entries: OutboxEntry[] = [];
    let batchBytes = 0;
    let batchLast = this.lastSent;
    // Room for the `{"type":"writes","writes":[…]}` envelope.
    const room = this.maxMessageBytes - 40;
    const flush = (): boolean => {
      if (batch.length === 0) return true;
      const cost = batch.length === 1 ? 1 : Math.ceil(batch.length / WRITES_PER_RATE_TOKEN);
      if (this.budget && !this.budget.bucket.take(cost)) {
        this.paceTimer ??= setTimeout(() => {
          this.paceTimer = undefined;
          this.pump();
        }, this.budget.refillMs * cost);
        return false;
      }
      if (!this.events.send(batch.length === 1 ? batch[0]! : { type: 'writes', writes: batch })) return false;
      for (const entry of entries) this.sent(entry).attempts++;
      this.lastSent = batchLast;
      batch = [];
      entries = [];
      batchBytes = 0;
      return true;
    };
    for (const entry of writer.queue) {
      if (entry.seq <= this.lastSent) continue;
      if (entry.seq - first >= SEND_WINDOW) {
        // The window is full: while writes are in flight, wait for room for a whole frame
        // rather than send a sliver per acknowledgement.
        if (batch.length < this.maxWriteBatch && this.lastSent >= first) return;
        break;
      }
      let frame: WriteMessage = writeFrame(entry);
      let bytes = frameBytes(frame, this.maxMessageBytes);
      // Queued under a larger limit than the server has now: withdraw it (the server records
      // the refusal and answers it), instead of a frame the server would close the socket on.
      if (bytes > this.maxMessageBytes) {
        frame = { type: 'skip', seq: entry.seq, reason: 'message_too_big', bytes };
        bytes = 80;
      }
      if (batch.length >= this.maxWriteBatch || (batch.length > 0 && batchBytes + bytes + 1 > room)) {
        if (!flush()) return;
      }
      batch.push(frame);
      entries.push(entry);
      batchBytes += bytes + 1;
      batchLast = entry.seq;
    }
    flush();
  }

  private acknowledged(writer: Writer, seq: number, offset: number | null): void {
    this.resendDelay = 0; // progress: the next trouble starts with a short pause again
    this.settle(writer, seq, { ok: true, offset }, (_, entry) => {
      if (entry.op === 'transact' && offset !== null) this.events.committed(entry, offset);
    });
    this.pump();
  }

  private failed(writer: Writer, seq: number, error: ErrorShape): void {
    if (error.code === 'out_of_order' || error.code === 'internal') return this.scheduleResend(writer, error.code);
    // Refused for good (forbidden, invalid, too big…): the server moved past it; its caller learns why.
    this.settle(writer, seq, { ok: false, error }, (canRetry, entry) => {
      if (!canRetry) this.events.warn(`a queued write to ${this.url} was refused: ${error.code}: ${error.message}`);
      else this.events.log?.('warn', `${describeWrite(entry)} was refused: ${error.code}: ${error.message}`);
    });
    this.pump();
  }

  /**
   * One resend for a whole window of errors (a window of 1,000 writes answers 1,000 times), after
   * a pause that grows while it repeats. The queue is reloaded from the outbox first: another
   * worker of this origin (a deploy) may have numbered writes this one never saw.
   */
  private scheduleResend(writer: Writer, reason: 'out_of_order' | 'internal'): void {
    if (this.resendTimer !== undefined) return;
    this.resendDelay = Math.min(RESEND_MAX_MS, Math.max(reason === 'internal' ? 1000 : RESEND_MIN_MS, this.resendDelay * 2));
    this.resendTimer = setTimeout(() => {
      void this.reload(writer)
        .catch((error: unknown) => this.events.warn(`could not reload the outbox: ${String(error)}`))
        .finally(() => {
          this.resendTimer = undefined;
          if (this.sender !== writer) return;
          this.rewind();
          this.pump();
        });
    }, this.resendDelay);
  }

  private cancelResend(): void {
    clearTimeout(this.resendTimer);
    this.resendTimer = undefined;
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
  }

  private rewind(): void {
    this.lastSent = (this.sender?.queue[0]?.seq ?? 1) - 1;
  }

  /**
   * Ends a queued write: out of the queue and the outbox, its waiter told. `before` runs first
   * (with whether the waiter can still act on it), so state it changes is visible to the waiter.
   */
  private settle(writer: Writer, seq: number, result: WriteResult, before?: (canRetry: boolean, entry: OutboxEntry) => void): void {
    const index = writer.queue.findIndex((e) => e.seq === seq);
    if (index === -1) return; // a second answer to a resent write
    const [entry] = writer.queue.splice(index, 1) as [OutboxEntry];
    writer.outbox.remove(seq);
    if (entry.key !== undefined) {
      writer.byKey.delete(entry.key);
      this.settledKeys.set(entry.key, result);
      for (const oldest of this.settledKeys.keys()) {
        if (this.settledKeys.size <= SETTLED_KEYS_KEPT) break;
        this.settledKeys.delete(oldest);
      }
    }
    const key = `${writer.identity.clientId}:${seq}`;
    const waiter = this.waiters.get(key);
    this.waiters.delete(key);
    before?.(waiter !== undefined && !waiter.final, entry);
    this.events.queueChanged(writer.identity.user, entry);
    waiter?.settle(result);
  }
}
