/**
 * Resource limits under attack, each against a live in-process server while a normal client
 * keeps working: connection caps, slowloris, RPC calls in flight, document size, a catch-up
 * storm from a client that does not read, a junk flood, security headers, and the RPC proxy's
 * secret, user header and redirects.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { connect, type Socket } from 'node:net';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type ServerOptions, type TetherServer } from './server.js';
import { RawClient, type Frame } from './testing/raw-client.js';

const SECRET = 'limits-test-secret-of-at-least-32-characters';
const silent = pino({ level: 'silent' });
const base: ServerOptions = { port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:' };


/** Every client a test opened: terminated after it, so that a failed test leaves none behind. */
afterEach(() => {
  for (const c of RawClient.all) c.ws.terminate();
});


async function jwt(sub: string, claims: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
}

const wsUrl = (port: number) => `ws://127.0.0.1:${port}/ws`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function handshaken(port: number, extra: Frame = {}, options: WebSocket.ClientOptions = {}): Promise<RawClient> {
  const c = await new RawClient(wsUrl(port), options).open();
  c.send({ type: 'handshake', v: 1, ...extra });
  expect(await c.next()).toMatchObject({ type: 'welcome' });
  return c;
}

/**
 * The normal client: a fresh connection handshakes and hello(['world']) answers. Prints the
 * answer time; asserts only a bound that a stalled event loop would break.
 */
async function normalClientWorks(port: number, label: string, extra: Frame = {}, options: WebSocket.ClientOptions = {}): Promise<number> {
  const started = performance.now();
  const c = await handshaken(port, extra, options);
  const called = performance.now();
  c.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
  expect(await c.answerTo(1)).toEqual({ type: 'result', id: 1, value: 'Hello, world!' });
  const answered = performance.now();
  c.ws.close();
  const total = answered - started;
  console.log(`[${label}] normal client: connect+handshake ${(called - started).toFixed(1)} ms, hello answered in ${(answered - called).toFixed(1)} ms`);
  expect(total).toBeLessThan(2000);
  return answered - called;
}

/** A raw HTTP exchange over a socket: the status line's code, the headers and body text, once the server closes. */
function rawExchange(port: number, request: string, timeoutMs = 5000): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    });
    socket.write(request);
  });
}

const upgradeRequest = (path = '/ws') =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

async function waitFor(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await sleep(10);
  }
}

describe('connection caps', () => {
  let full: TetherServer;
  let perIp: TetherServer;

  beforeAll(async () => {
    full = await startServer({ ...base, maxConnections: 5 });
    perIp = await startServer({ ...base, maxConnectionsPerIp: 3 });
  });
  afterAll(async () => {
    await full.close();
    await perIp.close();
  });

  it('refuses the 6th upgrade with 503 and a message when maxConnections is 5; closing one frees a slot', async () => {
    const held = await Promise.all(Array.from({ length: 5 }, () => handshaken(full.port)));
    expect(full.connectionCount()).toBe(5);
    const refused = await rawExchange(full.port, upgradeRequest());
    expect(refused.status).toBe(503);
    expect(refused.text).toContain('the server holds its maximum of 5 connections (TETHER_MAX_CONNECTIONS)');
    // The ws client sees the same refusal.
    await expect(new RawClient(wsUrl(full.port)).open()).rejects.toThrow(/503/);
    held[0]!.ws.close();
    await waitFor(() => full.connectionCount() === 4);
    await normalClientWorks(full.port, 'maxConnections, after one closed');
    for (const c of held) c.ws.close();
  });

  it('refuses the 4th upgrade from one address with 429 when maxConnectionsPerIp is 3; other addresses and a freed slot get in', async () => {
    const held = await Promise.all(Array.from({ length: 3 }, () => handshaken(perIp.port)));
    const refused = await rawExchange(perIp.port, upgradeRequest());
    expect(refused.status).toBe(429);
    expect(refused.text).toContain('at most 3 connections per address (TETHER_MAX_CONNECTIONS_PER_IP)');
    // Another loopback address is another peer: not refused while 127.0.0.1 is at its cap.
    await normalClientWorks(perIp.port, 'maxConnectionsPerIp, from 127.0.0.2', {}, { localAddress: '127.0.0.2' });
    held[0]!.ws.close();
    await waitFor(() => perIp.connectionCount() === 2);
    await normalClientWorks(perIp.port, 'maxConnectionsPerIp, after one closed');
    for (const c of held) c.ws.close();
  });
});

