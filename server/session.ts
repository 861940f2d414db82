/**
 * One client connection: the handshake, then dispatch by message type.
 * Every bad frame is answered with a typed error; the connection is closed only when the
 * peer cannot be a Tether client (no handshake, wrong version, bad token, a flood of junk),
 * breaks a limit (rate, slow reading), or its token expires.
 */
import { randomUUID } from 'node:crypto';
import { CloseCode, PROTOCOL_VERSION, type ErrorCode } from '../protocol/constants.js';
import { decodeClientFrames, encode, type Decoded } from '../protocol/codec.js';
import type { ErrorShape } from '../protocol/errors.js';
import type { ClientMessage, DocOpen, Handshake, HistoryRequest, PresenceSet, Publish, RpcRequest, ServerMessage, Subscribe, Transact } from '../protocol/messages.js';
import { MAX_WRITE_BATCH, WRITES_PER_RATE_TOKEN } from '../protocol/messages.js';
import type { Authenticate } from './auth.js';
import type { Logger } from './log.js';
import type { ServerFrameType, SessionMetrics } from './metrics.js';
import type { Broker } from './pubsub/broker.js';
import { CatchUp, type HeldBudget } from './pubsub/catch-up.js';
import { conflictFrame, docFrame, eventFrame, historyResultFrame } from './pubsub/frames.js';
import { grantAll, type Permissions } from './grants.js';
import type { Revocations } from './revocations.js';
import { presenceIdentity, type PresenceConnection, type PresenceHub } from './presence/presence.js';
import type { WriteQueue } from './pubsub/write-queue.js';
import { TokenBucket } from '../protocol/rate-limit.js';
import type { ProcedureRegistry } from './rpc/registry.js';
import type { EventStore, WriteOutcome, WriteRequest } from './storage/event-store.js';
import type { Transport } from './transports/transport.js';

export interface SessionLimits {
  /** Subscriptions one connection may hold. */
  maxSubscriptions: number;
  /** Frames per second a connection may send on average (bursts of 2×). */
  rateLimit: number;
  /** Bytes queued for a client that does not read before it is dropped. */
  maxBufferedBytes: number;
  /** RPC calls one connection may have running at once. */
  maxRpcInFlight: number;
}

export interface SessionDeps {
  log: Logger;
  authenticate: Authenticate;
  revocations: Revocations;
  procedures: ProcedureRegistry;
  store: EventStore;
  writes: WriteQueue;
  broker: Broker;
  presence: PresenceHub;
  heartbeatMs: number;
  idleHeartbeatMs: number;
  maxMessageBytes: number;
  limits: SessionLimits;
  metrics: SessionMetrics;
}

/** Malformed frames tolerated before the connection is closed with 4005. */
const MAX_BAD_FRAMES = 20;
/** The longest delay setTimeout takes without firing at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Events read from the history per page when a subscriber catches up… */
const HISTORY_PAGE = 500;
/** …and at most about this many bytes of them, so one page never holds much memory. */
const HISTORY_PAGE_BYTES = 256 * 1024;
/**
 * Catching up (history pages, document states) waits until the client has read what was sent
 * down to this many bytes: a reader that does not keep up slows its own catch-up, not the server.
 */
const CATCH_UP_LOW_WATER = 512 * 1024;

/**
 * Where the answer to a write goes: its own frame, or the `answers` of the `writes` frame it came
 * in. `error`: the answer is an error with that code (counted once it actually goes out).
 */
type Reply = (frame: string, type: ServerFrameType, error?: ErrorCode) => void;

export class Session {
  readonly id = randomUUID();
  user: string | null = null;
  lastHeard = Date.now();
  private clientId: string | undefined;
  private welcomed = false;
  /** Set while the handshake's token is verified: later frames wait for it, in order. */
  private handshaking: Promise<void> | undefined;
  private badFrames = 0;
  private closing = false;
  private permissions: Permissions = grantAll;
  private rpcInFlight = 0;
  /** Catch-ups run one at a time per connection (a storm of subscribes queues behind itself). */
  private catchUps: Promise<void> = Promise.resolve();
  private queuedCatchUps = 0;
  /** Live frames held by this connection's catch-ups, bounded like its send buffer. */
  private readonly held: HeldBudget;
  private expiry: ReturnType<typeof setTimeout> | undefined;
  private readonly subscriptions = new Map<string, () => void>();
  private readonly openDocs = new Map<string, () => void>();
  /** Channels whose presence this connection has joined (tabs > 0), and how to stop receiving their members. */
  private readonly presence = new Map<string, () => void>();
  private presenceIdentity: PresenceConnection | undefined;
  private readonly bucket: TokenBucket;
  private readonly aborter = new AbortController();
  private readonly log: Logger;

