/**
 * `npm run bench`: every benchmark in one run, the peers beside Tether on the same workload.
 * Writes BENCHMARKS.md and bench-results.json. `--smoke` runs a tiny version (CI keeps the
 * harness from rotting; its numbers mean nothing). `--only browser,outbox` runs only those
 * sections (see SECTIONS) and writes dist/bench/BENCHMARKS.only.md and bench-results.only.json
 * (never BENCHMARKS.md: a partial table), printing the table too. `--repeats N` overrides the
 * number of runs per row.
 *
 * 2 cores: the load generator (this process) competes with the server under test. Ratios
 * between servers measured in the same run are the figures that count.
 */
import { DEFAULT_CONFIG } from '../server/config.js';
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import { connectClient, connectMany, cpuMs, durableRate, percentile, publishFullSpeed, rssBytes, sleep, startTarget, waitFor, type Kind } from './targets.js';
import { clusterFanout, durablePostgres, idleCost, type ClusterFanout, type IdleCost } from './cluster.js';
import { measureSizes, BUDGETS, TARGETS, checkBudgets } from './sizes.js';
import { browserPeers, FRAME_MS, offlineOutbox, PEERS, type BrowserPlan, type BrowserRun, type OutboxResult, type Peer } from './browser.js';
import { rpcUnderAttack, type AttackResult } from './under-attack.js';
import { joinStorm, leaveTimes, stateChurn, type JoinStorm, type StateChurn } from './presence.js';
import { durableScraped, scrapeCost, type ScrapeCost, type ScrapedDurable } from './scrape.js';

const smoke = process.argv.includes('--smoke');

/** What `--only` can name, in the order they run. */
const SECTIONS = ['fanout', 'durable', 'memory', 'postgres', 'idle', 'cluster', 'browser', 'outbox', 'attack', 'presence', 'metrics', 'sizes'] as const;
type Section = (typeof SECTIONS)[number];
const onlyAt = process.argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
const onlyArg = onlyAt < 0 ? undefined : process.argv[onlyAt]!.startsWith('--only=') ? process.argv[onlyAt]!.slice('--only='.length) : process.argv[onlyAt + 1];
const only = onlyAt < 0 ? undefined : new Set((onlyArg ?? '').split(',').map((s) => s.trim()).filter(Boolean));
if (only !== undefined) {
  const unknown = [...only].filter((s) => !(SECTIONS as readonly string[]).includes(s));
  if (only.size === 0 || unknown.length > 0) {
    console.error(`--only: ${unknown.length > 0 ? `unknown section(s) ${unknown.join(', ')}` : 'name at least one section'}; sections: ${SECTIONS.join(', ')}`);
    process.exit(2);
  }
}
const want = (section: Section) => only === undefined || only.has(section);

const BROWSER: BrowserPlan = smoke
  ? { rates: [{ rate: 50, seconds: 0.2 }, { rate: 500, seconds: 0.1 }, { rate: 1000, seconds: 0.05 }], roundTrips: 10, throughput: { window: 100, seconds: 0.5, max: 300 }, burst: 200, docChanges: { count: 10, gapMs: 20 } }
  : { rates: [{ rate: 50, seconds: 4 }, { rate: 500, seconds: 2 }, { rate: 1000, seconds: 2 }], roundTrips: 300, throughput: { window: 1000, seconds: 3, max: 15_000 }, burst: 10_000, docChanges: { count: 200, gapMs: 20 } };
/** `--repeats N` overrides the number of runs per row (1 while iterating on one section). */
const repeatsAt = process.argv.indexOf('--repeats');
const repeatsArg = repeatsAt < 0 ? undefined : Number(process.argv[repeatsAt + 1]);
if (repeatsArg !== undefined && !(Number.isInteger(repeatsArg) && repeatsArg >= 1)) {
  console.error('--repeats: a whole number ≥ 1');
  process.exit(2);
}
const PLAN_BY_MODE = smoke
  ? { fanout: [50], repeats: 1, rate: 10, seconds: 1, publishers: [1, 10], idle: [100], outbox: 200,
      pgPublishers: [10], idleCost: 100, idleSeconds: 1, cluster: 50, browser: BROWSER,
      attack: { seconds: 1, historyEvents: 20, junkConnections: 2, stormConnections: 2, stormSubscribes: 20 },
      presence: { storm: [20], churn: { n: 10, rate: 50, seconds: 0.5 }, leave: { n: 10, leaves: 1, lingers: [100] } },
      metrics: { publishers: 10, seconds: 1, connections: 50, rate: 20, scrapes: 5, baselineSeconds: 0.5 } }
  : { fanout: [100, 1000, 5000], repeats: 3, rate: 20, seconds: 4, publishers: [1, 10, 100], idle: [1000, 5000], outbox: 10_000,
      pgPublishers: [10, 100], idleCost: 10_000, idleSeconds: 10, cluster: 2000, browser: BROWSER,
      attack: { seconds: 5, historyEvents: 300, junkConnections: 4, stormConnections: 4, stormSubscribes: 60 },
      presence: { storm: [100, 500], churn: { n: 200, rate: 50, seconds: 4 }, leave: { n: 100, leaves: 2, lingers: [500, 5000] } },
      metrics: { publishers: 100, seconds: 4, connections: 500, rate: 20, scrapes: 100, baselineSeconds: 2 } };
const PLAN = { ...PLAN_BY_MODE, repeats: repeatsArg ?? PLAN_BY_MODE.repeats };
const KINDS: Kind[] = ['tether', 'socketio', 'ws'];
const CHANNEL = 'bench';


interface Spread {
  median: number;
  min: number;
  max: number;
}
function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)]!, min: sorted[0]!, max: sorted.at(-1)! };
}

