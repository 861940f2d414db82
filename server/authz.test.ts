/**
 * Authorisation matrix against a live server: every operation (subscribe, history, publish,
 * doc_open, transact, rpc) under every shape of grant claims, with the pattern edges, the
 * operator's default grants, development mode, malformed grant claims, and the backend's
 * `POST /api/disconnect` (with and without `revoke`).
 *
 * Every row states whether the operation is allowed or refused; allowed ones must really
 * succeed (ack with an offset, subscribed, result, doc state), so a server that refused
 * everything fails this file as surely as one that allowed everything.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type ServerOptions, type TetherServer } from './server.js';
import { RawClient, type Frame } from './testing/raw-client.js';

const SECRET = 'authz-test-secret-of-at-least-32-characters';
const API_KEY = 'authz-test-api-key';
const silent = pino({ level: 'silent' });
/** The connection is still usable: a ping is answered. */
async function alive(c: RawClient): Promise<void> {
  const t = Math.floor(Math.random() * 1e9);
  c.send({ type: 'ping', t });
  expect(await c.next()).toEqual({ type: 'pong', t });
}



type Claims = Record<string, unknown>;

let tokenCount = 0;
async function token(claims: Claims | undefined, sub = `user-${++tokenCount}`, secret = SECRET): Promise<string> {
  return new SignJWT(claims ?? {})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(secret));
}

let clientCount = 0;
function newClientId(): string {
  return `authz-${++clientCount}-${Math.random().toString(36).slice(2, 10)}`;
}

const procedures: NonNullable<ServerOptions['procedures']> = {
  add: ([a, b]) => Number(a) + Number(b),
  'billing.charge': () => 'charged',
  billingcharge: () => 'not billing.*',
};

async function start(options: ServerOptions = {}): Promise<{ server: TetherServer; url: string }> {
  const server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', procedures, ...options });
  return { server, url: `ws://127.0.0.1:${server.port}/ws` };
}

/** Opens a connection with a clientId (writes need one) and the token; expects the welcome. */
async function connect(url: string, tokenText: string | undefined): Promise<RawClient> {
  const c = await new RawClient(url).open();
  c.send({ type: 'handshake', v: 1, clientId: newClientId(), ...(tokenText === undefined ? {} : { token: tokenText }) });
  const welcome = await c.next();
  expect(welcome).toMatchObject({ type: 'welcome', v: 1 });
  return c;
}

type Op = 'subscribe' | 'history' | 'publish' | 'doc_open' | 'transact' | 'rpc';
type Expect = 'allowed' | 'forbidden';

/** The frame that performs `op` on `target` (a channel, a document or a procedure); first of its connection (id 1, seq 1). */
function request(op: Op, target: string): Frame {
  switch (op) {
    case 'subscribe':
      return { type: 'subscribe', channel: target };
    case 'history':
      return { type: 'history', id: 1, channel: target, since: { offset: 0, epoch: '' }, limit: 10 };
    case 'publish':
      return { type: 'publish', seq: 1, channel: target, data: { from: 'authz' } };
    case 'doc_open':
      return { type: 'doc_open', doc: target };
    case 'transact':
      return { type: 'transact', seq: 1, doc: target, reads: {}, writes: { k: 'v' } };
    case 'rpc':
      return { type: 'rpc', id: 1, method: target, args: target === 'hello' ? ['world'] : target === 'add' ? [2, 3] : [] };
  }
}

const RPC_VALUES: Record<string, unknown> = { hello: 'Hello, world!', add: 5, 'billing.charge': 'charged', billingcharge: 'not billing.*' };

/** Asserts the answer to an allowed operation is its real success frame. */
function expectSuccess(op: Op, target: string, answer: Frame): void {
  switch (op) {
    case 'subscribe':
      expect(answer).toMatchObject({ type: 'subscribed', channel: target, epoch: expect.any(String), offset: expect.any(Number) });
      return;
    case 'history':
      expect(answer).toMatchObject({ type: 'result', id: 1, value: { head: expect.any(Number), reset: false, events: expect.any(Array) } });
      return;
    case 'publish':
    case 'transact':
      expect(answer).toMatchObject({ type: 'ack', seq: 1 });
      expect(answer.offset).toBeGreaterThanOrEqual(1);
      return;
    case 'doc_open':
      expect(answer).toMatchObject({ type: 'doc', doc: target, full: true, version: expect.any(Number), keys: expect.any(Object) });
      return;
    case 'rpc':
      expect(answer).toEqual({ type: 'result', id: 1, value: RPC_VALUES[target] });
      return;
  }
}

