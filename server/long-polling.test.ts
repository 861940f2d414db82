/**
 * Long polling at POST /ws against a live in-process server, driven with fetch: the session's
 * life (open, handshake, calls, close), sends taken exactly once, polls that are lost, replayed,
 * duplicated or doubled, refusals (bad envelopes, sizes, unknown sessions, origins, caps) while
 * another client keeps being served, liveness, server-initiated closes, a slow consumer, and a
 * model test of random request faults. Every client is a raw one (no worker in between), so a
 * test can send what no worker would.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { startServer, type ServerOptions, type TetherServer } from './server.js';
import { RawClient, type Frame } from './testing/raw-client.js';
import { LongPollClient, post, postJson, pollResult } from './testing/long-poll-client.js';

const SECRET = 'long-polling-test-secret-of-at-least-32-characters';
const API_KEY = 'long-polling-test-api-key';
const silent = pino({ level: 'silent' });
/** Polls held 1 s, so that a test waiting for a frame polls again often. */
const base: ServerOptions = { port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', longPollMs: 1000 };

const lpUrl = (port: number) => `http://127.0.0.1:${port}/ws`;
const wsUrl = (port: number) => `ws://127.0.0.1:${port}/ws`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

afterEach(() => {
  for (const c of RawClient.all) c.ws.terminate();
});

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await sleep(20);
  }
}

async function health(port: number): Promise<{ connections: number; transports: { websocket: number; longPolling: number } }> {
  const res = await fetch(`http://127.0.0.1:${port}/api/health`);
  return (await res.json()) as { connections: number; transports: { websocket: number; longPolling: number } };
}

async function wsHandshaken(port: number, extra: Frame = {}): Promise<RawClient> {
  const c = await new RawClient(wsUrl(port)).open();
  c.send({ type: 'handshake', v: 1, ...extra });
  expect(await c.next()).toMatchObject({ type: 'welcome' });
  return c;
}

/** Another long-polling client opens, handshakes and gets hello answered: the server keeps serving. */
async function anotherClientServed(port: number): Promise<void> {
  const other = await LongPollClient.handshaken(lpUrl(port));
  await other.send({ type: 'rpc', id: 7, method: 'hello', args: ['other'] });
  expect(await other.answerTo(7)).toEqual({ type: 'result', id: 7, value: 'Hello, other!' });
  await other.close();
}

const clientId = () => `lp-client-${Math.random().toString(36).slice(2, 10)}`;