describe('slowloris', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer({ ...base, headersTimeoutMs: 1000 });
  });
  afterAll(() => server.close());

  /** Sends `head`, then one header byte every 300 ms; resolves with how long the server kept the socket. */
  function trickle(head: string): Promise<{ ms: number; answer: string; bytesTrickled: number }> {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const socket: Socket = connect(server.port, '127.0.0.1');
      const tail = 'X-Slow: ' + 'a'.repeat(200);
      let sent = 0;
      let answer = '';
      const drip = setInterval(() => {
        if (socket.destroyed || !socket.writable) return;
        socket.write(tail[sent % tail.length]!);
        sent++;
      }, 300);
      const giveUp = setTimeout(() => {
        clearInterval(drip);
        socket.destroy();
        reject(new Error('the server kept a slowloris socket open for 5 s'));
      }, 5000);
      socket.on('data', (chunk) => (answer += chunk.toString('utf8')));
      socket.on('error', () => {});
      const done = () => {
        clearInterval(drip);
        clearTimeout(giveUp);
        socket.destroy();
        resolve({ ms: performance.now() - started, answer, bytesTrickled: sent });
      };
      socket.on('end', done);
      socket.on('close', done);
      socket.write(head);
    });
  }

  it('closes a request whose headers trickle in one byte every 300 ms within 5 s', { timeout: 10_000 }, async () => {
    const attack = trickle('GET / HTTP/1.1\r\nHost: x\r\n');
    await sleep(300);
    await normalClientWorks(server.port, 'slowloris GET, during');
    const { ms, answer, bytesTrickled } = await attack;
    console.log(`[slowloris GET] closed after ${ms.toFixed(0)} ms (${bytesTrickled} bytes trickled), answer: ${JSON.stringify(answer.split('\r\n')[0])}`);
    expect(ms).toBeLessThan(5000);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    await normalClientWorks(server.port, 'slowloris GET, after');
  });

  it('closes an upgrade request whose headers trickle in within 5 s', { timeout: 10_000 }, async () => {
    const attack = trickle('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n');
    await sleep(300);
    await normalClientWorks(server.port, 'slowloris upgrade, during');
    const { ms, answer, bytesTrickled } = await attack;
    console.log(`[slowloris upgrade] closed after ${ms.toFixed(0)} ms (${bytesTrickled} bytes trickled), answer: ${JSON.stringify(answer.split('\r\n')[0])}`);
    expect(ms).toBeLessThan(5000);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    await normalClientWorks(server.port, 'slowloris upgrade, after');
  });

  it('holds 20 trickling sockets at once and still closes them all in time', { timeout: 10_000 }, async () => {
    const attacks = Array.from({ length: 20 }, () => trickle('GET / HTTP/1.1\r\nHost: x\r\n'));
    await sleep(300);
    await normalClientWorks(server.port, 'slowloris ×20, during');
    const results = await Promise.all(attacks);
    const worst = Math.max(...results.map((r) => r.ms));
    console.log(`[slowloris ×20] slowest closed after ${worst.toFixed(0)} ms`);
    expect(worst).toBeLessThan(5000);
  });
});

describe('RPC calls in flight', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer({
      ...base,
      maxRpcInFlight: 4,
      procedures: { wait: () => new Promise((resolve) => setTimeout(() => resolve('waited'), 300)) },
    });
  });
  afterAll(() => server.close());

  it('answers 4 of 10 simultaneous calls and refuses 6 with limit_exceeded and their ids; calls work again afterwards', async () => {
    const c = await handshaken(server.port);
    for (let id = 1; id <= 10; id++) c.send({ type: 'rpc', id, method: 'wait', args: [] });
    const during = normalClientWorks(server.port, 'rpc in flight, during');
    const answers = new Map<unknown, Frame>();
    while (answers.size < 10) {
      const frame = await c.next();
      answers.set(frame.id, frame);
    }
    await during;
    const results = [...answers.values()].filter((f) => f.type === 'result');
    const refused = [...answers.values()].filter((f) => f.type === 'error');
    expect(results).toHaveLength(4);
    expect(results.every((f) => f.value === 'waited')).toBe(true);
    expect(refused).toHaveLength(6);
    for (const f of refused) {
      expect(f).toMatchObject({ code: 'limit_exceeded', message: 'at most 4 calls may run at once per connection; wait for an answer' });
    }
    expect(refused.map((f) => f.id).sort((a, b) => Number(a) - Number(b))).toEqual([5, 6, 7, 8, 9, 10]);
    // The slots are given back: the same connection calls again.
    for (let id = 11; id <= 14; id++) c.send({ type: 'rpc', id, method: 'wait', args: [] });
    for (let id = 11; id <= 14; id++) expect(await c.answerTo(id)).toEqual({ type: 'result', id, value: 'waited' });
    c.send({ type: 'rpc', id: 15, method: 'hello', args: ['world'] });
    expect(await c.answerTo(15)).toMatchObject({ type: 'result', value: 'Hello, world!' });
    c.ws.close();
    await normalClientWorks(server.port, 'rpc in flight, after');
  });
});