/** The exact refusal each operation answers (session.ts), tied to its request by channel, id, seq or doc. */
function refusal(op: Op, target: string): Frame {
  switch (op) {
    case 'subscribe':
      return { type: 'error', channel: target, code: 'forbidden', message: `you may not subscribe to ${target}` };
    case 'history':
      return { type: 'error', id: 1, code: 'forbidden', message: `you may not read ${target}` };
    case 'publish':
      return { type: 'error', seq: 1, code: 'forbidden', message: `you may not publish to ${target}` };
    case 'doc_open':
      return { type: 'error', doc: target, code: 'forbidden', message: `you may not open ${target}` };
    case 'transact':
      return { type: 'error', seq: 1, code: 'forbidden', message: `you may not change ${target}` };
    case 'rpc':
      return { type: 'error', id: 1, code: 'forbidden', message: `you may not call ${target}` };
  }
}

type Row = [label: string, claims: Claims | undefined, op: Op, target: string, expected: Expect];

/** Rows as named cases, for readable test names. */
function cases(rows: Row[]) {
  return rows.map(([label, claims, op, target, expected]) => [label, op, target, expected, claims] as const);
}

/** Runs one row on its own connection: the answer is the real success, or the exact refusal (and the connection lives on). */
async function check(url: string, claims: Claims | undefined, op: Op, target: string, expected: Expect, tokenText?: string): Promise<void> {
  const c = await connect(url, tokenText ?? (await token(claims)));
  try {
    c.send(request(op, target));
    const answer = await c.next();
    if (expected === 'allowed') expectSuccess(op, target, answer);
    else expect(answer).toEqual(refusal(op, target));
    await alive(c); // a refusal answers the request; it never closes the connection
  } finally {
    c.ws.close();
  }
}

const NONE = undefined;
const A: Expect = 'allowed';
const F: Expect = 'forbidden';

