/**
 * The long-polling transport, shaped like a WebSocket so that the one reconnecting link
 * (worker/socket.ts) drives it exactly as it drives a WebSocket: same handshake, heartbeats and
 * frames, carried by HTTP POSTs to the same URL (PROTOCOL.md, "Long polling").
 *
 * Upstream, one request at a time, numbered: a request that failed on the way is sent again
 * with the same number and the server takes it once. Downstream, frames are numbered by the
 * server and each poll acknowledges the highest one received: an answer lost on the way comes
 * again, and a frame numbered at or below what was received is never handed on twice.
 */

import { utf8Length } from '../protocol/utf8.js';

type Listener = (event: LongPollingEvent) => void;
export type LongPollingEvent =
  | { type: 'open' }
  | { type: 'message'; data: string }
  | { type: 'close'; code: number; reason: string; wasClean: boolean }
  | { type: 'error'; message: string };

/** Upstream requests and the open request are answered (headers) within this time, or they count as failed. */
const REQUEST_TIMEOUT_MS = 15_000;
/** A poll may be held this much longer than the server's own bound before it counts as lost. */
const POLL_GRACE_MS = 10_000;
/** A send or poll that failed on the way is tried again this many times (the same request) before the link is given up. */
const RETRIES = 3;
/** Close code for a transport that failed (as a WebSocket reports an abnormal closure). */
const ABNORMAL = 1006;

/** The http(s) URL of a ws(s) endpoint: long polling posts to the same address. */
export function longPollingUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol === 'ws:') parsed.protocol = 'http:';
  else if (parsed.protocol === 'wss:') parsed.protocol = 'https:';
  return parsed.toString();
}

/**
 * Whether the server answers plain HTTP now (`{"op":"check"}`, no session): asked after a
 * WebSocket failed, it tells "WebSockets are blocked here" from "the network is down".
 */
export async function httpReachable(url: string, timeoutMs = 4000): Promise<boolean> {
  try {
    const answer = await postText(longPollingUrl(url), '{"op":"check"}', timeoutMs);
    return answer.ok && (JSON.parse(answer.text) as { ok?: unknown }).ok === true;
  } catch {
    return false; // unreachable (or not a Tether server): the answer is no
  }
}

/**
 * Posts one long-polling request and reads its answer whole. `timeoutMs` bounds the wait for the
 * answer's headers only: a large answer on a slow link may take longer to read (a link that
 * stalls is found by the heartbeat, whose reconnect aborts the read through `abortWith`).
 */
async function postText(endpoint: string, body: string, timeoutMs: number, abortWith?: AbortSignal): Promise<Answer> {
  // One controller for both reasons to stop (AbortSignal.any is missing in Safari < 17.4 and Firefox ESR 115).
  const controller = new AbortController();
  const stop = () => controller.abort();
  abortWith?.addEventListener('abort', stop, { once: true });
  let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(stop, timeoutMs);
  try {
    // text/plain: a CORS "simple" request, no preflight round trip to another origin.
    const response = await fetch(endpoint, {
      method: 'POST',
      body,
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
      cache: 'no-store',
      credentials: 'omit',
      signal: controller.signal,
    });
    clearTimeout(timer);
    timer = undefined;
    return { ok: response.ok, status: response.status, text: await response.text() };
  } finally {
    clearTimeout(timer);
    abortWith?.removeEventListener('abort', stop);
  }
}

/** An answer, read whole. */
interface Answer {
  ok: boolean;
  status: number;
  text: string;
}

interface Opened {
  sid: string;
  pollMs: number;
  maxBodyBytes: number;
}

function isOpened(value: unknown): value is Opened {
  const v = value as Partial<Opened> | null;
  return typeof v === 'object' && v !== null && typeof v.sid === 'string' && typeof v.pollMs === 'number' && typeof v.maxBodyBytes === 'number';
}

interface PollHeader {
  from: number;
  close?: { code: number; reason: string };
}