interface FanoutResult {
  cpuUsPerDelivery: number;
  deliveriesPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** N subscribers on one channel; a publisher at a fixed rate (latency) or as fast as deliveries keep up. */
async function fanout(kind: Kind, n: number, mode: 'rate' | 'full'): Promise<FanoutResult> {
  const target = await startTarget(kind);
  try {
    const subscribers = await connectMany(target, n);
    let delivered = 0;
    const latencies: number[] = [];
    await Promise.all(
      subscribers.map((s) =>
        s.subscribe(CHANNEL, (data) => {
          delivered++;
          if (mode === 'rate') latencies.push(performance.now() - data.t);
        }),
      ),
    );
    const publisher = await connectClient(target);
    // Warm up (JIT, buffers), then measure from a clean count.
    for (let i = 0; i < 5; i++) await publisher.publish(CHANNEL, { t: performance.now() });
    await waitFor(() => delivered >= 5 * n, 10_000);
    delivered = 0;
    latencies.length = 0;

    const cpu0 = cpuMs(target.pid);
    const t0 = performance.now();
    let published = 0;
    if (mode === 'rate') {
      const total = PLAN.rate * PLAN.seconds;
      for (let i = 0; i < total; i++) {
        void publisher.publish(CHANNEL, { t: performance.now() });
        published++;
        await sleep(1000 / PLAN.rate);
      }
    } else {
      published = await publishFullSpeed(publisher, CHANNEL, n, PLAN.seconds, () => delivered);
    }
    await waitFor(() => delivered >= published * n, 30_000);
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = cpuMs(target.pid) - cpu0;
    for (const client of [...subscribers, publisher]) client.close();
    return {
      cpuUsPerDelivery: (cpu * 1000) / delivered,
      deliveriesPerSec: delivered / elapsed,
      p50Ms: mode === 'rate' ? percentile(latencies, 50) : NaN,
      p99Ms: mode === 'rate' ? percentile(latencies, 99) : NaN,
    };
  } finally {
    await target.stop();
  }
}

/** Publishes/s acknowledged (stored) from P concurrent publishers, each waiting for its ack. */
async function durable(publishers: number, sync: 'full' | 'off'): Promise<number> {
  // Without fsync one connection acknowledges more than the default 2,000 frames/s: that row alone raises the limit.
  const target = await startTarget('tether', sync === 'off' ? { TETHER_DB_SYNC: sync, TETHER_RATE_LIMIT: '1000000' } : { TETHER_DB_SYNC: sync });
  try {
    return await durableRate(target, publishers, PLAN.seconds, CHANNEL);
  } finally {
    await target.stop();
  }
}

/** Server memory per idle connection (RSS growth / connections). */
async function idleMemory(kind: Kind, n: number): Promise<number> {
  const target = await startTarget(kind);
  try {
    await sleep(500);
    const before = rssBytes(target.pid);
    const clients = await connectMany(target, n);
    await sleep(2000);
    const after = rssBytes(target.pid);
    for (const client of clients) client.close();
    return (after - before) / n;
  } finally {
    await target.stop();
  }
}

async function repeat<T>(times: number, run: () => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < times; i++) results.push(await run());
  return results;
}

/**
 * The browser rows run under every default limit, as users do, the per-address ones included
 * (the server rows keep the defaults too, except the per-address limits their thousands of
 * loopback connections need, and the one row that says why it raises the rate limit).
 */
const DEFAULT_LIMITS_ENV: Record<string, string> = {
  TETHER_RATE_LIMIT: String(DEFAULT_CONFIG.rateLimit),
  TETHER_MAX_SUBSCRIPTIONS: String(DEFAULT_CONFIG.maxSubscriptions),
  TETHER_MAX_BUFFERED_BYTES: String(DEFAULT_CONFIG.maxBufferedBytes),
  TETHER_HEARTBEAT_MS: String(DEFAULT_CONFIG.heartbeatMs),
  TETHER_MAX_CONNECTIONS: String(DEFAULT_CONFIG.maxConnections),
  TETHER_MAX_CONNECTIONS_PER_IP: String(DEFAULT_CONFIG.maxConnectionsPerIp),
  TETHER_CONNECT_RATE_PER_IP: String(DEFAULT_CONFIG.connectRatePerIp),
};

/**
 * One run of the browser rows, with fresh servers: Tether (default limits), the same with its
 * fsync off (`TETHER_DB_SYNC=off`, for one publish row: the server's fsync share) and Socket.IO.
 */
async function browserRun(runIndex: number): Promise<BrowserRun> {
  const tether = await startTarget('tether', DEFAULT_LIMITS_ENV);
  const tetherSyncOff = await startTarget('tether', { ...DEFAULT_LIMITS_ENV, TETHER_DB_SYNC: 'off' });
  const socketio = await startTarget('socketio');
  try {
    return await browserPeers(tether, tetherSyncOff, socketio, PLAN.browser, runIndex);
  } finally {
    await tether.stop();
    await tetherSyncOff.stop();
    await socketio.stop();
  }
}

const results: Record<string, unknown> = {};
const started = Date.now();
const log = (line: string) => console.log(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);

const fmt = (s: Spread, digits = 1) => `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}×` : '–');
const find = <T extends { kind: Kind }>(rows: T[], kind: Kind, match: (r: T) => boolean) => rows.find((r) => r.kind === kind && match(r))!;
/** "≤ 2× floor: met" from the medians (a report, not an assertion). */
const goal = (text: string, value: number, limit: number, atMost = true) =>
  `${text}: ${!Number.isFinite(value) ? 'no data' : (atMost ? value <= limit : value >= limit) ? 'met' : '**not met**'}`;
const count = (n: number) => n.toLocaleString('en-US');

/** Markdown of each section that ran, by section. */
const render: Partial<Record<Section, () => string[]>> = {};

if (want('fanout')) {
  const fan: { n: number; kind: Kind; rate: Spread; full: Spread; perSec: Spread; p50: Spread; p99: Spread }[] = [];
  for (const n of PLAN.fanout) {
    for (const kind of KINDS) {
      const rated = await repeat(PLAN.repeats, () => fanout(kind, n, 'rate'));
      const full = await repeat(PLAN.repeats, () => fanout(kind, n, 'full'));
      const row = {
        n,
        kind,
        rate: spread(rated.map((r) => r.cpuUsPerDelivery)),
        full: spread(full.map((r) => r.cpuUsPerDelivery)),
        perSec: spread(full.map((r) => r.deliveriesPerSec)),
        p50: spread(rated.map((r) => r.p50Ms)),
        p99: spread(rated.map((r) => r.p99Ms)),
      };
      fan.push(row);
      log(`fan-out ${kind} n=${n}: ${row.full.median.toFixed(1)} µs/delivery at full speed, ${row.rate.median.toFixed(1)} at ${PLAN.rate}/s`);
    }
  }
  results.fanout = fan;
  render.fanout = () => [
    `## Server CPU per delivery (µs), one channel, N subscribers`,
    '',
    `Fixed rate: ${PLAN.rate} publishes/s for ${PLAN.seconds} s. Full speed: as fast as deliveries keep up (≤ 20 messages in flight) for ${PLAN.seconds} s.`,
    "Tether's figure includes its real work per publish: validation, the durable write (SQLite, fsync), the offset.",
    '',
    '| N | server | µs/delivery, fixed rate | µs/delivery, full speed | deliveries/s, full speed | latency p50 ms | latency p99 ms | Tether ÷ this (full speed) |',
    '|---|---|---|---|---|---|---|---|',
    ...fan.map((r) => {
      const t = find(fan, 'tether', (x) => x.n === r.n);
      return `| ${r.n} | ${r.kind} | ${fmt(r.rate, 2)} | ${fmt(r.full, 2)} | ${fmt(r.perSec, 0)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${r.kind === 'tether' ? '' : ratio(t.full.median, r.full.median)} |`;
    }),
    '',
  ];
}

