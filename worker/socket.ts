/**
 * One link to one Tether server: a reconnecting WebSocket, the protocol handshake and an
 * application heartbeat. A blackholed TCP connection is invisible to the browser (no close
 * event for minutes), so only the heartbeat can notice it and force a reconnect.
 */
import ReconnectingWebSocket, { type Options } from 'reconnecting-websocket';
import { PROTOCOL_VERSION } from '../protocol/constants.js';
import { decodeServerFrame } from '../protocol/codec.js';
import type { ClientMessage, ServerMessage } from '../protocol/messages.js';
import type { ErrorShape } from '../protocol/errors.js';
import type { ConnectionState } from './api.js';
import { TransportChoice, type TransportKind, type WebSocketClass } from './transport-choice.js';

export type { WebSocketClass } from './transport-choice.js';


export interface LinkEvents {
  /** The token and client id for the next handshake. */
  getHandshake: () => Promise<{ token: string | undefined; clientId: string | undefined; firstSeq: number | undefined; user: string | undefined }>;
  onState: (state: ConnectionState) => void;
  /** A frame from the server, validated by the protocol module. */
  onMessage: (message: ServerMessage) => void;
  /** Something went wrong that the developer should hear of (an invalid frame, ignored). */
  onInvalid: (error: ErrorShape) => void;
  /** The server refused the connection itself (bad token, wrong version): why, for the callers. */
  onRefused: (error: ErrorShape) => void;
  /** Something waits for the server (a call, a write): the link is checked at the fast pace. */
  busy: () => boolean;
  /** No call waits for an answer: a planned reconnect (back to a WebSocket) fails none. */
  quiet: () => boolean;
  /** A line for the inspector's log. */
  log?: (level: 'info' | 'warn', message: string) => void;
}

/** While a planned switch of transport waits for calls to be answered, look again this often. */
const QUIET_CHECK_MS = 50;

/** Wait this long for `welcome` after the socket opened before trying again. */
const HANDSHAKE_TIMEOUT_MS = 5000;

function uniform(min: number, max: number): number {
  return min + Math.random() * (max - min);
}

/**
 * reconnecting-websocket reads its delay options on every retry from the object it was
 * given, but draws no jitter. Getters make each retry's base and cap random, so that
 * thousands of clients cut at once do not come back in lockstep.
 */
export function reconnectOptions(socketClass?: WebSocketClass): Options {
  const options: Options = {
    ...(socketClass ? { WebSocket: socketClass } : {}),
    maxEnqueuedMessages: 0, // the worker's own queues are the only queues
    connectionTimeout: 4000,
    reconnectionDelayGrowFactor: 1.6,
    minUptime: 3000,
  };
  Object.defineProperties(options, {
    minReconnectionDelay: { enumerable: true, get: () => uniform(100, 1000) },
    maxReconnectionDelay: { enumerable: true, get: () => uniform(5000, 10000) },
  });
  return options;
}

export class ServerLink {
  state: ConnectionState = 'connecting';
  private readonly ws: ReconnectingWebSocket;
  private generation = 0;
  /**
   * Whose writes the hello that was actually sent on this connection carries (undefined: none).
   * A handshake abandoned for a newer one never sets it, so `welcome` always pairs with its hello.
   */
  sentUser: string | undefined;
  /** The clientId that hello carried (undefined: none). */
  sentClientId: string | undefined;
  /** `close()` was called: nothing may open the socket again (a late timer would revive it). */
  private closed = false;
  private heartbeatMs = 0;
  /** The pace while nothing waits for the server: idle connections cost the server next to nothing. */
  private idleHeartbeatMs = 0;
  /** When the link last became busy (0: idle): silence is counted from here, not from the last idle pong. */
  private busySince = 0;
  private lastHeard = 0;
  private lastPing = 0;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  private upgradeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set while a planned switch of transport closes the old socket (its close is not a loss). */
  private switching = false;
  private readonly transports: TransportChoice;
  /** Why the link last went down (close code and reason, or a timeout), for the inspector's log. */
  lastClose: string | undefined;

  constructor(
    readonly url: string,
    private readonly events: LinkEvents,
    socketClass?: WebSocketClass,
    allowed?: readonly TransportKind[],
  ) {
    this.transports = new TransportChoice({ WebSocket: socketClass, transports: allowed, upgrade: () => this.upgrade(), log: events.log });
    this.ws = new ReconnectingWebSocket(url, [], reconnectOptions(this.transports.socketClass));
    this.ws.addEventListener('open', () => void this.handshake());
    this.ws.addEventListener('message', (event) => this.receive(event.data));
    // Also fires for every failed attempt (code 1000, wasClean) — each one means "not online".
    // Not after close(): a long-polling socket reports its close at once, inside close().
    this.ws.addEventListener('close', (event) => {
      if (this.switching || this.closed) return;
      this.lastClose = `${this.transports.current} closed, code ${event.code}${event.reason ? ` (${event.reason})` : ''}`;
      this.lost();
    });
  }

  /** The transport carrying the connection while online; null otherwise. */
  get transport(): TransportKind | null {
    return this.state === 'online' ? this.transports.current : null;
  }

  /** The transport of the latest attempt (online or not). */
  get attempted(): TransportKind {
    return this.transports.current;
  }