/** Secure server with the default default grants ({"rpc":["*"]}). */
const MATRIX: Row[] = [
  // No claims: the defaults give procedures only.
  ['no claims', NONE, 'subscribe', 'news', F],
  ['no claims', NONE, 'history', 'news', F],
  ['no claims', NONE, 'publish', 'news', F],
  ['no claims', NONE, 'doc_open', 'board', F],
  ['no claims', NONE, 'transact', 'board', F],
  ['no claims', NONE, 'rpc', 'hello', A],
  ['no claims', NONE, 'rpc', 'add', A],

  // channels: everything on the channels and documents it matches; rpc falls back to the default.
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'room:a', A],
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'room:a:b', A],
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'room:', A], // `*` matches an empty run too
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'room', F],
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'rooms:a', F],
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'xroom:a', F],
  ['channels room:*', { channels: ['room:*'] }, 'subscribe', 'news', F],
  ['channels room:*', { channels: ['room:*'] }, 'history', 'room:a', A],
  ['channels room:*', { channels: ['room:*'] }, 'history', 'room:a:b', A],
  ['channels room:*', { channels: ['room:*'] }, 'history', 'room', F],
  ['channels room:*', { channels: ['room:*'] }, 'history', 'rooms:a', F],
  ['channels room:*', { channels: ['room:*'] }, 'publish', 'room:a', A],
  ['channels room:*', { channels: ['room:*'] }, 'publish', 'room:a:b', A],
  ['channels room:*', { channels: ['room:*'] }, 'publish', 'room', F],
  ['channels room:*', { channels: ['room:*'] }, 'publish', 'rooms:a', F],
  ['channels room:*', { channels: ['room:*'] }, 'doc_open', 'room:a', A],
  ['channels room:*', { channels: ['room:*'] }, 'doc_open', 'room:a:b', A],
  ['channels room:*', { channels: ['room:*'] }, 'doc_open', 'board', F],
  ['channels room:*', { channels: ['room:*'] }, 'doc_open', 'rooms:a', F],
  ['channels room:*', { channels: ['room:*'] }, 'transact', 'room:a', A],
  ['channels room:*', { channels: ['room:*'] }, 'transact', 'room', F],
  ['channels room:*', { channels: ['room:*'] }, 'transact', 'board', F],
  ['channels room:*', { channels: ['room:*'] }, 'rpc', 'hello', A],

  // subscribe: read-only (subscribe and history), literal match.
  ['subscribe news', { subscribe: ['news'] }, 'subscribe', 'news', A],
  ['subscribe news', { subscribe: ['news'] }, 'subscribe', 'news2', F],
  ['subscribe news', { subscribe: ['news'] }, 'subscribe', 'new', F],
  ['subscribe news', { subscribe: ['news'] }, 'subscribe', 'xnews', F],
  ['subscribe news', { subscribe: ['news'] }, 'history', 'news', A],
  ['subscribe news', { subscribe: ['news'] }, 'history', 'news2', F],
  ['subscribe news', { subscribe: ['news'] }, 'publish', 'news', F],
  ['subscribe news', { subscribe: ['news'] }, 'doc_open', 'news', F],
  ['subscribe news', { subscribe: ['news'] }, 'transact', 'news', F],
  ['subscribe news', { subscribe: ['news'] }, 'rpc', 'hello', A],

  // publish: write-only.
  ['publish news', { publish: ['news'] }, 'publish', 'news', A],
  ['publish news', { publish: ['news'] }, 'publish', 'news2', F],
  ['publish news', { publish: ['news'] }, 'subscribe', 'news', F],
  ['publish news', { publish: ['news'] }, 'history', 'news', F],
  ['publish news', { publish: ['news'] }, 'doc_open', 'news', F],
  ['publish news', { publish: ['news'] }, 'transact', 'news', F],
  ['publish news', { publish: ['news'] }, 'rpc', 'hello', A],

  // docs: open and change documents, nothing on channels.
  ['docs board', { docs: ['board'] }, 'doc_open', 'board', A],
  ['docs board', { docs: ['board'] }, 'transact', 'board', A],
  ['docs board', { docs: ['board'] }, 'doc_open', 'board2', F],
  ['docs board', { docs: ['board'] }, 'transact', 'board2', F],
  ['docs board', { docs: ['board'] }, 'subscribe', 'board', F],
  ['docs board', { docs: ['board'] }, 'history', 'board', F],
  ['docs board', { docs: ['board'] }, 'publish', 'board', F],
  ['docs board', { docs: ['board'] }, 'rpc', 'hello', A],

  // docs_read: open only.
  ['docs_read board', { docs_read: ['board'] }, 'doc_open', 'board', A],
  ['docs_read board', { docs_read: ['board'] }, 'transact', 'board', F],
  ['docs_read board', { docs_read: ['board'] }, 'doc_open', 'board2', F],
  ['docs_read board', { docs_read: ['board'] }, 'subscribe', 'board', F],
  ['docs_read board', { docs_read: ['board'] }, 'history', 'board', F],
  ['docs_read board', { docs_read: ['board'] }, 'publish', 'board', F],

  // rpc: by name; no channel/document claim, so the (empty) default data grants apply.
  ['rpc hello', { rpc: ['hello'] }, 'rpc', 'hello', A],
  ['rpc hello', { rpc: ['hello'] }, 'rpc', 'add', F],
  ['rpc hello', { rpc: ['hello'] }, 'subscribe', 'news', F],
  ['rpc hello', { rpc: ['hello'] }, 'history', 'news', F],
  ['rpc hello', { rpc: ['hello'] }, 'publish', 'news', F],
  ['rpc hello', { rpc: ['hello'] }, 'doc_open', 'board', F],
  ['rpc hello', { rpc: ['hello'] }, 'transact', 'board', F],
  ['rpc billing.*', { rpc: ['billing.*'] }, 'rpc', 'billing.charge', A],
  ['rpc billing.*', { rpc: ['billing.*'] }, 'rpc', 'billingcharge', F],
  ['rpc billing.*', { rpc: ['billing.*'] }, 'rpc', 'hello', F],
  ['rpc []', { rpc: [] }, 'rpc', 'hello', F], // an empty rpc claim is "none", not "the default"
  ['rpc *', { rpc: ['*'] }, 'rpc', 'add', A],

  // `*` alone matches everything.
  ['channels *', { channels: ['*'] }, 'subscribe', 'anything:at/all', A],
  ['channels *', { channels: ['*'] }, 'history', 'news', A],
  ['channels *', { channels: ['*'] }, 'publish', 'news', A],
  ['channels *', { channels: ['*'] }, 'doc_open', 'board', A],
  ['channels *', { channels: ['*'] }, 'transact', 'board', A],
  ['channels *', { channels: ['*'] }, 'rpc', 'add', A],
  ['subscribe *', { subscribe: ['*'] }, 'subscribe', 'anything', A],
  ['subscribe *', { subscribe: ['*'] }, 'publish', 'anything', F],
  ['subscribe *', { subscribe: ['*'] }, 'doc_open', 'anything', F],

  // An empty data claim is present: no defaults, nothing allowed.
  ['channels []', { channels: [] }, 'subscribe', 'news', F],
  ['channels []', { channels: [] }, 'rpc', 'hello', A],

  // More pattern edges: inner stars, literal dots, case, several patterns, claims combined.
  ['channels room:*:chat', { channels: ['room:*:chat'] }, 'subscribe', 'room:1:chat', A],
  ['channels room:*:chat', { channels: ['room:*:chat'] }, 'subscribe', 'room:1:2:chat', A],
  ['channels room:*:chat', { channels: ['room:*:chat'] }, 'subscribe', 'room:1:chat2', F],
  ['channels room:*:chat', { channels: ['room:*:chat'] }, 'subscribe', 'room:1', F],
  ['channels a.b', { channels: ['a.b'] }, 'subscribe', 'a.b', A],
  ['channels a.b', { channels: ['a.b'] }, 'subscribe', 'aXb', F], // `.` is literal, not a regex wildcard
  ['channels News', { channels: ['News'] }, 'subscribe', 'news', F], // case-sensitive
  ['channels lobby,room:*', { channels: ['lobby', 'room:*'] }, 'subscribe', 'lobby', A],
  ['channels lobby,room:*', { channels: ['lobby', 'room:*'] }, 'publish', 'room:9', A],
  ['channels lobby,room:*', { channels: ['lobby', 'room:*'] }, 'subscribe', 'lobby2', F],
  ['subscribe news + publish chat', { subscribe: ['news'], publish: ['chat'] }, 'subscribe', 'news', A],
  ['subscribe news + publish chat', { subscribe: ['news'], publish: ['chat'] }, 'publish', 'chat', A],
  ['subscribe news + publish chat', { subscribe: ['news'], publish: ['chat'] }, 'publish', 'news', F],
  ['subscribe news + publish chat', { subscribe: ['news'], publish: ['chat'] }, 'subscribe', 'chat', F],
  ['docs draft + docs_read board', { docs: ['draft'], docs_read: ['board'] }, 'transact', 'draft', A],
  ['docs draft + docs_read board', { docs: ['draft'], docs_read: ['board'] }, 'doc_open', 'board', A],
  ['docs draft + docs_read board', { docs: ['draft'], docs_read: ['board'] }, 'transact', 'board', F],
  ['channels room:* + rpc hello', { channels: ['room:*'], rpc: ['hello'] }, 'publish', 'room:a', A],
  ['channels room:* + rpc hello', { channels: ['room:*'], rpc: ['hello'] }, 'rpc', 'hello', A],
  ['channels room:* + rpc hello', { channels: ['room:*'], rpc: ['hello'] }, 'rpc', 'add', F],

  // Unknown claim names are not grants: ignored, they give nothing.
  ['unknown claims', { admin: true, grants: { channels: ['*'] }, scope: 'all', Channels: ['*'] }, 'subscribe', 'news', F],
  ['unknown claims', { admin: true, grants: { channels: ['*'] }, scope: 'all', Channels: ['*'] }, 'publish', 'news', F],
  ['unknown claims', { admin: true, grants: { channels: ['*'] }, scope: 'all', Channels: ['*'] }, 'rpc', 'hello', A],
];

