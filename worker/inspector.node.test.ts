/**
 * The worker inspector (`client.inspect()`), against a real server: what the engine's snapshot
 * shows of the outbox, subscriptions and log while the network comes and goes, what it must
 * never show (a write's data, a token), and how often it is pushed to a tab.
 */
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import type { ChannelDelivery, Inspection } from './api.js';
import { LogRing } from './log.js';
import { Harness, eventually } from './testing/harness.js';

const SECRET = 'inspector-test-secret-of-at-least-32-characters';

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

function token(sub: string, channels = ['*']): Promise<string> {
  return new SignJWT({ channels }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
}

const writesOf = (inspection: Inspection) => inspection.outbox.flatMap((o) => o.writes);

describe('LogRing', () => {
  it('keeps only the last N lines, oldest first', () => {
    const ring = new LogRing(5);
    for (let n = 1; n <= 12; n++) ring.add('info', `line ${n}`);
    expect(ring.list().map((l) => l.message)).toEqual(['line 8', 'line 9', 'line 10', 'line 11', 'line 12']);
    ring.add('warn', 'line 13');
    expect(ring.list().map((l) => l.message)).toEqual(['line 9', 'line 10', 'line 11', 'line 12', 'line 13']);
    expect(ring.list().at(-1)?.level).toBe('warn');
  });

  it('an engine keeps 300 lines however many it logs', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tabs = Array.from({ length: 200 }, () => engine.attach()); // 200 attached lines
    for (const tab of tabs) engine.connection.remove(tab.tabId); // and 200 detached
    const log = engine.connection.inspect().log;
    expect(log).toHaveLength(300);
    expect(log.at(-1)?.message).toMatch(/detached \(0 left\)/);
    expect(log.map((l) => l.at)).toEqual([...log.map((l) => l.at)].sort((a, b) => a - b));
  });
});

