/**
 * Which transport the next connection attempt uses: a WebSocket, or long polling where
 * WebSockets do not get through (a proxy refuses the upgrade, or kills the socket at once) —
 * and back to the WebSocket as soon as one gets through again.
 *
 * Switching is a reconnect, and a reconnect loses and repeats nothing (the outbox is resent
 * under its sequence numbers, subscriptions resume from their offsets), so the guarantees do not
 * depend on the transport.
 */
import { httpReachable, LongPollingSocket } from './long-polling.js';

import type { TransportKind } from './api.js';

export type { TransportKind } from './api.js';

/** A WebSocket class (the browser's, or `ws` in Node tests). */
export type WebSocketClass = new (url: string, protocols?: string | string[]) => WebSocket;

/** WebSocket attempts in a row that never came (or stayed) online before long polling is tried. */
const FAILURES_BEFORE_FALLBACK = 2;
/** A WebSocket that closes sooner than this after coming online counts as killed by the network. */
const STABLE_MS = 5000;
/** While on long polling, a WebSocket is tried on the side after this long, growing… */
const PROBE_FIRST_MS = 3000;
/** …up to this. */
const PROBE_MAX_MS = 30_000;
/** A probe socket must stay open this long to count (a proxy may kill it right after the upgrade). */
const PROBE_HOLD_MS = 1000;

export interface TransportChoiceOptions {
  /** The WebSocket class. @default the global WebSocket */
  WebSocket?: WebSocketClass | undefined;
  /** Which transports may be used, in order of preference. @default both */
  transports?: readonly TransportKind[] | undefined;
  /** A WebSocket got through while on long polling: reconnect now (it will be a WebSocket). */
  upgrade: () => void;
  /** Whether the server answers plain HTTP now. @default a `check` request (long-polling.ts) */
  reachable?: (url: string) => Promise<boolean>;
  /** A line for the inspector's log (a switch of transport). */
  log?: ((level: 'info' | 'warn', message: string) => void) | undefined;
}

export class TransportChoice {
  /** The kind of the socket last created (the one in use while online). */
  current: TransportKind;
  private prefer: TransportKind;
  private webSocketFailures = 0;
  private onlineSince = 0;
  private attemptEnded = false;
  /** The URL of the last attempt: probes and reachability checks go there. */
  private lastUrl: string | undefined;
  /** Attempts made so far, and the last one whose failure was counted (checks answer out of order). */
  private attempts = 0;
  private failuresCounted = 0;
  private probeDelay = PROBE_FIRST_MS;
  private probeTimer: ReturnType<typeof setTimeout> | undefined;
  private probe: WebSocket | undefined;
  private closed = false;
  private readonly WebSocketImpl: WebSocketClass | undefined;
  private readonly allowed: readonly TransportKind[];

  /** The class handed to reconnecting-websocket: each `new` makes a socket of the chosen kind. */
  readonly socketClass: WebSocketClass;