const dur: { publishers: number; full: Spread; off: Spread }[] = [];
if (want('durable')) {
  for (const p of PLAN.publishers) {
    const row = { publishers: p, full: spread(await repeat(PLAN.repeats, () => durable(p, 'full'))), off: spread(await repeat(PLAN.repeats, () => durable(p, 'off'))) };
    dur.push(row);
    log(`durable publishes, ${p} publishers: ${row.full.median.toFixed(0)}/s (sync off: ${row.off.median.toFixed(0)}/s)`);
  }
  results.durable = dur;
  render.durable = () => [
    '## Durable publishes acknowledged per second (Tether)',
    '',
    'Each publisher waits for the acknowledgement of one publish before sending the next. `TETHER_DB_SYNC=full` is the product (default limits); `off` only shows what durability costs (and runs with `TETHER_RATE_LIMIT=1000000`: without fsync one connection acknowledges more than the default 2,000 frames/s).',
    '',
    '| publishers | publishes/s, durable | publishes/s, sync off | cost of durability |',
    '|---|---|---|---|',
    ...dur.map((r) => `| ${r.publishers} | ${fmt(r.full, 0)} | ${fmt(r.off, 0)} | ${ratio(r.off.median, r.full.median)} |`),
    '',
  ];
}

if (want('memory')) {
  const mem: { n: number; kind: Kind; bytes: Spread }[] = [];
  for (const n of PLAN.idle) {
    for (const kind of KINDS) {
      const row = { n, kind, bytes: spread(await repeat(PLAN.repeats, () => idleMemory(kind, n))) };
      mem.push(row);
      log(`idle memory ${kind} n=${n}: ${(row.bytes.median / 1024).toFixed(1)} KiB/connection`);
    }
  }
  results.memory = mem;
  render.memory = () => [
    '## Server memory per idle connection (KiB, RSS growth ÷ connections)',
    '',
    '| connections | server | KiB/connection | Tether ÷ this |',
    '|---|---|---|---|',
    ...mem.map((r) => {
      const t = find(mem, 'tether', (x) => x.n === r.n);
      return `| ${r.n} | ${r.kind} | ${fmt({ median: r.bytes.median / 1024, min: r.bytes.min / 1024, max: r.bytes.max / 1024 })} | ${r.kind === 'tether' ? '' : ratio(t.bytes.median, r.bytes.median)} |`;
    }),
    '',
  ];
}

if (want('postgres')) {
  const pgDurable: { publishers: number; rate: Spread; sqlite: number }[] = [];
  for (const p of PLAN.pgPublishers) {
    const row = { publishers: p, rate: spread(await repeat(PLAN.repeats, () => durablePostgres(p, PLAN.seconds))), sqlite: dur.find((d) => d.publishers === p)?.full.median ?? NaN };
    pgDurable.push(row);
    log(`durable publishes on PostgreSQL, ${p} publishers: ${row.rate.median.toFixed(0)}/s`);
  }
  results.postgresDurable = pgDurable;
  render.postgres = () => [
    '## Durable publishes on PostgreSQL (one process, `TETHER_DATABASE_URL`)',
    '',
    'As above, with the events DB on the local PostgreSQL (default settings, fsync on) and the fan-out through Redis.',
    '',
    '| publishers | publishes/s, PostgreSQL | SQLite (same run) | PostgreSQL ÷ SQLite |',
    '|---|---|---|---|',
    ...pgDurable.map((r) => `| ${r.publishers} | ${fmt(r.rate, 0)} | ${Number.isFinite(r.sqlite) ? r.sqlite.toFixed(0) : '– (durable not run)'} | ${ratio(r.rate.median, r.sqlite)} |`),
    '',
  ];
}

if (want('idle')) {
  // Idle browsers: Tether at its defaults (2 s pings only while busy, 25 s idle), at the old pace (2 s always), Socket.IO's 25 s ping.
  const IDLE_TARGETS: { label: string; kind: Kind; env: Record<string, string> }[] = [
    { label: 'tether (idle pings every 25 s)', kind: 'tether', env: { TETHER_HEARTBEAT_MS: '2000', TETHER_IDLE_HEARTBEAT_MS: '25000' } },
    { label: 'tether, pings every 2 s (before)', kind: 'tether', env: { TETHER_HEARTBEAT_MS: '2000', TETHER_IDLE_HEARTBEAT_MS: '2000' } },
    { label: 'socket.io (default 25 s ping)', kind: 'socketio', env: {} },
  ];
  const idle: { label: string; cost: { cpu: Spread; bytes: Spread } }[] = [];
  for (const t of IDLE_TARGETS) {
    const runs: IdleCost[] = await repeat(PLAN.repeats, () => idleCost(t.kind, PLAN.idleCost, PLAN.idleSeconds, t.env));
    const row = { label: t.label, cost: { cpu: spread(runs.map((r) => r.cpuPercent)), bytes: spread(runs.map((r) => r.bytesPerConnection)) } };
    idle.push(row);
    log(`idle ${t.label}, ${PLAN.idleCost} connections: ${row.cost.cpu.median.toFixed(1)}% of a core, ${(row.cost.bytes.median / 1024).toFixed(1)} KiB each`);
  }
  results.idleCost = idle;
  render.idle = () => [
    `## What idle connections cost the server (${PLAN.idleCost} connections doing nothing but heartbeats, ${PLAN.idleSeconds} s)`,
    '',
    'The load clients ping at the pace the server asks of idle clients, as the worker does; Socket.IO answers its server\'s pings.',
    '',
    '| server | CPU, % of one core | KiB/connection |',
    '|---|---|---|',
    ...idle.map((r) => `| ${r.label} | ${fmt(r.cost.cpu, 1)} | ${fmt({ median: r.cost.bytes.median / 1024, min: r.cost.bytes.min / 1024, max: r.cost.bytes.max / 1024 })} |`),
    '',
  ];
}

if (want('cluster')) {
  const cluster: { nodes: number; runs: ClusterFanout[] }[] = [];
  for (const nodes of [1, 2] as const) {
    const runs = await repeat(PLAN.repeats, () => clusterFanout(nodes, PLAN.cluster, PLAN.seconds, PLAN.rate));
    cluster.push({ nodes, runs });
    log(`cluster fan-out, ${nodes} node(s), ${PLAN.cluster} subscribers: ${spread(runs.map((r) => r.deliveriesPerSec)).median.toFixed(0)} deliveries/s`);
  }
  results.cluster = cluster;
  render.cluster = () => [
    `## Fan-out across processes (PostgreSQL + Redis, ${PLAN.cluster} subscribers spread over the processes, the publisher on the first)`,
    '',
    `Full speed as in the fan-out table; latency at ${PLAN.rate}/s, to subscribers on the publisher's process and on the other one (the Redis hop). All processes, PostgreSQL, Redis and the load generator share the same 2 cores.`,
    '',
    '| processes | deliveries/s | CPU µs per delivery (all processes) | p50 same process, ms | p50 other process, ms |',
    '|---|---|---|---|---|',
    ...cluster.map((c) => `| ${c.nodes} | ${fmt(spread(c.runs.map((r) => r.deliveriesPerSec)), 0)} | ${fmt(spread(c.runs.map((r) => r.cpuUsPerDelivery)), 2)} | ${fmt(spread(c.runs.map((r) => r.sameNodeP50Ms)), 2)} | ${c.nodes > 1 ? fmt(spread(c.runs.map((r) => r.otherNodeP50Ms)), 2) : '–'} |`),
    '',
  ];
}

