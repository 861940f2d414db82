/**
 * Hostile clients against a live server (in this process): malformed HTTP requests and
 * WebSocket upgrades on raw TCP sockets, random bytes, raw WebSocket frames, and junk or mutated
 * frames after a valid handshake. After each case the server must still be the same healthy
 * process: no uncaught exception or unhandled rejection (either would end `npm start`), no
 * error-level log line, /api/health answers 200, and a fresh client gets hello("world").
 *
 * Bounded for CI (well under 40 s on 2 cores). Replay a run with TETHER_FUZZ_SEED=<seed printed below>.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import fc from 'fast-check';
import { pino } from 'pino';
import { startServer, type TetherServer } from './server.js';
import { DEFAULT_MAX_MESSAGE_BYTES, MAX_JSON_DEPTH, PROTOCOL_VERSION } from '../protocol/constants.js';
import { Raw, serialize, setOwn } from '../protocol/testing/raw-json.js';

const seed = process.env.TETHER_FUZZ_SEED ? Number.parseInt(process.env.TETHER_FUZZ_SEED, 10) : Date.now() % 2 ** 31;
if (!Number.isSafeInteger(seed)) throw new TypeError(`TETHER_FUZZ_SEED must be an integer, got ${process.env.TETHER_FUZZ_SEED}`);
console.log(`[fuzz] server/fuzz.test.ts seed=${seed} (replay: TETHER_FUZZ_SEED=${seed} npx vitest run server/fuzz.test.ts)`);

const MAX_BYTES = DEFAULT_MAX_MESSAGE_BYTES; // 65536, the server's default maxMessageBytes
const API_KEY = 'fuzz-api-key';
const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

// ---- what "still healthy" means -----------------------------------------------------------

/** Process-level failures while the server runs in this process; each would end a real server. */
const crashes: string[] = [];
/** Error-level log lines of the server (a handler that failed), except expected ones. */
const errorLogs: string[] = [];

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message} ${error.stack?.split('\n').slice(1, 4).join(' | ') ?? ''}` : String(error);
}
const onUncaught = (error: unknown) => crashes.push(`uncaughtException: ${describeError(error)}`);
const onUnhandled = (reason: unknown) => crashes.push(`unhandledRejection: ${describeError(reason)}`);

/** Counts error-level lines (pino level >= 50); a procedure that throws is the app's business, not a server crash. */
const logDestination = {
  write(chunk: string): void {
    for (const line of chunk.split('\n')) {
      if (line.trim() === '') continue;
      let entry: { level?: number; msg?: string; err?: { message?: string } };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        errorLogs.push(`unparsable log line: ${line.slice(0, 200)}`);
        continue;
      }
      if ((entry.level ?? 0) >= 50 && entry.msg !== 'procedure threw') errorLogs.push(`${entry.msg ?? '?'}${entry.err?.message ? `: ${entry.err.message}` : ''}`);
    }
  },
};

let server: TetherServer;
let port: number;
let wsUrl: string;

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUnhandled);
  const options = {
    port: 0,
    host: '127.0.0.1',
    db: ':memory:',
    logger: pino({ level: 'error' }, logDestination),
    clientDir: '/nonexistent',
    apiKey: API_KEY,
    // The fuzzer opens hundreds of connections a second from one address on purpose: the
    // per-address connect rate limit (a defence of its own, tested elsewhere) would refuse them.
    connectRatePerIp: 1_000_000,
  };
  server = await startServer(options);
  port = server.port;
  wsUrl = `ws://127.0.0.1:${port}/ws`;
});

afterAll(async () => {
  try {
    // Bounded: a server left with requests its handlers never answered may never finish closing.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      (server ? server.close() : Promise.resolve()).then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), 4000))),
    ]);
    clearTimeout(timer);
    if (closed === false) throw new Error('server.close() did not finish within 4 s after the fuzzing (connections left hanging?)');
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUnhandled);
  }
}, 8000);

// Whatever a test did, it must not leave a crash behind (late ones land here). Each test
// answers only for what happened while it ran, so that one failure does not fail the rest.
let testStart = { crashes: 0, logs: 0 };
beforeEach(() => {
  testStart = mark();
});
afterEach(async () => {
  await settle();
  expect(crashes.slice(testStart.crashes), 'uncaught exceptions / unhandled rejections in the server process').toEqual([]);
  expect(errorLogs.slice(testStart.logs), 'error-level server log lines').toEqual([]);
});

/** Lets pending callbacks, microtasks and unhandled-rejection reports run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

interface Mark {
  crashes: number;
  logs: number;
}
const mark = (): Mark => ({ crashes: crashes.length, logs: errorLogs.length });

/** The server survived whatever happened since `since`, and still serves a normal client. */
async function expectHealthy(since: Mark, after: string): Promise<void> {
  await settle();
  expect(crashes.slice(since.crashes), `process-level errors after ${after}`).toEqual([]);
  expect(errorLogs.slice(since.logs), `error log lines after ${after}`).toEqual([]);
  const health = await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(5000) });
  expect(health.status, `GET /api/health after ${after}`).toBe(200);
  await health.text();
  const c = await new RawClient(wsUrl).open();
  try {
    c.send({ type: 'handshake', v: PROTOCOL_VERSION });
    expect(await c.waitFor((m) => m.type === 'welcome' || m.type === 'error', 5000), `handshake after ${after}`).toMatchObject({ type: 'welcome' });
    c.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
    expect(await c.waitFor((m) => m.id === 1, 5000), `hello("world") after ${after}`).toEqual({ type: 'result', id: 1, value: 'Hello, world!' });
  } finally {
    c.ws.terminate();
  }
}