  constructor(
    private readonly transport: Transport,
    private readonly deps: SessionDeps,
  ) {
    this.log = deps.log.child({ session: this.id });
    this.bucket = new TokenBucket(deps.limits.rateLimit, deps.limits.rateLimit * 2);
    this.held = { used: 0, max: deps.limits.maxBufferedBytes };
    transport.onMessage((text, isBinary) => {
      this.receive(text, isBinary).catch((error: unknown) => this.failed(error));
    });
    transport.onClose(() => this.dispose());
  }

  get handshaken(): boolean {
    return this.welcomed;
  }

  close(code: CloseCode, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.deps.metrics.closed(code);
    this.transport.close(code, reason);
    // A dead peer never completes the closing handshake: do not wait ws's 30 s for it.
    setTimeout(() => this.transport.terminate(), 1000).unref();
  }

  /**
   * A message handler threw (a store or broker call failed outside the paths that answer for
   * themselves): never an unhandled rejection. The client reconnects and resends what it holds.
   */
  private failed(error: unknown): void {
    if (this.closing) return;
    this.log.error({ err: error }, 'session failed');
    this.sendError({ code: 'internal', message: 'the server failed to handle a message; the client reconnects' });
    this.close(CloseCode.InternalError, 'internal error');
  }

  private dispose(): void {
    this.closing = true;
    this.aborter.abort();
    clearTimeout(this.expiry);
    for (const unsubscribe of this.subscriptions.values()) unsubscribe();
    this.subscriptions.clear();
    for (const close of this.openDocs.values()) close();
    this.openDocs.clear();
    // Its presence lingers a while: a reconnect of the same browser is not seen as a leave and a join.
    for (const unwatch of this.presence.values()) unwatch();
    this.presence.clear();
    this.deps.presence.disconnect(this.id);
  }

  /** Sends a frame; false (and not counted) when the transport is closing or closed and it is dropped. */
  private sendFrame(frame: string, type: ServerFrameType): boolean {
    if (!this.transport.isOpen) return false;
    this.transport.send(frame);
    this.deps.metrics.frameSent(type);
    if (this.transport.bufferedAmount > this.deps.limits.maxBufferedBytes) {
      this.log.warn({ buffered: this.transport.bufferedAmount }, 'slow consumer dropped');
      this.close(CloseCode.SlowConsumer, 'slow consumer');
    }
    return true;
  }

  private send(message: ServerMessage): boolean {
    return this.sendFrame(encode(message), message.type);
  }

  private sendError(error: ErrorShape, about: { id?: number; seq?: number; channel?: string; doc?: string; presence?: string } = {}): void {
    if (this.send({ type: 'error', ...about, ...error })) this.deps.metrics.errorSent(error.code);
  }