if (want('browser')) {
  const runs: BrowserRun[] = [];
  for (let i = 0; i < PLAN.repeats; i++) {
    const run = await browserRun(i);
    runs.push(run);
    const at50 = run.tabToTab[0]!.results;
    log(`browser run ${i + 1}: tab→tab p50 at ${run.tabToTab[0]!.rate}/s floor ${at50.floor.p50.toFixed(2)} / Socket.IO ${at50.socketio.p50.toFixed(2)} / Tether ${at50.tether.p50.toFixed(2)} / Tether without SharedWorker ${at50.tetherLeader.p50.toFixed(2)} / over long polling ${at50.tetherLongPolling.p50.toFixed(2)} ms; rpc p50 ${run.roundTrip.rpc.p50.toFixed(2)} ms; publish p50 ${run.roundTrip.publish.p50.toFixed(2)} ms (fsync off ${run.roundTrip.publishSyncOff.p50.toFixed(2)}); IndexedDB strict commit p50 ${run.roundTrip.idbCommit.p50.toFixed(2)} ms; ${run.throughput.perSec.toFixed(0)} durable publishes/s from one tab; documents: ${run.docChanges.shownOnReturn}/${run.docChanges.total} shown on return, other tab p50 ${run.docChanges.otherTab.p50.toFixed(2)} / p99 ${run.docChanges.otherTab.p99.toFixed(2)} ms (${run.docChanges.withinFrame}/${run.docChanges.total} within ${FRAME_MS.toFixed(1)} ms), transact resolved p50 ${run.docChanges.resolved.p50.toFixed(2)} ms`);
  }
  results.browser = { plan: PLAN.browser, limits: DEFAULT_LIMITS_ENV, runs };
  render.browser = () => renderBrowser(runs);
}

if (want('outbox')) {
  // The outbox row runs under the default rate limit, as users do.
  const outboxTarget = await startTarget('tether', { TETHER_API_KEY: 'bench-key', TETHER_RATE_LIMIT: String(DEFAULT_CONFIG.rateLimit) });
  const outbox: OutboxResult[] = [];
  try {
    for (let i = 0; i < PLAN.repeats; i++) outbox.push(await offlineOutbox(outboxTarget, PLAN.outbox, 'bench-key'));
    log(`offline outbox: ${PLAN.outbox} queued in ${spread(outbox.map((o) => o.queueMs)).median.toFixed(0)} ms, drained in ${spread(outbox.map((o) => o.drainMs)).median.toFixed(0)} ms`);
  } finally {
    await outboxTarget.stop();
  }
  results.outbox = outbox;
  render.outbox = () => [
    `## The offline outbox in the browser (headless Chromium, on-disk profile)`,
    '',
    `${count(PLAN.outbox)} publishes made while the network is cut (default rate limit, \`TETHER_RATE_LIMIT=${DEFAULT_CONFIG.rateLimit}\`).`,
    '',
    '| until all are durably queued (ms) | from reconnect until the server stored all (ms) | stored on the server |',
    '|---|---|---|',
    `| ${fmt(spread(outbox.map((o) => o.queueMs)), 0)} | ${fmt(spread(outbox.map((o) => o.drainMs)), 0)} | ${outbox.map((o) => o.stored).join(', ')} |`,
    '',
  ];
}

if (want('attack')) {
  const attacks: AttackResult[] = [];
  for (let i = 0; i < PLAN.repeats; i++) attacks.push(await rpcUnderAttack(PLAN.attack));
  results.attacks = attacks;
  log(`RPC under attack: p99 ${spread(attacks.map((a) => a.attacked.p99)).median.toFixed(2)} ms (quiet ${spread(attacks.map((a) => a.quiet.p99)).median.toFixed(2)} ms)`);
  render.attack = () => [
    '## A normal client while the server is attacked',
    '',
    `One client calls \`hello\` (RPC) every 10 ms for ${PLAN.attack.seconds} s on a quiet server, then again while ${PLAN.attack.junkConnections} connections flood junk frames (each reconnecting after the server closes it for junk) and ${PLAN.attack.stormConnections} connections storm catch-ups (${PLAN.attack.stormSubscribes} subscribes each from offset 0 of ${PLAN.attack.historyEvents} events of 60 KB, never reading). The attackers run in their own process, connect from another loopback address (127.0.0.2) and retry 50 ms after a refused connection (HTTP 429: new connections per address). Default limits; goal: attacked p99 ≤ 2× quiet.`,
    '',
    '| phase | calls | p50 ms | p99 ms |',
    '|---|---|---|---|',
    `| quiet | ${attacks.map((a) => a.quiet.calls).join(', ')} | ${fmt(spread(attacks.map((a) => a.quiet.p50)), 2)} | ${fmt(spread(attacks.map((a) => a.quiet.p99)), 2)} |`,
    `| under attack | ${attacks.map((a) => a.attacked.calls).join(', ')} | ${fmt(spread(attacks.map((a) => a.attacked.p50)), 2)} | ${fmt(spread(attacks.map((a) => a.attacked.p99)), 2)} |`,
    `| ratio (median) | | ${ratio(spread(attacks.map((a) => a.attacked.p50)).median, spread(attacks.map((a) => a.quiet.p50)).median)} | ${ratio(spread(attacks.map((a) => a.attacked.p99)).median, spread(attacks.map((a) => a.quiet.p99)).median)} |`,
    '',
    `Attack volume per run: junk frames sent ${attacks.map((a) => a.junkFramesSent).join(', ')}; junk connections closed ${attacks.map((a) => a.junkConnectionsClosed).join(', ')}; storm subscribes sent ${attacks.map((a) => a.stormSubscribesSent).join(', ')}.`,
    '',
  ];
}

