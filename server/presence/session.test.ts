/**
 * Presence over real sockets: grants, limits, refusals that name the channel, members frames to
 * every joined connection (and only those), lingering after a close and no flapping on a
 * reconnect, the HTTP API, development-mode member keys, and two server processes on one Redis
 * seeing one member list.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type ServerOptions, type TetherServer } from '../server.js';
import { RawClient, type Frame } from '../testing/raw-client.js';
import { applyMembersFrame } from '../../protocol/presence-list.js';
import type { PresenceMember, PresenceMembers } from '../../protocol/messages.js';
import { sleep } from './conformance.js';

const SECRET = 'presence-test-secret-of-at-least-32-characters';
const API_KEY = 'presence-test-api-key';
const LINGER = 400;
const silent = pino({ level: 'silent' });

afterEach(() => {
  for (const c of RawClient.all) c.ws.terminate();
});

async function token(sub: string, claims: Record<string, unknown> = { subscribe: ['room:*'], publish: ['room:*'] }): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
}

let clients = 0;
const newClientId = () => `presence-${++clients}-${randomBytes(4).toString('hex')}`;

async function connect(port: number, options: { token?: string; clientId?: string | null } = {}): Promise<RawClient> {
  const c = await new RawClient(`ws://127.0.0.1:${port}/ws`).open();
  const clientId = options.clientId === undefined ? newClientId() : options.clientId;
  c.send({ type: 'handshake', v: 1, ...(clientId === null ? {} : { clientId }), ...(options.token === undefined ? {} : { token: options.token }) });
  expect(await c.next()).toMatchObject({ type: 'welcome' });
  c.keepAlive();
  c.view = listsOf();
  return c;
}

/**
 * Presence frames as the client's list after each: the whole list first, then change frames
 * applied to it (per channel, as they arrive). A change before any list fails the test.
 */
function listsOf(): (frame: Frame) => Frame {
  const lists = new Map<string, PresenceMember[]>();
  return (frame) => {
    if (frame.type !== 'presence') return frame;
    const channel = frame.channel as string;
    const members = applyMembersFrame(lists.get(channel), frame as PresenceMembers);
    if (members === undefined) throw new Error(`a presence change before the list of ${channel}: ${JSON.stringify(frame)}`);
    lists.set(channel, members);
    return { ...frame, raw: frame, members };
  };
}

type Member = { id: string; user: string | null; tabs: number; devices: number; state: unknown; since: number };
const isPresence = (channel: string) => (f: Frame) => f.type === 'presence' && f.channel === channel;

/** Waits for a members frame of `channel` whose members satisfy `check`. */
async function members(c: RawClient, channel: string, check: (members: Member[]) => boolean, timeoutMs = 5000): Promise<Member[]> {
  const frame = await c.until((f) => isPresence(channel)(f) && check(f.members as Member[]), timeoutMs);
  return frame.members as Member[];
}
const ids = (list: Member[]) => list.map((m) => m.id).sort().join(',');

async function alive(c: RawClient): Promise<void> {
  const t = Math.floor(Math.random() * 1e9);
  c.send({ type: 'ping', t });
  await c.until((f) => f.type === 'pong' && f.t === t);
}

async function start(options: ServerOptions): Promise<TetherServer> {
  return startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', presenceLingerMs: LINGER, ...options });
}