describe('the outbox as the inspector shows it', () => {
  it('an offline write shows with attempts 0; a write sent into a dead link counts its attempts; both are gone once acknowledged', async () => {
    harness = await Harness.start({ heartbeatMs: 200, idleHeartbeatMs: 200 });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    const online = engine.connection.inspect();
    expect(online).toMatchObject({ connection: 'online', transport: 'websocket', user: '', tabs: 1, mode: 'shared-worker' });
    expect(online.session).toEqual(expect.any(String));
    expect(online.clientId).toEqual(expect.any(String));

    harness.proxy.refuse();
    await eventually(() => engine.status(tab).connection === 'offline');
    expect(engine.connection.inspect().session).toBeNull();
    const offline = engine.connection.publish(tab.tabId, 'orders', { secret: 'offline-payload-1' });
    const queued = await eventually(() => writesOf(engine.connection.inspect())[0]);
    expect(queued).toMatchObject({ seq: 1, kind: 'publish', target: 'orders', attempts: 0 });
    expect(queued.bytes).toBe(JSON.stringify({ type: 'publish', seq: 1, channel: 'orders', data: { secret: 'offline-payload-1' } }).length);
    expect(engine.connection.inspect().outbox).toEqual([{ user: '', count: 1, writes: [queued] }]);

    await harness.proxy.restore();
    expect(await offline).toMatchObject({ ok: true });
    await eventually(() => writesOf(engine.connection.inspect()).length === 0, 8000, 'the acknowledged write gone');

    // Sent into a blackholed link: sent once, unanswered; after the reconnect sent again, then gone.
    harness.proxy.blackhole();
    const lost = engine.connection.publish(tab.tabId, 'orders', 'into the dark');
    const sent = await eventually(() => writesOf(engine.connection.inspect()).find((w) => w.attempts >= 1));
    expect(sent).toMatchObject({ seq: 2, target: 'orders', attempts: 1 });
    await eventually(() => engine.status(tab).connection === 'offline', 5000);
    expect(writesOf(engine.connection.inspect())).toMatchObject([{ seq: 2, attempts: 1 }]);
    await harness.proxy.restore();
    expect(await lost).toMatchObject({ ok: true });
    await eventually(() => engine.connection.inspect().outbox.every((o) => o.count === 0));

    const log = engine.connection.inspect().log.map((l) => `${l.level} ${l.message}`);
    expect(log.some((l) => /^warn offline \(websocket closed, code \d+/.test(l)), log.join('\n')).toBe(true);
    expect(log.some((l) => /^warn offline \(heartbeat timeout/.test(l)), log.join('\n')).toBe(true);
    expect(log.filter((l) => /^info online over websocket: session \S+, user \(anonymous\)/.test(l)).length).toBeGreaterThanOrEqual(3);
  }, 20_000);

  it('a refused write is logged, without its data or the token', async () => {
    harness = await Harness.start({ tokenSecret: SECRET });
    const engine = harness.engine();
    const jwt = await token('alice', ['public/*']);
    const tab = engine.attach(async () => jwt);
    await eventually(() => engine.status(tab).connection === 'online');
    const refused = await engine.connection.publish(tab.tabId, 'private/plans', { card: 'data-that-must-not-leak' });
    expect(refused).toMatchObject({ ok: false, error: { code: 'forbidden' } });
    const tooBig = await engine.connection.publish(tab.tabId, 'public/x', 'big-data-that-must-not-leak'.repeat(5000));
    expect(tooBig).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
    const inspection = engine.connection.inspect();
    expect(inspection.user).toBe('alice');
    const everything = JSON.stringify(inspection);
    expect(everything).not.toContain('must-not-leak');
    expect(everything).not.toContain(jwt);
    const log = inspection.log.map((l) => `${l.level} ${l.message}`);
    expect(log).toContainEqual(expect.stringMatching(/^warn publish #1 to private\/plans was refused: forbidden: /));
    expect(log).toContainEqual(expect.stringMatching(/^warn a publish to public\/x was refused before it was queued: message_too_big: /));
    expect(log).toContainEqual(expect.stringMatching(/^info online over websocket: session \S+, user alice$/));
  });
});

describe('subscriptions and documents as the inspector shows them', () => {
  it("a subscription's offset advances in the snapshot as events arrive", async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    const other = engine.attach();
    const events: ChannelDelivery[] = [];
    await engine.connection.subscribe(tab.tabId, 's1', 'news', (d) => void events.push(d));
    await engine.connection.subscribe(other.tabId, 's2', 'news', () => {});
    await eventually(() => engine.connection.inspect().subscriptions[0]?.live);
    expect(engine.connection.inspect().subscriptions).toEqual([{ channel: 'news', offset: 0, epoch: expect.any(String), tabs: 2, live: true }]);
    for (let n = 1; n <= 3; n++) await engine.connection.publish(tab.tabId, 'news', n);
    await eventually(() => engine.connection.inspect().subscriptions[0]?.offset === 3, 5000, 'offset 3');
    await engine.connection.transact(tab.tabId, 'board', {}, { title: 'hi' }, true);
    const opened: unknown[] = [];
    await engine.connection.openDoc(tab.tabId, 'd1', 'board', (s) => void opened.push(s));
    await eventually(() => engine.connection.inspect().documents[0]?.synced);
    expect(engine.connection.inspect().documents).toEqual([{ doc: 'board', version: 1, pending: 0, conflicts: 0, synced: true, tabs: 1 }]);
    harness.proxy.refuse();
    await eventually(() => engine.status(tab).connection === 'offline');
    void engine.connection.transact(tab.tabId, 'board', {}, { title: 'offline' }, true);
    await eventually(() => engine.connection.inspect().documents[0]?.pending === 1);
    expect(engine.connection.inspect().subscriptions[0]).toMatchObject({ offset: 3, live: false });
  });
});

describe('pushes to a tab', () => {
  it('a burst of 200 writes makes a bounded number of pushes, and the last one shows the final state', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    await engine.connection.subscribe(tab.tabId, 's', 'burst', () => {});
    await eventually(() => engine.connection.inspect().subscriptions[0]?.live);
    const pushes: Inspection[] = [];
    const started = Date.now();
    engine.connection.startInspect(tab.tabId, (inspection) => void pushes.push(inspection));
    expect(pushes).toHaveLength(1); // at once
    const results = await Promise.all(Array.from({ length: 200 }, (_, n) => engine.connection.publish(tab.tabId, 'burst', n)));
    expect(results.every((r) => r.ok)).toBe(true);
    await eventually(() => engine.connection.inspect().subscriptions[0]?.offset === 200);
    await new Promise((resolve) => setTimeout(resolve, 600)); // the last push of the burst is due
    const elapsed = Date.now() - started;
    // At most one per 250 ms (plus the first, and the next one due): not one per write or event.
    expect(pushes.length).toBeLessThanOrEqual(Math.ceil(elapsed / 250) + 2);
    for (let n = 1; n < pushes.length; n++) expect(pushes[n]!.at - pushes[n - 1]!.at).toBeGreaterThanOrEqual(245);
    const last = pushes.at(-1)!;
    expect(last.subscriptions[0]).toMatchObject({ channel: 'burst', offset: 200 });
    expect(last.outbox).toEqual([{ user: '', count: 0, writes: [] }]);
    expect(last).toEqual({ ...engine.connection.inspect(), at: last.at });
  });

  it("a tab's second inspector replaces its first; stopInspect and detaching end the pushes", async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    const first: Inspection[] = [];
    const second: Inspection[] = [];
    engine.connection.startInspect(tab.tabId, (i) => void first.push(i));
    engine.connection.startInspect(tab.tabId, (i) => void second.push(i));
    await engine.connection.publish(tab.tabId, 'c', 1);
    await eventually(() => second.at(-1)?.connection === 'online' && second.at(-1)?.outbox[0]?.count === 0);
    expect(first).toHaveLength(1);
    engine.connection.stopInspect(tab.tabId);
    const count = second.length;
    await engine.connection.publish(tab.tabId, 'c', 2);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(second).toHaveLength(count);

    const third: Inspection[] = [];
    engine.connection.startInspect(tab.tabId, (i) => void third.push(i));
    const other = engine.attach();
    await eventually(() => third.at(-1)?.tabs === 2);
    engine.connection.remove(tab.tabId);
    const seen = third.length;
    engine.connection.remove(other.tabId);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(third).toHaveLength(seen);
  });

  it('while writes wait, a slow refresh keeps their age current without any change', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    harness.proxy.refuse();
    await eventually(() => engine.status(tab).connection === 'offline');
    void engine.connection.publish(tab.tabId, 'c', 'waits');
    await eventually(() => engine.status(tab).pending === 1);
    const pushes: Inspection[] = [];
    engine.connection.startInspect(tab.tabId, (i) => void pushes.push(i));
    await new Promise((resolve) => setTimeout(resolve, 2600));
    // One at once, one after the change settles, then about one a second.
    expect(pushes.length).toBeGreaterThanOrEqual(3);
    expect(pushes.length).toBeLessThanOrEqual(5);
  });
});