if (want('presence')) {
  const { storm, churn, leave } = PLAN.presence;
  const storms: { n: number; kind: Kind; runs: JoinStorm[] }[] = [];
  for (const n of storm) {
    for (const kind of ['tether', 'naive-presence'] as const) {
      const runs = await repeat(PLAN.repeats, async () => {
        const target = await startTarget(kind);
        try {
          return await joinStorm(target, n);
        } finally {
          await target.stop();
        }
      });
      storms.push({ n, kind, runs });
      log(`presence join storm ${kind} n=${n}: all see ${n} after ${spread(runs.map((r) => r.convergenceMs)).median.toFixed(0)} ms, ${spread(runs.map((r) => r.framesMedian)).median} frames per client (median)`);
    }
  }
  const churns: StateChurn[] = await repeat(PLAN.repeats, async () => {
    const target = await startTarget('tether');
    try {
      return await stateChurn(target, churn.n, churn.rate, churn.seconds);
    } finally {
      await target.stop();
    }
  });
  log(`presence state churn, ${churn.n} joined, ${churn.rate} sets/s: ${spread(churns.map((c) => c.framesPerSecMedian)).median.toFixed(1)} frames/s per client, set → seen p50 ${spread(churns.map((c) => c.p50Ms)).median.toFixed(1)} ms, p99 ${spread(churns.map((c) => c.p99Ms)).median.toFixed(1)} ms`);
  const leaves: { lingerMs: number; runs: number[][] }[] = [];
  for (const lingerMs of leave.lingers) {
    const runs = await repeat(PLAN.repeats, async () => {
      const target = await startTarget('tether', { TETHER_PRESENCE_LINGER_MS: String(lingerMs) });
      try {
        return await leaveTimes(target, leave.n, leave.leaves);
      } finally {
        await target.stop();
      }
    });
    leaves.push({ lingerMs, runs });
    log(`presence leave, linger ${lingerMs} ms: the others see it gone after ${spread(runs.flat()).median.toFixed(0)} ms`);
  }
  results.presence = { plan: PLAN.presence, storms, churns, leaves };
  const of = <T>(runs: T[], pick: (r: T) => number, digits = 0) => fmt(spread(runs.map(pick)), digits);
  const NAMES: Partial<Record<Kind, string>> = { tether: 'Tether', 'naive-presence': 'naive (peer-servers.ts)' };
  render.presence = () => [
    '## Presence (Tether), one channel',
    '',
    `Load clients are raw \`ws\` sockets in the bench process speaking the protocol directly (a handshake with a clientId, development mode, then \`{"type":"presence","channel":…,"tabs":1}\`), against the reference server at its default settings (SQLite, members frames coalesced to one per channel per 50 ms). No peer in this harness has per-person presence (Socket.IO and the raw ws broadcast have none); the join storm's reference is **naive** presence on raw \`ws\` (peer-servers.ts, a few lines: one channel, no linger, no coalescing; a joiner gets the member list and every join goes to every other connection as a frame of its own, encoded once), so a client receives up to N frames where Tether sends its whole list once, then coalesced changes. The load generator reads frames with string searches (no JSON.parse) and shares the 2 cores with the server.`,
    '',
    '### Join storm: N connected clients send their join at once',
    '',
    "Until: from the first join sent until the last client's latest frame lists all N. Frames and KB: what one client received until it saw all N (its own join included).",
    '',
    '| N | server | until every client lists N (ms) | frames per client, median | frames per client, max | KB per client, median | server CPU (ms) |',
    '|---|---|---|---|---|---|---|',
    ...storms.map((r) => `| ${r.n} | ${NAMES[r.kind] ?? r.kind} | ${of(r.runs, (x) => x.convergenceMs)} | ${of(r.runs, (x) => x.framesMedian)} | ${of(r.runs, (x) => x.framesMax)} | ${of(r.runs, (x) => x.bytesMedian / 1024)} | ${of(r.runs, (x) => x.serverCpuMs)} |`),
    '',
    `### State churn: ${churn.n} joined, one sets its state ${churn.rate} times a second for ${churn.seconds} s`,
    '',
    `The setter sends \`{"type":"presence","channel":…,"tabs":1,"state":{"x":i}}\` on a fixed schedule (every set that is due is sent). Each of the ${churn.n - 1} other clients counts the members frames it receives in that window, and for every set the time until a frame shows it or a later state (a set coalesced away is seen with the next one), on the bench process's clock. Expected: about 20 frames/s per client (one per 50 ms) whatever the set rate.`,
    '',
    '| figure | result |',
    '|---|---|',
    `| members frames/s per receiving client, median over receivers | ${of(churns, (c) => c.framesPerSecMedian, 1)} |`,
    `| same, slowest / fastest receiver | ${of(churns, (c) => c.framesPerSecMin, 1)} / ${of(churns, (c) => c.framesPerSecMax, 1)} |`,
    `| set → seen, p50 ms (every receiver, every set) | ${of(churns, (c) => c.p50Ms, 1)} |`,
    `| set → seen, p99 ms | ${of(churns, (c) => c.p99Ms, 1)} |`,
    `| bytes of one members frame (${churn.n} members listed; a change frame carries the member that changed) | ${of(churns, (c) => c.frameBytes)} |`,
    `| server CPU while the sets ran, % of one core | ${of(churns, (c) => c.serverCpuPercent, 1)} |`,
    `| the load generator's own event-loop delay p99, ms (its lateness is in the latencies) | ${of(churns, (c) => c.loadLoopP99Ms, 1)} |`,
    '',
    `### Leave: a client of ${leave.n} closes its socket`,
    '',
    `The socket is cut (\`terminate()\`), ${leave.leaves === 1 ? 'one client per run' : `${leave.leaves} clients one after another per run`}; the time until every remaining client's latest frame lists one member fewer. Expected: the linger (\`TETHER_PRESENCE_LINGER_MS\`, 5,000 ms by default), then one frame.`,
    '',
    '| `TETHER_PRESENCE_LINGER_MS` | until all the others see it gone (ms), every leave of every run | minus the linger (ms) |',
    '|---|---|---|',
    ...leaves.map((l) => {
      const all = spread(l.runs.flat());
      return `| ${count(l.lingerMs)} | ${fmt(all, 0)} | ${fmt({ median: all.median - l.lingerMs, min: all.min - l.lingerMs, max: all.max - l.lingerMs }, 0)} |`;
    }),
    '',
  ];
}

