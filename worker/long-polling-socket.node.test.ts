/**
 * The long-polling socket against a scripted server (fetch stubbed): answers that come twice or
 * overlap hand each frame on once, a send lost on the way goes again under its number, a close
 * comes after the frames before it, and a refusal says why.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LongPollingSocket, type LongPollingEvent } from './long-polling.js';

interface Request {
  envelope: { op: string; sid?: string; n?: number; ack?: number };
  frames: string[];
}

/** A fake server: records requests; polls take scripted answers in order, then hang until aborted. */
/** A session id as long as the server's (32 random bytes, base64url). */
const SID = 'x'.repeat(43);

function scriptedServer(polls: string[], { failSends = 0, failPolls = 0, open = () => new Response(JSON.stringify({ sid: SID, pollMs: 20_000, maxBodyBytes: 1000 })) } = {}) {
  const requests: Request[] = [];
  let sendFailures = failSends;
  let pollFailures = failPolls;
  vi.stubGlobal('fetch', async (_url: string, init: RequestInit & { body: string; signal: AbortSignal }) => {
    const [head, ...frames] = init.body.split('\n');
    const request: Request = { envelope: JSON.parse(head!) as Request['envelope'], frames };
    requests.push(request);
    switch (request.envelope.op) {
      case 'open':
        return open();
      case 'send':
        if (sendFailures-- > 0) throw new TypeError('network error (scripted)');
        return new Response('{"ok":true}');
      case 'poll': {
        if (pollFailures-- > 0) return new Response('bad gateway', { status: 502 });
        const answer = polls.shift();
        if (answer !== undefined) return new Response(answer);
        return new Promise<Response>((_, reject) => init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
      }
      default:
        return new Response('{"ok":true}');
    }
  });
  return requests;
}

function record(socket: LongPollingSocket): LongPollingEvent[] {
  const events: LongPollingEvent[] = [];
  for (const type of ['open', 'message', 'close']) socket.addEventListener(type, (e) => events.push(e));
  return events;
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  expect(check()).toBe(true);
}

afterEach(() => vi.unstubAllGlobals());

describe('long-polling socket', () => {
  it('frames answered twice, or again inside a later answer (its predecessor was lost), are handed on once, and acknowledged', async () => {
    const requests = scriptedServer(['{"from":1}\na\nb', '{"from":1}\na\nb', '{"from":2}\nb\nc', '{"from":4}\nd']);
    const socket = new LongPollingSocket('ws://example.test/ws');
    const events = record(socket);
    await until(() => events.filter((e) => e.type === 'message').length === 4);
    await until(() => requests.filter((r) => r.envelope.op === 'poll').length === 5);
    expect(events.flatMap((e) => (e.type === 'message' ? [e.data] : []))).toEqual(['a', 'b', 'c', 'd']);
    expect(requests.filter((r) => r.envelope.op === 'poll').map((r) => r.envelope.ack)).toEqual([0, 2, 2, 3, 4]);
    socket.close();
  });

  it('a send lost on the way goes again with the same number; the next one takes the next number; sends of one task travel together', async () => {
    const requests = scriptedServer([], { failSends: 1 });
    const socket = new LongPollingSocket('ws://example.test/ws');
    const events = record(socket);
    await until(() => events.some((e) => e.type === 'open'));
    socket.send('{"type":"ping","t":1}');
    socket.send('{"type":"ping","t":2}');
    await until(() => requests.filter((r) => r.envelope.op === 'send').length === 2);
    socket.send('{"type":"ping","t":3}');
    await until(() => requests.filter((r) => r.envelope.op === 'send').length === 3);
    const sends = requests.filter((r) => r.envelope.op === 'send');
    expect(sends.map((r) => [r.envelope.n, r.frames])).toEqual([
      [0, ['{"type":"ping","t":1}', '{"type":"ping","t":2}']],
      [0, ['{"type":"ping","t":1}', '{"type":"ping","t":2}']],
      [1, ['{"type":"ping","t":3}']],
    ]);
    expect(socket.bufferedAmount).toBe(0);
    socket.close();
  });

  it('frames larger than one body go in several requests, in order', async () => {
    const requests = scriptedServer([]);
    const socket = new LongPollingSocket('ws://example.test/ws');
    const events = record(socket);
    await until(() => events.some((e) => e.type === 'open'));
    // Sizes that vary (some not ASCII), so that some body ends within a few bytes of the bound.
    const frames = Array.from({ length: 300 }, (_, i) => JSON.stringify({ type: 'ping', t: i, pad: (i % 3 === 0 ? 'é' : 'a').repeat((i * 37) % 251) }));
    for (const frame of frames) socket.send(frame);
    await until(() => requests.filter((r) => r.envelope.op === 'send').flatMap((r) => r.frames).length === 300);
    const sends = requests.filter((r) => r.envelope.op === 'send');
    expect(sends.length).toBeGreaterThan(1);
    expect(sends.map((r) => r.envelope.n)).toEqual(sends.map((_, i) => i));
    expect(sends.flatMap((r) => r.frames)).toEqual(frames);
    for (const send of sends) expect(new TextEncoder().encode([JSON.stringify(send.envelope), ...send.frames].join('\n')).length).toBeLessThanOrEqual(1000);
    socket.close();
  });

  it('a close from the server comes after the frames before it, with its code', async () => {
    scriptedServer(['{"from":1,"close":{"code":4001,"reason":"token expired"}}\n{"type":"error","code":"unauthorized","message":"the token has expired"}']);
    const socket = new LongPollingSocket('ws://example.test/ws');
    const events = record(socket);
    await until(() => events.some((e) => e.type === 'close'));
    expect(events.map((e) => e.type)).toEqual(['open', 'message', 'close']);
    expect(events.at(-1)).toMatchObject({ code: 4001, reason: 'token expired' });
    expect(socket.readyState).toBe(socket.CLOSED);
  });

  it('a poll that failed on the way (a proxy 502) is sent again with the same ack; the session goes on', async () => {
    const requests = scriptedServer(['{"from":1}\na', '{"from":2}\nb'], { failPolls: 2 });
    const socket = new LongPollingSocket('ws://example.test/ws');
    const events = record(socket);
    await until(() => events.filter((e) => e.type === 'message').length === 2);
    expect(requests.filter((r) => r.envelope.op === 'poll').map((r) => r.envelope.ack).slice(0, 4)).toEqual([0, 0, 0, 1]);
    expect(events.map((e) => e.type)).toEqual(['open', 'message', 'message']);
    socket.close();
  });

  it('a listener that throws does not stop the frames after it', async () => {
    scriptedServer(['{"from":1}\na\nb', '{"from":3}\nc']);
    const socket = new LongPollingSocket('ws://example.test/ws');
    const seen: string[] = [];
    const thrown: unknown[] = [];
    const onError = (error: unknown) => thrown.push(error);
    process.on('uncaughtException', onError);
    try {
      socket.addEventListener('message', (e) => {
        if (e.type !== 'message') return;
        seen.push(e.data);
        if (e.data === 'a') throw new Error('a bug in a listener');
      });
      await until(() => seen.length === 3);
      expect(seen).toEqual(['a', 'b', 'c']);
      await until(() => thrown.length === 1);
    } finally {
      process.off('uncaughtException', onError);
      socket.close();
    }
  });

  it('an open refused says why (a proxy page or the server error), as an abnormal close', async () => {
    scriptedServer([], { open: () => new Response(JSON.stringify({ error: { code: 'forbidden', message: 'origin not allowed' } }), { status: 403 }) });
    const socket = new LongPollingSocket('ws://example.test/ws');
    const events = record(socket);
    await until(() => events.some((e) => e.type === 'close'));
    expect(events).toEqual([{ type: 'close', code: 1006, reason: 'long polling refused: 403 forbidden: origin not allowed', wasClean: false }]);
  });
});