describe('document size (maxDocBytes 10_000)', () => {
  let dir: string;
  let server: TetherServer;
  const big = 'x'.repeat(20_000);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tether-limits-'));
    const db = join(dir, 'events.db');
    // A document already over the bound: written under a larger one (the operator lowered it since).
    const before = await startServer({ ...base, db, apiKey: 'k', maxDocBytes: 100_000 });
    const seeded = await fetch(`http://127.0.0.1:${before.port}/api/docs/legacy/transact`, {
      method: 'POST',
      headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
      body: JSON.stringify({ writes: { a: 'a'.repeat(8000), b: 'b'.repeat(8000) } }),
    });
    expect(seeded.status).toBe(200);
    await before.close();
    server = await startServer({ ...base, db, apiKey: 'k', tokenSecret: SECRET, maxDocBytes: 10_000 });
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a write that grows a document past the bound, by seq, and keeps the connection and the document usable', async () => {
    const alice = await handshaken(server.port, { token: await jwt('alice', { docs: ['*'] }), clientId: 'alice-client-0001' });
    alice.send({ type: 'transact', seq: 1, doc: 'notes', reads: {}, writes: { big } });
    const refusal = await alice.next();
    expect(refusal).toMatchObject({ type: 'error', seq: 1, code: 'limit_exceeded' });
    expect(refusal.message).toMatch(/TETHER_MAX_DOC_BYTES/);
    // The next write on the same connection is applied.
    alice.send({ type: 'transact', seq: 2, doc: 'notes', reads: {}, writes: { small: 'hi' } });
    expect(await alice.next()).toMatchObject({ type: 'ack', seq: 2 });
    // A resend of the refused write gets the same refusal (it is not applied now either).
    alice.send({ type: 'transact', seq: 1, doc: 'notes', reads: {}, writes: { big } });
    expect(await alice.next()).toEqual(refusal);
    // A document already over the bound: a write that shrinks it is taken, one that grows it is not.
    alice.send({ type: 'transact', seq: 3, doc: 'legacy', reads: {}, writes: { a: 'a'.repeat(4000) } });
    expect(await alice.next()).toMatchObject({ type: 'ack', seq: 3 });
    alice.send({ type: 'transact', seq: 4, doc: 'legacy', reads: {}, writes: { c: 'c' } });
    expect(await alice.next()).toMatchObject({ type: 'error', seq: 4, code: 'limit_exceeded' });
    alice.send({ type: 'transact', seq: 5, doc: 'legacy', reads: {}, writes: { a: null, b: null } });
    expect(await alice.next()).toMatchObject({ type: 'ack', seq: 5 });
    alice.ws.close();

    // The HTTP API answers 413.
    const response = await fetch(`http://127.0.0.1:${server.port}/api/docs/notes/transact`, {
      method: 'POST',
      headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
      body: JSON.stringify({ writes: { big } }),
    });
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ error: { code: 'limit_exceeded' } });

    // Another user still opens the document: the state without the refused value.
    const bob = await handshaken(server.port, { token: await jwt('bob', { docs_read: ['*'] }) });
    bob.send({ type: 'doc_open', doc: 'notes' });
    const state = await bob.next();
    expect(state).toMatchObject({ type: 'doc', doc: 'notes', full: true, keys: { small: { value: 'hi' } } });
    expect(Object.keys(state.keys as object)).toEqual(['small']);
    bob.send({ type: 'doc_open', doc: 'legacy' });
    expect(await bob.next()).toMatchObject({ type: 'doc', doc: 'legacy', keys: {} });
    bob.ws.close();
    await normalClientWorks(server.port, 'document size, after', { token: await jwt('carol') });
  });
});