// ---- a WebSocket client that records everything ---------------------------------------------

type Message = Record<string, unknown>;

class RawClient {
  readonly ws: WebSocket;
  readonly inbox: Message[] = [];
  closeInfo: { code: number; reason: string } | undefined;
  private waiters: (() => void)[] = [];

  constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on('message', (data) => {
      let message: Message;
      try {
        message = JSON.parse(data.toString()) as Message;
      } catch {
        message = { unparsable: data.toString().slice(0, 200) };
      }
      this.inbox.push(message);
      this.wake();
    });
    this.ws.on('error', () => {}); // surfaces as a close
    this.ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString() };
      this.wake();
    });
  }

  private wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  open(): Promise<this> {
    return new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve(this));
      this.ws.once('error', reject);
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The first message that matches (removed from the inbox), or undefined once the socket closed without one. */
  async waitFor(match: (message: Message) => boolean, timeoutMs = 1000): Promise<Message | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.inbox.findIndex(match);
      if (index >= 0) return this.inbox.splice(index, 1)[0];
      if (this.closeInfo) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the server neither answered nor closed within ${timeoutMs} ms; inbox: ${JSON.stringify(this.inbox).slice(0, 500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Every frame sent so far was read: a ping sent now is answered (frames are decoded in order), or the server closed. */
  async drain(marker: number): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) this.send({ type: 'ping', t: marker });
    await this.waitFor((m) => m.type === 'pong' && m.t === marker);
  }
}

let nextClient = 0;
/** A handshaken development client with its own clientId (so that its writes start at seq 1). */
async function handshaken(): Promise<RawClient> {
  const c = await new RawClient(wsUrl).open();
  const clientId = `fuzz-client-${String(++nextClient).padStart(4, '0')}-${process.pid}`;
  c.send({ type: 'handshake', v: PROTOCOL_VERSION, clientId });
  expect(await c.waitFor((m) => m.type === 'welcome' || m.type === 'error', 5000)).toMatchObject({ type: 'welcome' });
  return c;
}

// ---- raw TCP -------------------------------------------------------------------------------

interface RawReply {
  /** What the server sent back (latin1, so any bytes survive). */
  text: string;
  /** The server closed (or reset) the connection. */
  closed: boolean;
}

/**
 * Sends bytes on a fresh TCP connection and collects the reply: done when the server closes,
 * when it stays quiet `idleMs` after answering, or after `waitMs` without any answer.
 */
function rawExchange(chunks: (string | Buffer)[], { waitMs = 500, idleMs = 80 } = {}): Promise<RawReply> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const received: Buffer[] = [];
    let idle: ReturnType<typeof setTimeout> | undefined;
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      clearTimeout(overall);
      socket.destroy();
      resolve({ text: Buffer.concat(received).toString('latin1'), closed });
    };
    const overall = setTimeout(() => finish(false), waitMs);
    socket.on('connect', () => {
      for (const chunk of chunks) socket.write(chunk);
    });
    socket.on('data', (data) => {
      received.push(data);
      clearTimeout(idle);
      idle = setTimeout(() => finish(false), idleMs);
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
  });
}

/** Bytes sent on a socket, printed readably in counterexamples. */
class Bytes {
  constructor(readonly bytes: Buffer) {}
  [fc.toStringMethod](): string {
    return JSON.stringify(this.bytes.toString('latin1').slice(0, 400));
  }
}

function statusOf(reply: RawReply): number | undefined {
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(reply.text);
  return match ? Number(match[1]) : undefined;
}

const HOST = 'Host: 127.0.0.1';
const UPGRADE_HEADERS = ['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 13'];

/** A request as text; a body gets its Content-Length unless the headers frame it themselves. */
function httpRequest(line: string, headers: string[], body = ''): string {
  const framed = headers.some((h) => /^(content-length|transfer-encoding):/i.test(h));
  const all = body !== '' && !framed ? [...headers, `Content-Length: ${Buffer.byteLength(body)}`] : headers;
  return `${line}\r\n${all.map((h) => `${h}\r\n`).join('')}\r\n${body}`;
}

// ---- 1. malformed HTTP requests and upgrades -------------------------------------------------