describe('authorisation matrix (TETHER_TOKEN_SECRET, default grants {"rpc":["*"]})', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    ({ server, url } = await start({ tokenSecret: SECRET }));
  });
  afterAll(() => server.close());

  it.for(cases(MATRIX))('%s: %s %s → %s', async ([, op, target, expected, claims]) => {
    await check(url, claims, op, target, expected);
  });

  it('a refused publish stores nothing and a refused transact changes nothing; the sequence moves on', async () => {
    const writer = await connect(url, await token({ subscribe: ['audit:ch'], docs_read: ['audit:doc'] }));
    writer.send({ type: 'publish', seq: 1, channel: 'audit:ch', data: 'sneaky' });
    expect(await writer.next()).toEqual(refusal('publish', 'audit:ch'));
    writer.send({ type: 'transact', seq: 2, doc: 'audit:doc', reads: {}, writes: { k: 'sneaky' } });
    expect(await writer.next()).toEqual({ ...refusal('transact', 'audit:doc'), seq: 2 });
    // A refused write still takes its place in the sequence: the next one is answered, not held.
    writer.send({ type: 'publish', seq: 3, channel: 'audit:ch', data: 'again' });
    expect(await writer.next()).toEqual({ ...refusal('publish', 'audit:ch'), seq: 3 });
    writer.ws.close();

    const reader = await connect(url, await token({ channels: ['audit:*'] }));
    reader.send({ type: 'history', id: 1, channel: 'audit:ch', since: { offset: 0, epoch: '' }, limit: 10 });
    expect(await reader.next()).toMatchObject({ type: 'result', id: 1, value: { head: 0, events: [] } });
    reader.send({ type: 'doc_open', doc: 'audit:doc' });
    expect(await reader.next()).toMatchObject({ type: 'doc', doc: 'audit:doc', version: 0, keys: {} });
    reader.ws.close();
  });

  it('a read-only subscriber receives what an allowed publisher sends', async () => {
    const reader = await connect(url, await token({ subscribe: ['feed'] }));
    reader.send({ type: 'subscribe', channel: 'feed' });
    expect(await reader.next()).toMatchObject({ type: 'subscribed', channel: 'feed' });
    const writer = await connect(url, await token({ publish: ['feed'] }));
    writer.send({ type: 'publish', seq: 1, channel: 'feed', data: { n: 1 } });
    expect(await writer.next()).toMatchObject({ type: 'ack', seq: 1, offset: 1 });
    expect(await reader.next()).toMatchObject({ type: 'event', channel: 'feed', offset: 1, data: { n: 1 } });
    reader.ws.close();
    writer.ws.close();
  });
});