describe('catch-up storm from a client that does not read', () => {
  let server: TetherServer;
  const EVENTS = 300;
  let epoch = '';

  beforeAll(async () => {
    server = await startServer({ ...base, apiKey: 'k', maxSubscriptions: 40 });
    const data = 'x'.repeat(60_000);
    for (let i = 0; i < EVENTS; i++) {
      const response = await fetch(`http://127.0.0.1:${server.port}/api/publish`, {
        method: 'POST',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({ channel: 'storm', data }),
      });
      expect(response.status).toBe(200);
    }
    const first = await handshaken(server.port);
    first.send({ type: 'subscribe', channel: 'storm' });
    const subscribed = await first.next();
    expect(subscribed).toMatchObject({ type: 'subscribed', channel: 'storm', offset: EVENTS });
    epoch = String(subscribed.epoch);
    first.ws.close();
  }, 30_000);
  afterAll(() => server.close());

  it('keeps answering a normal client, holds bounded memory, and the paused attacker catches up once it reads', { timeout: 20_000 }, async () => {
    const attacker = await handshaken(server.port);
    attacker.keepAlive();
    attacker.socket.pause();
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
    const channels = ['storm', 'storm-b', 'storm-c', 'storm-d', 'storm-e'];
    for (let i = 0; i < 60; i++) {
      attacker.send({ type: 'subscribe', channel: channels[i % 3 === 0 ? 0 : i % channels.length]!, since: { offset: 0, epoch } });
    }

    // The normal client calls hello every 50 ms for 3 s.
    const normal = await handshaken(server.port);
    const sentAt = new Map<number, number>();
    const latencies: number[] = [];
    const wrong: unknown[] = [];
    normal.ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      const sent = sentAt.get(frame.id as number);
      if (sent === undefined) return;
      if (frame.type !== 'result' || frame.value !== 'Hello, world!') wrong.push(frame);
      latencies.push(performance.now() - sent);
    });
    for (let id = 1; id <= 60; id++) {
      sentAt.set(id, performance.now());
      normal.send({ type: 'rpc', id, method: 'hello', args: ['world'] });
      await sleep(50);
    }
    await waitFor(() => latencies.length === 60, 10_000);
    expect(wrong).toEqual([]);
    clearInterval(sampler);
    latencies.sort((a, b) => a - b);
    const p50 = latencies[Math.floor(latencies.length / 2)]!;
    const max = latencies[latencies.length - 1]!;
    const growthMb = (rssPeak - rssBefore) / 2 ** 20;
    console.log(`[catch-up storm] normal client: ${latencies.length} calls, p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms; RSS ${(rssBefore / 2 ** 20).toFixed(0)} → peak ${(rssPeak / 2 ** 20).toFixed(0)} MB (growth ${growthMb.toFixed(1)} MB)`);
    expect(latencies).toHaveLength(60);
    expect(max).toBeLessThan(2000);
    expect(growthMb).toBeLessThan(500);
    normal.ws.close();

    // A reader that does not keep up slows its own catch-up: it is held (paged, waiting for the
    // socket to drain), not dropped, and not buffered without bound.
    console.log(`[catch-up storm] attacker after 3 s paused: ${attacker.closeCode === undefined ? 'still connected' : `closed ${attacker.closeCode}`}`);
    expect(attacker.closeCode).toBeUndefined();
    await normalClientWorks(server.port, 'catch-up storm, attacker held');

    // Once it reads, its catch-ups proceed: the last subscribe to storm replays up to the head.
    attacker.socket.resume();
    const started = performance.now();
    const last = await attacker.until((f) => f.type === 'event' && f.channel === 'storm' && f.offset === EVENTS, 15_000);
    expect(last).toMatchObject({ type: 'event', channel: 'storm', offset: EVENTS });
    console.log(`[catch-up storm] attacker resumed: reached offset ${EVENTS} of storm in ${(performance.now() - started).toFixed(0)} ms`);
    attacker.ws.close();
  });

  it('refuses subscribes past a multiple of maxSubscriptions waiting on one connection with limit_exceeded', { timeout: 20_000 }, async () => {
    const attacker = await handshaken(server.port);
    attacker.keepAlive();
    attacker.socket.pause();
    // The first catch-up (18 MB of history) blocks on the unread socket…
    attacker.send({ type: 'subscribe', channel: 'storm', since: { offset: 0, epoch } });
    await sleep(500);
    // …and 199 more subscribes (30 channels, re-subscribed over and over) wait behind it, up to
    // the bound (a small multiple of maxSubscriptions 40); those past it are refused.
    const sent: string[] = [];
    for (let i = 0; i < 199; i++) {
      const channel = `c-${i % 30}`;
      sent.push(channel);
      attacker.send({ type: 'subscribe', channel, since: { offset: 0, epoch } });
    }
    await sleep(300);
    await normalClientWorks(server.port, 'catch-up queue bound, during');
    attacker.socket.resume();
    // Refusals were sent at once; the queued catch-ups run once the client reads. Read until quiet.
    const refusals: Frame[] = [];
    let stormHead = 0;
    for (;;) {
      const frame = await attacker.until((f) => f.type !== 'pong', 500).catch(() => undefined);
      if (frame === undefined) break;
      if (frame.type === 'error') refusals.push(frame);
      if (frame.type === 'event' && frame.channel === 'storm') stormHead = Number(frame.offset);
    }
    const bound = Number(/more than (\d+) subscribes/.exec(String(refusals[0]?.message))?.[1]);
    console.log(`[catch-up queue bound] 1 + 199 subscribes, maxSubscriptions 40: ${refusals.length} refused, bound ${bound} waiting; the storm catch-up reached offset ${stormHead}`);
    expect(refusals.length).toBeGreaterThan(0);
    // The bound is a small multiple of maxSubscriptions (2× when written, 3× since), and exact:
    // the first subscribe plus bound − 1 waiting ones are taken, every later one refused.
    expect([80, 120]).toContain(bound);
    expect(refusals).toHaveLength(200 - bound);
    expect(refusals.map((f) => f.channel)).toEqual(sent.slice(bound - 1));
    for (const f of refusals) {
      expect(f).toMatchObject({ type: 'error', code: 'limit_exceeded' });
      expect(f.message).toMatch(new RegExp(`more than ${bound} subscribes`));
    }
    expect(stormHead).toBe(EVENTS);
    // The connection is still usable: a subscribe now is answered and catches up.
    attacker.send({ type: 'subscribe', channel: 'storm', since: { offset: EVENTS - 2, epoch } });
    const notPong = (f: Frame) => f.type !== 'pong';
    expect(await attacker.until(notPong)).toMatchObject({ type: 'subscribed', channel: 'storm', offset: EVENTS });
    expect(await attacker.until(notPong)).toMatchObject({ type: 'event', channel: 'storm', offset: EVENTS - 1 });
    expect(await attacker.until(notPong)).toMatchObject({ type: 'event', channel: 'storm', offset: EVENTS });
    attacker.ws.close();
    await normalClientWorks(server.port, 'catch-up queue bound, after');
  });

  it('drops a paused subscriber whose held live events pass maxBufferedBytes (4006) instead of holding them', { timeout: 20_000 }, async () => {
    const others = server.connectionCount();
    const attacker = await handshaken(server.port);
    attacker.keepAlive();
    attacker.socket.pause();
    attacker.send({ type: 'subscribe', channel: 'storm', since: { offset: 0, epoch } });
    await sleep(300);
    const rssBefore = process.memoryUsage().rss;
    // 12 MB of live events while its catch-up is blocked: more than the 8 MiB default bound.
    const data = 'y'.repeat(60_000);
    for (let i = 0; i < 200; i++) {
      const response = await fetch(`http://127.0.0.1:${server.port}/api/publish`, {
        method: 'POST',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({ channel: 'storm', data }),
      });
      expect(response.status).toBe(200);
    }
    const started = performance.now();
    // The server closes it (4006), and terminates it a second later when it does not read the close.
    await waitFor(() => server.connectionCount() === others, 3000);
    const growthMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    console.log(`[held live events] after 200 live events of 60 KB the attacker was gone ${(performance.now() - started).toFixed(0)} ms later; RSS growth ${growthMb.toFixed(1)} MB`);
    expect(growthMb).toBeLessThan(500);
    attacker.socket.resume();
    const { code } = await attacker.closed;
    // 4006 is sent, but behind the megabytes the client never read: terminating the socket
    // discards them with the close frame, so the client itself sees 1006.
    console.log(`[held live events] the attacker saw close code ${code}`);
    expect([4006, 1006]).toContain(code);
    await normalClientWorks(server.port, 'held live events, after');
  });
});