/** [name, request line, extra headers, body]: complete requests, each must be answered or closed. */
const HTTP_CASES: [string, string, string[], string?][] = [
  ['a host-less protocol-relative target', 'GET //[ HTTP/1.1', []],
  ['an unterminated IPv6 host', 'GET http://[::1 HTTP/1.1', []],
  ['an absolute-form target', 'GET http://127.0.0.1/api/health HTTP/1.1', []],
  ['an absolute-form target with a bad port', 'GET http://127.0.0.1:99999/ HTTP/1.1', []],
  ['an absolute-form target of another scheme', 'GET javascript:alert(1) HTTP/1.1', []],
  ['a file: target', 'GET file:///etc/passwd HTTP/1.1', []],
  ['bad percent-encoding', 'GET /%zz HTTP/1.1', []],
  ['truncated UTF-8 percent-encoding in a document name', 'GET /api/docs/%E0%A4%A HTTP/1.1', [`Authorization: Bearer ${API_KEY}`]],
  ['an encoded NUL in a document name', 'GET /api/docs/a%00b HTTP/1.1', [`Authorization: Bearer ${API_KEY}`]],
  ['overlong UTF-8 in a document name', 'GET /api/docs/%C0%AF HTTP/1.1', [`Authorization: Bearer ${API_KEY}`]],
  ['a lone surrogate in a document name', 'GET /api/docs/%ED%A0%80 HTTP/1.1', [`Authorization: Bearer ${API_KEY}`]],
  ['a bad history query', 'GET /api/history?channel=%zz&since=-1&limit=1e999&epoch=%ff HTTP/1.1', [`Authorization: Bearer ${API_KEY}`]],
  ['a history query with repeated parameters', 'GET /api/history?channel=a&channel=b&since=1&since=x HTTP/1.1', [`Authorization: Bearer ${API_KEY}`]],
  ['dot segments', 'GET /../../../../etc/passwd HTTP/1.1', []],
  ['encoded dot segments', 'GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1', []],
  ['a backslash path', 'GET /..\\..\\windows HTTP/1.1', []],
  ['an asterisk target', 'OPTIONS * HTTP/1.1', []],
  ['an asterisk GET', 'GET * HTTP/1.1', []],
  ['an absurd method', 'BREW /api/health HTTP/1.1', []],
  ['a very long method', `${'X'.repeat(5000)} / HTTP/1.1`, []],
  ['a lowercase method', 'get / HTTP/1.1', []],
  ['CONNECT', 'CONNECT 127.0.0.1:22 HTTP/1.1', []],
  ['HTTP/1.0', 'GET /api/health HTTP/1.0', []],
  ['HTTP/2.0 on HTTP/1 framing', 'GET / HTTP/2.0', []],
  ['HTTP/9.9', 'GET / HTTP/9.9', []],
  ['no version', 'GET /', []],
  ['extra words in the request line', 'GET / HTTP/1.1 extra', []],
  ['a NUL in the target', 'GET /a\u0000b HTTP/1.1', []],
  ['a NUL in a header', 'GET / HTTP/1.1', ['X-Test: a\u0000b']],
  ['a bare CR in a header (injection)', 'GET / HTTP/1.1', ['X-Test: a\rInjected: b']],
  ['a header without a colon', 'GET / HTTP/1.1', ['NotAHeader']],
  ['a space before the colon', 'GET / HTTP/1.1', ['Host : evil']],
  ['obsolete line folding', 'GET / HTTP/1.1', ['X-Test: a', ' folded']],
  ['a 20 kB header', 'GET / HTTP/1.1', [`X-Big: ${'a'.repeat(20_000)}`]],
  ['500 headers', 'GET / HTTP/1.1', Array.from({ length: 500 }, (_, i) => `X-H${i}: ${i}`)],
  ['two Content-Lengths (smuggling)', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`, 'Content-Length: 2', 'Content-Length: 30'], '{}'],
  ['Content-Length with Transfer-Encoding', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`, 'Content-Length: 4', 'Transfer-Encoding: chunked'], '0\r\n\r\n'],
  ['a bad chunk size', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`, 'Transfer-Encoding: chunked'], 'zz\r\n{}\r\n0\r\n\r\n'],
  ['a negative Content-Length', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`, 'Content-Length: -1'], '{}'],
  ['a publish nested 30,000 levels', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`], `{"channel":"c","data":${'['.repeat(30_000)}${']'.repeat(30_000)}}`],
  ['a publish of 1e999', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`], '{"channel":"c","data":[1e999]}'],
  ['a publish whose data shadows toString', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`], '{"channel":"c","data":{"toString":1}}'],
  ['a transaction writing __proto__', 'POST /api/docs/d/transact HTTP/1.1', [`Authorization: Bearer ${API_KEY}`], '{"writes":{"__proto__":{"a":1}}}'],
  ['a transaction with an object for reads', 'POST /api/docs/d/transact HTTP/1.1', [`Authorization: Bearer ${API_KEY}`], '{"reads":{"k":{"toString":1}},"writes":{}}'],
  ['an Idempotency-Key of 10 kB', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`, `Idempotency-Key: ${'k'.repeat(10_000)}`], '{"channel":"c","data":1}'],
  ['a wrong API key of 15 kB', 'GET /api/history?channel=c HTTP/1.1', [`Authorization: Bearer ${'x'.repeat(15_000)}`]],
  ['Expect: 100-continue', 'POST /api/publish HTTP/1.1', [`Authorization: Bearer ${API_KEY}`, 'Expect: 100-continue', 'Content-Length: 0']],
  ['the WebSocket path without an upgrade', 'GET /ws HTTP/1.1', []],
];

