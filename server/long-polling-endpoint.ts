/**
 * Long polling at /ws: the same protocol frames as the WebSocket, carried by HTTP POSTs, for
 * networks where WebSockets do not get through. Each request's body is a JSON envelope on its
 * first line, then (for `send`) one frame per line:
 *
 *   {"op":"open"}                       → 200 {"sid","pollMs","maxBodyBytes"}   (admitted like an upgrade)
 *   {"op":"send","sid":S,"n":K}\n<frames> → 200 {"ok":true[,"duplicate":true]}
 *   {"op":"poll","sid":S,"ack":A}       → 200 text/plain: {"from":F[,"close":{code,reason}]}\n<frames>
 *   {"op":"close","sid":S}              → 200 {"ok":true}
 *
 * The session id is a bearer secret and travels only in bodies. See PROTOCOL.md "Long polling".
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import * as v from 'valibot';
import { CloseCode, type ErrorCode } from '../protocol/constants.js';
import type { Admissions } from './admission.js';
import { BodyError, readLimitedBody } from './http-body.js';
import type { Logger } from './log.js';
import { LongPollingTransport, type PollAnswer } from './transports/long-polling.js';

/** Error codes of the endpoint's answers: the protocol's, and one of its own. */
export type LongPollingErrorCode = ErrorCode | 'unknown_session';

export interface LongPollingDeps {
  log: Logger;
  admissions: Admissions;
  /** How long a poll is held when there is nothing to send. */
  pollMs: number;
  heartbeatMs: number;
  /** Largest frame a client may send (as the WebSocket's maxPayload). */
  maxMessageBytes: number;
  /** Starts a session over `transport`, counted against `ip` (the server's Session, tracked like a WebSocket's). */
  start(transport: LongPollingTransport, ip: string): void;
}

export interface LongPollingEndpoint {
  /** Answers a POST or OPTIONS to /ws. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /**
   * At shutdown, once every session was closed: waits (up to 1 s) for the answers carrying the
   * close to be written, then forgets every session.
   */
  close(): Promise<void>;
}

/** The sid answers with its close this long after the session ended, then it is unknown (404). */
const LINGER_MS = 30_000;
/** A session with no poll held and none answered within this (at least) is dead. */
const MIN_DEAD_MS = 10_000;
/**
 * A session whose held poll the client cut, with no poll since, is dead after this (at least; 3
 * heartbeats where those are longer). A worker starts its retries of a failed poll within 1.75 s
 * (250, 500, 1000 ms), so a cut with no poll after it is most likely a browser whose last tab
 * closed: its presence starts to linger sooner. A live client whose retry could not get through
 * in time (a slow network change) reconnects; nothing it sent or was sent is lost.
 */
export const CUT_POLL_DEAD_MS = 5000;

const Sid = v.pipe(v.string(), v.maxLength(100));
const Count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const Envelope = v.variant('op', [
  v.object({ op: v.literal('open') }),
  v.object({ op: v.literal('check') }),
  v.object({ op: v.literal('send'), sid: Sid, n: Count }),
  v.object({ op: v.literal('poll'), sid: Sid, ack: Count }),
  v.object({ op: v.literal('close'), sid: Sid }),
]);
type Envelope = v.InferOutput<typeof Envelope>;

/** An answer the endpoint gives instead of going on. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly code: LongPollingErrorCode,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** The largest body a request may have: four full frames and an envelope. */
export function maxBodyBytesFor(maxMessageBytes: number): number {
  return 4 * maxMessageBytes + 1024;
}

