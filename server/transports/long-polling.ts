/**
 * One long-polling session: the server's frames wait in a numbered queue until a poll
 * acknowledges them, the client's frames come in numbered send requests that are taken once.
 * HTTP itself is the endpoint's business (long-polling-endpoint.ts); this class keeps the state
 * that makes a lost, replayed or duplicated request harmless. See PROTOCOL.md "Long polling".
 */
import type { Transport } from './transport.js';

/** A poll answer: frames numbered `from`, `from + 1`, …, then the close if the session ended. */
export interface PollAnswer {
  from: number;
  frames: string[];
  close?: { code: number; reason: string };
}

/** What became of a send request. */
export type SendOutcome =
  | { status: 'taken' }
  /** Its number was taken before: acknowledged again, not processed again. */
  | { status: 'duplicate' }
  /** Its number skips ahead: requests were lost, the session cannot go on. */
  | { status: 'out_of_order'; expected: number }
  /** A frame is larger than the limit (the WebSocket's maxPayload). */
  | { status: 'too_big'; bytes: number }
  | { status: 'closed'; close: { code: number; reason: string } };

/** What became of a poll: held or answered through its callback, or refused. */
export type PollOutcome = { status: 'accepted'; cancel: () => void } | { status: 'out_of_order'; sent: number };

export interface LongPollingOptions {
  /** How long a poll is held when there is nothing to send. */
  pollMs: number;
  /** Largest frame the client may send, in UTF-8 bytes. */
  maxMessageBytes: number;
  /** A poll answer carries frames up to about this many bytes (at least one frame). @default 1 MiB */
  maxAnswerBytes?: number;
}

interface Queued {
  n: number;
  text: string;
  bytes: number;
}

interface HeldPoll {
  answer: (answer: PollAnswer) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** The close code a session ended by `terminate` reports (no closing handshake, as a cut WebSocket). */
const ABNORMAL_CLOSURE = 1006;

export class LongPollingTransport implements Transport {
  readonly kind = 'long-polling';
  /** Frames not yet acknowledged, oldest first, numbered from 1 per session. */
  private readonly queue: Queued[] = [];
  private sent = 0;
  private acked = 0;
  private buffered = 0;
  /** The number the next send request must carry (0 first). */
  private nextSend = 0;
  private held: HeldPoll | undefined;
  private flushing = false;
  private ended: { code: number; reason: string } | undefined;
  /** When the session ended (the endpoint forgets it some time after). */
  endedAt: number | undefined;
  /** When a poll was last held or answered: a session without one for too long is dead. */
  private lastPoll = Date.now();
  /** The client cut its held poll (its request closed unanswered) and has not polled since. */
  private pollCut = false;
  private readonly messageListeners: ((text: string, isBinary: boolean) => void)[] = [];
  private readonly closeListeners: (() => void)[] = [];
  private drainWaiters: { lowWater: number; resolve: () => void }[] = [];
  private readonly maxAnswerBytes: number;

  constructor(private readonly options: LongPollingOptions) {
    this.maxAnswerBytes = options.maxAnswerBytes ?? 1024 * 1024;
  }

  get isOpen(): boolean {
    return this.ended === undefined;
  }

  get bufferedAmount(): number {
    return this.buffered;
  }

  /** Whether a poll is held now. */
  get polling(): boolean {
    return this.held !== undefined;
  }

  /** Milliseconds since a poll was last held or answered (0 while one is held). */
  silentFor(now: number): number {
    return this.held ? 0 : now - this.lastPoll;
  }

  /** Whether the last poll was cut by the client (its browser's last tab closed, or a blip it retries at once) with none since. */
  get cut(): boolean {
    return this.pollCut && !this.held;
  }

  send(frame: string): void {
    if (this.ended) return;
    const bytes = Buffer.byteLength(frame, 'utf8');
    this.queue.push({ n: ++this.sent, text: frame, bytes });
    this.buffered += bytes;
    // Answered on the next turn of the event loop: frames sent together go in one answer.
    if (this.held && !this.flushing) {
      this.flushing = true;
      setImmediate(() => {
        this.flushing = false;
        if (this.held && this.queue.length > 0) this.answerHeld();
      });
    }
  }

