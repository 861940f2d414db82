/**
 * `npm run bench`: every benchmark in one run, the peers beside Tether on the same workload.
 * Writes BENCHMARKS.md and bench-results.json. `--smoke` runs a tiny version (CI keeps the
 * harness from rotting; its numbers mean nothing).
 *
 * 2 cores: the load generator (this process) competes with the server under test. Ratios
 * between servers measured in the same run are the figures that count.
 */
import { DEFAULT_CONFIG } from '../server/config.js';
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import { connectClient, cpuMs, rssBytes, startTarget, type Kind, type LoadClient, type Target } from './targets.js';
import { measureSizes, BUDGETS, TARGETS, checkBudgets } from './sizes.js';
import { offlineOutbox, tabToTab, type LatencyResult, type OutboxResult } from './browser.js';
import { rpcUnderAttack, type AttackResult } from './under-attack.js';

const smoke = process.argv.includes('--smoke');
const PLAN = smoke
  ? { fanout: [50], repeats: 1, rate: 10, seconds: 1, publishers: [1, 10], idle: [100], messages: 50, outbox: 200,
      attack: { seconds: 1, historyEvents: 20, junkConnections: 2, stormConnections: 2, stormSubscribes: 20 } }
  : { fanout: [100, 1000, 5000], repeats: 3, rate: 20, seconds: 4, publishers: [1, 10, 100], idle: [1000, 5000], messages: 1000, outbox: 10_000,
      attack: { seconds: 5, historyEvents: 300, junkConnections: 4, stormConnections: 4, stormSubscribes: 60 } };
const KINDS: Kind[] = ['tether', 'socketio', 'ws'];
const CHANNEL = 'bench';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Spread {
  median: number;
  min: number;
  max: number;
}
function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)]!, min: sorted[0]!, max: sorted.at(-1)! };
}
function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function connectMany(target: Target, n: number): Promise<LoadClient[]> {
  const clients: LoadClient[] = [];
  for (let i = 0; i < n; i += 200) {
    clients.push(...(await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => connectClient(target)))));
  }
  return clients;
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
      // Keep at most 20 messages' worth of deliveries in flight, for every server alike.
      while (performance.now() - t0 < PLAN.seconds * 1000) {
        if (published * n - delivered < 20 * n) {
          void publisher.publish(CHANNEL, { t: performance.now() });
          published++;
        } else await new Promise((resolve) => setImmediate(resolve));
      }
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

async function waitFor(done: () => boolean, timeoutMs: number): Promise<void> {
  const start = performance.now();
  while (!done()) {
    if (performance.now() - start > timeoutMs) throw new Error('timed out waiting for deliveries');
    await sleep(5);
  }
}