  private async receive(text: string, isBinary: boolean): Promise<void> {
    this.lastHeard = Date.now();
    if (!this.bucket.take()) {
      this.sendError({ code: 'rate_limited', message: `more than ${this.deps.limits.rateLimit} frames per second` });
      return this.close(CloseCode.RateLimited, 'rate limit exceeded');
    }
    if (this.handshaking) await this.handshaking;
    if (isBinary) {
      this.deps.metrics.frameReceived('invalid');
      return this.refuse({ code: 'invalid_message', message: 'binary frames are not supported; send JSON text' });
    }
    const frame = decodeClientFrames(text);
    this.deps.metrics.frameReceived(frame.batch ? 'writes' : frame.decoded.ok ? frame.decoded.message.type : 'invalid');
    if (!frame.batch) return this.dispatch(frame.decoded);
    if (!this.welcomed) {
      this.sendError({ code: 'invalid_message', message: 'the first frame must be a handshake' });
      return this.close(CloseCode.HandshakeExpected, 'handshake expected');
    }
    // The frame paid one token; a batch pays one per WRITES_PER_RATE_TOKEN writes it carries.
    for (let paid = 1; paid < Math.ceil(frame.writes.length / WRITES_PER_RATE_TOKEN); paid++) {
      if (!this.bucket.take()) {
        this.sendError({ code: 'rate_limited', message: `more than ${this.deps.limits.rateLimit} frames per second (a frame of writes counts one per ${WRITES_PER_RATE_TOKEN} writes)` });
        return this.close(CloseCode.RateLimited, 'rate limit exceeded');
      }
    }
    // Each write as if it came alone, in order (each is submitted before the next is looked at);
    // their answers go back together, in one `answers` frame (they are stored in one commit).
    const answers: string[] = [];
    const errors: ErrorCode[] = [];
    await Promise.all(frame.writes.map((decoded) => this.dispatch(decoded, (answer, _type, error) => {
      answers.push(answer);
      if (error !== undefined) errors.push(error);
    })));
    if (answers.length > 0 && this.sendFrame(`{"type":"answers","answers":[${answers.join(',')}]}`, 'answers')) {
      for (const error of errors) this.deps.metrics.errorSent(error);
    }
  }

  /** Handles one decoded message (a frame, or one write of a `writes` frame: its answer goes to `reply`). */
  private dispatch(decoded: Decoded<ClientMessage>, reply?: Reply): Promise<void> | void {
    if (!decoded.ok) {
      // A malformed write still takes its place in the sequence, or every write behind it would wait forever.
      if (decoded.seq !== undefined && this.welcomed && this.clientId !== undefined) {
        // Not counted toward the junk limit: it is answered and recorded like any refused write
        // (closing would lose the answers, and every reconnect would resend the same frames).
        this.log.debug({ code: decoded.error.code, seq: decoded.seq }, 'refused write');
        const { code, message } = decoded.error;
        return this.write(decoded.seq, () => ({ kind: 'skip', clientId: this.clientId!, seq: decoded.seq!, user: this.user, code, message }), reply);
      }
      return this.refuse(decoded.error, decoded.id, decoded.presence);
    }
    const message: ClientMessage = decoded.message;
    if (!this.welcomed) {
      if (message.type !== 'handshake') {
        this.sendError({ code: 'invalid_message', message: 'the first frame must be a handshake' });
        return this.close(CloseCode.HandshakeExpected, 'handshake expected');
      }
      this.handshaking = this.handshake(message).finally(() => (this.handshaking = undefined));
      return this.handshaking;
    }
    switch (message.type) {
      case 'handshake':
        return this.sendError({ code: 'invalid_message', message: 'already handshaken' });
      case 'ping':
        this.send({ type: 'pong', t: message.t });
        return;
      case 'rpc':
        return this.rpc(message);
      case 'publish':
        return this.publish(message, reply);
      case 'subscribe':
        return this.subscribe(message);
      case 'unsubscribe':
        this.subscriptions.get(message.channel)?.();
        this.subscriptions.delete(message.channel);
        return;
      case 'transact':
        return this.transact(message, reply);
      case 'doc_open':
        return this.openDoc(message);
      case 'doc_close':
        this.openDocs.get(message.doc)?.();
        this.openDocs.delete(message.doc);
        return;
      case 'history':
        return this.history(message);
      case 'presence':
        return this.setPresence(message);
      case 'writes':
        return this.refuse({ code: 'invalid_message', message: 'a writes frame cannot carry another' });
      case 'skip': {
        const size = message.bytes === undefined ? '' : ` (${message.bytes} bytes)`;
        const text = `the write is larger${size} than this server accepts (${this.deps.maxMessageBytes} bytes); it was not sent`;
        return this.write(message.seq, (clientId) => ({ kind: 'skip', clientId, seq: message.seq, user: this.user, code: 'message_too_big', message: text }), reply);
      }
    }
  }

  private refuse(error: ErrorShape, id?: number, presence?: string): void {
    this.sendError(error, { ...(id === undefined ? {} : { id }), ...(presence === undefined ? {} : { presence }) });
    if (!this.welcomed) return this.close(CloseCode.HandshakeExpected, 'handshake expected');
    this.countBadFrame(error);
  }