describe('junk flood', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer(base);
  });
  afterAll(() => server.close());

  it('closes a connection that sends 10,000 malformed frames with 4005, others unaffected', { timeout: 15_000 }, async () => {
    const bystander = await handshaken(server.port);
    const attacker = await handshaken(server.port);
    for (let i = 0; i < 10_000; i++) {
      if (attacker.ws.readyState !== WebSocket.OPEN) break;
      attacker.send(i % 2 === 0 ? '{not json' : { type: 'nonsense', n: i });
    }
    const { code } = await attacker.closed;
    console.log(`[junk flood] attacker closed with ${code}`);
    expect([4005, 4007]).toContain(code);
    expect(code).toBe(4005); // 21 bad frames come long before the rate limit's burst of 4000
    bystander.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
    expect(await bystander.answerTo(1)).toMatchObject({ type: 'result', value: 'Hello, world!' });
    expect(bystander.closeCode).toBeUndefined();
    bystander.ws.close();
    await normalClientWorks(server.port, 'junk flood, after');
  });
});

describe('security headers and source maps', () => {
  let dev: TetherServer;
  let production: TetherServer;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tether-client-'));
    writeFileSync(join(dir, 'a.js'), 'console.log(1);\n//# sourceMappingURL=a.js.map\n');
    writeFileSync(join(dir, 'a.js.map'), '{"version":3,"sources":["secret.ts"],"mappings":""}');
    dev = await startServer(base);
    production = await startServer({ ...base, clientDir: dir, production: true, tokenSecret: SECRET, allowedOrigins: ['https://app.example.com'] });
  });
  afterAll(async () => {
    await dev.close();
    await production.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function expectSecurityHeaders(response: Response): void {
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-security-policy')).toMatch(/frame-ancestors/);
    expect(response.headers.get('referrer-policy')).toBe('no-referrer');
  }

  it('sends them with health and with a static 404; health reports the mode', async () => {
    const health = await fetch(`http://127.0.0.1:${dev.port}/api/health`);
    expectSecurityHeaders(health);
    expect(await health.json()).toMatchObject({ ok: true, mode: 'development', allowedOrigins: 'any' });
    const missing = await fetch(`http://127.0.0.1:${dev.port}/nothing-here.html`);
    expect(missing.status).toBe(404);
    expectSecurityHeaders(missing);
    const secure = await fetch(`http://127.0.0.1:${production.port}/api/health`);
    expectSecurityHeaders(secure);
    expect(await secure.json()).toMatchObject({ ok: true, mode: 'secure', allowedOrigins: 'listed' });
    const api = await fetch(`http://127.0.0.1:${production.port}/api/publish`, { method: 'POST' });
    expect(api.status).toBe(401);
    expectSecurityHeaders(api);
  });

  it('serves a.js but answers 404 for source maps in production', async () => {
    const script = await fetch(`http://127.0.0.1:${production.port}/a.js`);
    expect(script.status).toBe(200);
    expectSecurityHeaders(script);
    expect(await script.text()).toContain('console.log(1)');
    for (const path of ['/a.js.map', '/anything.js.map', '/A.JS.MAP', '/a.js.map?x=1']) {
      const map = await fetch(`http://127.0.0.1:${production.port}${path}`);
      expect({ path, status: map.status }).toEqual({ path, status: 404 });
      expect(await map.text()).not.toContain('secret.ts');
    }
    await normalClientWorks(production.port, 'production server', { token: await jwt('u') });
  });
});

