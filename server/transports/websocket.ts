/**
 * A session over one WebSocket (ws): a thin wrapper, so that the session does not depend on ws.
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Transport } from './transport.js';

/** Text frame: ws sends a Buffer as binary unless told otherwise. */
const TEXT_FRAME = { binary: false } as const;

/**
 * The UTF-8 bytes of a frame, encoded once for a run of sends of the same frame (a fan-out
 * sends one string to thousands of sockets; ws would encode it again for each).
 */
let lastText: string | undefined;
let lastBytes: Buffer = Buffer.alloc(0);
function utf8(frame: string): Buffer {
  if (frame !== lastText) {
    lastText = frame;
    lastBytes = Buffer.from(frame, 'utf8');
  }
  return lastBytes;
}

export class WebSocketTransport implements Transport {
  readonly kind = 'websocket';

  constructor(private readonly ws: WebSocket) {}

  get isOpen(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(frame: string): void {
    this.ws.send(utf8(frame), TEXT_FRAME);
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }

  terminate(): void {
    this.ws.terminate();
  }

  onMessage(listener: (text: string, isBinary: boolean) => void): void {
    this.ws.on('message', (data, isBinary) => listener(isBinary ? '' : data.toString(), isBinary));
  }

  onClose(listener: () => void): void {
    this.ws.once('close', listener);
  }

  /** Waits on the TCP socket's `drain` (ws has no event of its own). */
  waitForDrain(): Promise<void> {
    const tcp = (this.ws as unknown as { _socket?: Socket })._socket;
    return new Promise<void>((resolve) => {
      const done = () => {
        tcp?.off('drain', done);
        tcp?.off('close', done);
        clearTimeout(fallback);
        resolve();
      };
      tcp?.once('drain', done);
      tcp?.once('close', done);
      // Without the TCP socket (a ws internal), look again now and then.
      const fallback = setTimeout(done, tcp ? 60_000 : 50);
    });
  }
}