describe('presence over sockets (tokens)', () => {
  let server: TetherServer;
  beforeAll(async () => {
    server = await start({ tokenSecret: SECRET, apiKey: API_KEY, maxSubscriptions: 2 });
  });
  afterAll(() => server.close());

  it('is refused without the channel\'s subscribe grant, naming the channel; the connection and the server go on', async () => {
    const c = await connect(server.port, { token: await token('mallory') });
    const other = await connect(server.port, { token: await token('olivia') });
    c.send({ type: 'presence', channel: 'secret:plans', tabs: 1 });
    expect(await c.until((f) => f.type === 'error')).toEqual({ type: 'error', presence: 'secret:plans', code: 'forbidden', message: 'you may not join the presence of secret:plans' });
    await alive(c);
    other.send({ type: 'presence', channel: 'room:forbidden-check', tabs: 1 });
    expect(ids(await members(other, 'room:forbidden-check', (m) => m.length === 1))).toBe('olivia');
    // Nobody hears of mallory, and the publish grant alone is not enough either.
    const publisher = await connect(server.port, { token: await token('pat', { publish: ['room:*'] }) });
    publisher.send({ type: 'presence', channel: 'room:forbidden-check', tabs: 1 });
    expect(await publisher.until((f) => f.type === 'error')).toMatchObject({ presence: 'room:forbidden-check', code: 'forbidden' });
    await sleep(100);
    expect(other.inbox.filter(isPresence('room:forbidden-check'))).toEqual([]);
  });

  it('holds at most maxSubscriptions presence channels per connection; updates and leaves make room', async () => {
    const c = await connect(server.port, { token: await token('lim') });
    c.send({ type: 'presence', channel: 'room:lim-1', tabs: 1 });
    c.send({ type: 'presence', channel: 'room:lim-2', tabs: 1 });
    c.send({ type: 'presence', channel: 'room:lim-3', tabs: 1 });
    expect(await c.until((f) => f.type === 'error')).toEqual({ type: 'error', presence: 'room:lim-3', code: 'limit_exceeded', message: 'at most 2 presence channels per connection' });
    c.send({ type: 'presence', channel: 'room:lim-2', tabs: 5 }); // an update is no new channel
    await members(c, 'room:lim-2', (m) => m[0]?.tabs === 5);
    c.send({ type: 'presence', channel: 'room:lim-1', tabs: 0 });
    c.send({ type: 'presence', channel: 'room:lim-3', tabs: 1 });
    expect(ids(await members(c, 'room:lim-3', (m) => m.length === 1))).toBe('lim');
    expect(c.inbox.filter((f) => f.type === 'error')).toEqual([]);
  });

  it('refuses a state over 1 KB as message_too_big naming the channel, and counts such frames as junk', async () => {
    const c = await connect(server.port, { token: await token('big') });
    c.send({ type: 'presence', channel: 'room:big', tabs: 1, state: 'x'.repeat(2000) });
    expect(await c.until((f) => f.type === 'error')).toMatchObject({ type: 'error', presence: 'room:big', code: 'message_too_big' });
    c.send({ type: 'presence', channel: 'room:big', tabs: 1, state: 'x'.repeat(1000) });
    expect((await members(c, 'room:big', (m) => m.length === 1))[0]!.state).toBe('x'.repeat(1000));
    for (let i = 0; i < 25; i++) c.send({ type: 'presence', channel: 'room:big', tabs: 1, state: 'x'.repeat(2000) });
    expect((await c.closed).code).toBe(4005);
  });

  it('sends the members to every joined connection, itself included, and to no other; one member per user across browsers', async () => {
    const aliceLaptop = await connect(server.port, { token: await token('alice') });
    const alicePhone = await connect(server.port, { token: await token('alice') });
    const bob = await connect(server.port, { token: await token('bob') });
    const watcherOnly = await connect(server.port, { token: await token('sub-only') });
    watcherOnly.send({ type: 'subscribe', channel: 'room:fan' });
    aliceLaptop.send({ type: 'presence', channel: 'room:fan', tabs: 2, state: { typing: false } });
    alicePhone.send({ type: 'presence', channel: 'room:fan', tabs: 1 });
    bob.send({ type: 'presence', channel: 'room:fan', tabs: 1, state: 'hi' });
    for (const c of [aliceLaptop, alicePhone, bob]) {
      const list = await members(c, 'room:fan', (m) => m.length === 2 && m.some((x) => x.id === 'alice' && x.tabs === 3));
      expect(list).toEqual([
        { id: 'alice', user: 'alice', tabs: 3, devices: 2, state: { typing: false }, since: expect.any(Number) },
        { id: 'bob', user: 'bob', tabs: 1, devices: 1, state: 'hi', since: expect.any(Number) },
      ]);
    }
    const res = await fetch(`http://127.0.0.1:${server.port}/api/presence?channel=room:fan`, { headers: { authorization: `Bearer ${API_KEY}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ channel: 'room:fan', total: 2, members: [{ id: 'alice', tabs: 3, devices: 2 }, { id: 'bob' }] });
    await sleep(100);
    expect(watcherOnly.inbox.filter((f) => f.type === 'presence')).toEqual([]);
    // After leaving, nothing more comes to that connection.
    bob.send({ type: 'presence', channel: 'room:fan', tabs: 0 });
    await sleep(50);
    bob.inbox.length = 0;
    alicePhone.send({ type: 'presence', channel: 'room:fan', tabs: 4 });
    await members(aliceLaptop, 'room:fan', (m) => m[0]?.tabs === 6);
    await sleep(100);
    expect(bob.inbox.filter((f) => f.type === 'presence')).toEqual([]);
  });

  it('a closed socket\'s member leaves after the linger, not before; a reconnect of the same browser within it is never seen to leave', async () => {
    const bob = await connect(server.port, { token: await token('bob2') });
    bob.send({ type: 'presence', channel: 'room:linger', tabs: 1 });
    const carolId = newClientId();
    let carol = await connect(server.port, { token: await token('carol'), clientId: carolId });
    carol.send({ type: 'presence', channel: 'room:linger', tabs: 1 });
    await members(bob, 'room:linger', (m) => ids(m) === 'bob2,carol');
    // The same browser reconnects (new socket, same clientId) within the linger: no leave.
    carol.ws.terminate();
    await sleep(LINGER / 3);
    carol = await connect(server.port, { token: await token('carol'), clientId: carolId });
    carol.send({ type: 'presence', channel: 'room:linger', tabs: 2 });
    await members(bob, 'room:linger', (m) => m.find((x) => x.id === 'carol')?.tabs === 2);
    await sleep(LINGER * 1.5);
    expect(bob.inbox.filter(isPresence('room:linger')).every((f) => ids(f.members as Member[]) === 'bob2,carol')).toBe(true);
    // Closed for good: still listed until the linger has passed, then gone.
    const closedAt = Date.now();
    carol.ws.close();
    await sleep(LINGER / 2);
    expect(bob.inbox.filter(isPresence('room:linger')).every((f) => ids(f.members as Member[]) === 'bob2,carol')).toBe(true);
    await members(bob, 'room:linger', (m) => ids(m) === 'bob2', LINGER * 10);
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(LINGER - 10);
  });

  it('GET /api/presence needs the API key, a channel name, and GET', async () => {
    const base = `http://127.0.0.1:${server.port}/api/presence`;
    const auth = { authorization: `Bearer ${API_KEY}` };
    expect((await fetch(`${base}?channel=room:x`)).status).toBe(401);
    expect((await fetch(`${base}?channel=room:x`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const missing = await fetch(base, { headers: auth });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toEqual({ error: { code: 'invalid_message', message: 'channel: give the channel as ?channel=<name>' } });
    const invalid = await fetch(`${base}?channel=${encodeURIComponent('bad*name')}`, { headers: auth });
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: { message: string } }).error.message).toMatch(/^channel: channel names are/);
    expect((await fetch(`${base}?channel=room:x`, { method: 'POST', headers: auth })).status).toBe(405);
    expect(await (await fetch(`${base}?channel=room:nobody`, { headers: auth })).json()).toEqual({ channel: 'room:nobody', members: [], total: 0 });
    expect(await (await fetch(`http://127.0.0.1:${server.port}/api/health`)).json()).toMatchObject({ presence: { kind: 'local', ok: true } });
  });
});

describe('presence over sockets (development mode)', () => {
  let server: TetherServer;
  beforeAll(async () => {
    server = await start({});
  });
  afterAll(() => server.close());

  it('keys anonymous members by clientId (one per browser), or by session without one', async () => {
    const clientId = newClientId();
    const a = await connect(server.port, { clientId });
    const again = await connect(server.port, { clientId }); // the same browser, a second socket
    const noId = await connect(server.port, { clientId: null });
    a.send({ type: 'presence', channel: 'dev', tabs: 1 });
    again.send({ type: 'presence', channel: 'dev', tabs: 2 });
    noId.send({ type: 'presence', channel: 'dev', tabs: 1 });
    const list = await members(noId, 'dev', (m) => m.length === 2 && m.some((x) => x.tabs === 2));
    expect(list.find((m) => m.id === `client:${clientId}`)).toMatchObject({ user: null, tabs: 2, devices: 1 });
    expect(list.find((m) => m.id.startsWith('session:'))).toMatchObject({ user: null, tabs: 1, devices: 1 });
  });
});

describe('presence across two server processes on one Redis', () => {
  it('both see one member list, and either answers the HTTP API', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-presence-'));
    const shared: ServerOptions = { tokenSecret: SECRET, apiKey: API_KEY, db: join(dir, 'events.db'), redisUrl: 'redis://127.0.0.1:6379', redisPrefix: `tether-presence-${randomBytes(4).toString('hex')}:` };
    const a = await start(shared);
    const b = await start(shared);
    try {
      const alice = await connect(a.port, { token: await token('alice') });
      const alicePhone = await connect(b.port, { token: await token('alice') });
      const bob = await connect(b.port, { token: await token('bob') });
      alice.send({ type: 'presence', channel: 'room:scale', tabs: 1 });
      alicePhone.send({ type: 'presence', channel: 'room:scale', tabs: 2, state: 'phone' });
      bob.send({ type: 'presence', channel: 'room:scale', tabs: 1 });
      const expected = (m: Member[]) => ids(m) === 'alice,bob' && m.find((x) => x.id === 'alice')?.tabs === 3;
      for (const c of [alice, alicePhone, bob]) {
        expect((await members(c, 'room:scale', expected)).find((x) => x.id === 'alice')).toMatchObject({ devices: 2, state: 'phone' });
      }
      for (const server of [a, b]) {
        const body = await (await fetch(`http://127.0.0.1:${server.port}/api/presence?channel=room:scale`, { headers: { authorization: `Bearer ${API_KEY}` } })).json();
        expect(body).toMatchObject({ channel: 'room:scale', total: 2, members: [{ id: 'alice', tabs: 3, devices: 2 }, { id: 'bob', tabs: 1 }] });
        expect(await (await fetch(`http://127.0.0.1:${server.port}/api/health`)).json()).toMatchObject({ presence: { kind: 'redis', ok: true } });
      }
      // Bob's socket closes on B: A's connection sees him leave after the linger.
      bob.ws.close();
      await members(alice, 'room:scale', (m) => ids(m) === 'alice', LINGER * 10);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