describe('operator default grants {"channels":["*"]}', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    ({ server, url } = await start({ tokenSecret: SECRET, defaultGrants: { channels: ['*'] } }));
  });
  afterAll(() => server.close());

  const rows: Row[] = [
    // No claims: the operator's defaults apply to channels and documents.
    ['no claims', NONE, 'subscribe', 'x', A],
    ['no claims', NONE, 'history', 'x', A],
    ['no claims', NONE, 'publish', 'x', A],
    ['no claims', NONE, 'doc_open', 'x', A],
    ['no claims', NONE, 'transact', 'x', A],
    // These defaults replace {"rpc":["*"]} as a whole and name no rpc: no procedure (fail closed).
    ['no claims', NONE, 'rpc', 'hello', F],
    // A token with any channel/document claim gets no defaults for them.
    ['subscribe x', { subscribe: ['x'] }, 'subscribe', 'x', A],
    ['subscribe x', { subscribe: ['x'] }, 'history', 'x', A],
    ['subscribe x', { subscribe: ['x'] }, 'publish', 'x', F],
    ['subscribe x', { subscribe: ['x'] }, 'doc_open', 'x', F],
    ['subscribe x', { subscribe: ['x'] }, 'transact', 'x', F],
    ['subscribe x', { subscribe: ['x'] }, 'subscribe', 'y', F],
    ['docs_read x', { docs_read: ['x'] }, 'publish', 'x', F],
    ['docs_read x', { docs_read: ['x'] }, 'subscribe', 'x', F],
    ['channels []', { channels: [] }, 'subscribe', 'x', F],
    // An rpc claim alone is not a channel/document claim: the data defaults still apply.
    ['rpc hello', { rpc: ['hello'] }, 'publish', 'x', A],
    ['rpc hello', { rpc: ['hello'] }, 'subscribe', 'x', A],
    ['rpc hello', { rpc: ['hello'] }, 'rpc', 'hello', A],
    ['rpc hello', { rpc: ['hello'] }, 'rpc', 'add', F],
  ];
  it.for(cases(rows))('%s: %s %s → %s', async ([, op, target, expected, claims]) => {
    await check(url, claims, op, target, expected);
  });
});