if (want('metrics')) {
  const m = PLAN.metrics;
  const plain: ScrapedDurable[] = [];
  const scraped: ScrapedDurable[] = [];
  // (a) and (b) alternate which goes first from run to run, so a drift of the machine falls on both.
  for (let i = 0; i < PLAN.repeats; i++) {
    const order = i % 2 === 0 ? [false, true] : [true, false];
    for (const scraper of order) (scraper ? scraped : plain).push(await durableScraped(m.publishers, m.seconds, scraper));
  }
  const a = spread(plain.map((r) => r.rate));
  const b = spread(scraped.map((r) => r.rate));
  log(`metrics: durable publishes ${a.median.toFixed(0)}/s without a scraper, ${b.median.toFixed(0)}/s scraped every 1 s (${(b.median / a.median).toFixed(3)}×)`);
  const costs: ScrapeCost[] = await repeat(PLAN.repeats, () => scrapeCost(m.connections, m.rate, m.scrapes, m.baselineSeconds));
  log(`metrics: a scrape of a server with ${m.connections} connections: ${spread(costs.map((c) => c.bytes)).median} B, p50 ${spread(costs.map((c) => c.p50Ms)).median.toFixed(2)} ms, ${spread(costs.map((c) => c.cpuMsPerScrape)).median.toFixed(2)} ms of server CPU`);
  results.metrics = { plan: m, durable: { plain, scraped }, scrape: costs };
  render.metrics = () => [
    '## What the Prometheus metrics cost (Tether, `GET /metrics` with the API key)',
    '',
    `The durable row (${m.publishers} publishers each awaiting its ack, fsync on, default limits, ${m.seconds} s) on a server given \`TETHER_API_KEY\`: (a) as is, (b) with a scraper in the bench process fetching \`GET /metrics\` with the key every 1 s from the start (a fresh server each; (a) and (b) alternate which goes first). The counters cannot be switched off, so (a) already pays for counting on the hot paths (plain number increments): this ratio is the cost of being scraped. Durable rows move by up to 40% between runs on this machine: a ratio within a few percent of 1 is noise.`,
    '',
    '| figure | (a) no scraper | (b) scraped every 1 s | (b) ÷ (a), medians | (b) ÷ (a), run by run | scrapes per (b) run |',
    '|---|---|---|---|---|---|',
    `| publishes/s acknowledged, ${m.publishers} publishers | ${fmt(a, 0)} | ${fmt(b, 0)} | ${ratio(b.median, a.median)} | ${scraped.map((r, i) => ratio(r.rate, plain[i]!.rate)).join(', ')} | ${scraped.map((r) => r.scrapes).join(', ')} |`,
    `| server CPU µs per publish | ${fmt(spread(plain.map((r) => r.cpuUsPerPublish)), 1)} | ${fmt(spread(scraped.map((r) => r.cpuUsPerPublish)), 1)} | ${ratio(spread(scraped.map((r) => r.cpuUsPerPublish)).median, spread(plain.map((r) => r.cpuUsPerPublish)).median)} | ${scraped.map((r, i) => ratio(r.cpuUsPerPublish, plain[i]!.cpuUsPerPublish)).join(', ')} | |`,
    '',
    `What the scrape's own CPU (below) predicts: ${spread(costs.map((c) => c.cpuMsPerScrape)).median.toFixed(2)} ms of server CPU a second, ${(spread(costs.map((c) => c.cpuMsPerScrape)).median / 10).toFixed(2)}% of one core — far below what these rows can resolve.`,
    '',
    `One scrape of a server with ${count(m.connections)} WebSocket connections subscribed to one channel and a publisher at ${m.rate} durable publishes/s (${count(m.connections * m.rate)} deliveries/s): ${count(m.scrapes)} scrapes one after another (after 3 unmeasured). Time: from the request until the body is read, in the bench process. Server CPU per scrape: the server's CPU over the scrapes minus the traffic's own, measured for ${m.baselineSeconds} s just before (10 ms clock ticks, so ±${(10 / m.scrapes).toFixed(2)} ms per scrape at best).`,
    '',
    '| answer, bytes (uncompressed) | series (sample lines) | time p50 ms | time p99 ms | server CPU per scrape, ms | traffic, deliveries/s |',
    '|---|---|---|---|---|---|',
    `| ${fmt(spread(costs.map((c) => c.bytes)), 0)} | ${fmt(spread(costs.map((c) => c.series)), 0)} | ${fmt(spread(costs.map((c) => c.p50Ms)), 2)} | ${fmt(spread(costs.map((c) => c.p99Ms)), 2)} | ${fmt(spread(costs.map((c) => c.cpuMsPerScrape)), 2)} | ${fmt(spread(costs.map((c) => c.deliveriesPerSec)), 0)} |`,
    '',
  ];
}

let over: string[] = [];
if (want('sizes')) {
  const { rows: sizes, packed } = await measureSizes();
  results.sizes = sizes;
  results.packedSdk = packed;
  over = checkBudgets(sizes);
  render.sizes = () => [
    '## Bundle size (what the packed `tether` tarball holds; gzip -9)',
    '',
    `Measured on the files of \`npm pack\` (${packed.filename}: ${packed.files} files, ${(packed.tarballBytes / 1024).toFixed(1)} KiB packed, ${(packed.unpackedBytes / 1024).toFixed(1)} KiB unpacked, source maps included). The SDK row bundles the packed \`dist/index.js\` with its dependencies as an app's bundler would (esbuild, minified); the worker and \`tether.js\` are the packed files as served. Peers are their npm packages bundled with esbuild.`,
    '',
    '| bundle | what | minified B | gzip B | budget (CI) | target |',
    '|---|---|---|---|---|---|',
    ...sizes.map((r) => `| ${r.name} | ${r.what} | ${r.minified} | ${r.gzip} | ${BUDGETS[r.name] ?? ''} | ${TARGETS[r.name] ?? ''} |`),
    '',
  ];
}