  private countBadFrame(error: ErrorShape): void {
    this.badFrames++;
    this.log.debug({ code: error.code }, 'refused frame');
    if (this.badFrames > MAX_BAD_FRAMES) this.close(CloseCode.TooManyErrors, 'too many malformed frames');
  }

  private async handshake(message: Handshake): Promise<void> {
    if (message.v !== PROTOCOL_VERSION) {
      this.sendError({
        code: 'unsupported_version',
        message: `this server speaks protocol ${PROTOCOL_VERSION}, the client ${message.v}; update the SDK`,
      });
      return this.close(CloseCode.UnsupportedVersion, 'unsupported protocol version');
    }
    const identity = await this.deps.authenticate(message.token);
    if (!identity.ok) {
      this.sendError(identity.error);
      return this.close(CloseCode.Unauthorized, identity.error.message);
    }
    let revoked: boolean;
    let resync: Awaited<ReturnType<EventStore['handshake']>> | undefined;
    try {
      revoked = identity.user !== null && (await this.deps.revocations.refuses(identity.user, identity.issuedAt));
      if (!revoked && message.clientId !== undefined) resync = await this.deps.store.handshake(message.clientId, identity.user, message.firstSeq ?? 1);
    } catch (error) {
      // The events DB failed (down, or closed under a stopping server): the client retries later.
      if (!this.closing) this.log.error({ err: error }, 'handshake failed: the events DB did not answer');
      this.sendError({ code: 'unavailable', message: 'the server cannot reach its events DB; the client retries' });
      return this.close(CloseCode.InternalError, 'events DB unavailable');
    }
    if (revoked) {
      const text = 'this session was ended by the backend; sign in again for a new token';
      this.sendError({ code: 'unauthorized', message: text });
      return this.close(CloseCode.Unauthorized, 'session revoked');
    }
    let lastSeq = 0;
    if (message.clientId !== undefined && resync !== undefined) {
      if (resync === 'forbidden') {
        this.sendError({ code: 'forbidden', message: 'this clientId belongs to another user' });
        return this.close(CloseCode.Unauthorized, 'clientId of another user');
      }
      if (resync.movedFrom !== undefined) {
        // Only a restored backup or a replaced events DB gets here: say so, it explains missing events.
        this.log.warn(
          { clientId: message.clientId, from: resync.movedFrom, to: resync.lastSeq },
          'a client holds only writes after ones this events DB never stored (restored backup or new DB?): its sequence moves up',
        );
      }
      lastSeq = resync.lastSeq;
      this.clientId = message.clientId;
    }
    this.user = identity.user;
    this.permissions = identity.permissions;
    if (identity.expiresAt !== undefined) this.expireAt(identity.expiresAt);
    this.welcomed = true;
    this.log.debug({ user: this.user }, 'client connected');
    this.send({ type: 'welcome', v: PROTOCOL_VERSION, session: this.id, user: this.user, heartbeatMs: this.deps.heartbeatMs, idleHeartbeatMs: this.deps.idleHeartbeatMs, lastSeq, maxMessageBytes: this.deps.maxMessageBytes, rateLimit: this.deps.limits.rateLimit, maxRpcInFlight: this.deps.limits.maxRpcInFlight, maxWriteBatch: MAX_WRITE_BATCH });
  }