  close(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = { code, reason };
    this.endedAt = Date.now();
    // The frames queued before the close go first, the close after them.
    if (this.held) this.answerHeld();
    for (const waiter of this.drainWaiters.splice(0)) waiter.resolve();
    // Asynchronous, like a WebSocket's close event: never re-entered from inside close().
    process.nextTick(() => {
      for (const listener of this.closeListeners.splice(0)) listener();
    });
  }

  terminate(): void {
    this.close(ABNORMAL_CLOSURE, 'connection terminated');
  }

  onMessage(listener: (text: string, isBinary: boolean) => void): void {
    this.messageListeners.push(listener);
  }

  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  waitForDrain(lowWater: number): Promise<void> {
    if (this.ended || this.buffered <= lowWater) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push({ lowWater, resolve }));
  }

  /**
   * A send request numbered `n` with its frames. Taken once: a number already taken is a retry
   * (its answer was lost) and is acknowledged without handing its frames on again.
   */
  receive(n: number, frames: readonly string[]): SendOutcome {
    if (this.ended) return { status: 'closed', close: this.ended };
    if (n < this.nextSend) return { status: 'duplicate' };
    if (n > this.nextSend) return { status: 'out_of_order', expected: this.nextSend };
    // Checked before any frame is handed on: a request is refused whole, not half processed.
    for (const frame of frames) {
      const bytes = Buffer.byteLength(frame, 'utf8');
      if (bytes > this.options.maxMessageBytes) return { status: 'too_big', bytes };
    }
    this.nextSend++;
    for (const frame of frames) {
      for (const listener of this.messageListeners) listener(frame, false);
    }
    return { status: 'taken' };
  }

  /**
   * A poll that has received every frame up to `ack`: those are forgotten, and `answer` gets the
   * frames after them at once, or when one is queued, or empty after pollMs. A poll held before
   * is answered empty (superseded). After the session ended it answers at once, with the close.
   */
  poll(ack: number, answer: (answer: PollAnswer) => void): PollOutcome {
    if (ack > this.sent) return { status: 'out_of_order', sent: this.sent };
    this.acknowledge(ack);
    const previous = this.held;
    if (previous) {
      this.held = undefined;
      clearTimeout(previous.timer);
      previous.answer({ from: this.acked + 1, frames: [] });
    }
    this.lastPoll = Date.now();
    this.pollCut = false;
    if (this.queue.length > 0 || this.ended) {
      answer(this.take());
      return { status: 'accepted', cancel: () => {} };
    }
    const held: HeldPoll = {
      answer,
      timer: setTimeout(() => {
        if (this.held !== held) return;
        this.held = undefined;
        this.lastPoll = Date.now();
        answer({ from: this.acked + 1, frames: [] });
      }, this.options.pollMs),
    };
    held.timer.unref();
    this.held = held;
    // The client went away before an answer (its request was cut): nothing was delivered.
    const cancel = () => {
      if (this.held !== held) return;
      this.held = undefined;
      clearTimeout(held.timer);
      this.lastPoll = Date.now();
      this.pollCut = true;
    };
    return { status: 'accepted', cancel };
  }

  private acknowledge(ack: number): void {
    if (ack <= this.acked) return;
    this.acked = ack;
    while (this.queue.length > 0 && this.queue[0]!.n <= ack) this.buffered -= this.queue.shift()!.bytes;
    this.drainWaiters = this.drainWaiters.filter((waiter) => {
      if (this.buffered > waiter.lowWater) return true;
      waiter.resolve();
      return false;
    });
  }

  private answerHeld(): void {
    const held = this.held!;
    this.held = undefined;
    clearTimeout(held.timer);
    this.lastPoll = Date.now();
    held.answer(this.take());
  }

  /** The frames after the last acknowledged one, up to the answer's byte bound (at least one); the close once none is left out. */
  private take(): PollAnswer {
    const frames: string[] = [];
    let bytes = 0;
    for (const frame of this.queue) {
      if (frames.length > 0 && bytes + frame.bytes > this.maxAnswerBytes) break;
      frames.push(frame.text);
      bytes += frame.bytes;
    }
    const all = frames.length === this.queue.length;
    return { from: this.acked + 1, frames, ...(this.ended && all ? { close: this.ended } : {}) };
  }
}
