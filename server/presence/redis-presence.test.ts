/**
 * The presence contract across processes through Redis: hubs on one Redis (each behind a TCP
 * proxy the test cuts), a prefix per test. Plus what only Redis has: an outage (local presence
 * goes on, health says so, everything is shared again after), and junk on the prefix.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { Redis } from 'ioredis';
import { TcpProxy } from '../../e2e/fixtures/tcp-proxy.js';
import { TEST_OPTIONS, conn, describePresence, eventually, FrameLog, sleep } from './conformance.js';
import { createRedisPresence } from './redis-presence.js';
import type { PresenceHub, PresenceOptions } from './presence.js';

const REDIS_PORT = 6379;
const silent = pino({ level: 'silent' });
/** Short times for tests: alive every 100 ms, gone after 300 ms. */
const REFRESH_MS = 100;
const EXPIRY_MS = 300;

let proxies: TcpProxy[] = [];
afterEach(async () => {
  await Promise.all(proxies.map((proxy) => proxy.close()));
  proxies = [];
});

const newPrefix = () => `tether-presence-test-${randomBytes(4).toString('hex')}:`;

async function hubOn(prefix: string, options: PresenceOptions): Promise<{ hub: PresenceHub; proxy: TcpProxy }> {
  const proxy = await TcpProxy.start(REDIS_PORT);
  proxies.push(proxy);
  const hub = createRedisPresence({ ...options, url: `redis://127.0.0.1:${proxy.port}`, prefix, log: silent, refreshMs: REFRESH_MS, expiryMs: EXPIRY_MS, rewriteMs: 1000 });
  await eventually(() => expect(hub.health()).toEqual({ kind: 'redis', ok: true }));
  return { hub, proxy };
}

describePresence('Redis presence', {
  open: async (options) => (await hubOn(newPrefix(), options)).hub,
  async cluster(count, options) {
    const prefix = newPrefix();
    const made = await Promise.all(Array.from({ length: count }, () => hubOn(prefix, options)));
    return { hubs: made.map((m) => m.hub), kill: async (index) => made[index]!.proxy.refuse() };
  },
  expiryMs: EXPIRY_MS,
});

describe('Redis presence, Redis-only behaviour', () => {
  const hubs: PresenceHub[] = [];
  afterEach(async () => {
    await Promise.all(hubs.splice(0).map((hub) => hub.close()));
  });

  it('Redis down: members on this process keep working, health says degraded; back: shared again', async () => {
    const prefix = newPrefix();
    const a = await hubOn(prefix, TEST_OPTIONS);
    const b = await hubOn(prefix, TEST_OPTIONS);
    hubs.push(a.hub, b.hub);
    const ch = 'outage-room';
    const onA = new FrameLog(a.hub, ch);
    const onB = new FrameLog(b.hub, ch);
    a.hub.set(conn('alice'), ch, 1, undefined);
    b.hub.set(conn('bob'), ch, 1, undefined);
    for (const log of [onA, onB]) await log.until((f) => expect(f.members.map((m) => m.id).sort()).toEqual(['alice', 'bob']));

    a.proxy.refuse();
    await eventually(() => expect(a.hub.health()).toMatchObject({ kind: 'redis', ok: false }));
    expect(b.hub.health()).toEqual({ kind: 'redis', ok: true });
    // A's own connections still see each other, and changes among them; B's members drop out (A cannot tell they live).
    const carol = conn('carol');
    a.hub.set(carol, ch, 2, { here: true });
    await onA.until((f) => expect(f.members).toMatchObject([{ id: 'alice' }, { id: 'carol', tabs: 2, state: { here: true } }]), 3000);
    // B no longer hears from A: A's members vanish there once its node key expires.
    await onB.until((f) => expect(f.members.map((m) => m.id)).toEqual(['bob']), 3000);

    await a.proxy.restore();
    await eventually(() => expect(a.hub.health()).toEqual({ kind: 'redis', ok: true }), 5000);
    for (const log of [onA, onB]) await log.until((f) => expect(f.members.map((m) => m.id).sort()).toEqual(['alice', 'bob', 'carol']));
  });

  it('a process shutting down writes its connections as lingering, and keeps its node key for the linger', async () => {
    const prefix = newPrefix();
    const { hub } = await hubOn(prefix, { ...TEST_OPTIONS, lingerMs: 5000 });
    const raw = new Redis(`redis://127.0.0.1:${REDIS_PORT}`);
    try {
      const log = new FrameLog(hub, 'shutdown-room');
      hub.set(conn('alice'), 'shutdown-room', 2, { x: 1 });
      await log.until((f) => expect(f.total).toBe(1));
      await eventually(async () => expect(await raw.hlen(`${prefix}presence:shutdown-room`)).toBe(1));
      const closing = Date.now();
      await hub.close();
      const fields = Object.values(await raw.hgetall(`${prefix}presence:shutdown-room`));
      expect(fields).toHaveLength(1);
      const { entries } = JSON.parse(fields[0]!) as { entries: { member: string; tabs: number; until?: number }[] };
      expect(entries).toMatchObject([{ member: 'alice', tabs: 2 }]);
      expect(entries[0]!.until).toBeGreaterThanOrEqual(closing + 5000);
      const keys = await raw.keys(`${prefix}presence-node:*`);
      expect(keys).toHaveLength(1);
      expect(await raw.pttl(keys[0]!)).toBeGreaterThan(5000);
    } finally {
      raw.disconnect();
    }
  });

  it('junk on the prefix is ignored; a dead process\'s field is removed by the next reader', async () => {
    const prefix = newPrefix();
    const raw = new Redis(`redis://127.0.0.1:${REDIS_PORT}`);
    try {
      await raw.hset(`${prefix}presence:junk-room`, 'intruder', 'not json', 'ghost', JSON.stringify({ entries: [{ member: 'ghost', user: 'ghost', device: 'g', tabs: 1, state: null, stateAt: 0, stateSeq: 0, at: 1, seq: 1, since: 1 }] }));
      const { hub } = await hubOn(prefix, TEST_OPTIONS);
      hubs.push(hub);
      const log = new FrameLog(hub, 'junk-room');
      hub.set(conn('alice'), 'junk-room', 1, undefined);
      await log.until((f) => expect(f.members.map((m) => m.id)).toEqual(['alice']));
      await sleep(100);
      expect(log.frames.every((f) => f.members.every((m) => m.id === 'alice'))).toBe(true);
      await eventually(async () => expect(await raw.hexists(`${prefix}presence:junk-room`, 'ghost')).toBe(0));
    } finally {
      raw.disconnect();
    }
  });
});
