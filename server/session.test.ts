import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SignJWT, base64url } from 'jose';
import { pino } from 'pino';
import { startServer, type TetherServer } from './server.js';
import { TetherError } from '../protocol/errors.js';
import { loadConfig } from './config.js';
import { openSqliteStore } from './storage/sqlite.js';
import type { EventStore } from './storage/event-store.js';

const SECRET = 'unit-test-secret-of-at-least-32-characters';
const silent = pino({ level: 'silent' });

/** A raw client: sends frames, returns each answer in order, and the close. */
class RawClient {
  readonly ws: WebSocket;
  private readonly inbox: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on('message', (data) => {
      this.inbox.push(JSON.parse(data.toString()) as Record<string, unknown>);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.closed = new Promise((resolve) => this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  async open(): Promise<this> {
    await new Promise((resolve, reject) => this.ws.once('open', resolve).once('error', reject));
    return this;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  async next(): Promise<Record<string, unknown>> {
    while (this.inbox.length === 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.inbox.shift()!;
  }

  async answerTo(id: number): Promise<Record<string, unknown>> {
    for (;;) {
      const message = await this.next();
      if (message.id === id) return message;
    }
  }
}

async function jwt(claims: { sub?: string; exp?: string | number }, secret = SECRET): Promise<string> {
  let builder = new SignJWT({}).setProtectedHeader({ alg: 'HS256' });
  if (claims.sub !== undefined) builder = builder.setSubject(claims.sub);
  if (claims.exp !== undefined) builder = builder.setExpirationTime(claims.exp);
  return builder.sign(new TextEncoder().encode(secret));
}

describe('server dispatch (development mode)', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({
      port: 0,
      host: '127.0.0.1',
      logger: silent,
      clientDir: '/nonexistent', db: ':memory:',
      heartbeatMs: 200,
      idleHeartbeatMs: 200,
      procedures: {
        add: ([a, b]) => Number(a) + Number(b),
        nothing: () => undefined,
        bigint: () => 10n,
        typed: () => {
          throw new TetherError('forbidden', 'typed refusal');
        },
        duck: () => {
          throw Object.assign(new Error('duck refusal'), { code: 'invalid_argument' });
        },
        bug: () => {
          throw new Error('internal detail');
        },
        slow: () => new Promise((resolve) => setTimeout(() => resolve('slow'), 100)),
      },
    });
    url = `ws://127.0.0.1:${server.port}/ws`;
  });
  afterAll(() => server.close());

  async function client(): Promise<RawClient> {
    const c = await new RawClient(url).open();
    c.send({ type: 'handshake', v: 1 });
    expect(await c.next()).toMatchObject({ type: 'welcome', v: 1, user: null, heartbeatMs: 200 });
    return c;
  }

  it('25 malformed writes at the head of a queue are each refused with their seq, recorded, and do not close the connection', async () => {
    const c = await new RawClient(url).open();
    c.send({ type: 'handshake', v: 1, clientId: 'client-malformed-1' });
    expect(await c.next()).toMatchObject({ type: 'welcome' });
    for (let seq = 1; seq <= 25; seq++) c.send({ type: 'transact', seq, doc: 'd', reads: {}, writes: { ['k'.repeat(201)]: 1 } });
    c.send({ type: 'publish', seq: 26, channel: 'after-junk', data: 'ok' });
    const answers: Record<string, unknown>[] = [];
    while (answers.length < 26) answers.push(await c.next());
    expect(answers.slice(0, 25).every((a) => a.type === 'error' && a.code === 'invalid_message')).toBe(true);
    expect(answers.slice(0, 25).map((a) => a.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    expect(answers[25]).toMatchObject({ type: 'ack', seq: 26, offset: 1 });
    // A resend of one of them gets the same refusal.
    c.send({ type: 'transact', seq: 3, doc: 'd', reads: {}, writes: { ['k'.repeat(201)]: 1 } });
    expect(await c.next()).toMatchObject({ type: 'error', seq: 3, code: 'invalid_message' });
    c.ws.close();
  });

  it('answers the seed call hello("world")', async () => {
    const c = await client();
    c.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
    expect(await c.answerTo(1)).toEqual({ type: 'result', id: 1, value: 'Hello, world!' });
    c.ws.close();
  });

  it('maps every outcome to a result or a typed error', async () => {
    const c = await client();
    const calls: [string, unknown[]][] = [
      ['add', [2, 3]], ['nothing', []], ['bigint', []], ['typed', []], ['duck', []], ['bug', []], ['missing', []], ['hello', []],
    ];
    calls.forEach(([method, args], i) => c.send({ type: 'rpc', id: i + 1, method, args }));
    const byId = new Map<unknown, Record<string, unknown>>();
    while (byId.size < calls.length) {
      const message = await c.next();
      byId.set(message.id, message);
    }
    const answers = calls.map((_, i) => byId.get(i + 1)!);
    expect(answers.map(({ type, value, code }) => (type === 'result' ? value : code))).toEqual([
      5, null, 'internal', 'forbidden', 'invalid_argument', 'internal', 'not_found', 'invalid_argument',
    ]);
    expect(answers[5]!.message).toBe('procedure bug failed; see the server log');
    c.ws.close();
  });

  it('answers concurrent calls by id, a slow one does not block a fast one', async () => {
    const c = await client();
    c.send({ type: 'rpc', id: 1, method: 'slow', args: [] });
    c.send({ type: 'rpc', id: 2, method: 'add', args: [1, 1] });
    expect(await c.next()).toMatchObject({ id: 2, value: 2 });
    expect(await c.next()).toMatchObject({ id: 1, value: 'slow' });
    c.ws.close();
  });

  it('answers ping with pong and drops a client that goes silent (4004)', async () => {
    const c = await client();
    c.send({ type: 'ping', t: 42 });
    expect(await c.next()).toEqual({ type: 'pong', t: 42 });
    expect((await c.closed).code).toBe(4004);
  });

  it('refuses a second handshake without closing', async () => {
    const c = await client();
    c.send({ type: 'handshake', v: 1 });
    expect(await c.next()).toMatchObject({ type: 'error', code: 'invalid_message', message: 'already handshaken' });
    c.send({ type: 'rpc', id: 1, method: 'add', args: [1, 2] });
    expect(await c.answerTo(1)).toMatchObject({ value: 3 });
    c.ws.close();
  });

  it('serves health with the number of connections', async () => {
    const c = await client();
    const health = (await (await fetch(`http://127.0.0.1:${server.port}/api/health`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ ok: true, protocol: 1 });
    expect(health.connections).toBeGreaterThanOrEqual(1);
    c.ws.close();
  });

  it('refuses upgrades outside /ws', async () => {
    const c = new RawClient(`ws://127.0.0.1:${server.port}/other`);
    await expect(c.open()).rejects.toThrow(/404/);
  });
});

describe('server handshake with TETHER_TOKEN_SECRET set', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', tokenSecret: SECRET });
    url = `ws://127.0.0.1:${server.port}/ws`;
  });
  afterAll(() => server.close());

  async function handshake(token: string | undefined) {
    const c = await new RawClient(url).open();
    c.send(token === undefined ? { type: 'handshake', v: 1 } : { type: 'handshake', v: 1, token });
    return { first: await c.next(), close: c.closed, c };
  }

  it('accepts a valid token and reports its subject', async () => {
    const { first, c } = await handshake(await jwt({ sub: 'u1', exp: '1h' }));
    expect(first).toMatchObject({ type: 'welcome', user: 'u1' });
    c.ws.close();
  });

  const unsigned = `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${base64url.encode(
    JSON.stringify({ sub: 'root', exp: Math.floor(Date.now() / 1000) + 3600 }),
  )}.`;

  it.each([
    ['no token', undefined, 'a token is required'],
    ['alg none', unsigned, 'the token is signed with an algorithm this server does not accept'],
    ['wrong secret', 'wrong', 'the token is invalid'],
    ['garbage', 'x.y.z', 'the token is invalid'],
  ])('refuses %s with 4001', async (_name, token, message) => {
    const resolved = token === 'wrong' ? await jwt({ sub: 'u', exp: '1h' }, 'some-other-secret-that-is-long-enough!') : token;
    const { first, close } = await handshake(resolved);
    expect(first).toEqual({ type: 'error', code: 'unauthorized', message });
    expect((await close).code).toBe(4001);
  });

  it('history follows the channels claim: a forbidden channel is refused to the request, allowed pages come back', async () => {
    const token = await new SignJWT({ channels: ['room:*'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('u1').setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
    const { first, c } = await handshake(token);
    expect(first).toMatchObject({ type: 'welcome' });
    c.send({ type: 'history', id: 1, channel: 'admin', since: { offset: 0, epoch: '' }, limit: 10 });
    expect(await c.answerTo(1)).toMatchObject({ type: 'error', code: 'forbidden' });
    c.send({ type: 'history', id: 2, channel: 'room:1', since: { offset: 0, epoch: '' }, limit: 10 });
    expect(await c.answerTo(2)).toMatchObject({ type: 'result', value: { head: 0, reset: false, events: [] } });
    c.send({ type: 'history', id: 3, channel: 'room:1', since: { offset: 0, epoch: '' }, limit: 100_000 });
    expect(await c.answerTo(3)).toMatchObject({ type: 'error', code: 'invalid_message' }); // pages are bounded
    c.ws.close();
  });

  it('refuses an expired token, and one without exp or sub', async () => {
    for (const [claims, message] of [
      [{ sub: 'u', exp: Math.floor(Date.now() / 1000) - 10 }, 'the token has expired'],
      [{ sub: 'u' }, 'the token has no exp claim'],
      [{ exp: '1h' }, 'the token has no sub claim'],
    ] as const) {
      const { first, close } = await handshake(await jwt(claims));
      expect(first).toEqual({ type: 'error', code: 'unauthorized', message });
      expect((await close).code).toBe(4001);
    }
  });
});

describe('configuration from the environment', () => {
  it('has documented defaults', () => {
    expect(loadConfig({})).toMatchObject({ port: 8080, heartbeatMs: 2000, maxMessageBytes: 65536, rpcProxyMethods: ['*'] });
  });
  it.each([
    [{ PORT: 'eighty' }, /PORT must be an integer/],
    [{ TETHER_TOKEN_SECRET: 'short' }, /at least 32 characters/],
    [{ TETHER_RPC_PROXY_URL: 'not a url' }, /not a valid URL/],
    [{ TETHER_RPC_PROXY_URL: 'ftp://x' }, /http/],
    [{ TETHER_HEARTBEAT_MS: '5' }, /TETHER_HEARTBEAT_MS/],
  ])('refuses %j', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('limits', () => {
  let server: TetherServer;
  let port: number;

  beforeAll(async () => {
    server = await startServer({
      port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', apiKey: 'k',
      maxSubscriptions: 2, rateLimit: 50, maxBufferedBytes: 64 * 1024, allowedOrigins: ['https://app.example.com'],
    });
    port = server.port;
  });
  afterAll(() => server.close());

  async function client(): Promise<RawClient> {
    const c = new RawClient(`ws://127.0.0.1:${port}/ws`);
    await c.open();
    c.send({ type: 'handshake', v: 1, clientId: `client-${Math.random().toString(36).slice(2, 10)}` });
    expect(await c.next()).toMatchObject({ type: 'welcome' });
    return c;
  }

  it('refuses a WebSocket from an origin outside TETHER_ALLOWED_ORIGINS with 403', async () => {
    const bad = new WebSocket(`ws://127.0.0.1:${port}/ws`, { origin: 'https://evil.example.com' });
    await expect(new Promise((resolve, reject) => bad.once('open', resolve).once('error', reject))).rejects.toThrow(/403/);
    const good = new WebSocket(`ws://127.0.0.1:${port}/ws`, { origin: 'https://app.example.com' });
    await new Promise((resolve, reject) => good.once('open', resolve).once('error', reject));
    good.close();
  });

  it('caps subscriptions per connection with limit_exceeded', async () => {
    const c = await client();
    for (const channel of ['a', 'b', 'c']) c.send({ type: 'subscribe', channel });
    const answers = [await c.next(), await c.next(), await c.next()];
    expect(answers.filter((m) => m.type === 'subscribed')).toHaveLength(2);
    expect(answers.find((m) => m.type === 'error')).toMatchObject({ channel: 'c', code: 'limit_exceeded', message: 'at most 2 subscriptions per connection' });
    // Re-subscribing to a channel it holds replaces it rather than counting twice.
    c.send({ type: 'subscribe', channel: 'a' });
    expect(await c.next()).toMatchObject({ type: 'subscribed', channel: 'a' });
    c.ws.close();
  });

  it('closes a connection that floods past its rate limit with 4007', async () => {
    const c = await client();
    for (let i = 0; i < 200; i++) c.send({ type: 'ping', t: i });
    expect((await c.closed).code).toBe(4007);
  });

  it('drops a subscriber that stops reading once its buffer passes the bound (4006)', async () => {
    const c = await client();
    c.send({ type: 'subscribe', channel: 'firehose' });
    expect(await c.next()).toMatchObject({ type: 'subscribed' });
    (c.ws as unknown as { _socket: { pause(): void } })._socket.pause(); // stop reading
    const big = 'x'.repeat(60_000);
    for (let i = 0; i < 300; i++) {
      await fetch(`http://127.0.0.1:${port}/api/publish`, {
        method: 'POST',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({ channel: 'firehose', data: big }),
      });
    }
    (c.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    expect((await c.closed).code).toBe(4006);
  });
});

describe('shutdown', () => {
  it('a server closes while its clients reconnect the moment they are told it is going away (new ones get 503)', async () => {
    const server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:' });
    const url = `ws://127.0.0.1:${server.port}/ws`;
    let stopping = false;
    let welcomed = 0;
    const statuses: number[] = [];
    const connect = (): void => {
      if (stopping) return;
      const ws = new WebSocket(url);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'handshake', v: 1 })));
      ws.on('message', () => void welcomed++);
      ws.on('unexpected-response', (_req, res) => void statuses.push(res.statusCode ?? 0));
      ws.on('error', () => undefined);
      ws.on('close', () => setImmediate(connect)); // as eager as a client can be
    };
    for (let i = 0; i < 20; i++) connect();
    while (welcomed < 20) await new Promise((resolve) => setTimeout(resolve, 10));
    await server.close(); // hung for ever before: reconnects landed in a server waiting for its connections to end
    stopping = true;
    expect(statuses.every((status) => status === 503)).toBe(true);
  }, 15_000);
});

describe('health', () => {
  it('/api/health reports the store and the broker; 503 while the events DB does not answer, 200 again when it does', async () => {
    const real = openSqliteStore({ path: ':memory:', retention: { maxEvents: 100, maxAgeMs: 60_000 } });
    let down = false;
    const store: EventStore = { ...real, kind: real.kind, ping: () => (down ? Promise.reject(new Error('connection refused')) : real.ping()) };
    const server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', store });
    try {
      const health = async () => {
        const response = await fetch(`http://127.0.0.1:${server.port}/api/health`);
        return { status: response.status, body: (await response.json()) as Record<string, unknown> };
      };
      expect(await health()).toMatchObject({ status: 200, body: { ok: true, store: { kind: 'sqlite', ok: true }, broker: { kind: 'local', ok: true } } });
      down = true;
      expect(await health()).toMatchObject({ status: 503, body: { ok: false, store: { kind: 'sqlite', ok: false, detail: 'connection refused' } } });
      down = false;
      expect((await health()).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});

describe('the events DB failing during a handshake', () => {
  it('is answered unavailable with close 1011, never an unhandled rejection, and the server serves the next client', async () => {
    const real = openSqliteStore({ path: ':memory:', retention: { maxEvents: 100, maxAgeMs: 60_000 } });
    const failing = { handshake: false, revocations: false };
    const store: EventStore = {
      ...real,
      handshake: (...args) => (failing.handshake ? Promise.reject(new Error('DB down')) : real.handshake(...args)),
      revokedThrough: (user) => (failing.revocations ? Promise.reject(new Error('DB down')) : real.revokedThrough(user)),
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', store, tokenSecret: SECRET, allowedOrigins: ['*'] });
    const url = `ws://127.0.0.1:${server.port}/ws`;
    try {
      for (const part of ['handshake', 'revocations'] as const) {
        failing[part] = true;
        const c = await new RawClient(url).open();
        c.send({ type: 'handshake', v: 1, token: await jwt({ sub: 'ann', exp: '1h' }), clientId: `client-${part}` });
        expect(await c.next()).toMatchObject({ type: 'error', code: 'unavailable' });
        expect((await c.closed).code).toBe(1011);
        failing[part] = false;
        // The same client, once the DB answers again: welcomed, and its write is stored.
        const again = await new RawClient(url).open();
        again.send({ type: 'handshake', v: 1, token: await jwt({ sub: 'ann', exp: '1h' }), clientId: `client-${part}` });
        expect(await again.next()).toMatchObject({ type: 'welcome', user: 'ann' });
        again.ws.close();
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await server.close();
    }
  });
});