  /**
   * Disconnects at the token's expiry; the client reconnects and its token function is asked
   * for a fresh token. Timers overflow past 2^31-1 ms (24.8 days) and would fire at once, so a
   * longer wait is taken in steps.
   */
  private expireAt(expiresAt: number): void {
    const wait = expiresAt - Date.now();
    this.expiry = setTimeout(() => {
      if (Date.now() < expiresAt) return this.expireAt(expiresAt);
      this.sendError({ code: 'unauthorized', message: 'the token has expired' });
      this.close(CloseCode.Unauthorized, 'token expired');
    }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
    this.expiry.unref();
  }

  private async rpc({ id, method, args }: RpcRequest): Promise<void> {
    if (!this.permissions.call(method)) return this.sendError({ code: 'forbidden', message: `you may not call ${method}` }, { id });
    if (this.rpcInFlight >= this.deps.limits.maxRpcInFlight) {
      return this.sendError({ code: 'limit_exceeded', message: `at most ${this.deps.limits.maxRpcInFlight} calls may run at once per connection; wait for an answer` }, { id });
    }
    this.rpcInFlight++;
    let outcome;
    try {
      outcome = await this.deps.procedures.invoke(method, args, {
        user: this.user,
        session: this.id,
        signal: this.aborter.signal,
      });
    } finally {
      this.rpcInFlight--;
    }
    if (!outcome.ok) return this.sendError(outcome.error, { id });
    let frame: string;
    try {
      frame = encode({ type: 'result', id, value: outcome.value });
    } catch {
      return this.sendError({ code: 'internal', message: `procedure ${method} returned a value that is not JSON` }, { id });
    }
    this.sendFrame(frame, 'result');
  }

  private publish({ seq, channel, data }: Publish, reply?: Reply): Promise<void> {
    return this.write(
      seq,
      (clientId) =>
        this.permissions.publish(channel)
          ? { kind: 'publish', channel, data: JSON.stringify(data) ?? 'null', clientId, seq, user: this.user }
          : this.forbidden(clientId, seq, `you may not publish to ${channel}`),
      reply,
    );
  }

  private transact({ seq, doc, reads, writes }: Transact, reply?: Reply): Promise<void> {
    if (!this.permissions.writeDoc(doc)) return this.write(seq, (clientId) => this.forbidden(clientId, seq, `you may not change ${doc}`), reply);
    const values: Record<string, string | null> = {};
    for (const [key, value] of Object.entries(writes)) values[key] = value === null ? null : (JSON.stringify(value) ?? null);
    return this.write(seq, (clientId) => ({ kind: 'transact', doc, reads, writes: values, clientId, seq, user: this.user }), reply);
  }

  /** A forbidden write still takes its place in the sequence, so it never blocks the queue. */
  private forbidden(clientId: string, seq: number, message: string): WriteRequest {
    return { kind: 'skip', clientId, seq, user: this.user, code: 'forbidden', message };
  }

  /**
   * Applies one queued write exactly once and answers it, through `reply` (the socket, or the
   * answers of a `writes` frame).
   */
  private async write(seq: number, request: (clientId: string) => WriteRequest, reply: Reply = this.reply): Promise<void> {
    const clientId = this.clientId;
    const error = (e: ErrorShape) => reply(encode({ type: 'error', seq, ...e }), 'error', e.code);
    if (clientId === undefined) return error({ code: 'invalid_message', message: 'writes need a clientId in the handshake' });
    let outcome: WriteOutcome;
    try {
      outcome = await this.deps.writes.submit(request(clientId));
    } catch (cause) {
      this.log.error({ err: cause }, 'write failed');
      return error({ code: 'internal', message: 'the server could not store the write; it will be retried' });
    }
    switch (outcome.status) {
      case 'stored':
        return reply(encode({ type: 'ack', seq, offset: outcome.event.offset }), 'ack');
      case 'committed':
        return reply(encode({ type: 'ack', seq, offset: outcome.change.version }), 'ack');
      case 'duplicate':
        return reply(encode({ type: 'ack', seq, offset: outcome.offset }), 'ack');
      case 'conflict':
        return reply(conflictFrame(seq, outcome.doc, outcome.version, outcome.current), 'conflict');
      case 'refused':
        return error({ code: outcome.code, message: outcome.message });
      case 'out_of_order':
        return error({ code: 'out_of_order', message: `expected write ${outcome.expected}, got ${seq}` });
      case 'forbidden':
        return error({ code: 'forbidden', message: 'this clientId belongs to another user' });
      case 'idempotency_mismatch':
        return error({ code: 'internal', message: 'unexpected outcome for a client write' });
    }
  }

  /** Answers a write on its own frame. */
  private readonly reply: Reply = (frame, type, error) => {
    if (this.sendFrame(frame, type) && error !== undefined) this.deps.metrics.errorSent(error);
  };

  private async openDoc({ doc, since, epoch }: DocOpen): Promise<void> {
    if (!this.permissions.readDoc(doc)) return this.sendError({ code: 'forbidden', message: `you may not open ${doc}` }, { doc });
    this.openDocs.get(doc)?.();
    this.openDocs.delete(doc);
    if (this.openDocs.size >= this.deps.limits.maxSubscriptions) {
      return this.sendError({ code: 'limit_exceeded', message: `at most ${this.deps.limits.maxSubscriptions} open documents per connection` }, { doc });
    }
    // Listen first, hold changes while the state is read, so that none falls in between.
    const feed = this.feed('doc');
    const subscription = this.deps.broker.subscribeDoc(doc, (change, frame) => feed.live(change.version, frame));
    const close = () => {
      subscription.unsubscribe();
      feed.discard();
    };
    this.openDocs.set(doc, close);
    return this.queueCatchUp((error) => {
      close();
      this.openDocs.delete(doc);
      this.sendError(error, { doc });
    }, async () => {
      if (this.openDocs.get(doc) !== close) return;
      try {
        await this.drained();
        await subscription.ready;
        const state = await this.deps.store.document(doc, since, epoch);
        if (this.openDocs.get(doc) !== close || this.closing) return;
        this.sendFrame(docFrame(state, state.full, state.epoch), 'doc');
        feed.skipTo(state.version);
        feed.release();
      } catch (error) {
        close();
        this.openDocs.delete(doc);
        this.log.error({ err: error, doc }, 'doc_open failed');
        this.sendError({ code: 'internal', message: `could not read ${doc}` }, { doc });
      }
    });
  }

  /** Where live frames wait while the past is read; more than the send buffer bound of them is a slow consumer. */
  private feed(type: 'event' | 'doc'): CatchUp {
    return new CatchUp((frame) => this.sendFrame(frame, type), this.held, () => {
      this.log.warn('slow consumer dropped: live frames held during a catch-up passed the bound');
      this.close(CloseCode.SlowConsumer, 'slow consumer');
    });
  }

  /**
   * Runs a catch-up (reading history or a document state) after the connection's earlier ones,
   * so that a storm of subscribes reads one page at a time; refuses when too many wait.
   */
  private queueCatchUp(refuse: (error: ErrorShape) => void, work: () => Promise<void>): Promise<void> {
    // Room for every subscription and every open document to catch up at once after a reconnect,
    // plus history reads of tabs coming back; a storm beyond waits for nothing.
    const max = this.deps.limits.maxSubscriptions * 3;
    if (this.queuedCatchUps >= max) {
      refuse({ code: 'limit_exceeded', message: `more than ${max} subscribes, document opens and history reads wait on this connection; wait for their answers` });
      return Promise.resolve();
    }
    this.queuedCatchUps++;
    const run = this.catchUps.then(() => (this.closing ? undefined : work())).finally(() => this.queuedCatchUps--);
    this.catchUps = run.catch(() => undefined);
    return run;
  }

  /**
   * Resolves once the client has read what was sent down to the low-water mark, or the connection
   * ends; a stalled reader costs nothing while it stalls.
   */
  private async drained(): Promise<void> {
    while (!this.closing && this.transport.isOpen && this.transport.bufferedAmount > CATCH_UP_LOW_WATER) {
      await this.transport.waitForDrain(CATCH_UP_LOW_WATER);
    }
  }

  /**
   * Joins, updates or leaves (tabs 0) the channel's presence. Joining needs the channel's subscribe
   * grant and counts against maxSubscriptions (presence channels apart from subscriptions); a
   * joined connection receives the channel's members after every change, its own presence included.
   */
  private setPresence({ channel, tabs, state }: PresenceSet): void {
    // A frame handled after the close would join for ever: nothing would make it linger.
    if (this.closing) return;
    const identity = (this.presenceIdentity ??= presenceIdentity({ id: this.id, user: this.user, clientId: this.clientId }));
    const unwatch = this.presence.get(channel);
    if (tabs === 0) {
      if (unwatch === undefined) return; // not there: nothing to leave
      unwatch();
      this.presence.delete(channel);
      return this.deps.presence.set(identity, channel, 0, undefined);
    }
    if (!this.permissions.subscribe(channel)) {
      return this.sendError({ code: 'forbidden', message: `you may not join the presence of ${channel}` }, { presence: channel });
    }
    if (unwatch === undefined && this.presence.size >= this.deps.limits.maxSubscriptions) {
      return this.sendError({ code: 'limit_exceeded', message: `at most ${this.deps.limits.maxSubscriptions} presence channels per connection` }, { presence: channel });
    }
    this.deps.presence.set(identity, channel, tabs, state);
    if (unwatch === undefined) this.presence.set(channel, this.deps.presence.watch(channel, (frame) => this.sendFrame(frame, 'presence')));
  }

  private async history({ id, channel, since, limit }: HistoryRequest): Promise<void> {
    if (!this.permissions.subscribe(channel)) return this.sendError({ code: 'forbidden', message: `you may not read ${channel}` }, { id });
    return this.queueCatchUp((error) => this.sendError(error, { id }), async () => {
      try {
        await this.drained();
        const page = await this.deps.store.history(channel, since, limit, HISTORY_PAGE_BYTES);
        if (this.closing) return;
        if (this.sendFrame(historyResultFrame(id, page), 'result')) this.deps.metrics.catchUpEvents('history', page.events.length);
      } catch (error) {
        this.log.error({ err: error, channel }, 'history failed');
        this.sendError({ code: 'internal', message: `could not read the history of ${channel}` }, { id });
      }
    });
  }

  private async subscribe({ channel, since }: Subscribe): Promise<void> {
    if (!this.permissions.subscribe(channel)) {
      return this.sendError({ code: 'forbidden', message: `you may not subscribe to ${channel}` }, { channel });
    }
    this.subscriptions.get(channel)?.(); // a second subscribe to a channel replaces the first
    this.subscriptions.delete(channel);
    if (this.subscriptions.size >= this.deps.limits.maxSubscriptions) {
      return this.sendError(
        { code: 'limit_exceeded', message: `at most ${this.deps.limits.maxSubscriptions} subscriptions per connection` },
        { channel },
      );
    }
    // Listen first and hold live events while the history is read, so none falls in between.
    const feed = this.feed('event');
    const subscription = this.deps.broker.subscribe(channel, (event, frame) => feed.live(event.offset, frame));
    const unsubscribe = () => {
      subscription.unsubscribe();
      feed.discard();
    };
    this.subscriptions.set(channel, unsubscribe);
    // Replaced or unsubscribed meanwhile, or the connection is closing: stop reading.
    const abandoned = () => this.subscriptions.get(channel) !== unsubscribe || this.closing;
    const refuse = (error: ErrorShape) => {
      unsubscribe();
      this.subscriptions.delete(channel);
      this.sendError(error, { channel });
    };
    // From the head there is nothing to catch up (one small read): it does not wait in the queue,
    // so a reconnect's plain subscribes go live at once instead of holding their live events.
    const run = (work: () => Promise<void>) => (since === undefined ? work() : this.queueCatchUp(refuse, work));
    return run(async () => {
      if (abandoned()) return;
      try {
        await subscription.ready;
        if (abandoned()) return;
        let page = await this.deps.store.history(channel, since, HISTORY_PAGE, HISTORY_PAGE_BYTES);
        if (abandoned()) return;
        // `reset` replaces `subscribed` when events were lost: it says after which offset delivery resumes.
        this.send(
          page.reset
            ? { type: 'reset', channel, epoch: page.epoch, offset: page.from }
            : { type: 'subscribed', channel, epoch: page.epoch, offset: page.head },
        );
        feed.skipTo(page.from);
        const head = page.head;
        while (since !== undefined || page.reset) {
          // Counted as they go out: not those the client already has, nor those a closed socket drops.
          let sent = 0;
          for (const event of page.events) if (feed.deliver(event.offset, eventFrame(channel, event.offset, event.data, event.publisher))) sent++;
          this.deps.metrics.catchUpEvents('subscribe', sent);
          // Up to the head seen at the start; later events come live.
          if (page.events.length === 0 || feed.position >= head) break;
          await this.drained();
          if (abandoned()) return;
          page = await this.deps.store.history(channel, { offset: feed.position, epoch: page.epoch }, HISTORY_PAGE, HISTORY_PAGE_BYTES);
          if (abandoned()) return;
          // Retention overtook a slow catch-up: say so, as at the start — never a silent gap.
          if (page.reset) {
            this.send({ type: 'reset', channel, epoch: page.epoch, offset: page.from });
            feed.skipTo(page.from);
          }
        }
        feed.release();
      } catch (error) {
        unsubscribe();
        this.subscriptions.delete(channel);
        this.log.error({ err: error, channel }, 'subscribe failed');
        this.sendError({ code: 'internal', message: `could not read the history of ${channel}` }, { channel });
      }
    });
  }
}