/** Each case as sent: a plain request (Connection: close) and a WebSocket upgrade of the same target. */
function variants(line: string, headers: string[], body: string | undefined): [string, string][] {
  return [
    ['request', httpRequest(line, [HOST, 'Connection: close', ...headers], body)],
    ['upgrade', httpRequest(line, [HOST, ...UPGRADE_HEADERS, ...headers], body)],
  ];
}

describe('malformed HTTP requests and WebSocket upgrades on raw sockets', () => {
  const cases = HTTP_CASES.flatMap(([name, line, headers, body]) => variants(line, headers, body).map(([kind, bytes]) => [`${kind}: ${name}`, bytes] as const));

  it.each(cases)('%s', async (name, bytes) => {
    const since = mark();
    const reply = await rawExchange([bytes]);
    expect(reply.text.length > 0 || reply.closed, `${name}: the server neither answered nor closed the connection (a handler that threw?)`).toBe(true);
    if (reply.text.length > 0 && !/^(HTTP\/1\.[01] \d{3} |\d)/.test(reply.text)) throw new Error(`${name}: not an HTTP answer: ${JSON.stringify(reply.text.slice(0, 200))}`);
    const status = statusOf(reply);
    if (status !== undefined) expect(status, `${name}: ${reply.text.slice(0, 300)}`).toBeLessThan(500);
    await expectHealthy(since, name);
  });

  it('missing Host, split writes and WebSocket upgrade oddities', async () => {
    const odd: [string, (string | Buffer)[]][] = [
      ['no Host on HTTP/1.1', ['GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n']],
      ['no Host on an upgrade', [httpRequest('GET /ws HTTP/1.1', UPGRADE_HEADERS)]],
      ['two Hosts', [httpRequest('GET / HTTP/1.1', [HOST, 'Host: evil.example', 'Connection: close'])]],
      ['a request split byte by byte', [...httpRequest('GET //[ HTTP/1.1', [HOST, 'Connection: close'])].map((ch) => Buffer.from(ch, 'latin1'))],
      ['an upgrade with version 8', [httpRequest('GET /ws HTTP/1.1', [HOST, 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 8'])]],
      ['an upgrade with a short key', [httpRequest('GET /ws HTTP/1.1', [HOST, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: abc', 'Sec-WebSocket-Version: 13'])]],
      ['an upgrade without a key', [httpRequest('GET /ws HTTP/1.1', [HOST, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13'])]],
      ['an upgrade by POST', [httpRequest('POST /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS, 'Content-Length: 0'])]],
      ['an upgrade to h2c', [httpRequest('GET /ws HTTP/1.1', [HOST, 'Upgrade: h2c', 'Connection: Upgrade, HTTP2-Settings', 'HTTP2-Settings: AAMAAABkAAQAAP__'])]],
      ['an upgrade with bad subprotocols', [httpRequest('GET /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS, 'Sec-WebSocket-Protocol: a,,b, ,c,a'])]],
      ['an upgrade with bad extensions', [httpRequest('GET /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS, 'Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99; x="'])]],
      ['an upgrade with a NUL origin', [httpRequest('GET /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS, 'Origin: http://a\u0000b'])]],
      ['an upgrade with a 20 kB origin', [httpRequest('GET /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS, `Origin: http://${'a'.repeat(20_000)}`])]],
      ['an upgrade followed at once by frames', [httpRequest('GET /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS]), wsFrame({ fin: true, rsv: 0, opcode: 1, masked: true, payload: Buffer.from('{"type":{"toString":1}}') })]],
      ['only a request line', ['GET / HTTP/1.1\r\n\r\n']],
      ['LF-only line endings', ['GET /api/health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n']],
      ['a TLS ClientHello', [Buffer.from('16030100a5010000a10303', 'hex'), randomBytes(160)]],
      ['an HTTP/2 preface', ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']],
    ];
    const failures: string[] = [];
    for (const [name, chunks] of odd) {
      const since = mark();
      const reply = await rawExchange(chunks, { waitMs: 800 });
      const status = statusOf(reply);
      if (status !== undefined && status >= 500) failures.push(`${name}: ${reply.text.slice(0, 200)}`);
      await expectHealthy(since, name);
    }
    expect(failures).toEqual([]);
  });

  it('random bytes and random requests (fast-check) do not hurt the server', async () => {
    const methods = fc.oneof(
      fc.constantFrom('GET', 'POST', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'PATCH', 'TRACE', 'PRI', 'M-SEARCH', 'BREW', 'get', 'GE T', 'X'.repeat(300)),
      fc.string({ maxLength: 8 }),
    );
    const segment = fc.oneof(
      fc.constantFrom('', '/', '//', '[', ']', '[::1', '%', '%zz', '%E0%A4%A', '%00', '%2F', '%25', '%C0%AF', '%ED%A0%80', '..', '.', '@', ':', '?', '#', '\\', ';', '&', '=',
        'api', 'docs', 'ws', 'health', 'history', 'publish', 'transact', 'http:', 'https://', '\u00e9', '\u{1F642}', '*', '~', '%ff%fe', 'channel=', 'since=', 'limit='),
      fc.string({ maxLength: 6 }),
    );
    const path = fc
      .tuple(fc.constantFrom('/', '', '//', 'http://', 'http://[', '/api/docs/', '/api/docs/d/', '/api/history?channel=', '/ws', '*'), fc.array(segment, { maxLength: 8 }))
      .map(([prefix, parts]) => prefix + parts.join(''));
    const header = fc.oneof(
      fc.constantFrom(`Authorization: Bearer ${API_KEY}`, 'Authorization: Bearer', 'Content-Length: 0', 'Content-Length: 99999999999999999999', 'Transfer-Encoding: chunked',
        'Origin: null', 'Cookie: a=b', 'Expect: 100-continue', 'Connection: keep-alive', 'Idempotency-Key: ', `X-Forwarded-For: ${'1.'.repeat(100)}`),
      fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), fc.string({ maxLength: 20 })).map(([name, value]) => `${name}: ${value}`),
    );
    const request = fc.record({
      method: methods,
      path,
      version: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2', 'http/1.1', ''),
      host: fc.boolean(),
      upgrade: fc.boolean(),
      headers: fc.array(header, { maxLength: 4 }),
      body: fc.oneof(fc.constant(''), fc.string({ maxLength: 50 }), fc.constantFrom('{"channel":"c","data":1}', '{"writes":{"k":1}}', `{"channel":"c","data":${'['.repeat(2000)}${']'.repeat(2000)}}`)),
    }).map(({ method, path, version, host, upgrade, headers, body }) => {
      const all = [...(host ? [HOST] : []), ...(upgrade ? UPGRADE_HEADERS : ['Connection: close']), ...headers];
      return Buffer.from(httpRequest([method, path, version].filter((part) => part !== '').join(' '), all, body), 'utf8');
    });
    const input = fc.oneof(
      { arbitrary: request, weight: 4 },
      { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 600 }).map((bytes) => Buffer.from(bytes)), weight: 1 },
      { arbitrary: fc.string({ unit: 'binary', maxLength: 300 }).map((text) => Buffer.from(`GET /${text} HTTP/1.1\r\nHost: x\r\n\r\n`, 'utf8')), weight: 1 },
    ).map((bytes) => new Bytes(bytes));
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.limitShrink(input, 30), async ({ bytes }) => {
        const since = mark();
        const reply = await rawExchange([bytes], { waitMs: 300, idleMs: 40 });
        const status = statusOf(reply);
        if (status !== undefined) expect(status, reply.text.slice(0, 300)).toBeLessThan(500);
        // The full check (health, a client) every few runs keeps the budget; crashes are checked every run.
        await settle();
        expect(crashes.slice(since.crashes)).toEqual([]);
        expect(errorLogs.slice(since.logs)).toEqual([]);
        if (++runs % 10 === 0) await expectHealthy(since, 'random requests');
      }),
      { seed, numRuns: 400 },
    );
    await expectHealthy(mark(), 'random requests');
  }, 30_000);
});

// ---- 2. raw WebSocket frames ------------------------------------------------------------------

interface FrameSpec {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Buffer;
  /** Announce another payload length than sent (a lie), when set. */
  declared?: number | bigint;
}

/** One WebSocket frame as bytes, however wrong its fields are. */
function wsFrame(spec: FrameSpec): Buffer {
  const length = spec.declared ?? spec.payload.length;
  const head: number[] = [(spec.fin ? 0x80 : 0) | ((spec.rsv & 7) << 4) | (spec.opcode & 0x0f)];
  const mask = spec.masked ? 0x80 : 0;
  let extended = Buffer.alloc(0);
  if (typeof length === 'bigint' || length > 0xffff) {
    head.push(mask | 127);
    extended = Buffer.alloc(8);
    extended.writeBigUInt64BE(BigInt(length) & 0xffffffffffffffffn);
  } else if (length > 125) {
    head.push(mask | 126);
    extended = Buffer.alloc(2);
    extended.writeUInt16BE(length);
  } else {
    head.push(mask | length);
  }
  const key = spec.masked ? randomBytes(4) : Buffer.alloc(0);
  const payload = Buffer.from(spec.payload);
  if (spec.masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i % 4]!;
  return Buffer.concat([Buffer.from(head), extended, key, payload]);
}

const upgradeRequest = httpRequest('GET /ws HTTP/1.1', [HOST, ...UPGRADE_HEADERS]);
const handshakeFrame = wsFrame({ fin: true, rsv: 0, opcode: 1, masked: true, payload: Buffer.from(JSON.stringify({ type: 'handshake', v: PROTOCOL_VERSION })) });

describe('raw WebSocket frames after a valid upgrade', () => {
  it('random frames (bad opcodes, reserved bits, unmasked, fragmented, lying lengths) do not hurt the server', async () => {
    const frame: fc.Arbitrary<FrameSpec> = fc.record({
      fin: fc.boolean(),
      rsv: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 7 })),
      opcode: fc.oneof(fc.constantFrom(0, 1, 2, 8, 9, 10), fc.integer({ min: 0, max: 15 })),
      masked: fc.oneof(fc.constant(true), fc.boolean()),
      payload: fc.oneof(
        fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
        fc.constantFrom('{"type":"ping","t":1}', '{"type":{"toString":1}}', `[${'['.repeat(3000)}${']'.repeat(3000)}]`, '\u0003\u00e8bye').map((text) => Buffer.from(text)),
        fc.constantFrom(Buffer.from([0xff, 0xfe, 0xfd]), Buffer.from([0x03, 0xe8, 0xc0]), Buffer.alloc(126), Buffer.alloc(200, 0x41)),
      ),
      declared: fc.option(fc.oneof(fc.constantFrom<number | bigint>(0, 125, 126, 65_535, 65_536, MAX_BYTES + 1, 2 ** 32, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n), fc.nat()), { nil: undefined }),
    }).map(({ fin, rsv, opcode, masked, payload, declared }): FrameSpec => (declared === undefined ? { fin, rsv, opcode, masked, payload } : { fin, rsv, opcode, masked, payload, declared }));
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.limitShrink(fc.tuple(fc.boolean(), fc.array(frame, { minLength: 1, maxLength: 4 })), 30), async ([handshakeFirst, frames]) => {
        const since = mark();
        const reply = await rawExchange([upgradeRequest, ...(handshakeFirst ? [handshakeFrame] : []), ...frames.map(wsFrame)], { waitMs: 300, idleMs: 60 });
        expect(statusOf(reply)).toBe(101);
        await settle();
        expect(crashes.slice(since.crashes)).toEqual([]);
        expect(errorLogs.slice(since.logs)).toEqual([]);
        if (++runs % 10 === 0) await expectHealthy(since, 'raw frames');
      }),
      { seed, numRuns: 200 },
    );
    await expectHealthy(mark(), 'raw frames');
  }, 30_000);
});

// ---- 3. junk and mutated frames after a handshake ---------------------------------------------


const nestedArrays = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
const nestedObjects = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);

/** Valid frames of every type a handshaken client sends. */
const VALID: Record<string, unknown>[] = [
  { type: 'handshake', v: PROTOCOL_VERSION },
  { type: 'ping', t: 1 },
  { type: 'rpc', id: 1, method: 'hello', args: ['world'] },
  { type: 'publish', seq: 1, channel: 'fuzz:1', data: { text: 'hi', list: [1, null] } },
  { type: 'subscribe', channel: 'fuzz:1' },
  { type: 'subscribe', channel: 'fuzz:1', since: { offset: 0, epoch: '' } },
  { type: 'unsubscribe', channel: 'fuzz:1' },
  { type: 'transact', seq: 1, doc: 'fuzz-doc', reads: { a: 0 }, writes: { a: { done: true }, b: null } },
  { type: 'doc_open', doc: 'fuzz-doc' },
  { type: 'doc_open', doc: 'fuzz-doc', since: 1, epoch: 'e' },
  { type: 'doc_close', doc: 'fuzz-doc' },
  { type: 'skip', seq: 1, reason: 'message_too_big', bytes: 70_000 },
  { type: 'history', id: 2, channel: 'fuzz:1', since: { offset: 0, epoch: '' }, limit: 500 },
];
const FIELDS = [...new Set(VALID.flatMap((frame) => Object.keys(frame)))];
const keyArb = fc.oneof(fc.constantFrom(...FIELDS, '__proto__', 'constructor', 'toString', 'valueOf', 'then', ''), fc.string({ maxLength: 8 }));

const deep = fc
  .tuple(fc.constantFrom(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1000, 5000, 30_000), fc.boolean())
  .map(([depth, arrays]) => new Raw(arrays ? nestedArrays(depth) : nestedObjects(depth)));

const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  {
    arbitrary: fc.oneof(
      fc.constantFrom(0, -0, -1, 1.5, 2 ** 53, 2 ** 53 + 2, Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE, 1e21, 2 ** 31, 2 ** 32),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.constantFrom('NaN', '1e999', '-1e999', '-0.0', '9'.repeat(400)).map((text) => new Raw(text)),
    ),
    weight: 3,
  },
  {
    arbitrary: fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary', maxLength: 20 }),
      fc.constantFrom('', '*', 'fuzz:*', 'has space', '\u0000', '\ud800', 'k'.repeat(201), 'a'.repeat(8193), '€'.repeat(5000), 'x'.repeat(MAX_BYTES)),
      fc.constantFrom('"\ud800"', '"\\ud800"', '"\\uZZZZ"').map((text) => new Raw(text)),
    ),
    weight: 3,
  },
  { arbitrary: fc.constantFrom<unknown>(null, true, false, [], {}, { seq: 1 }, { offset: 0, epoch: '' }, { toString: 1 }, { valueOf: null, toString: null }), weight: 2 },
  { arbitrary: deep, weight: 2 },
);

/** A valid frame with fields dropped, retyped or added (values may nest deeply, overflow, be huge). */
const mutatedFrame = fc
  .tuple(fc.constantFrom(...VALID), fc.array(fc.tuple(keyArb, oddValue), { maxLength: 3 }), fc.array(fc.nat(), { maxLength: 2 }))
  .map(([base, sets, drops]) => {
    const frame: Record<string, unknown> = {};
    for (const key of Object.keys(base)) setOwn(frame, key, base[key]);
    for (const drop of drops) {
      const keys = Object.keys(frame);
      if (keys.length > 0) delete frame[keys[drop % keys.length]!];
    }
    for (const [key, value] of sets) setOwn(frame, key, value);
    return serialize(frame);
  });

/** Valid frames whose payload (data, args, writes, since, epoch) is deep, huge or odd. */
const payloadFrame = fc.tuple(fc.constantFrom('publish', 'rpc', 'transact', 'subscribe', 'history', 'doc_open'), fc.oneof(deep, oddValue), fc.integer({ min: 1, max: 3 })).map(([type, value, n]) => {
  const v = serialize(value);
  switch (type) {
    case 'publish':
      return `{"type":"publish","seq":${n},"channel":"fuzz:1","data":${v}}`;
    case 'rpc':
      return `{"type":"rpc","id":${n},"method":"hello","args":[${v}]}`;
    case 'transact':
      return `{"type":"transact","seq":${n},"doc":"fuzz-doc","reads":{"k":${n === 1 ? v : 0}},"writes":{"k":${v}}}`;
    case 'subscribe':
      return `{"type":"subscribe","channel":"fuzz:1","since":{"offset":${v},"epoch":${v}}}`;
    case 'history':
      return `{"type":"history","id":${n},"channel":"fuzz:1","since":{"offset":0,"epoch":""},"limit":${v}}`;
    default:
      return `{"type":"doc_open","doc":"fuzz-doc","since":${v},"epoch":${v}}`;
  }
});

type Outgoing = { text: string } | { binary: Buffer } | { badText: Buffer };
const outgoing: fc.Arbitrary<Outgoing> = fc.oneof(
  { arbitrary: mutatedFrame.map((text) => ({ text })), weight: 6 },
  { arbitrary: payloadFrame.map((text) => ({ text })), weight: 4 },
  { arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value) => ({ text: JSON.stringify(value) })), weight: 1 },
  { arbitrary: fc.oneof(fc.string(), fc.string({ unit: 'binary' })).map((text) => ({ text })), weight: 1 },
  { arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ binary: Buffer.from(bytes) })), weight: 1 },
  { arbitrary: fc.constantFrom([0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0x7b, 0xf8]).map((bytes) => ({ badText: Buffer.from(bytes) })), weight: 1 },
);

function sendOutgoing(c: RawClient, frame: Outgoing): void {
  if (c.ws.readyState !== WebSocket.OPEN) return;
  if ('text' in frame) c.ws.send(frame.text);
  else if ('binary' in frame) c.ws.send(frame.binary, { binary: true });
  else c.ws.send(frame.badText, { binary: false }); // a text frame that is not UTF-8
}

/** Printed shortened in counterexamples (some frames are 64 kB). */
function describeOutgoing(frame: Outgoing): string {
  const show = (s: string) => (s.length <= 200 ? JSON.stringify(s) : `${JSON.stringify(s.slice(0, 200))}… (${s.length} chars)`);
  if ('text' in frame) return `text ${show(frame.text)}`;
  if ('binary' in frame) return `binary ${frame.binary.toString('hex').slice(0, 100)}`;
  return `invalid UTF-8 text ${frame.badText.toString('hex')}`;
}
class Batch {
  constructor(readonly handshakeFirst: boolean, readonly frames: Outgoing[]) {}
  [fc.toStringMethod](): string {
    return `${this.handshakeFirst ? 'after handshake' : 'without handshake'}: [${this.frames.map(describeOutgoing).join(', ')}]`;
  }
}

describe('junk and mutated frames over WebSocket', () => {
  it('batches of fast-check frames, with and without a handshake first, do not hurt the server', async () => {
    let runs = 0;
    const batch = fc
      .tuple(fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, { arbitrary: fc.constant(false), weight: 1 }), fc.array(outgoing, { minLength: 1, maxLength: 6 }))
      .map(([handshakeFirst, frames]) => new Batch(handshakeFirst, frames));
    await fc.assert(
      fc.asyncProperty(fc.limitShrink(batch, 30), async ({ handshakeFirst, frames }) => {
        const since = mark();
        const c = handshakeFirst ? await handshaken() : await new RawClient(wsUrl).open();
        try {
          for (const frame of frames) sendOutgoing(c, frame);
          await c.drain(424242);
          if (c.closeInfo) expect([1000, 1002, 1007, 1009, 4000, 4002, 4005, 4007], `close code ${c.closeInfo.code} ${c.closeInfo.reason}`).toContain(c.closeInfo.code);
          for (const message of c.inbox) expect(message, 'every answer is a typed server message').toHaveProperty('type');
        } finally {
          c.ws.terminate();
        }
        await settle();
        expect(crashes.slice(since.crashes)).toEqual([]);
        expect(errorLogs.slice(since.logs)).toEqual([]);
        if (++runs % 5 === 0) await expectHealthy(since, 'a batch of frames');
      }),
      { seed, numRuns: 400 },
    );
    await expectHealthy(mark(), 'batches of frames');
  }, 30_000);

  type Expectation = Message | { close: number };
  const under = (type: string, depth: number) => {
    const nested = nestedArrays(depth);
    switch (type) {
      case 'publish data':
        return `{"type":"publish","seq":1,"channel":"c","data":${nested}}`;
      case 'rpc args':
        return `{"type":"rpc","id":1,"method":"hello","args":${nested}}`;
      case 'transact writes':
        return `{"type":"transact","seq":1,"doc":"d","reads":{},"writes":{"k":${nested}}}`;
      case 'subscribe since':
        return `{"type":"subscribe","channel":"c","since":${nested}}`;
      case 'history since':
        return `{"type":"history","id":1,"channel":"c","since":${nested},"limit":1}`;
      default:
        return `{"type":${nested}}`;
    }
  };
  const exactly = (bytes: number, unit = 'x') => {
    const frame = (n: number) => `{"type":"publish","seq":1,"channel":"c","data":"${unit.repeat(n)}"}`;
    const overhead = Buffer.byteLength(frame(0));
    const unitBytes = Buffer.byteLength(unit);
    const text = frame(Math.floor((bytes - overhead) / unitBytes));
    return text.replace('"data":"', `"data":"${' '.repeat(bytes - Buffer.byteLength(text))}`);
  };

  const cases: [string, Outgoing[], Expectation][] = [
    ...['publish data', 'rpc args', 'transact writes', 'subscribe since', 'history since', 'type'].flatMap((where) =>
      [5000, 30_000].map((depth): [string, Outgoing[], Expectation] => [
        `${where} nested ${depth} levels`,
        [{ text: under(where, depth) }],
        { type: 'error', code: 'invalid_message', ...(where === 'publish data' || where === 'transact writes' ? { seq: 1 } : {}), ...(where === 'rpc args' || where === 'history since' ? { id: 1 } : {}) },
      ]),
    ),
    ['type an object whose toString is not callable', [{ text: '{"type":{"toString":1},"seq":1}' }], { type: 'error', code: 'invalid_message' }],
    ['ping t overflowing to Infinity', [{ text: '{"type":"ping","t":1e999}' }], { type: 'error', code: 'invalid_message' }],
    ['a publish frame of exactly maxMessageBytes (ASCII)', [{ text: exactly(MAX_BYTES) }], { type: 'ack', seq: 1 }],
    ['a publish frame of exactly maxMessageBytes (3-byte characters)', [{ text: exactly(MAX_BYTES, '€') }], { type: 'ack', seq: 1 }],
    ['a publish frame one byte over maxMessageBytes', [{ text: exactly(MAX_BYTES + 1) }], { close: 1009 }],
    ['a frame of 1 MB', [{ text: exactly(1_000_000) }], { close: 1009 }],
    ['a binary frame', [{ binary: Buffer.from('{"type":"ping","t":1}') }], { type: 'error', code: 'invalid_message' }],
    ['a text frame that is not UTF-8', [{ badText: Buffer.from([0x7b, 0xff, 0x7d]) }], { close: 1007 }],
    ['an rpc with 64 kB of arguments', [{ text: `{"type":"rpc","id":1,"method":"hello","args":[${'1,'.repeat(30_000)}1]}` }], { type: 'error', id: 1, code: 'invalid_argument' }],
    ['21 junk frames in a row', Array.from({ length: 21 }, () => ({ text: 'junk' })), { close: 4005 }],
  ];

  it.each(cases)('%s', async (name, frames, expected) => {
    const since = mark();
    const c = await handshaken();
    try {
      for (const frame of frames) sendOutgoing(c, frame);
      if ('close' in expected) {
        await c.waitFor(() => false).catch(() => undefined);
        expect(c.closeInfo?.code, `${name}: close code`).toBe(expected.close);
      } else {
        const answer = await c.waitFor((m) => m.type !== 'pong');
        expect(answer, `${name}: the answer`).toMatchObject(expected);
      }
    } finally {
      c.ws.terminate();
    }
    await expectHealthy(since, name);
  });

  it('a first frame that is not a handshake closes with 4000, whatever it is', async () => {
    for (const first of ['{"type":{"toString":1}}', `{"type":"handshake","v":1,"x":${nestedArrays(30_000)}}`, '{"type":"handshake","v":1e999}', 'null', '']) {
      const since = mark();
      const c = await new RawClient(wsUrl).open();
      c.send(first);
      await c.waitFor(() => false).catch(() => undefined);
      expect(c.closeInfo?.code, first.slice(0, 60)).toBe(4000);
      await expectHealthy(since, `first frame ${first.slice(0, 60)}`);
    }
  });
});