describe('long polling: a session', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({ ...base, maxMessageBytes: 4096 });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  it('opens, handshakes, calls hello and gets the answer by poll; counts in /api/health and leaves it on close', async () => {
    const opened = await postJson(url, { op: 'open' });
    expect(opened.status).toBe(200);
    expect(opened.headers.get('cache-control')).toBe('no-store');
    expect(opened.headers.get('x-content-type-options')).toBe('nosniff');
    expect(opened.body).toEqual({ sid: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), pollMs: 1000, maxBodyBytes: 4 * 4096 + 1024 });

    const c = await LongPollClient.open(url);
    expect(await c.send({ type: 'handshake', v: 1 })).toMatchObject({ status: 200, body: { ok: true } });
    const first = await c.pollRaw();
    expect(first).toMatchObject({ status: 200, from: 1, frames: [{ type: 'welcome', v: 1 }] });
    c.apply(first);
    expect(await c.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] })).toMatchObject({ status: 200, body: { ok: true } });
    const answer = await c.pollRaw();
    expect(answer).toMatchObject({ from: 2, frames: [{ type: 'result', id: 1, value: 'Hello, world!' }] });
    c.apply(answer);

    const during = await health(server.port);
    expect(during.transports.longPolling).toBeGreaterThanOrEqual(2);
    expect(during.connections).toBe(during.transports.longPolling + during.transports.websocket);
    expect(await c.close()).toMatchObject({ status: 200, body: { ok: true } });
    await waitFor(async () => (await health(server.port)).transports.longPolling === during.transports.longPolling - 1);
    // The client's own close ends the sid at once.
    expect((await c.pollRaw()).status).toBe(404);
    expect(await postJson(url, { op: 'close', sid: opened.body.sid })).toMatchObject({ status: 200 });
  });

  it('an empty poll is held for pollMs and answered {"from": ack + 1} with no frames', async () => {
    const c = await LongPollClient.handshaken(url);
    const started = Date.now();
    const empty = await c.pollRaw();
    const held = Date.now() - started;
    expect(empty).toEqual({ status: 200, from: c.received + 1, frames: [] });
    expect(held).toBeGreaterThanOrEqual(900);
    expect(held).toBeLessThan(3000);
    await c.close();
  });

  it('a long-polling client and a WebSocket client exchange pub/sub events both ways', async () => {
    const lp = await LongPollClient.handshaken(url, { clientId: clientId() });
    const ws = await wsHandshaken(server.port, { clientId: clientId() });
    ws.keepAlive();
    await lp.send({ type: 'subscribe', channel: 'lp-both' });
    expect(await lp.next()).toMatchObject({ type: 'subscribed', channel: 'lp-both' });
    ws.send({ type: 'subscribe', channel: 'lp-both' });
    expect(await ws.next()).toMatchObject({ type: 'subscribed', channel: 'lp-both' });

    // Each side gets its own ack and the event, in either order.
    const two = async (next: () => Promise<Frame>) => [await next(), await next()];
    ws.send({ type: 'publish', seq: 1, channel: 'lp-both', data: 'from ws' });
    expect(await lp.next()).toMatchObject({ type: 'event', channel: 'lp-both', data: 'from ws', offset: 1 });
    expect(await two(() => ws.next())).toEqual(expect.arrayContaining([
      expect.objectContaining({ type: 'ack', seq: 1, offset: 1 }), expect.objectContaining({ type: 'event', data: 'from ws', offset: 1 }),
    ]));

    await lp.send({ type: 'publish', seq: 1, channel: 'lp-both', data: 'from long polling' });
    expect(await ws.next()).toMatchObject({ type: 'event', channel: 'lp-both', data: 'from long polling', offset: 2 });
    expect(await two(() => lp.next())).toEqual(expect.arrayContaining([
      expect.objectContaining({ type: 'ack', seq: 1, offset: 2 }), expect.objectContaining({ type: 'event', data: 'from long polling', offset: 2 }),
    ]));
    const both = await health(server.port);
    expect(both.transports.websocket).toBeGreaterThanOrEqual(1);
    expect(both.transports.longPolling).toBeGreaterThanOrEqual(1);
    ws.ws.close();
    await lp.close();
  });

  it('a replayed send request (same n) is acknowledged as a duplicate and processed once', async () => {
    const c = await LongPollClient.handshaken(url, { clientId: clientId() });
    const frames = [{ type: 'rpc', id: 5, method: 'hello', args: ['once'] }, { type: 'publish', seq: 1, channel: 'lp-once', data: 1 }, { type: 'ping', t: 42 }];
    const n = c.n++;
    expect(await c.sendAs(n, frames)).toMatchObject({ status: 200, body: { ok: true } });
    const again = await c.sendAs(n, frames);
    expect(again).toMatchObject({ status: 200, body: { ok: true, duplicate: true } });
    // And an older number again (the retry of a request before it).
    expect(await c.sendAs(0, [{ type: 'ping', t: 43 }])).toMatchObject({ status: 200, body: { ok: true, duplicate: true } });
    // A marker after them: everything before it has been answered once it arrives.
    await c.send({ type: 'ping', t: 99 });
    const seen: Frame[] = [];
    for (;;) {
      const frame = await c.next();
      if (frame.type === 'pong' && frame.t === 99) break;
      seen.push(frame);
    }
    expect(seen.filter((f) => f.type === 'result' && f.id === 5)).toHaveLength(1);
    expect(seen.filter((f) => f.type === 'ack' && f.seq === 1)).toHaveLength(1);
    expect(seen.filter((f) => f.type === 'pong')).toEqual([{ type: 'pong', t: 42 }]);
    expect(seen).toHaveLength(3);
    await c.close();
  });

  it('a send that skips a number gets 409 out_of_order and the session closes (4005)', async () => {
    const c = await LongPollClient.handshaken(url);
    const skipped = await c.sendAs(c.n + 1, [{ type: 'ping', t: 1 }]);
    expect(skipped.status).toBe(409);
    expect(skipped.body).toMatchObject({ error: { code: 'out_of_order', message: expect.stringContaining(`expected send ${c.n}`) } });
    expect(await c.closeCode()).toEqual({ code: 4005, reason: 'send requests out of order' });
    // Sends to the ended session say so (and which close), so the client opens a new one.
    expect(await c.send({ type: 'ping', t: 2 })).toMatchObject({ status: 404, body: { error: { code: 'unknown_session' }, close: { code: 4005 } } });
  });

  it('a poll acknowledging a frame never sent gets 409 and the session closes', async () => {
    const c = await LongPollClient.handshaken(url);
    const beyond = await c.pollRaw(c.received + 1);
    expect(beyond).toMatchObject({ status: 409, error: { code: 'out_of_order' } });
    expect(await c.closeCode()).toMatchObject({ code: 4005 });
  });

  it('a lost poll answer comes again on the next poll with the old ack; the client-side rule yields each frame once', async () => {
    const c = await LongPollClient.handshaken(url);
    await c.send({ type: 'ping', t: 1 }, { type: 'ping', t: 2 });
    const lost = await c.pollRaw();
    expect(lost.frames).toEqual([{ type: 'pong', t: 1 }, { type: 'pong', t: 2 }]);
    // Lost on the way: not applied. The next poll (same ack) carries the same frames.
    await c.send({ type: 'ping', t: 3 });
    await sleep(50);
    const again = await c.pollRaw();
    expect(again.from).toBe(lost.from);
    expect(again.frames).toEqual([{ type: 'pong', t: 1 }, { type: 'pong', t: 2 }, { type: 'pong', t: 3 }]);
    c.apply(again);
    // A duplicated answer (the same one twice) repeats nothing.
    c.apply(again);
    c.apply(lost);
    expect(c.inbox).toEqual([{ type: 'pong', t: 1 }, { type: 'pong', t: 2 }, { type: 'pong', t: 3 }]);
    // An acknowledged frame is forgotten: a stale poll with an older ack gets only what is left.
    await c.send({ type: 'ping', t: 4 });
    await c.pollRaw(c.received).then((a) => c.apply(a));
    const stale = await c.pollRaw(lost.from - 1);
    expect(stale.from).toBeGreaterThan(lost.from);
    c.apply(stale);
    expect(c.inbox.map((f) => f.t)).toEqual([1, 2, 3, 4]);
    await c.close();
  });

  it('two polls at once: the first is answered empty at once, the second is held and gets the frames', async () => {
    const c = await LongPollClient.handshaken(url);
    const firstStarted = Date.now();
    const first = c.pollRaw();
    await sleep(100);
    const second = c.pollRaw();
    const superseded = await first;
    expect(superseded).toEqual({ status: 200, from: c.received + 1, frames: [] });
    expect(Date.now() - firstStarted).toBeLessThan(800);
    await c.send({ type: 'ping', t: 7 });
    const answer = await second;
    expect(answer.frames).toEqual([{ type: 'pong', t: 7 }]);
    await c.close();
  });

  it('an unknown sid gets 404 unknown_session for send, poll and close', async () => {
    const sid = 'A'.repeat(43);
    for (const envelope of [{ op: 'send', sid, n: 0 }, { op: 'poll', sid, ack: 0 }, { op: 'close', sid }]) {
      const answer = await postJson(url, envelope);
      expect(answer.status).toBe(404);
      expect(answer.body).toMatchObject({ error: { code: 'unknown_session', message: expect.stringContaining('open a new one') } });
    }
  });

  it('refuses bad envelopes with 400 and clear messages while another client keeps being served', async () => {
    const c = await LongPollClient.handshaken(url);
    const cases: [string, RegExp][] = [
      ['not json', /first line of the body must be a JSON envelope/],
      ['', /first line of the body must be a JSON envelope/],
      ['[1,2]', /unknown op/],
      [JSON.stringify({ op: 'subscribe' }), /unknown op "subscribe"/],
      [JSON.stringify({ sid: c.sid }), /unknown op/],
      [JSON.stringify({ op: 'send', sid: c.sid, n: '0' }), /bad send envelope: n/],
      [JSON.stringify({ op: 'send', sid: c.sid, n: 1.5 }), /bad send envelope: n/],
      [JSON.stringify({ op: 'poll', sid: c.sid, ack: -1 }), /bad poll envelope: ack/],
      [JSON.stringify({ op: 'poll', sid: 5, ack: 0 }), /bad poll envelope: sid/],
      [JSON.stringify({ op: 'close' }), /bad close envelope: sid/],
      [`${JSON.stringify({ op: 'poll', sid: c.sid, ack: 0 })}\n{"type":"ping","t":1}`, /only send carries frames/],
    ];
    for (const [body, message] of cases) {
      const res = await fetch(url, { method: 'POST', body });
      expect(res.status, body).toBe(400);
      expect(res.headers.get('content-type')).toBe('application/json');
      const answer = (await res.json()) as { error: { code: string; message: string } };
      expect(answer.error.code, body).toBe('invalid_message');
      expect(answer.error.message, body).toMatch(message);
    }
    // Bad frames inside a good send are the session's business, answered like over a WebSocket.
    expect(await c.send('{"type":"nope"}', 'not json at all')).toMatchObject({ status: 200 });
    expect(await c.next()).toMatchObject({ type: 'error', code: 'invalid_message' });
    expect(await c.next()).toMatchObject({ type: 'error', code: 'invalid_message' });
    await anotherClientServed(server.port);
    // The session that sent bad envelopes still works.
    await c.send({ type: 'rpc', id: 2, method: 'hello', args: ['still'] });
    expect(await c.answerTo(2)).toMatchObject({ value: 'Hello, still!' });
    await c.close();
  });

  it('refuses a body over maxBodyBytes with 413 (session kept) and a frame over maxMessageBytes with 413 and close 1009', async () => {
    const c = await LongPollClient.handshaken(url);
    const huge = await c.sendAs(c.n, ['x'.repeat(4 * 4096 + 2048)]);
    expect(huge.status).toBe(413);
    expect(huge.body).toMatchObject({ error: { code: 'message_too_big', message: `the body is larger than ${4 * 4096 + 1024} bytes` } });
    // Not taken: the same number carries a good request next.
    await c.send({ type: 'ping', t: 1 });
    expect(await c.next()).toEqual({ type: 'pong', t: 1 });
    await anotherClientServed(server.port);

    const big = await c.send({ type: 'ping', t: 2 }, { type: 'rpc', id: 1, method: 'hello', args: ['y'.repeat(4200)] });
    expect(big.status).toBe(413);
    expect(big.body).toMatchObject({ error: { code: 'message_too_big', message: expect.stringContaining('larger than 4096') } });
    // Refused whole: the ping before it was not handed on either.
    expect(await c.closeCode()).toEqual({ code: 1009, reason: 'Max payload size exceeded' });
    expect(c.inbox).toEqual([]);
    await anotherClientServed(server.port);
  });

  it('answers a check (is plain HTTP reaching the server?) with ok and opens no session', async () => {
    const before = await health(server.port);
    const checked = await postJson(url, { op: 'check' });
    expect(checked).toMatchObject({ status: 200, body: { ok: true } });
    expect(checked.headers.get('cache-control')).toBe('no-store');
    expect((await health(server.port)).connections).toBe(before.connections);
    expect(await postJson(url, { op: 'check', sid: 'x' })).toMatchObject({ status: 200, body: { ok: true } });
  });

  it('answers OPTIONS /ws with 204 and the preflight headers; GET /ws without Upgrade is not long polling', async () => {
    const res = await fetch(url, { method: 'OPTIONS', headers: { origin: 'https://elsewhere.example', 'access-control-request-method': 'POST' } });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://elsewhere.example');
    expect(res.headers.get('access-control-allow-methods')).toBe('POST');
    expect(res.headers.get('access-control-allow-headers')).toBe('content-type');
    expect(res.headers.get('access-control-max-age')).toBe('600');
    expect((await fetch(url)).status).toBe(404);
  });
});

