/**
 * One client connection: the handshake, then dispatch by message type.
 * Every bad frame is answered with a typed error; the connection is closed only when the
 * peer cannot be a Tether client (no handshake, wrong version, bad token, a flood of junk).
 */
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import { CloseCode, PROTOCOL_VERSION } from '../protocol/constants.js';
import { decodeClientFrame, encode } from '../protocol/codec.js';
import type { ErrorShape } from '../protocol/errors.js';
import type { ClientMessage, Handshake, RpcRequest, ServerMessage } from '../protocol/messages.js';
import type { Authenticate } from './auth.js';
import type { Logger } from './log.js';
import type { ProcedureRegistry } from './rpc/registry.js';

export interface SessionDeps {
  log: Logger;
  authenticate: Authenticate;
  procedures: ProcedureRegistry;
  heartbeatMs: number;
}

/** Malformed frames tolerated before the connection is closed with 4005. */
const MAX_BAD_FRAMES = 20;

export class Session {
  readonly id = randomUUID();
  user: string | null = null;
  lastHeard = Date.now();
  private welcomed = false;
  /** Set while the handshake's token is verified: later frames wait for it, in order. */
  private handshaking: Promise<void> | undefined;
  private badFrames = 0;
  private readonly aborter = new AbortController();
  private readonly log: Logger;

  constructor(
    private readonly socket: WebSocket,
    private readonly deps: SessionDeps,
  ) {
    this.log = deps.log.child({ session: this.id });
    socket.on('message', (data, isBinary) => void this.receive(data, isBinary));
    socket.on('close', () => this.aborter.abort());
  }

  get handshaken(): boolean {
    return this.welcomed;
  }

  close(code: CloseCode, reason: string): void {
    this.socket.close(code, reason);
    // A dead peer never completes the closing handshake: do not wait ws's 30 s for it.
    setTimeout(() => this.socket.terminate(), 1000).unref();
  }

  private send(message: ServerMessage): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(encode(message));
  }

  private sendError(error: ErrorShape, id?: number): void {
    this.send(id === undefined ? { type: 'error', ...error } : { type: 'error', id, ...error });
  }

  private async receive(data: RawData, isBinary: boolean): Promise<void> {
    this.lastHeard = Date.now();
    if (this.handshaking) await this.handshaking;
    if (isBinary) return this.refuse({ code: 'invalid_message', message: 'binary frames are not supported; send JSON text' });
    const decoded = decodeClientFrame(data.toString());
    if (!decoded.ok) return this.refuse(decoded.error, decoded.id);
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
        return this.send({ type: 'pong', t: message.t });
      case 'rpc':
        return this.rpc(message);
    }
  }

  private refuse(error: ErrorShape, id?: number): void {
    this.badFrames++;
    this.log.debug({ code: error.code }, 'refused frame');
    this.sendError(error, id);
    if (!this.welcomed) return this.close(CloseCode.HandshakeExpected, 'handshake expected');
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
    this.user = identity.user;
    this.welcomed = true;
    this.log.info({ user: this.user }, 'client connected');
    this.send({ type: 'welcome', v: PROTOCOL_VERSION, session: this.id, user: this.user, heartbeatMs: this.deps.heartbeatMs });
  }

  private async rpc({ id, method, args }: RpcRequest): Promise<void> {
    const outcome = await this.deps.procedures.invoke(method, args, {
      user: this.user,
      session: this.id,
      signal: this.aborter.signal,
    });
    if (outcome.ok) {
      let frame: string;
      try {
        frame = encode({ type: 'result', id, value: outcome.value });
      } catch {
        return this.sendError({ code: 'internal', message: `procedure ${method} returned a value that is not JSON` }, id);
      }
      if (this.socket.readyState === this.socket.OPEN) this.socket.send(frame);
    } else {
      this.sendError(outcome.error, id);
    }
  }
}