export function createLongPollingEndpoint(deps: LongPollingDeps): LongPollingEndpoint {
  const { log, admissions } = deps;
  const maxBodyBytes = maxBodyBytesFor(deps.maxMessageBytes);
  const deadMs = Math.max(MIN_DEAD_MS, deps.heartbeatMs * 3);
  const cutDeadMs = Math.min(deadMs, Math.max(CUT_POLL_DEAD_MS, deps.heartbeatMs * 3));
  const sessions = new Map<string, LongPollingTransport>();
  /** Poll answers being written: shutdown waits for them. */
  const writing = new Set<ServerResponse>();

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [sid, transport] of sessions) {
      if (transport.endedAt !== undefined) {
        if (now - transport.endedAt > LINGER_MS) sessions.delete(sid);
      } else if (transport.cut && transport.silentFor(now) > cutDeadMs) {
        log.debug('long-polling session closed: its poll was cut and none came since');
        transport.close(CloseCode.IdleTimeout, 'poll cut');
      } else if (transport.silentFor(now) > deadMs) {
        log.debug('long-polling session closed: no poll');
        transport.close(CloseCode.IdleTimeout, 'no poll');
      }
    }
  }, Math.min(1000, deadMs / 2));
  sweep.unref();

  /** Vary on every answer (a cache must not hand one origin's answer to another); the allow header to allowed origins only. */
  function corsHeaders(req: IncomingMessage): OutgoingHttpHeaders {
    const origin = req.headers.origin;
    return origin === undefined || !admissions.originAllowed(req) ? { vary: 'Origin' } : { vary: 'Origin', 'access-control-allow-origin': origin };
  }

  function json(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...corsHeaders(req), ...headers });
    res.end(JSON.stringify(body));
  }

  function refuse(req: IncomingMessage, res: ServerResponse, refusal: Refusal): void {
    // A body left unread (too large) must not be taken for the next request on this connection.
    const headers: OutgoingHttpHeaders = refusal.status === 413 ? { connection: 'close' } : {};
    json(req, res, refusal.status, { error: { code: refusal.code, message: refusal.message }, ...refusal.extra }, headers);
  }

  async function readBody(req: IncomingMessage): Promise<string> {
    try {
      return (await readLimitedBody(req, maxBodyBytes)).toString('utf8');
    } catch (error) {
      if (error instanceof BodyError) throw new Refusal(error.status, error.code, error.message);
      throw error;
    }
  }

  function parse(body: string): { envelope: Envelope; frames: string[] } {
    const newline = body.indexOf('\n');
    const first = newline < 0 ? body : body.slice(0, newline);
    // Empty lines carry nothing (a trailing newline is allowed); any other line is a frame, refused or not by the session.
    const frames = newline < 0 ? [] : body.slice(newline + 1).split('\n').filter((line) => line !== '');
    let json: unknown;
    try {
      json = JSON.parse(first);
    } catch {
      throw new Refusal(400, 'invalid_message', 'the first line of the body must be a JSON envelope such as {"op":"open"}');
    }
    const parsed = v.safeParse(Envelope, json);
    if (!parsed.success) {
      const issue = parsed.issues[0];
      const path = issue.path?.map((p) => String(p.key)).join('.');
      const op = typeof json === 'object' && json !== null && 'op' in json ? (json as { op: unknown }).op : undefined;
      const known = ['open', 'check', 'send', 'poll', 'close'].includes(op as string);
      throw new Refusal(400, 'invalid_message', known
        ? `bad ${String(op)} envelope: ${path ?? 'envelope'}: ${issue.message}`
        : `unknown op ${JSON.stringify(op) ?? 'undefined'} (open, check, send, poll or close)`);
    }
    if (parsed.output.op !== 'send' && frames.length > 0) throw new Refusal(400, 'invalid_message', `only send carries frames, not ${parsed.output.op}`);
    return { envelope: parsed.output, frames };
  }

  function session(sid: string): LongPollingTransport {
    const transport = sessions.get(sid);
    if (!transport) throw new Refusal(404, 'unknown_session', 'no such long-polling session (unknown, or ended over 30 s ago); open a new one');
    return transport;
  }

  function answerPoll(req: IncomingMessage, res: ServerResponse, answer: PollAnswer): void {
    const head = JSON.stringify(answer.close ? { from: answer.from, close: answer.close } : { from: answer.from });
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...corsHeaders(req) });
    writing.add(res);
    res.on('close', () => writing.delete(res));
    res.end(answer.frames.length === 0 ? head : `${head}\n${answer.frames.join('\n')}`);
  }

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!admissions.originAllowed(req)) {
      const { status, code, message } = admissions.originRefusal;
      log.warn({ origin: req.headers.origin }, 'long-polling request from a disallowed origin refused');
      throw new Refusal(status, code, message);
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...corsHeaders(req),
        'access-control-allow-methods': 'POST',
        'access-control-allow-headers': 'content-type',
        'access-control-max-age': '600',
        'cache-control': 'no-store',
      });
      res.end();
      return;
    }
    const { envelope, frames } = parse(await readBody(req));
    switch (envelope.op) {
      case 'open':
        return open(req, res);
      case 'check':
        // Is this server reachable over plain HTTP? (A client asks after a WebSocket failed.) No session.
        return json(req, res, 200, { ok: true });
      case 'send':
        return send(req, res, envelope.sid, envelope.n, frames);
      case 'poll':
        return poll(req, res, envelope.sid, envelope.ack);
      case 'close':
        session(envelope.sid).close(CloseCode.Normal, 'closed by the client');
        // Nobody asks for this session's close: it was the client's own.
        sessions.delete(envelope.sid);
        return json(req, res, 200, { ok: true });
    }
  }

  function open(req: IncomingMessage, res: ServerResponse): void {
    const admission = admissions.admit(req, 'long-polling');
    if (!admission.ok) throw new Refusal(admission.status, admission.code, admission.message);
    const sid = randomBytes(32).toString('base64url');
    const transport = new LongPollingTransport({ pollMs: deps.pollMs, maxMessageBytes: deps.maxMessageBytes });
    sessions.set(sid, transport);
    deps.start(transport, admission.ip);
    json(req, res, 200, { sid, pollMs: deps.pollMs, maxBodyBytes });
  }

  function send(req: IncomingMessage, res: ServerResponse, sid: string, n: number, frames: string[]): void {
    const transport = session(sid);
    const outcome = transport.receive(n, frames);
    switch (outcome.status) {
      case 'taken':
        return json(req, res, 200, { ok: true });
      case 'duplicate':
        return json(req, res, 200, { ok: true, duplicate: true });
      case 'out_of_order':
        transport.close(CloseCode.TooManyErrors, 'send requests out of order');
        throw new Refusal(409, 'out_of_order', `expected send ${outcome.expected}, got ${n}; the session is closed`);
      case 'too_big':
        // As ws does with a frame over maxPayload.
        transport.close(CloseCode.TooBig, 'Max payload size exceeded');
        throw new Refusal(413, 'message_too_big', `a frame of ${outcome.bytes} bytes is larger than ${deps.maxMessageBytes} (TETHER_MAX_MESSAGE_BYTES); the session is closed`);
      case 'closed':
        throw new Refusal(404, 'unknown_session', `the session has ended (${outcome.close.code} ${outcome.close.reason}); open a new one`, { close: outcome.close });
    }
  }

  function poll(req: IncomingMessage, res: ServerResponse, sid: string, ack: number): void {
    const transport = session(sid);
    let answered = false;
    const outcome = transport.poll(ack, (answer) => {
      answered = true;
      answerPoll(req, res, answer);
    });
    if (outcome.status === 'out_of_order') {
      transport.close(CloseCode.TooManyErrors, 'poll acknowledged frames never sent');
      throw new Refusal(409, 'out_of_order', `ack ${ack} is beyond the last frame sent (${outcome.sent}); the session is closed`);
    }
    // The client gave up on a held poll (its request was cut): nothing was delivered by it.
    if (!answered) res.on('close', () => answered || outcome.cancel());
  }

  return {
    async handle(req, res) {
      try {
        await serve(req, res);
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        if (res.headersSent) return;
        refuse(req, res, error);
      }
    },
    async close() {
      clearInterval(sweep);
      const written = [...writing].map((res) => new Promise<void>((resolve) => res.once('close', resolve)));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.all(written), new Promise<void>((resolve) => (timer = setTimeout(resolve, 1000)))]);
      clearTimeout(timer);
      for (const transport of sessions.values()) transport.terminate();
      sessions.clear();
    },
  };
}
