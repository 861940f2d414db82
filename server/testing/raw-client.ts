/**
 * A raw protocol client for server tests: sends frames as given, hands back each answer in
 * order, and the close. No SDK in between, so a test can send what no SDK would.
 */
import WebSocket from 'ws';

export type Frame = Record<string, unknown>;

/** How long a test waits for one frame before failing (a missing answer must not hang a file). */
export const FRAME_TIMEOUT_MS = 5000;

/** What both raw clients (WebSocket, long polling) offer on top of `next()`. */
export abstract class FrameReader {
  /** The next frame; throws if the connection closes or nothing comes within `timeoutMs`. */
  abstract next(timeoutMs?: number): Promise<Frame>;

  /** Skips frames until one matches. */
  async until(matches: (frame: Frame) => boolean, timeoutMs = FRAME_TIMEOUT_MS): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = await this.next(Math.max(1, deadline - Date.now()));
      if (matches(frame)) return frame;
    }
  }

  answerTo(id: number, timeoutMs = FRAME_TIMEOUT_MS): Promise<Frame> {
    return this.until((frame) => frame.id === id, timeoutMs);
  }
}

export class RawClient extends FrameReader {
  /** Every client made, so that a file can terminate what a failed test left open. */
  static readonly all = new Set<RawClient>();

  readonly ws: WebSocket;
  readonly inbox: Frame[] = [];
  private waiters: (() => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** The close code, once closed. */
  closeCode: number | undefined;
  /** How each frame is seen, applied as it arrives, in order (e.g. a presence change applied to the list before it). */
  view: (frame: Frame) => Frame = (frame) => frame;

  constructor(url: string, options: WebSocket.ClientOptions = {}) {
    super();
    this.ws = new WebSocket(url, options);
    RawClient.all.add(this);
    this.ws.on('message', (data) => {
      this.inbox.push(this.view(JSON.parse(data.toString()) as Frame));
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.ws.on('error', () => {}); // refusals are asserted through open() and `closed`
    this.closed = new Promise((resolve) =>
      this.ws.on('close', (code, reason) => {
        this.closeCode = code;
        RawClient.all.delete(this);
        for (const wake of this.waiters.splice(0)) wake();
        resolve({ code, reason: reason.toString() });
      }),
    );
  }

  get isClosed(): boolean {
    return this.closeCode !== undefined;
  }

  async open(): Promise<this> {
    await new Promise((resolve, reject) => this.ws.once('open', resolve).once('error', reject));
    return this;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame; throws if the connection closes or nothing comes within `timeoutMs`. */
  async next(timeoutMs = FRAME_TIMEOUT_MS): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      if (this.isClosed) throw new Error(`the connection closed (${this.closeCode}) before the expected frame`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.inbox.shift()!;
  }

  /** Pings every second, as a client that means to stay would (the server drops a silent one after 3 heartbeats). */
  keepAlive(): void {
    const timer = setInterval(() => {
      if (this.ws.readyState === WebSocket.OPEN) this.send({ type: 'ping', t: Date.now() });
    }, 1000);
    this.ws.on('close', () => clearInterval(timer));
  }

  /** The TCP socket, to stop reading (pause) like a client that does not keep up. */
  get socket(): { pause(): void; resume(): void } {
    return (this.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  }
}