describe('long polling: origins', () => {
  let server: TetherServer;
  let url: string;
  const allowed = { origin: 'https://app.example' };
  const other = { origin: 'https://evil.example' };

  beforeAll(async () => {
    server = await startServer({ ...base, allowedOrigins: ['https://app.example'] });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  it('refuses a disallowed origin with 403 on open and on every op; an allowed origin gets CORS headers', async () => {
    const refused = await postJson(url, { op: 'open' }, [], other);
    expect(refused.status).toBe(403);
    expect(refused.body).toEqual({ error: { code: 'forbidden', message: 'origin not allowed (TETHER_ALLOWED_ORIGINS)' } });
    expect(refused.headers.get('access-control-allow-origin')).toBeNull();

    const c = await LongPollClient.handshaken(url, {}, allowed);
    const res = await post(url, { op: 'poll', sid: c.sid, ack: c.received }, [], { headers: allowed });
    expect(res.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(res.headers.get('vary')).toBe('Origin');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    c.apply(await pollResult(res));

    // The sid is a bearer secret, but a page of another site holding it still cannot use it.
    expect((await postJson(url, { op: 'send', sid: c.sid, n: c.n }, [{ type: 'ping', t: 1 }], other)).status).toBe(403);
    expect((await postJson(url, { op: 'poll', sid: c.sid, ack: c.received }, [], other)).status).toBe(403);
    expect((await postJson(url, { op: 'close', sid: c.sid }, [], other)).status).toBe(403);
    expect((await fetch(url, { method: 'OPTIONS', headers: other })).status).toBe(403);
    const preflight = await fetch(url, { method: 'OPTIONS', headers: allowed });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example');
    // The session is untouched by the refused requests.
    await c.send({ type: 'ping', t: 2 });
    expect(await c.next()).toEqual({ type: 'pong', t: 2 });
    await c.close();
  });
});

describe('long polling: admission shared with WebSocket upgrades', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({ ...base, maxConnections: 3, maxConnectionsPerIp: 2 });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  it('counts both transports against maxConnections and maxConnectionsPerIp, with the same texts', async () => {
    const ws = await wsHandshaken(server.port);
    const lp = await LongPollClient.handshaken(url);
    expect(server.connectionCount()).toBe(2);
    const perIp = await postJson(url, { op: 'open' });
    expect(perIp).toMatchObject({ status: 429, body: { error: { code: 'limit_exceeded', message: 'at most 2 connections per address (TETHER_MAX_CONNECTIONS_PER_IP)' } } });
    await expect(new RawClient(wsUrl(server.port)).open()).rejects.toThrow(/429/);
    // Another address gets in, up to the total.
    const third = await new RawClient(wsUrl(server.port), { localAddress: '127.0.0.2' }).open();
    await waitFor(() => server.connectionCount() === 3);
    const full = await postJson(`http://127.0.0.1:${server.port}/ws`, { op: 'open' });
    expect(full).toMatchObject({ status: 503, body: { error: { code: 'unavailable', message: 'the server holds its maximum of 3 connections (TETHER_MAX_CONNECTIONS)' } } });
    expect(await health(server.port)).toMatchObject({ connections: 3, transports: { websocket: 2, longPolling: 1 } });
    await lp.close();
    await waitFor(() => server.connectionCount() === 2);
    await anotherClientServed(server.port);
    ws.ws.close();
    third.ws.close();
  });
});

describe('long polling: liveness', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({ ...base, heartbeatMs: 100, idleHeartbeatMs: 60_000 });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  it('closes a session that keeps sending but stops polling (4004) within max(10 s, 3 heartbeats), and it leaves the count', { timeout: 20_000 }, async () => {
    const c = await LongPollClient.handshaken(url);
    expect(server.connectionCount()).toBe(1);
    const started = Date.now();
    // Pings keep the heartbeat sweep satisfied: only the missing polls can end this session.
    while (server.connectionCount() === 1 && Date.now() - started < 15_000) {
      await c.send({ type: 'ping', t: Date.now() });
      await sleep(250);
    }
    const after = Date.now() - started;
    expect(server.connectionCount()).toBe(0);
    expect(after).toBeGreaterThan(9_500);
    // The close waits for the client, behind the pongs it never collected.
    expect(await c.closeCode()).toEqual({ code: 4004, reason: 'no poll' });
    expect(c.inbox.length).toBeGreaterThan(10);
    expect(c.inbox.every((f) => f.type === 'pong')).toBe(true);
  });
});

describe('long polling: a cut poll', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    // Polls held for 20 s (as by default), so the only end of a held poll here is the client's cut.
    server = await startServer({ ...base, longPollMs: 20_000, heartbeatMs: 1000, idleHeartbeatMs: 60_000 });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  /** A handshaken client whose held poll it then cuts (its request aborted before an answer). */
  async function withCutPoll(): Promise<LongPollClient> {
    const c = await LongPollClient.handshaken(url);
    const abort = new AbortController();
    const held = c.pollRaw(c.received, abort.signal).catch(() => 'cut');
    await sleep(200);
    abort.abort();
    expect(await held).toBe('cut');
    return c;
  }

  it('closes a session whose held poll the client cut, with no poll since, after 5 s (a closed tab), not the 10 s of a silent one', { timeout: 20_000 }, async () => {
    const c = await withCutPoll();
    const cutAt = Date.now();
    // As a closed tab: nothing more from it (the idle heartbeat rule is 3 minutes here).
    while (server.connectionCount() === 1 && Date.now() - cutAt < 12_000) await sleep(100);
    const after = Date.now() - cutAt;
    expect(server.connectionCount()).toBe(0);
    expect(after).toBeGreaterThan(4_500);
    expect(after).toBeLessThan(9_000);
    expect(await c.closeCode()).toEqual({ code: 4004, reason: 'poll cut' });
  });

  it('a cut poll followed by the next one within a worker\'s retry (250 ms) keeps the session', { timeout: 20_000 }, async () => {
    const c = await withCutPoll();
    await sleep(250);
    // Polls as a worker does, past the cut deadline: the session stays.
    const started = Date.now();
    while (Date.now() - started < 7_000) {
      await c.send({ type: 'ping', t: Date.now() });
      await c.poll();
    }
    expect(server.connectionCount()).toBe(1);
    expect(c.closed).toBeUndefined();
    await c.close();
  });
});

