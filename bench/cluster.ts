/**
 * Scale-out rows: durable publishes on PostgreSQL, what idle connections cost, and fan-out with
 * one and two server processes on one PostgreSQL and one Redis. Each run gets a database and a
 * Redis prefix of its own; the database is dropped afterwards.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { connectClient, connectMany, cpuMs, durableRate, percentile, publishFullSpeed, rssBytes, sleep, startTarget, waitFor, type Kind, type Target } from './targets.js';

const ADMIN_URL = process.env.TETHER_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.TETHER_BENCH_REDIS ?? 'redis://127.0.0.1:6379';
const CHANNEL = 'bench';

async function withDatabase<T>(run: (env: Record<string, string>) => Promise<T>): Promise<T> {
  const name = `tether_bench_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      return await run({ TETHER_DATABASE_URL: ADMIN_URL.replace(/\/[^/]*$/, `/${name}`), TETHER_REDIS_URL: REDIS_URL, TETHER_REDIS_PREFIX: `${name}:` });
    } finally {
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
    }
  } finally {
    await admin.end();
  }
}

/** Publishes/s acknowledged (committed in PostgreSQL) from P concurrent publishers, each waiting for its ack. */
export async function durablePostgres(publishers: number, seconds: number): Promise<number> {
  return withDatabase(async (env) => {
    const target = await startTarget('tether', env);
    try {
      return await durableRate(target, publishers, seconds, CHANNEL);
    } finally {
      await target.stop();
    }
  });
}

export interface IdleCost {
  /** Server CPU while the connections idle, in % of one core. */
  cpuPercent: number;
  /** Server memory per connection (RSS growth / connections), bytes. */
  bytesPerConnection: number;
}

/**
 * N connected clients doing nothing but their heartbeats (Tether: at the pace the server asks of
 * idle clients; Socket.IO: its own ping/pong), for `seconds`.
 */
export async function idleCost(kind: Kind, n: number, seconds: number, env: Record<string, string> = {}): Promise<IdleCost> {
  const target = await startTarget(kind, env);
  try {
    await sleep(500);
    const before = rssBytes(target.pid);
    const clients = await connectMany(target, n, { heartbeat: true });
    await sleep(2000); // connection bursts settle
    const cpu0 = cpuMs(target.pid);
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const cpuPercent = ((cpuMs(target.pid) - cpu0) / (performance.now() - t0)) * 100;
    const bytesPerConnection = (rssBytes(target.pid) - before) / n;
    for (const client of clients) client.close();
    return { cpuPercent, bytesPerConnection };
  } finally {
    await target.stop();
  }
}

export interface ClusterFanout {
  nodes: number;
  /** Deliveries per second at full speed (subscribers spread over the nodes). */
  deliveriesPerSec: number;
  /** Server CPU (all nodes) per delivery, µs. */
  cpuUsPerDelivery: number;
  /** At a fixed rate: delivery latency to subscribers on the publisher's node and on the other one (the Redis hop). */
  sameNodeP50Ms: number;
  otherNodeP50Ms: number;
}

/** N subscribers spread over `nodes` processes on one PostgreSQL and one Redis; the publisher on the first. */
export async function clusterFanout(nodes: 1 | 2, n: number, seconds: number, rate: number): Promise<ClusterFanout> {
  return withDatabase(async (env) => {
    const targets: Target[] = [];
    try {
      for (let i = 0; i < nodes; i++) targets.push(await startTarget('tether', env));
      const subscribers = await Promise.all(targets.map((t, i) => connectMany(t, Math.floor(n / nodes) + (i < n % nodes ? 1 : 0))));
      let delivered = 0;
      const latencies: number[][] = targets.map(() => []);
      let measuring = false;
      await Promise.all(subscribers.flatMap((group, node) => group.map((s) => s.subscribe(CHANNEL, (data) => {
        delivered++;
        if (measuring) latencies[node]!.push(performance.now() - data.t);
      }))));
      const publisher = await connectClient(targets[0]!);
      for (let i = 0; i < 5; i++) await publisher.publish(CHANNEL, { t: performance.now() });
      await waitFor(() => delivered >= 5 * n, 20_000);

      // Latency at a fixed rate.
      delivered = 0;
      measuring = true;
      for (let i = 0; i < rate * seconds; i++) {
        void publisher.publish(CHANNEL, { t: performance.now() });
        await sleep(1000 / rate);
      }
      await waitFor(() => delivered >= rate * seconds * n, 30_000);
      measuring = false;

      // Throughput at full speed: at most 20 messages' worth of deliveries in flight.
      delivered = 0;
      const cpu0 = targets.map((t) => cpuMs(t.pid));
      const t0 = performance.now();
      const published = await publishFullSpeed(publisher, CHANNEL, n, seconds, () => delivered);
      await waitFor(() => delivered >= published * n, 60_000);
      const elapsed = (performance.now() - t0) / 1000;
      const cpu = targets.reduce((sum, t, i) => sum + cpuMs(t.pid) - cpu0[i]!, 0);
      for (const client of [...subscribers.flat(), publisher]) client.close();
      return {
        nodes,
        deliveriesPerSec: delivered / elapsed,
        cpuUsPerDelivery: (cpu * 1000) / delivered,
        sameNodeP50Ms: percentile(latencies[0]!, 50),
        otherNodeP50Ms: nodes > 1 ? percentile(latencies[1]!, 50) : NaN,
      };
    } finally {
      for (const target of targets) await target.stop();
    }
  });
}