describe('RPC proxy', () => {
  let server: TetherServer;
  let backend: HttpServer;
  let elsewhere: HttpServer;
  let elsewhereHits = 0;
  const seen: { headers: IncomingHttpHeaders; body: { method: string; user: string | null } }[] = [];

  const listen = async (s: HttpServer) => {
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    return (s.address() as AddressInfo).port;
  };

  beforeAll(async () => {
    elsewhere = createHttpServer((_req, res) => {
      elsewhereHits++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"result":"stolen"}');
    });
    const elsewherePort = await listen(elsewhere);
    backend = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { method: string; user: string | null };
        seen.push({ headers: req.headers, body });
        if (body.method === 'b.redirect' || body.method === 'b.redirect307') {
          res.writeHead(body.method === 'b.redirect' ? 302 : 307, { location: `http://127.0.0.1:${elsewherePort}/steal` });
          return res.end();
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ result: { user: req.headers['x-tether-user'] ?? null } }));
      });
    });
    const backendPort = await listen(backend);
    server = await startServer({
      ...base,
      tokenSecret: SECRET,
      apiKey: 'api-key',
      rpcProxyUrl: `http://127.0.0.1:${backendPort}/rpc`,
      rpcProxyMethods: ['b.*'],
      rpcProxySecret: 's3cret',
    });
  });
  afterAll(async () => {
    await server.close();
    await new Promise((resolve) => backend.close(resolve));
    await new Promise((resolve) => elsewhere.close(resolve));
  });

  it('sends its own secret and the user percent-encoded, exactly', async () => {
    for (const [i, user] of [' admin', 'Zoë 日本', 'a,b;c=d%20'].entries()) {
      const c = await handshaken(server.port, { token: await jwt(user) });
      c.send({ type: 'rpc', id: 1, method: 'b.whoami', args: [] });
      const answer = await c.answerTo(1);
      expect(answer).toEqual({ type: 'result', id: 1, value: { user: encodeURIComponent(user) } });
      const request = seen[i]!;
      expect(request.headers.authorization).toBe('Bearer s3cret');
      expect(request.headers['x-tether-user']).toBe(encodeURIComponent(user));
      expect(decodeURIComponent(String(request.headers['x-tether-user']))).toBe(user);
      expect(request.body.user).toBe(user);
      c.ws.close();
    }
    console.log(`[rpc proxy] X-Tether-User as received: ${seen.map((s) => JSON.stringify(s.headers['x-tether-user'])).join(', ')}`);
    // The API key never leaves for the backend, in any header.
    for (const { headers } of seen) expect(JSON.stringify(headers)).not.toContain('api-key');
    // Methods outside the proxy's patterns never reach the backend.
    const before = seen.length;
    const c = await handshaken(server.port, { token: await jwt('u') });
    c.send({ type: 'rpc', id: 2, method: 'c.other', args: [] });
    expect(await c.answerTo(2)).toMatchObject({ type: 'error', code: 'not_found' });
    expect(seen.length).toBe(before);
    c.ws.close();
    await normalClientWorks(server.port, 'rpc proxy', { token: await jwt('u') });
  });

  it('does not follow a redirect: the target is never contacted and the caller gets unavailable', async () => {
    const c = await handshaken(server.port, { token: await jwt('victim') });
    c.send({ type: 'rpc', id: 1, method: 'b.redirect', args: [] });
    const first = await c.answerTo(1);
    c.send({ type: 'rpc', id: 2, method: 'b.redirect307', args: [] });
    const second = await c.answerTo(2);
    for (const answer of [first, second]) {
      expect(answer).toMatchObject({ type: 'error', code: 'unavailable' });
      expect(answer.message).toMatch(/redirect/);
    }
    await sleep(200);
    expect(elsewhereHits).toBe(0);
    c.ws.close();
    await normalClientWorks(server.port, 'rpc proxy redirect', { token: await jwt('u') });
  });
});