describe('long polling: the server closes', () => {
  let server: TetherServer;
  let url: string;

  async function jwt(sub: string, expiresIn = '1h'): Promise<string> {
    return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime(expiresIn).sign(new TextEncoder().encode(SECRET));
  }

  beforeAll(async () => {
    server = await startServer({ ...base, tokenSecret: SECRET, apiKey: API_KEY });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  it('a backend disconnect is delivered in the poll answer after the frames queued before it (4001)', async () => {
    const c = await LongPollClient.handshaken(url, { token: await jwt('lp-alice') });
    await c.send({ type: 'rpc', id: 1, method: 'hello', args: ['before'] }, { type: 'ping', t: 1 });
    await sleep(50);
    const res = await fetch(`http://127.0.0.1:${server.port}/api/disconnect`, {
      method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ user: 'lp-alice' }),
    });
    expect(await res.json()).toMatchObject({ closed: 1 });
    const answer = await c.pollRaw();
    // The pong is sent at once, the result after the procedure's await: both before the close.
    expect(answer.frames).toEqual([{ type: 'pong', t: 1 }, { type: 'result', id: 1, value: 'Hello, before!' }]);
    expect(answer.close).toEqual({ code: 4001, reason: 'disconnected by the backend' });
    c.apply(answer);
    await waitFor(() => server.connectionCount() === 0);
    // The sid keeps answering with the close (a lost answer comes again), not 404.
    expect(await c.pollRaw(0)).toMatchObject({ status: 200, close: { code: 4001 } });
    expect(await c.pollRaw()).toMatchObject({ status: 200, from: c.received + 1, frames: [], close: { code: 4001 } });
  });

  it('a token expiring during a session is delivered as an unauthorized error, then close 4001', { timeout: 8000 }, async () => {
    const c = await LongPollClient.handshaken(url, { token: await jwt('lp-bob', '2s') });
    const error = await c.until((f) => f.type === 'error', 5000);
    expect(error).toMatchObject({ code: 'unauthorized', message: 'the token has expired' });
    expect(await c.closeCode()).toEqual({ code: 4001, reason: 'token expired' });
  });
});

