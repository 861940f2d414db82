/**
 * What a Session needs from whatever carries its frames: a WebSocket, or a long-polling session
 * made of HTTP requests. The session speaks the protocol; a transport only moves text frames, so
 * there is one implementation of the protocol whatever the client can open.
 */

export type TransportKind = 'websocket' | 'long-polling';

export interface Transport {
  readonly kind: TransportKind;
  /** Frames sent now reach the client (not closing, not closed). */
  readonly isOpen: boolean;
  /** Bytes sent and not yet read by the client: the bound of a slow consumer. */
  readonly bufferedAmount: number;
  /** Sends one protocol frame (compact JSON text). */
  send(frame: string): void;
  /** Ends the connection with a close code and reason the client sees. */
  close(code: number, reason: string): void;
  /** Ends the connection at once, without waiting for the client to agree (a dead peer never does). */
  terminate(): void;
  /**
   * Each frame the client sends, in order. `isBinary`: a binary WebSocket frame (its text is
   * empty); the session refuses those.
   */
  onMessage(listener: (text: string, isBinary: boolean) => void): void;
  /** Once, when the connection has ended (by either side). */
  onClose(listener: () => void): void;
  /**
   * Resolves when the client may have read what was sent down to `lowWater` bytes, or the
   * connection ended; the caller looks at `bufferedAmount` again. Costs nothing while the
   * client does not read.
   */
  waitForDrain(lowWater: number): Promise<void>;
}