function isPollHeader(value: unknown): value is PollHeader {
  const v = value as Partial<PollHeader> | null;
  if (typeof v !== 'object' || v === null || !Number.isSafeInteger(v.from)) return false;
  return v.close === undefined || (typeof v.close.code === 'number' && typeof v.close.reason === 'string');
}

/** The error an answer carries (`{"error":{"code","message"}}`), for the close reason. */
function failure(response: Answer): string {
  const { text } = response;
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed.error?.message === 'string') return `${response.status} ${String(parsed.error.code)}: ${parsed.error.message}`;
  } catch {
    // not JSON: the text itself says why (a proxy's page, say)
  }
  return `${response.status} ${text.slice(0, 200)}`;
}

export class LongPollingSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;

  readyState = 0;
  /** Bytes handed to `send` and not yet accepted by the server. */
  bufferedAmount = 0;
  binaryType: BinaryType = 'blob';
  readonly extensions = '';
  readonly protocol = '';
  private readonly endpoint: string;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly aborter = new AbortController();
  private session: Opened | undefined;
  /** Frames waiting to go up, in order. */
  private outgoing: string[] = [];
  private sending = false;
  private flushQueued = false;
  /** The number of the next upstream request. */
  private sendNumber = 0;
  /** The highest downstream frame number received. */
  private received = 0;

  constructor(readonly url: string) {
    this.endpoint = longPollingUrl(url);
    void this.start();
  }

  addEventListener(type: string, listener: Listener): void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
  }

  removeEventListener(type: string, listener: Listener): void {
    this.listeners.get(type)?.delete(listener);
  }

  send(data: string): void {
    if (this.readyState === this.CONNECTING) throw new DOMException('the long-polling session is not open yet', 'InvalidStateError');
    if (this.readyState !== this.OPEN) return; // as a WebSocket: data sent after close is dropped
    this.outgoing.push(data);
    this.bufferedAmount += utf8Length(data);
    // Every send of one task travels in one request.
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        void this.flush();
      });
    }
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState === this.CLOSED) return;
    const session = this.session;
    this.finish(code, reason, true);
    // Tells the server at once; if this is lost, the server closes the session when no poll comes.
    if (session) {
      void this.post({ op: 'close', sid: session.sid }, [], REQUEST_TIMEOUT_MS, false).catch(() => undefined);
    }
  }

  private emit(event: LongPollingEvent): void {
    for (const listener of [...(this.listeners.get(event.type) ?? [])]) {
      try {
        listener(event);
      } catch (error) {
        // As EventTarget does: reported, and the other listeners and the poll loop go on.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  private finish(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState === this.CLOSED) return;
    this.readyState = this.CLOSED;
    this.aborter.abort();
    this.outgoing = [];
    this.emit({ type: 'close', code, reason, wasClean });
  }

  /** Posts an envelope (and frames); `bound`: aborted when this socket closes. */
  private post(envelope: Record<string, unknown>, frames: string[], timeoutMs: number, bound = true): Promise<Answer> {
    const body = frames.length === 0 ? JSON.stringify(envelope) : `${JSON.stringify(envelope)}\n${frames.join('\n')}`;
    return postText(this.endpoint, body, timeoutMs, bound ? this.aborter.signal : undefined);
  }

  private async start(): Promise<void> {
    let opened: unknown;
    try {
      const response = await this.post({ op: 'open' }, [], REQUEST_TIMEOUT_MS);
      if (!response.ok) return this.finish(ABNORMAL, `long polling refused: ${failure(response)}`, false);
      opened = JSON.parse(response.text);
    } catch (error) {
      return this.finish(ABNORMAL, `long polling failed: ${String(error)}`, false);
    }
    if (this.readyState !== this.CONNECTING) return;
    if (!isOpened(opened)) return this.finish(ABNORMAL, 'long polling: the server answered open with something else', false);
    this.session = opened;
    this.readyState = this.OPEN;
    this.emit({ type: 'open' });
    void this.pollLoop();
  }

  private async pollLoop(): Promise<void> {
    let failures = 0;
    while (this.readyState === this.OPEN && this.session) {
      const { sid, pollMs } = this.session;
      let text: string;
      try {
        const response = await this.post({ op: 'poll', sid, ack: this.received }, [], pollMs + POLL_GRACE_MS);
        // The session is gone or refused the poll: this socket cannot go on.
        if (!response.ok && response.status < 500) return this.finish(ABNORMAL, `long polling ended: ${failure(response)}`, false);
        if (!response.ok) throw new Error(failure(response));
        text = response.text;
      } catch (error) {
        if (this.readyState !== this.OPEN) return;
        // A blip (a reset keep-alive connection, a proxy's 502): the same poll again — what
        // it would have brought is still waiting, unacknowledged, on the server.
        if (++failures > RETRIES) return this.finish(ABNORMAL, `long polling lost: ${String(error)}`, false);
        await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** (failures - 1)));
        continue;
      }
      failures = 0;
      if (this.readyState !== this.OPEN) return;
      const lines = text.split('\n');
      let header: unknown;
      try {
        header = JSON.parse(lines[0] ?? '');
      } catch {
        header = undefined;
      }
      if (!isPollHeader(header)) return this.finish(ABNORMAL, 'long polling: the server answered a poll with something else', false);
      for (let i = 1; i < lines.length; i++) {
        const number = header.from + i - 1;
        if (number <= this.received) continue; // sent again (its answer was lost, or replayed): had it
        this.received = number;
        this.emit({ type: 'message', data: lines[i]! });
        // A message can close the link (a reconnect with another token): stop handing on.
        if (this.readyState !== this.OPEN) return;
      }
      if (header.close) return this.finish(header.close.code, header.close.reason, true);
    }
  }

  private async flush(): Promise<void> {
    if (this.sending || !this.session) return;
    this.sending = true;
    try {
      while (this.readyState === this.OPEN && this.outgoing.length > 0) {
        const { sid, maxBodyBytes } = this.session;
        // As many frames as fit in one body with its envelope (always at least one: the server
        // refuses a frame too big on its own).
        const envelope = utf8Length(JSON.stringify({ op: 'send', sid, n: this.sendNumber }));
        let bytes = envelope;
        let count = 0;
        for (const frame of this.outgoing) {
          const size = utf8Length(frame) + 1;
          if (count > 0 && bytes + size > maxBodyBytes) break;
          bytes += size;
          count++;
        }
        const frames = this.outgoing.slice(0, count);
        if (!(await this.sendOnce(sid, frames))) return;
        this.outgoing.splice(0, count);
        this.bufferedAmount = Math.max(0, this.bufferedAmount - (bytes - envelope - count));
        this.sendNumber++;
      }
    } finally {
      this.sending = false;
    }
  }

  /** Sends one numbered request, again with the same number after a failure on the way; false when the link is gone. */
  private async sendOnce(sid: string, frames: string[]): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      if (this.readyState !== this.OPEN) return false;
      try {
        const response = await this.post({ op: 'send', sid, n: this.sendNumber }, frames, REQUEST_TIMEOUT_MS);
        if (response.ok) return true;
        // The server refused (session gone, out of order, too big): this session cannot go on.
        if (response.status < 500) {
          this.finish(ABNORMAL, `long polling send refused: ${failure(response)}`, false);
          return false;
        }
        if (attempt >= RETRIES) {
          this.finish(ABNORMAL, `long polling send failed: ${failure(response)}`, false);
          return false;
        }
      } catch (error) {
        if (this.readyState !== this.OPEN) return false;
        if (attempt >= RETRIES) {
          this.finish(ABNORMAL, `long polling send failed: ${String(error)}`, false);
          return false;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    }
  }
}