describe('retention overtaking a slow catch-up', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer({ ...base, apiKey: 'k', historyMaxEvents: 150 });
  });
  afterAll(() => server.close());

  const publish = async (n: number, size: number) => {
    const response = await fetch(`http://127.0.0.1:${server.port}/api/publish`, {
      method: 'POST',
      headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'slow', data: { n, pad: 'z'.repeat(size) } }),
    });
    expect(response.status).toBe(200);
  };

  it('a subscriber paging through history while pruning passes it gets a reset mid-stream, never a silent gap', { timeout: 20_000 }, async () => {
    // 9 MB: many pages of about 256 KiB, more than loopback's socket buffers take from a paused reader.
    for (let n = 1; n <= 150; n++) await publish(n, 60_000);
    const reader = await handshaken(server.port, { clientId: 'slow-reader-0001' });
    reader.send({ type: 'subscribe', channel: 'slow' });
    const { epoch } = await reader.until((f) => f.type === 'subscribed');
    reader.send({ type: 'unsubscribe', channel: 'slow' });
    reader.keepAlive();
    reader.socket.pause(); // reads nothing: its catch-up stops after the first pages
    reader.send({ type: 'subscribe', channel: 'slow', since: { offset: 0, epoch } });
    await sleep(500);
    // Meanwhile 200 small events: retention (150 per channel) prunes past the reader's position.
    for (let n = 151; n <= 350; n++) await publish(n, 10);
    reader.socket.resume();
    const seen: Frame[] = [];
    await reader.until((f) => {
      if (f.channel === 'slow' && (f.type === 'event' || f.type === 'reset' || f.type === 'subscribed')) seen.push(f);
      return f.type === 'event' && f.offset === 350;
    }, 10_000);
    expect(seen[0]).toMatchObject({ type: 'subscribed' });
    // Every offset is delivered, or covered by a reset that says it was lost: no gap passes silently.
    let position = 0;
    let resets = 0;
    for (const frame of seen.slice(1)) {
      if (frame.type === 'reset') {
        expect(frame.offset as number).toBeGreaterThan(position);
        position = frame.offset as number;
        resets++;
      } else {
        expect(frame.offset).toBe(position + 1);
        position = frame.offset as number;
      }
    }
    expect(resets).toBeGreaterThan(0); // the test would pass vacuously if pruning never overtook the reader
    reader.ws.close();
  });
});