  /** Sends a message if the link is online; returns false otherwise (nothing is queued). */
  send(message: ClientMessage): boolean {
    if (this.state !== 'online' || this.ws.readyState !== ReconnectingWebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Drops the connection and makes a new one (a new handshake, e.g. with another user's token). */
  reconnect(): void {
    if (this.closed) return;
    this.transports.ended(true);
    this.lastClose = "reconnecting with another user's token";
    this.lost();
    this.ws.reconnect(1000, 'reconnecting with another token');
  }

  close(): void {
    this.closed = true;
    this.generation++;
    this.stopTimers();
    this.transports.close();
    this.ws.close(1000, 'client closed');
  }

  private async handshake(): Promise<void> {
    if (this.closed) return;
    const generation = ++this.generation;
    this.lastHeard = Date.now();
    let token: string | undefined;
    let clientId: string | undefined;
    let firstSeq: number | undefined;
    let user: string | undefined;
    try {
      ({ token, clientId, firstSeq, user } = await this.events.getHandshake());
    } catch (error) {
      // Handshake without them: the server refuses it with a clear error if it needed a token.
      this.events.onInvalid({ code: 'internal', message: `could not prepare the handshake: ${String(error)}` });
    }
    if (generation !== this.generation || this.ws.readyState !== ReconnectingWebSocket.OPEN) return;
    const hello: ClientMessage = {
      type: 'handshake',
      v: PROTOCOL_VERSION,
      ...(token === undefined ? {} : { token }),
      ...(clientId === undefined ? {} : { clientId }),
      ...(clientId === undefined || firstSeq === undefined ? {} : { firstSeq }),
    };
    this.sentUser = clientId === undefined ? undefined : user;
    this.sentClientId = clientId;
    this.ws.send(JSON.stringify(hello));
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = setTimeout(() => {
      if (generation !== this.generation) return;
      this.events.log?.('warn', `no welcome within ${HANDSHAKE_TIMEOUT_MS} ms of the handshake: connecting again`);
      this.ws.reconnect();
    }, HANDSHAKE_TIMEOUT_MS);
  }

  private receive(data: unknown): void {
    if (typeof data !== 'string' || this.closed) return;
    this.lastHeard = Date.now();
    const decoded = decodeServerFrame(data);
    if (!decoded.ok) return this.events.onInvalid(decoded.error);
    const message = decoded.message;
    if (message.type === 'welcome') {
      clearTimeout(this.handshakeTimer);
      this.startHeartbeat(message.heartbeatMs, message.idleHeartbeatMs ?? message.heartbeatMs);
      this.transports.online();
      this.setState('online');
    }
    if (message.type === 'error' && message.id === undefined && this.state !== 'online') {
      this.events.onRefused({ code: message.code, message: message.message });
    }
    if (message.type !== 'pong') this.events.onMessage(message);
  }

  private startHeartbeat(intervalMs: number, idleMs: number): void {
    clearInterval(this.heartbeat);
    this.heartbeatMs = intervalMs;
    this.idleHeartbeatMs = Math.max(intervalMs, idleMs);
    this.busySince = 0;
    this.lastPing = Date.now();
    // Tick at half the interval so a dead link is noticed within ~2.5 intervals of silence.
    this.heartbeat = setInterval(() => this.beat(), Math.max(100, intervalMs / 2));
  }

  private beat(): void {
    const now = Date.now();
    // Busy: a blackholed link is noticed within ~2 fast intervals of the work starting. Idle:
    // within ~2 idle intervals, with a ping per idle interval instead of one per fast one.
    const busy = this.events.busy();
    if (!busy) this.busySince = 0;
    else if (this.busySince === 0) this.busySince = now;
    const interval = busy ? this.heartbeatMs : this.idleHeartbeatMs;
    if (now - Math.max(this.lastHeard, this.busySince) > interval * 2) {
      if (this.closed) return;
      this.lastClose = `heartbeat timeout: nothing heard from the server for ${now - Math.max(this.lastHeard, this.busySince)} ms`;
      this.lost();
      this.ws.reconnect(4000, 'heartbeat timeout');
      return;
    }
    if (now - this.lastPing >= interval || this.lastPing < this.busySince) {
      this.lastPing = now;
      this.send({ type: 'ping', t: now });
    }
  }

  /**
   * A WebSocket gets through again while on long polling: reconnect (over a WebSocket) once no
   * call waits for an answer, so the switch fails none.
   */
  private upgrade(): void {
    clearTimeout(this.upgradeTimer);
    if (this.closed || this.state !== 'online') return;
    if (!this.events.quiet()) {
      this.upgradeTimer = setTimeout(() => this.upgrade(), QUIET_CHECK_MS);
      return;
    }
    this.transports.ended(true);
    // Connecting, not offline: a call made during the switch waits for it instead of failing.
    this.generation++;
    this.stopTimers();
    this.setState('connecting');
    this.switching = true;
    try {
      this.ws.reconnect(1000, 'moving to a WebSocket'); // reports the old socket's close at once (ignored)
    } finally {
      this.switching = false;
    }
  }

  private lost(): void {
    this.generation++;
    this.stopTimers();
    this.transports.ended(false);
    this.setState('offline');
  }

  private stopTimers(): void {
    clearInterval(this.heartbeat);
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.upgradeTimer);
    this.heartbeat = undefined;
  }

  private setState(state: ConnectionState): void {
    if (state === this.state) return;
    this.state = state;
    this.events.onState(state);
  }
}