/** Publishes/s acknowledged (stored) from P concurrent publishers, each waiting for its ack. */
async function durable(publishers: number, sync: 'full' | 'off'): Promise<number> {
  const target = await startTarget('tether', { TETHER_DB_SYNC: sync });
  try {
    const clients = await connectMany(target, publishers);
    let acked = 0;
    const end = performance.now() + PLAN.seconds * 1000;
    const t0 = performance.now();
    await Promise.all(
      clients.map(async (client) => {
        while (performance.now() < end) {
          await client.publish(CHANNEL, { t: 0 });
          acked++;
        }
      }),
    );
    const rate = acked / ((performance.now() - t0) / 1000);
    for (const client of clients) client.close();
    return rate;
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

const results: Record<string, unknown> = {};
const started = Date.now();
const log = (line: string) => console.log(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);

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

const dur: { publishers: number; full: Spread; off: Spread }[] = [];
for (const p of PLAN.publishers) {
  const row = { publishers: p, full: spread(await repeat(PLAN.repeats, () => durable(p, 'full'))), off: spread(await repeat(PLAN.repeats, () => durable(p, 'off'))) };
  dur.push(row);
  log(`durable publishes, ${p} publishers: ${row.full.median.toFixed(0)}/s (sync off: ${row.off.median.toFixed(0)}/s)`);
}
results.durable = dur;

const mem: { n: number; kind: Kind; bytes: Spread }[] = [];
for (const n of PLAN.idle) {
  for (const kind of KINDS) {
    const row = { n, kind, bytes: spread(await repeat(PLAN.repeats, () => idleMemory(kind, n))) };
    mem.push(row);
    log(`idle memory ${kind} n=${n}: ${(row.bytes.median / 1024).toFixed(1)} KiB/connection`);
  }
}
results.memory = mem;

// The browser rows run under the default rate limit, as users do (the server rows raise it to measure the server alone).
const browserTarget = await startTarget('tether', { TETHER_API_KEY: 'bench-key', TETHER_RATE_LIMIT: String(DEFAULT_CONFIG.rateLimit) });
const latency: { tether: LatencyResult; baseline: LatencyResult }[] = [];
const outbox: OutboxResult[] = [];
try {
  for (let i = 0; i < PLAN.repeats; i++) latency.push(await tabToTab(browserTarget, PLAN.messages));
  log(`tab→tab p50 ${spread(latency.map((l) => l.tether.p50)).median.toFixed(2)} ms (bare SharedWorker + ws echo: ${spread(latency.map((l) => l.baseline.p50)).median.toFixed(2)} ms)`);
  for (let i = 0; i < PLAN.repeats; i++) outbox.push(await offlineOutbox(browserTarget, PLAN.outbox, 'bench-key'));
  log(`offline outbox: ${PLAN.outbox} queued in ${spread(outbox.map((o) => o.queueMs)).median.toFixed(0)} ms, drained in ${spread(outbox.map((o) => o.drainMs)).median.toFixed(0)} ms`);
} finally {
  await browserTarget.stop();
}
results.latency = latency;
results.outbox = outbox;

const attacks: AttackResult[] = [];
for (let i = 0; i < PLAN.repeats; i++) attacks.push(await rpcUnderAttack(PLAN.attack));
results.attacks = attacks;
log(`RPC under attack: p99 ${spread(attacks.map((a) => a.attacked.p99)).median.toFixed(2)} ms (quiet ${spread(attacks.map((a) => a.quiet.p99)).median.toFixed(2)} ms)`);

const { rows: sizes, packed } = await measureSizes();
results.sizes = sizes;
results.packedSdk = packed;

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
results.machine = machine;
results.smoke = smoke;

const fmt = (s: Spread, digits = 1) => `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : '–');
const find = <T extends { kind: Kind }>(rows: T[], kind: Kind, match: (r: T) => boolean) => rows.find((r) => r.kind === kind && match(r))!;

const md: string[] = [
  '# Benchmarks',
  '',
  `Measured by \`npm run bench\` on ${machine}${smoke ? ' — **SMOKE RUN: tiny sizes, numbers meaningless**' : ''}.`,
  `Each cell: median (min–max) of ${PLAN.repeats} run${PLAN.repeats > 1 ? 's' : ''}, each with a fresh server process. The load generator runs`,
  'on the same 2 cores as the server, so absolute numbers are pessimistic and noisy: compare within a row.',
  '',
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
  '## Durable publishes acknowledged per second (Tether)',
  '',
  'Each publisher waits for the acknowledgement of one publish before sending the next. `TETHER_DB_SYNC=full` is the product; `off` only shows what durability costs.',
  '',
  '| publishers | publishes/s, durable | publishes/s, sync off | cost of durability |',
  '|---|---|---|---|',
  ...dur.map((r) => `| ${r.publishers} | ${fmt(r.full, 0)} | ${fmt(r.off, 0)} | ${ratio(r.off.median, r.full.median)} |`),
  '',
  '## Server memory per idle connection (KiB, RSS growth ÷ connections)',
  '',
  '| connections | server | KiB/connection | Tether ÷ this |',
  '|---|---|---|---|',
  ...mem.map((r) => {
    const t = find(mem, 'tether', (x) => x.n === r.n);
    return `| ${r.n} | ${r.kind} | ${fmt({ median: r.bytes.median / 1024, min: r.bytes.min / 1024, max: r.bytes.max / 1024 })} | ${r.kind === 'tether' ? '' : ratio(t.bytes.median, r.bytes.median)} |`;
  }),
  '',
  `## In the browser (headless Chromium, loopback)`,
  '',
  `Tab A publishes ${PLAN.messages} messages 2 ms apart; tab B (same browser) receives them through the worker and the server. The floor: a bare SharedWorker owning one ws to an echo server, in the same run. Tether's path includes the durable outbox write (IndexedDB) before sending. The Tether server runs with its default rate limit (\`TETHER_RATE_LIMIT=${DEFAULT_CONFIG.rateLimit}\` frames/s per connection).`,
  '',
  '| path | p50 ms | p99 ms |',
  '|---|---|---|',
  `| Tether: tab → worker (outbox) → server (stored) → worker → tab | ${fmt(spread(latency.map((l) => l.tether.p50)), 2)} | ${fmt(spread(latency.map((l) => l.tether.p99)), 2)} |`,
  `| bare SharedWorker + ws echo | ${fmt(spread(latency.map((l) => l.baseline.p50)), 2)} | ${fmt(spread(latency.map((l) => l.baseline.p99)), 2)} |`,
  `| ratio (median) | ${ratio(spread(latency.map((l) => l.tether.p50)).median, spread(latency.map((l) => l.baseline.p50)).median)} | ${ratio(spread(latency.map((l) => l.tether.p99)).median, spread(latency.map((l) => l.baseline.p99)).median)} |`,
  '',
  `Offline outbox, on-disk profile: ${PLAN.outbox} publishes made while the network is cut.`,
  '',
  '| until all are durably queued (ms) | from reconnect until the server stored all (ms) | stored on the server |',
  '|---|---|---|',
  `| ${fmt(spread(outbox.map((o) => o.queueMs)), 0)} | ${fmt(spread(outbox.map((o) => o.drainMs)), 0)} | ${outbox.map((o) => o.stored).join(', ')} |`,
  '',
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
  '## Bundle size (what the packed `tether` tarball holds; gzip -9)',
  '',
  `Measured on the files of \`npm pack\` (${packed.filename}: ${packed.files} files, ${(packed.tarballBytes / 1024).toFixed(1)} KiB packed, ${(packed.unpackedBytes / 1024).toFixed(1)} KiB unpacked, source maps included). The SDK row bundles the packed \`dist/index.js\` with its dependencies as an app's bundler would (esbuild, minified); the worker and \`tether.js\` are the packed files as served. Peers are their npm packages bundled with esbuild.`,
  '',
  '| bundle | what | minified B | gzip B | budget (CI) | target |',
  '|---|---|---|---|---|---|',
  ...sizes.map((r) => `| ${r.name} | ${r.what} | ${r.minified} | ${r.gzip} | ${BUDGETS[r.name] ?? ''} | ${TARGETS[r.name] ?? ''} |`),
  '',
];

const outputs = smoke ? { md: 'dist/bench/BENCHMARKS.smoke.md', json: 'dist/bench/bench-results.smoke.json' } : { md: 'BENCHMARKS.md', json: 'bench-results.json' };
writeFileSync(outputs.md, md.join('\n'));
writeFileSync(outputs.json, `${JSON.stringify(results, null, 2)}\n`);
log(`wrote ${outputs.md} and ${outputs.json}`);
const over = checkBudgets(sizes);
if (over.length > 0) {
  console.error(over.join('\n'));
  process.exit(1);
}
process.exit(0);