describe('behind a trusted proxy', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer({ ...base, trustProxy: true, maxConnectionsPerIp: 2 });
  });
  afterAll(() => server.close());

  it('counts clients by the address the proxy appended to X-Forwarded-For, not by the proxy', async () => {
    const from = (chain: string) => handshaken(server.port, {}, { headers: { 'x-forwarded-for': chain } });
    // A client cannot pick its address: only the last entry (the proxy's own) counts.
    const a1 = await from('6.6.6.6, 203.0.113.1');
    const a2 = await from('7.7.7.7, 203.0.113.1');
    await expect(from('203.0.113.1')).rejects.toThrow(/429/);
    const b = await from('203.0.113.2'); // another client behind the same proxy
    for (const c of [a1, a2, b]) c.ws.close();
  });
});

describe('origins when TETHER_ALLOWED_ORIGINS is not set', () => {
  let secure: TetherServer;
  let development: TetherServer;

  beforeAll(async () => {
    secure = await startServer({ ...base, tokenSecret: SECRET });
    development = await startServer(base);
  });
  afterAll(() => Promise.all([secure.close(), development.close()]));

  const opens = (port: number, origin?: string) =>
    new RawClient(wsUrl(port), origin === undefined ? {} : { origin }).open().then(
      (c) => {
        c.ws.close();
        return 'open';
      },
      (error: Error) => error.message,
    );

  it('with tokens checked, only pages of the server itself may connect; clients without Origin still may (they need a token)', async () => {
    expect(await opens(secure.port, `http://127.0.0.1:${secure.port}`)).toBe('open');
    expect(await opens(secure.port, 'https://evil.example')).toMatch(/403/);
    expect(await opens(secure.port, `http://127.0.0.1:${secure.port + 1}`)).toMatch(/403/); // another port is another origin
    expect(await opens(secure.port, 'null')).toMatch(/403/); // sandboxed frames, file:// pages
    expect(await opens(secure.port)).toBe('open');
    const health = (await (await fetch(`http://127.0.0.1:${secure.port}/api/health`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ mode: 'secure', allowedOrigins: 'same-origin' });
  });

  it('in development mode any origin may connect', async () => {
    expect(await opens(development.port, 'https://evil.example')).toBe('open');
    const health = (await (await fetch(`http://127.0.0.1:${development.port}/api/health`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ mode: 'development', allowedOrigins: 'any' });
  });
});

describe('new connections per second per address', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer({ ...base, connectRatePerIp: 2 }); // bursts of 4
  });
  afterAll(() => server.close());

  it('refuses an address that opens connections faster than the rate with 429; others and, a moment later, the same address get in', async () => {
    const opened: RawClient[] = [];
    for (let i = 0; i < 4; i++) opened.push(await new RawClient(wsUrl(server.port)).open());
    await expect(new RawClient(wsUrl(server.port)).open()).rejects.toThrow(/429/);
    // Another address is counted apart.
    opened.push(await new RawClient(wsUrl(server.port), { localAddress: '127.0.0.2' }).open());
    await sleep(600); // the bucket refills at 2 per second
    opened.push(await new RawClient(wsUrl(server.port)).open());
    await normalClientWorks(server.port, 'connect rate', {}, { localAddress: '127.0.0.3' });
    for (const c of opened) c.ws.close();
  });
});