/** The browser section: floor / Socket.IO / Tether side by side, Tether's ratios and the goals of issue 13. */
function renderBrowser(runs: BrowserRun[]): string[] {
  const b = PLAN.browser;
  const NAMES: Record<Peer, string> = { floor: 'floor', socketio: 'Socket.IO', tether: 'Tether', tetherLeader: 'Tether without SharedWorker', tetherLongPolling: 'Tether over long polling' };
  const tabGoals: Record<number, { p50Floor?: number; p99Floor?: number; p50SocketIo?: number }> = {
    50: { p50Floor: 2, p99Floor: 3, p50SocketIo: 1.5 },
    500: { p50Floor: 3, p99Floor: 5 },
  };
  const lines = [
    `## In the browser (headless Chromium, loopback): Tether beside a bare SharedWorker and Socket.IO`,
    '',
    'One fresh browser and fresh servers per run; the three are measured interleaved, row by row, in the same browser (who goes first rotates from run to run; between rows Tether\'s outbox drains and 300 ms pass).',
    '- **floor**: two tabs of one context and a bare SharedWorker owning one raw ws to an echo server (in the bench process), relaying each echo to every tab: no outbox, no protocol.',
    '- **Socket.IO**: two tabs, each with its own socket.io-client 4.8 connection (websocket transport) to a Socket.IO server in its own process; tab A emits to a room tab B joined.',
    `- **Tether**: two tabs of one context with the script-tag client (\`/tether.js\`) sharing one SharedWorker, against the reference server at its **default limits** (${Object.entries(DEFAULT_LIMITS_ENV).map(([k, v]) => `\`${k}=${v}\``).join(', ')}). A publish is written to the IndexedDB outbox before it is sent, and stored (SQLite, fsync) before it is delivered.`,
    '- **Tether without SharedWorker**: the same client with `mode: \'leader-election\'` (as on a browser that has no SharedWorker): three tabs of one context, each with its own dedicated worker; the first tab leads (its worker holds the socket), and A and B are the two followers, so a message goes A → leader tab (BroadcastChannel) → server → leader tab → B.',
    "- **Tether over long polling**: the same client with `transports: ['long-polling']` (what it falls back to where WebSockets are blocked): two tabs of one context sharing one SharedWorker, whose link is HTTP long polling to the same server (one request up at a time, one poll held; PROTOCOL.md).",
    '',
    '### Tab → tab latency (ms)',
    '',
    'Tab A sends timestamps (`performance.timeOrigin + performance.now()`) on a fixed schedule (every message due is sent, so the rate holds when a timer is late); tab B records arrival − sent. Tether: `pubsub.publish` in A, `subscribe` in B. Queue growth: median latency of the last 10% of messages minus that of the first 10% (a queue that builds up shows as a large positive number).',
    '',
    '| load | figure | floor | Socket.IO | Tether | Tether ÷ floor | Tether ÷ Socket.IO | goal (issue 13, on the medians) | Tether without SharedWorker, follower → follower | ÷ Tether | Tether over long polling | ÷ Tether |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  b.rates.forEach(({ rate, seconds }, i) => {
    const of = (peer: Peer, figure: 'p50' | 'p99' | 'growth') => spread(runs.map((r) => r.tabToTab[i]!.results[peer][figure]));
    const load = `${count(rate)}/s × ${seconds} s (${count(Math.max(1, Math.round(rate * seconds)))} messages)`;
    const goals = tabGoals[rate] ?? {};
    for (const figure of ['p50', 'p99', 'growth'] as const) {
      const [floor, socketio, tether, leader, longPolling] = PEERS.map((peer) => of(peer, figure));
      const toFloor = tether!.median / floor!.median;
      const toSocketIo = tether!.median / socketio!.median;
      const targets: string[] = [];
      if (figure === 'p50' && goals.p50Floor) targets.push(goal(`≤ ${goals.p50Floor}× floor`, toFloor, goals.p50Floor));
      if (figure === 'p50' && goals.p50SocketIo) targets.push(goal(`≤ ${goals.p50SocketIo}× Socket.IO`, toSocketIo, goals.p50SocketIo));
      if (figure === 'p99' && goals.p99Floor) targets.push(goal(`≤ ${goals.p99Floor}× floor`, toFloor, goals.p99Floor));
      const ratios = figure === 'growth' ? '| | ' : `| ${ratio(tether!.median, floor!.median)} | ${ratio(tether!.median, socketio!.median)} `;
      const leaderRatio = figure === 'growth' ? '' : ratio(leader!.median, tether!.median);
      const longPollingRatio = figure === 'growth' ? '' : ratio(longPolling!.median, tether!.median);
      lines.push(`| ${figure === 'p50' ? load : ''} | ${figure === 'growth' ? 'queue growth' : figure} | ${fmt(floor!, 2)} | ${fmt(socketio!, 2)} | ${fmt(tether!, 2)} ${ratios}| ${targets.join('; ')} | ${fmt(leader!, 2)} | ${leaderRatio} | ${fmt(longPolling!, 2)} | ${longPollingRatio} |`);
    }
  });
  const lost = runs.flatMap((r, run) =>
    r.tabToTab.flatMap(({ rate, results }) => PEERS.filter((p) => results[p].received < results[p].sent).map((p) => `run ${run + 1}, ${NAMES[p]} at ${rate}/s: ${results[p].received} of ${results[p].sent}`)),
  );
  lines.push('', lost.length === 0 ? 'Every message arrived in every run.' : `Messages missing 30 s after the last was sent: ${lost.join('; ')}.`, '');

  const rt = (key: keyof BrowserRun['roundTrip'], figure: 'p50' | 'p99') => spread(runs.map((r) => r.roundTrip[key][figure]));
  lines.push(
    '### Requests one at a time (ms)',
    '',
    `${count(b.roundTrips)} sequential requests from one tab (after 10 unmeasured), each awaited before the next. Floor: tab → SharedWorker → ws echo → worker → the same tab. Socket.IO: \`emit\` with an ack callback (the server acks at once). The Tether rows split where the time goes: RPC stores nothing; a publish is written to IndexedDB, sent, stored by the server (fsync) and acknowledged; the same publish against a server whose fsync is off gives the fsync's share; a transaction does what a publish does plus the document logic.`,
    '',
    '| Tether request | figure | floor | Socket.IO | Tether | Tether ÷ floor | Tether ÷ Socket.IO | goal (issue 13, on the medians) |',
    '|---|---|---|---|---|---|---|---|',
  );
  const ROWS: [keyof BrowserRun['roundTrip'], string][] = [
    ['rpc', "`rpc.call('hello', ['world'])`"],
    ['rpcLongPolling', "`rpc.call('hello', ['world'])` over long polling"],
    ['publish', '`pubsub.publish` awaited (server acknowledgement)'],
    ['publishLongPolling', '`pubsub.publish` awaited, over long polling'],
    ['publishSyncOff', '`pubsub.publish` awaited, second server with `TETHER_DB_SYNC=off` (no fsync; measurement only)'],
    ['transact', "`doc('bench-doc').transact(tx => tx.set('k', i))` awaited"],
  ];
  for (const [key, label] of ROWS) {
    for (const figure of ['p50', 'p99'] as const) {
      const [floor, socketio, tether] = [rt('floor', figure), rt('socketio', figure), rt(key, figure)];
      const target = key === 'rpc' && figure === 'p50' ? goal('≤ 1.5× floor', tether.median / floor.median, 1.5) : '';
      lines.push(`| ${figure === 'p50' ? label : ''} | ${figure} | ${fmt(floor, 2)} | ${fmt(socketio, 2)} | ${fmt(tether, 2)} | ${ratio(tether.median, floor.median)} | ${ratio(tether.median, socketio.median)} | ${target} |`);
    }
  }

  // Where a publish's time goes: differences of the medians above, plus the IndexedDB commit alone.
  const p50 = (key: keyof BrowserRun['roundTrip']) => rt(key, 'p50').median;
  const publish = p50('publish');
  const hops: [string, string, number][] = [
    ['floor: tab → bare SharedWorker → ws echo → back', 'floor p50', p50('floor')],
    ['Comlink + protocol + server round trip', 'Tether rpc p50 − floor p50', p50('rpc') - p50('floor')],
    ['IndexedDB strict commit (the outbox)', 'measured alone, p50 (above)', p50('idbCommit')],
    ["server's fsync", 'publish p50 − publish (fsync off) p50', publish - p50('publishSyncOff')],
    ['rest (outbox logic, ack path, scheduling)', 'publish p50 − rpc p50 − IndexedDB − fsync', publish - p50('rpc') - p50('idbCommit') - (publish - p50('publishSyncOff'))],
  ];
  const bytes = runs.map((r) => r.idbRecordBytes);
  lines.push(
    '',
    "### Where a publish's time goes (Tether, approximate)",
    '',
    `The IndexedDB strict commit is measured alone in the same run, in the same kind of context as Tether's tabs: a bare SharedWorker (started from a script of the bench's page server, in the Tether tabs' own \`browser.newContext()\`) opens a fresh database and times ${count(b.roundTrips)} transactions one after another (after 10 unmeasured), each \`readwrite\` with \`{ durability: 'strict' }\` putting one outbox-like record (${[...new Set(bytes)].join(', ')} B of JSON), until \`complete\`. A fresh \`browser.newContext()\` keeps IndexedDB **in memory** (an incognito profile): this row, like Tether's rows above, pays no disk flush in the browser; on an on-disk profile the outbox hop costs more. The server's fsync share comes from the publish row against a second server with \`TETHER_DB_SYNC=off\` (otherwise the same default limits).`,
    '',
    '| IndexedDB: one strict `readwrite` transaction, one put | p50 | p99 |',
    '|---|---|---|',
    `| in a bare SharedWorker, in-memory context | ${fmt(rt('idbCommit', 'p50'), 2)} | ${fmt(rt('idbCommit', 'p99'), 2)} |`,
    '',
    `Split of the publish p50 (${publish.toFixed(2)} ms). **Differences of medians of different rows, so approximate**: each part is only as good as the rows it subtracts, hops overlap (the outbox write and the send are not strictly one after the other), and a negative part means the noise is larger than that part.`,
    '',
    '| part | computed as | ms | share of publish p50 |',
    '|---|---|---|---|',
    ...hops.map(([part, how, ms]) => `| ${part} | ${how} | ${ms.toFixed(2)} | ${publish > 0 ? `${((ms / publish) * 100).toFixed(0)}%` : '–'} |`),
    `| total | = publish p50 | ${hops.reduce((sum, [, , ms]) => sum + ms, 0).toFixed(2)} | 100% |`,
  );

  const dc = runs.map((r) => r.docChanges);
  const dcTotal = [...new Set(dc.map((d) => d.total))].join(', ');
  const other = (figure: 'p50' | 'p99') => spread(dc.map((d) => d.otherTab[figure]));
  const within = spread(dc.map((d) => d.withinFrame));
  const withinShare = spread(dc.map((d) => (d.total > 0 ? (d.withinFrame / d.total) * 100 : NaN)));
  const frame = `${FRAME_MS.toFixed(1)} ms`;
  const unseen = dc.reduce((n, d) => n + d.total - d.seen, 0);
  lines.push(
    '',
    '### Document changes seen by the tabs (Tether)',
    '',
    `Issue 13's goal: the calling tab sees its own transaction's writes in the document store before \`transact\` returns, and every other tab of the browser within one animation frame (${frame} at 60 Hz). The same server and the same two tabs as the rows above both open a fresh document and wait until \`status.synced\`; tab A then makes ${count(b.docChanges.count)} transactions one at a time (after 10 unmeasured; each awaited, the next started ${b.docChanges.gapMs} ms after the previous at the soonest), each \`doc.transact(tx => tx.set('k', i))\`. Calling tab: whether \`doc.getState().k === i\` right after \`transact(...)\` returns, before it is awaited. Other tab: from the call in A (\`performance.timeOrigin + performance.now()\`) until B's \`doc.subscribe\` listener sees \`k === i\` (the same clock in B); one B never saw counts as infinitely late. For comparison, the time until \`transact\` resolves in A (the server committed). Goals are reported on the medians, not asserted.`,
    '',
    '| figure | result | goal (issue 13) |',
    '|---|---|---|',
    `| calling tab: \`k === i\` in the store when \`transact\` returns (of ${dcTotal} per run) | ${fmt(spread(dc.map((d) => d.shownOnReturn)), 0)} | all: ${dc.every((d) => d.shownOnReturn === d.total) ? 'met (every run)' : '**not met**'} |`,
    `| other tab: call → \`subscribe\` sees it, p50 ms | ${fmt(other('p50'), 2)} | ${goal(`≤ ${frame} (one frame)`, other('p50').median, FRAME_MS)} |`,
    `| other tab: call → \`subscribe\` sees it, p99 ms | ${fmt(other('p99'), 2)} | ${goal(`≤ ${frame} (one frame)`, other('p99').median, FRAME_MS)} |`,
    `| other tab: seen within ${frame} (of ${dcTotal} per run) | ${fmt(within, 0)}; share ${withinShare.median.toFixed(1)}% (${withinShare.min.toFixed(1)}–${withinShare.max.toFixed(1)}%) | |`,
    `| calling tab: \`transact\` resolved (server committed), p50 ms | ${fmt(spread(dc.map((d) => d.resolved.p50)), 2)} | |`,
    `| calling tab: \`transact\` resolved (server committed), p99 ms | ${fmt(spread(dc.map((d) => d.resolved.p99)), 2)} | |`,
    '',
    unseen === 0 ? 'The other tab saw every transaction in every run.' : `Transactions the other tab did not see within 10 s of the last (all runs): ${unseen}.`,
  );

  const perSec = spread(runs.map((r) => r.throughput.perSec));
  const burstMs = spread(runs.map((r) => r.burst.ms));
  const failed = runs.reduce((n, r) => n + r.throughput.failed + r.burst.failed, 0);
  lines.push(
    '',
    '### Durable publishes from one tab (Tether)',
    '',
    '| load | result | goal (issue 13, on the median) |',
    '|---|---|---|',
    `| at most ${count(b.throughput.window)} publishes unacknowledged (the next starts as each resolves), for ${b.throughput.seconds} s or ${count(b.throughput.max)} publishes: acknowledged publishes/s | ${fmt(perSec, 0)} | ${goal('≥ 5,000/s', perSec.median, 5000, false)} |`,
    `| ${count(b.burst)} publishes fired in one loop: ms until all are acknowledged | ${fmt(burstMs, 0)} (${count(Math.round((b.burst * 1000) / burstMs.median))}/s) | |`,
    '',
    failed === 0 ? 'No publish was rejected.' : `Rejected publishes (all runs): ${failed}.`,
    '',
  );
  return lines;
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
results.machine = machine;
results.smoke = smoke;
if (only) results.only = [...only];

