/**
 * A raw long-polling client for server tests: sends envelopes and frames as given, and keeps
 * the client-side rule (frames numbered at or below what it has are ignored), so a test can
 * replay, lose or duplicate requests and answers on purpose.
 */
import { FRAME_TIMEOUT_MS, FrameReader, type Frame } from './raw-client.js';

export interface PollResult {
  status: number;
  from: number;
  frames: Frame[];
  close?: { code: number; reason: string };
}

export interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** One POST /ws: the envelope on the first line, then the frames (strings as given, objects as JSON). */
export async function post(url: string, envelope: unknown, frames: unknown[] = [], init: { headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
  const lines = [typeof envelope === 'string' ? envelope : JSON.stringify(envelope), ...frames.map((f) => (typeof f === 'string' ? f : JSON.stringify(f)))];
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'text/plain;charset=UTF-8', ...init.headers },
    body: lines.join('\n'),
    ...(init.signal ? { signal: init.signal } : {}),
  });
}

export async function postJson(url: string, envelope: unknown, frames: unknown[] = [], headers: Record<string, string> = {}): Promise<Answer> {
  const res = await post(url, envelope, frames, { headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

/** Parses a poll answer: the header line, then one frame per line. */
export async function pollResult(res: Response): Promise<PollResult> {
  const text = await res.text();
  if (res.status !== 200) return { status: res.status, from: 0, frames: [], ...(JSON.parse(text) as object) };
  const [head, ...lines] = text.split('\n');
  const header = JSON.parse(head!) as { from: number; close?: { code: number; reason: string } };
  return { status: res.status, from: header.from, frames: lines.map((line) => JSON.parse(line) as Frame), ...(header.close ? { close: header.close } : {}) };
}

export class LongPollClient extends FrameReader {
  /** The next send request's number. */
  n = 0;
  /** The highest frame number received. */
  received = 0;
  readonly inbox: Frame[] = [];
  /** The close a poll answer carried, once one did. */
  closed: { code: number; reason: string } | undefined;

  private constructor(
    readonly url: string,
    readonly sid: string,
    readonly opened: Record<string, unknown>,
    readonly headers: Record<string, string>,
  ) {
    super();
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<LongPollClient> {
    const answer = await postJson(url, { op: 'open' }, [], headers);
    if (answer.status !== 200) throw new Error(`open refused: ${answer.status} ${JSON.stringify(answer.body)}`);
    return new LongPollClient(url, answer.body.sid as string, answer.body, headers);
  }

  /** Opens and handshakes; resolves with the client once `welcome` arrived. */
  static async handshaken(url: string, handshake: Frame = {}, headers: Record<string, string> = {}): Promise<LongPollClient> {
    const client = await LongPollClient.open(url, headers);
    await client.send({ type: 'handshake', v: 1, ...handshake });
    const welcome = await client.next();
    if (welcome.type !== 'welcome') throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
    return client;
  }

  /** A send request with the next number. */
  send(...frames: unknown[]): Promise<Answer> {
    return this.sendAs(this.n++, frames);
  }

  /** A send request with a number of the test's choosing (a replay, or a skip). */
  sendAs(n: number, frames: unknown[]): Promise<Answer> {
    return postJson(this.url, { op: 'send', sid: this.sid, n }, frames, this.headers);
  }

  /** One poll acknowledging `ack`, its answer returned as is (not applied). */
  async pollRaw(ack = this.received, signal?: AbortSignal): Promise<PollResult> {
    return pollResult(await post(this.url, { op: 'poll', sid: this.sid, ack }, [], { headers: this.headers, ...(signal ? { signal } : {}) }));
  }

  /** Applies an answer with the client-side rule: frames at or below `received` are ignored. */
  apply(answer: PollResult): void {
    if (answer.status !== 200) throw new Error(`poll refused: ${answer.status} ${JSON.stringify(answer)}`);
    answer.frames.forEach((frame, i) => {
      const number = answer.from + i;
      if (number <= this.received) return;
      if (number !== this.received + 1) throw new Error(`gap: frame ${number} after ${this.received}`);
      this.received = number;
      this.inbox.push(frame);
    });
    if (answer.close && answer.from + answer.frames.length - 1 === this.received) this.closed = answer.close;
  }

  async poll(): Promise<PollResult> {
    const answer = await this.pollRaw();
    this.apply(answer);
    return answer;
  }

  /** The next frame, polling as needed; throws on a close or after `timeoutMs`. */
  async next(timeoutMs = FRAME_TIMEOUT_MS): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      if (this.closed) throw new Error(`the session closed (${this.closed.code} ${this.closed.reason}) before the expected frame`);
      if (Date.now() > deadline) throw new Error(`no frame within ${timeoutMs} ms`);
      await this.poll();
    }
    return this.inbox.shift()!;
  }

  /** Polls until the session's close arrives; the frames before it land in the inbox. */
  async closeCode(timeoutMs = FRAME_TIMEOUT_MS): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`no close within ${timeoutMs} ms`);
      await this.poll();
    }
    return this.closed;
  }

  close(): Promise<Answer> {
    return postJson(this.url, { op: 'close', sid: this.sid }, [], this.headers);
  }
}