describe('development mode (no key configured): everything allowed', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    ({ server, url } = await start());
  });
  afterAll(() => server.close());

  const rows: [Op, string][] = [
    ['subscribe', 'news'], ['history', 'news'], ['publish', 'news'], ['doc_open', 'board'], ['transact', 'board'],
    ['rpc', 'hello'], ['rpc', 'add'], ['rpc', 'billing.charge'],
  ];
  it.each(rows)('anonymous %s %s is allowed', async (op, target) => {
    const c = await new RawClient(url).open();
    c.send({ type: 'handshake', v: 1, clientId: newClientId() });
    expect(await c.next()).toMatchObject({ type: 'welcome', user: null });
    c.send(request(op, target));
    expectSuccess(op, target, await c.next());
    c.ws.close();
  });

  it('a token is ignored: restrictive claims limit nothing and the client stays anonymous', async () => {
    const c = await new RawClient(url).open();
    c.send({ type: 'handshake', v: 1, clientId: newClientId(), token: await token({ rpc: [], channels: [] }) });
    expect(await c.next()).toMatchObject({ type: 'welcome', user: null });
    c.send(request('publish', 'news'));
    expectSuccess('publish', 'news', await c.next());
    c.ws.close();
  });
});

describe('malformed grant claims in a token', () => {
  let server: TetherServer;
  let url: string;

  beforeAll(async () => {
    ({ server, url } = await start({ tokenSecret: SECRET }));
  });
  afterAll(() => server.close());

  const bad = (claim: string) => `the token: ${claim} must be an array of patterns (1–200 characters each)`;
  const rows: [string, Claims, string][] = [
    ['channels as a string', { channels: 'room:*' }, bad('channels')],
    ['rpc with a number', { rpc: [1] }, bad('rpc')],
    ['rpc as a string', { rpc: 'hello' }, bad('rpc')],
    ['subscribe with an empty pattern', { subscribe: [''] }, bad('subscribe')],
    ['publish with a 201-character pattern', { publish: ['x'.repeat(201)] }, bad('publish')],
    ['docs null', { docs: null }, bad('docs')],
    ['docs_read as an object', { docs_read: { board: true } }, bad('docs_read')],
    ['channels nested', { channels: [['room:*']] }, bad('channels')],
    ['a good claim beside a bad one', { channels: ['room:*'], rpc: [true] }, bad('rpc')],
  ];
  it.each(rows)('refuses %s at the handshake (unauthorized, 4001)', async (_name, claims, message) => {
    const c = await new RawClient(url).open();
    c.send({ type: 'handshake', v: 1, clientId: newClientId(), token: await token(claims) });
    expect(await c.next()).toEqual({ type: 'error', code: 'unauthorized', message });
    expect((await c.closed).code).toBe(4001);
    expect(c.inbox).toEqual([]); // no welcome after the refusal
  });

  it('positive controls: 200-character patterns, empty lists and unknown claim names are accepted', async () => {
    for (const claims of [
      { channels: ['x'.repeat(200)] },
      { channels: [], subscribe: [], publish: [], docs: [], docs_read: [], rpc: [] },
      { admin: true, grants: 'all', role: ['*'] },
    ]) {
      const c = await new RawClient(url).open();
      c.send({ type: 'handshake', v: 1, token: await token(claims) });
      expect(await c.next()).toMatchObject({ type: 'welcome' });
      c.ws.close();
    }
  });
});