const MD_ORDER: Section[] = ['fanout', 'durable', 'postgres', 'idle', 'cluster', 'memory', 'browser', 'outbox', 'attack', 'presence', 'metrics', 'sizes'];
const md: string[] = [
  only ? `# Benchmarks (partial: --only ${[...only].join(',')})` : '# Benchmarks',
  '',
  `Measured by \`npm run bench\` on ${machine}${smoke ? ' — **SMOKE RUN: tiny sizes, numbers meaningless**' : ''}.`,
  `Each cell: median (min–max) of ${PLAN.repeats} run${PLAN.repeats > 1 ? 's' : ''}, each with a fresh server process. The load generator runs`,
  'on the same 2 cores as the server, so absolute numbers are pessimistic and noisy: compare within a row.',
  '',
  ...MD_ORDER.flatMap((section) => render[section]?.() ?? []),
];

const outputs = only
  ? { md: 'dist/bench/BENCHMARKS.only.md', json: 'dist/bench/bench-results.only.json' }
  : smoke
    ? { md: 'dist/bench/BENCHMARKS.smoke.md', json: 'dist/bench/bench-results.smoke.json' }
    : { md: 'BENCHMARKS.md', json: 'bench-results.json' };
writeFileSync(outputs.md, md.join('\n'));
writeFileSync(outputs.json, `${JSON.stringify(results, null, 2)}\n`);
if (only) console.log(`\n${md.join('\n')}`);
log(`wrote ${outputs.md} and ${outputs.json}`);
if (over.length > 0) {
  console.error(over.join('\n'));
  process.exit(1);
}
process.exit(0);