describe('long polling: shutdown', () => {
  it('server.close() answers a held poll with 1001 and does not hang', async () => {
    const server = await startServer(base);
    const url = lpUrl(server.port);
    const c = await LongPollClient.handshaken(url);
    await c.send({ type: 'ping', t: 1 });
    await c.until((f) => f.type === 'pong');
    const held = c.pollRaw();
    await sleep(100);
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await held).toMatchObject({ status: 200, frames: [], close: { code: 1001, reason: 'server shutting down' } });
  });
});

describe('long polling: a slow consumer', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({ ...base, maxBufferedBytes: 4096 });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  it('a client that never acknowledges is dropped with 4006 once its unacknowledged frames pass maxBufferedBytes', async () => {
    const slow = await LongPollClient.handshaken(url);
    await slow.send({ type: 'subscribe', channel: 'lp-slow' });
    await slow.next();
    const publisher = await wsHandshaken(server.port, { clientId: clientId() });
    for (let seq = 1; seq <= 20; seq++) publisher.send({ type: 'publish', seq, channel: 'lp-slow', data: 'x'.repeat(300) });
    await publisher.until((f) => f.type === 'ack' && f.seq === 20);
    // Polls that never acknowledge: the frames stay counted.
    const first = await slow.pollRaw(slow.received);
    expect(first.frames.length).toBeGreaterThan(0);
    await waitFor(() => server.connectionCount() === 1);
    const last = await slow.pollRaw(slow.received);
    expect(last.close).toEqual({ code: 4006, reason: 'slow consumer' });
    // Everything queued before the drop is still delivered, in order, then the close.
    slow.apply(last);
    const offsets = slow.inbox.filter((f) => f.type === 'event').map((f) => f.offset);
    expect(offsets).toEqual(offsets.map((_, i) => i + 1));
    expect(offsets.length * 300).toBeGreaterThan(4096 - 1000);
    await anotherClientServed(server.port);
    publisher.ws.close();
  });

  it('a client that acknowledges as it goes is not dropped by the same flow', async () => {
    const reader = await LongPollClient.handshaken(url);
    await reader.send({ type: 'subscribe', channel: 'lp-reader' });
    await reader.next();
    const publisher = await wsHandshaken(server.port, { clientId: clientId() });
    for (let seq = 1; seq <= 20; seq++) {
      publisher.send({ type: 'publish', seq, channel: 'lp-reader', data: 'x'.repeat(300) });
      await publisher.until((f) => f.type === 'ack' && f.seq === seq);
      expect(await reader.next()).toMatchObject({ type: 'event', offset: seq });
    }
    expect(reader.closed).toBeUndefined();
    await reader.close();
    publisher.ws.close();
  });
});