  constructor(private readonly options: TransportChoiceOptions) {
    this.WebSocketImpl = options.WebSocket ?? (typeof WebSocket === 'undefined' ? undefined : WebSocket);
    this.allowed = options.transports?.length ? options.transports : ['websocket', 'long-polling'];
    this.prefer = this.allowed[0]!;
    this.current = this.prefer;
    const create = (url: string): WebSocket => {
      this.current = this.next();
      this.onlineSince = 0;
      this.attemptEnded = false;
      this.attempts++;
      this.lastUrl = url;
      if (this.current === 'long-polling' || !this.WebSocketImpl) {
        this.current = 'long-polling';
        return new LongPollingSocket(url) as unknown as WebSocket;
      }
      return new this.WebSocketImpl(url);
    };
    // A constructor that returns the socket it chose; the constants make it look like a WebSocket class.
    const SocketClass = function (url: string) {
      return create(url);
    };
    this.socketClass = Object.assign(SocketClass, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 }) as unknown as WebSocketClass;
  }

  private next(): TransportKind {
    if (!this.allowed.includes('long-polling')) return 'websocket';
    if (!this.allowed.includes('websocket') || !this.WebSocketImpl) return 'long-polling';
    return this.prefer;
  }

  /** The link came online (its handshake was answered) over the current transport. */
  online(): void {
    this.onlineSince = Date.now();
    if (this.current === 'long-polling') {
      this.prefer = 'long-polling';
      // Only where WebSockets are preferred (`transports` lists them first) is one tried on the side.
      if (this.allowed[0] === 'websocket' && this.WebSocketImpl) this.scheduleProbe();
    } else {
      this.stopProbe();
    }
  }

  /**
   * The current attempt ended: it failed, or its connection ended (`planned`: the link closed it
   * itself, e.g. to use another token, which says nothing about the network). Counted once per attempt.
   */
  ended(planned: boolean): void {
    if (this.attemptEnded) return;
    this.attemptEnded = true;
    if (planned) {
      this.onlineSince = 0;
      this.stopProbe();
      return;
    }
    const stable = this.onlineSince > 0 && Date.now() - this.onlineSince >= STABLE_MS;
    this.onlineSince = 0;
    this.stopProbe();
    if (this.current === 'websocket') {
      if (stable) {
        this.webSocketFailures = 0;
        // Only a WebSocket that lasted proves the network lets them through: probes start over.
        this.probeDelay = PROBE_FIRST_MS;
      } else if (this.allowed.includes('long-polling')) {
        // A failure counts only if plain HTTP reaches the server meanwhile: WebSockets are blocked
        // here. A network that is down (or a server that is) never sends the link to long polling,
        // so after an outage it comes back on a WebSocket.
        const url = this.lastUrl;
        const attempt = this.attempts;
        void (url === undefined ? Promise.resolve(false) : (this.options.reachable ?? httpReachable)(url)).then((reachable) => {
          if (!reachable || this.closed || this.failuresCounted >= attempt) return;
          this.failuresCounted = attempt;
          if (++this.webSocketFailures >= FAILURES_BEFORE_FALLBACK && this.prefer !== 'long-polling') {
            this.prefer = 'long-polling';
            this.options.log?.('warn', 'WebSockets fail while plain HTTP reaches the server (blocked by a proxy?): the next attempts use long polling');
          }
        });
      }
    } else if (!stable) {
      // Long polling did not work either (the network is down, or the server): give the
      // WebSocket a turn, so whichever gets through first when it comes back wins.
      if (this.prefer !== 'websocket' && this.allowed.includes('websocket')) this.options.log?.('info', 'long polling failed too: the next attempt uses a WebSocket');
      this.prefer = 'websocket';
    }
  }

  close(): void {
    this.closed = true;
    this.stopProbe();
  }

  private scheduleProbe(): void {
    if (this.closed || this.probeTimer !== undefined || this.probe) return;
    const delay = this.probeDelay * (0.8 + Math.random() * 0.4);
    this.probeDelay = Math.min(PROBE_MAX_MS, this.probeDelay * 1.5);
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      this.runProbe();
    }, delay);
  }

  /** Opens a WebSocket on the side (no handshake); if it opens and stays open, moves back to WebSockets. */
  private runProbe(): void {
    const WebSocketImpl = this.WebSocketImpl;
    if (this.closed || this.current !== 'long-polling' || this.onlineSince === 0 || !WebSocketImpl) return;
    const url = this.lastUrl;
    if (url === undefined) return;
    let probe: WebSocket;
    try {
      probe = new WebSocketImpl(url);
    } catch {
      return this.scheduleProbe();
    }
    this.probe = probe;
    let hold: ReturnType<typeof setTimeout> | undefined;
    const failed = () => {
      clearTimeout(hold);
      if (this.probe !== probe) return;
      this.probe = undefined;
      if (this.onlineSince > 0 && this.current === 'long-polling') this.scheduleProbe();
    };
    probe.addEventListener('open', () => {
      hold = setTimeout(() => {
        if (this.probe !== probe) return;
        probe.removeEventListener('close', failed);
        probe.close(1000, 'transport probe');
        this.probe = undefined;
        this.prefer = 'websocket';
        // On probation: one failure of the WebSocket (a proxy that kills it after a few seconds)
        // is enough to go back, and the next probe waits longer (the delay grows until a
        // WebSocket stays up), so a network like that does not make the link flap.
        this.webSocketFailures = FAILURES_BEFORE_FALLBACK - 1;
        this.options.log?.('info', 'a WebSocket got through again: moving back from long polling');
        this.options.upgrade();
      }, PROBE_HOLD_MS);
    });
    probe.addEventListener('close', failed);
    // A refused probe also reports an error; its close says the same (and `ws` throws on an unheard error).
    probe.addEventListener('error', () => undefined);
  }

  private stopProbe(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    if (this.probe) {
      const probe = this.probe;
      this.probe = undefined;
      probe.close(1000, 'transport probe no longer needed');
    }
  }
}