describe('POST /api/disconnect', () => {
  let server: TetherServer;
  let url: string;
  let api: string;

  beforeAll(async () => {
    ({ server, url } = await start({ tokenSecret: SECRET, apiKey: API_KEY }));
    api = `http://127.0.0.1:${server.port}/api/disconnect`;
  });
  afterAll(() => server.close());

  /** `key` null: no Authorization header at all. */
  function disconnect(body: unknown, key: string | null = API_KEY, path = api): Promise<Response> {
    return fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key === null ? {} : { authorization: `Bearer ${key}` }) },
      body: JSON.stringify(body),
    });
  }

  async function hello(c: RawClient, id: number): Promise<void> {
    c.send({ type: 'rpc', id, method: 'hello', args: ['world'] });
    expect(await c.next()).toEqual({ type: 'result', id, value: 'Hello, world!' });
  }

  async function handshake(tokenText: string): Promise<RawClient> {
    const c = await new RawClient(url).open();
    c.send({ type: 'handshake', v: 1, token: tokenText });
    return c;
  }

  it('closes a connected user with 4001; the same token may come back when not revoked', async () => {
    const aliceToken = await token({}, 'alice-1');
    const alice = await connect(url, aliceToken);
    const alice2 = await connect(url, aliceToken);
    const bob = await connect(url, await token({}, 'bob-1'));
    const res = await disconnect({ user: 'alice-1' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ user: 'alice-1', closed: 2 });
    expect((await alice.closed).code).toBe(4001);
    expect((await alice2.closed).code).toBe(4001);
    await hello(bob, 1);

    const back = await handshake(aliceToken);
    expect(await back.next()).toMatchObject({ type: 'welcome', user: 'alice-1' });
    await hello(back, 1);
    back.ws.close();
    bob.ws.close();
  });

  it('with revoke: the held token (and one without iat) is refused; a token signed a second later works; others stay', async () => {
    const aliceToken = await token({}, 'alice-2');
    const noIat = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice-2').setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
    const alice = await connect(url, aliceToken);
    const bob = await connect(url, await token({}, 'bob-2'));

    const res = await disconnect({ user: 'alice-2', revoke: true });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ user: 'alice-2', closed: 1, revoked: true });
    expect((await alice.closed).code).toBe(4001);

    for (const held of [aliceToken, noIat]) {
      const again = await handshake(held);
      const refused = await again.next();
      expect(refused).toMatchObject({ type: 'error', code: 'unauthorized' });
      expect(refused.message).toBe('this session was ended by the backend; sign in again for a new token');
      expect((await again.closed).code).toBe(4001);
    }

    const fresh = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice-2')
      .setIssuedAt(Math.floor(Date.now() / 1000) + 1)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(SECRET));
    const back = await handshake(fresh);
    expect(await back.next()).toMatchObject({ type: 'welcome', user: 'alice-2' });
    await hello(back, 1);

    // Another user was never touched.
    await hello(bob, 1);
    expect(bob.isClosed).toBe(false);
    back.ws.close();
    bob.ws.close();
  });

  it('an unknown user closes nothing', async () => {
    const res = await disconnect({ user: 'nobody-here' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ user: 'nobody-here', closed: 0 });
  });

  it('refuses without the API key, with a wrong one, or with the key in the query string (401), and closes no one', async () => {
    const carol = await connect(url, await token({}, 'carol'));
    for (const res of [
      await disconnect({ user: 'carol', revoke: true }, null),
      await disconnect({ user: 'carol', revoke: true }, 'not-the-key'),
      await disconnect({ user: 'carol', revoke: true }, null, `${api}?key=${API_KEY}`),
      await disconnect({ user: 'carol', revoke: true }, `${API_KEY}x`),
      await disconnect({ user: 'carol', revoke: true }, ''),
    ]) {
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ error: { code: 'unauthorized' } });
    }
    await hello(carol, 1);
    carol.ws.close();
    // Nothing was revoked either: carol's token still connects.
    const again = await handshake(await token({}, 'carol'));
    expect(await again.next()).toMatchObject({ type: 'welcome', user: 'carol' });
    again.ws.close();
  });

  it('refuses every call when the server has no API key (401)', async () => {
    const { server: keyless } = await start({ tokenSecret: SECRET });
    try {
      const res = await disconnect({ user: 'x' }, 'anything', `http://127.0.0.1:${keyless.port}/api/disconnect`);
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ error: { code: 'unauthorized' } });
    } finally {
      await keyless.close();
    }
  });
});

describe('revocation survives a restart', () => {
  it('a token revoked before the server restarted is still refused after it (the mark is in the events DB)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-revoke-'));
    const options = { tokenSecret: SECRET, apiKey: API_KEY, db: join(dir, 'events.db') };
    try {
      const held = await token({}, 'carol-restart');
      let { server, url } = await start(options);
      const carol = await connect(url, held);
      const res = await fetch(`http://127.0.0.1:${server.port}/api/disconnect`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` },
        body: JSON.stringify({ user: 'carol-restart', revoke: true }),
      });
      expect(res.status).toBe(200);
      expect((await carol.closed).code).toBe(4001);
      await server.close();

      ({ server, url } = await start(options));
      try {
        const back = await new RawClient(url).open();
        back.send({ type: 'handshake', v: 1, token: held });
        expect(await back.next()).toMatchObject({ type: 'error', code: 'unauthorized', message: expect.stringContaining('ended by the backend') });
        expect((await back.closed).code).toBe(4001);
        // A token signed after the revocation gets in.
        const fresh = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('carol-restart').setIssuedAt(Math.floor(Date.now() / 1000) + 1).setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
        (await connect(url, fresh)).ws.close();
      } finally {
        await server.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