describe('long polling: random request faults (model)', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({ ...base, connectRatePerIp: 1000 });
    url = lpUrl(server.port);
  });
  afterAll(() => server.close());

  type Step =
    | { op: 'send'; pings: number }
    | { op: 'retrySend' }
    | { op: 'poll' }
    | { op: 'lostPoll' }
    | { op: 'staleAnswer' }
    | { op: 'abortedPoll'; afterMs: number };

  it('replayed sends, lost, stale, duplicated and aborted poll answers still deliver every frame once, in order', { timeout: 60_000 }, async () => {
    const step: fc.Arbitrary<Step> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ op: fc.constant('send' as const), pings: fc.integer({ min: 1, max: 3 }) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('retrySend' as const) }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant('poll' as const) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('lostPoll' as const) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('staleAnswer' as const) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('abortedPoll' as const), afterMs: fc.integer({ min: 0, max: 30 }) }) },
    );
    const seed = Number(process.env.TETHER_SEED ?? Date.now() % 2 ** 31);
    console.log(`long-polling model: seed ${seed} (TETHER_SEED=${seed} to replay)`);
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 3, maxLength: 30 }), async (steps) => {
        const c = await LongPollClient.handshaken(url);
        let t = 0;
        let lastSend: { n: number; frames: Frame[] } | undefined;
        const answers: Awaited<ReturnType<LongPollClient['pollRaw']>>[] = [];
        /** A poll that never waits the full pollMs: cut after `ms` (a cut answer is a lost one). */
        const quickPoll = async (ack: number, ms: number) => {
          const abort = new AbortController();
          const timer = setTimeout(() => abort.abort(), ms);
          try {
            return await c.pollRaw(ack, abort.signal);
          } catch {
            return undefined;
          } finally {
            clearTimeout(timer);
          }
        };
        for (const s of steps) {
          switch (s.op) {
            case 'send': {
              const frames = Array.from({ length: s.pings }, () => ({ type: 'ping', t: ++t }));
              lastSend = { n: c.n, frames };
              expect(await c.send(...frames)).toMatchObject({ status: 200, body: { ok: true } });
              break;
            }
            case 'retrySend':
              // The answer was lost: the same request again.
              if (lastSend) expect(await c.sendAs(lastSend.n, lastSend.frames)).toMatchObject({ status: 200, body: { duplicate: true } });
              break;
            case 'poll': {
              const answer = await quickPoll(c.received, 50);
              if (answer) {
                c.apply(answer);
                answers.push(answer);
              }
              break;
            }
            case 'lostPoll': {
              const answer = await quickPoll(c.received, 50);
              if (answer) answers.push(answer); // kept for a late, stale delivery; not applied now
              break;
            }
            case 'staleAnswer':
              // An old answer arrives again (a duplicate, or a late one overtaken by newer).
              if (answers.length > 0) c.apply(answers[Math.floor(answers.length / 2)]!);
              break;
            case 'abortedPoll':
              await quickPoll(c.received, s.afterMs);
              break;
          }
        }
        // Drain: poll properly until every pong came.
        const deadline = Date.now() + 10_000;
        while (c.inbox.filter((f) => f.type === 'pong').length < t && Date.now() < deadline) {
          const answer = await quickPoll(c.received, 1500);
          if (answer) c.apply(answer);
        }
        expect(c.inbox.filter((f) => f.type === 'pong').map((f) => f.t)).toEqual(Array.from({ length: t }, (_, i) => i + 1));
        expect(c.closed).toBeUndefined();
        await c.close();
      }),
      { seed, numRuns: 20 },
    );
  });
});
