/**
 * What the Prometheus metrics cost: durable publishes with and without a scraper fetching
 * GET /metrics every second, and one scrape (size, time, server CPU) of a server with connections
 * and traffic. The server is given an API key; the scraper sends it, as Prometheus would.
 */
import { performance } from 'node:perf_hooks';
import { connectClient, connectMany, cpuMs, durableRate, percentile, sleep, startTarget, type Target } from './targets.js';

const API_KEY = 'bench-key';
const CHANNEL = 'bench';

/** One GET /metrics with the key; throws unless 200. */
async function scrape(target: Target): Promise<{ ms: number; bytes: number; text: string }> {
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${target.port}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } });
  const body = Buffer.from(await res.arrayBuffer());
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${body.toString().slice(0, 200)}`);
  return { ms, bytes: body.length, text: body.toString() };
}

export interface ScrapedDurable {
  /** Publishes/s acknowledged. */
  rate: number;
  /** Scrapes made while it ran (0 without the scraper). */
  scrapes: number;
  /** Server CPU per acknowledged publish, µs (the publishers' connecting included): less moved by other load on the machine than the rate. */
  cpuUsPerPublish: number;
}

/**
 * The durable row (P publishers, each awaiting its ack, fsync on) on a fresh server with an API
 * key; with `scraper`, GET /metrics every `intervalMs` from the start until the publishers stop.
 */
export async function durableScraped(publishers: number, seconds: number, scraper: boolean, intervalMs = 1000): Promise<ScrapedDurable> {
  const target = await startTarget('tether', { TETHER_API_KEY: API_KEY });
  try {
    let scrapes = 0;
    let stop = false;
    const scraping = scraper
      ? (async () => {
          const t0 = performance.now();
          while (!stop) {
            await scrape(target);
            scrapes++;
            const next = t0 + scrapes * intervalMs;
            while (!stop && performance.now() < next) await sleep(Math.min(50, next - performance.now()));
          }
        })()
      : Promise.resolve();
    const cpu0 = cpuMs(target.pid);
    const t0 = performance.now();
    const rate = await durableRate(target, publishers, seconds, CHANNEL);
    const publishes = (rate * (performance.now() - t0)) / 1000;
    const cpu = cpuMs(target.pid) - cpu0;
    stop = true;
    await scraping;
    return { rate, scrapes, cpuUsPerPublish: (cpu * 1000) / publishes };
  } finally {
    await target.stop();
  }
}

export interface ScrapeCost {
  /** Response body, bytes (uncompressed: the server does not compress it). */
  bytes: number;
  /** Sample lines (series) in the answer. */
  series: number;
  /** Wall time of one scrape (request until the body is read), sequential scrapes: p50, p99 ms. */
  p50Ms: number;
  p99Ms: number;
  /** Server CPU per scrape, ms: CPU over back-to-back scrapes minus the traffic's CPU at the rate measured just before. */
  cpuMsPerScrape: number;
  /** Deliveries/s to the subscribers while it ran (the traffic). */
  deliveriesPerSec: number;
}

/**
 * A server with `connections` subscribers of one channel and a publisher at `rate`/s (durable
 * publishes, so every metric family moves); `scrapes` GET /metrics back to back after 3 unmeasured.
 */
export async function scrapeCost(connections: number, rate: number, scrapes: number, baselineSeconds: number): Promise<ScrapeCost> {
  const target = await startTarget('tether', { TETHER_API_KEY: API_KEY });
  try {
    const subscribers = await connectMany(target, connections);
    let delivered = 0;
    await Promise.all(subscribers.map((s) => s.subscribe(CHANNEL, () => delivered++)));
    const publisher = await connectClient(target);
    let stop = false;
    const publishing = (async () => {
      const t0 = performance.now();
      for (let i = 0; !stop; i++) {
        void publisher.publish(CHANNEL, { t: performance.now() });
        await sleep(Math.max(0, t0 + ((i + 1) * 1000) / rate - performance.now()));
      }
    })();
    try {
      await sleep(1000); // traffic settles
      for (let i = 0; i < 3; i++) await scrape(target); // JIT
      // The traffic's own CPU, just before the scrapes.
      const d0 = delivered;
      const b0 = cpuMs(target.pid);
      const bt0 = performance.now();
      await sleep(baselineSeconds * 1000);
      const baselinePerMs = (cpuMs(target.pid) - b0) / (performance.now() - bt0);
      const deliveriesPerSec = ((delivered - d0) * 1000) / (performance.now() - bt0);
      const c0 = cpuMs(target.pid);
      const t0 = performance.now();
      const times: number[] = [];
      let last = { bytes: 0, text: '' };
      for (let i = 0; i < scrapes; i++) {
        const s = await scrape(target);
        times.push(s.ms);
        last = s;
      }
      const elapsed = performance.now() - t0;
      const cpu = cpuMs(target.pid) - c0 - baselinePerMs * elapsed;
      return {
        bytes: last.bytes,
        series: last.text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).length,
        p50Ms: percentile(times, 50),
        p99Ms: percentile(times, 99),
        cpuMsPerScrape: cpu / scrapes,
        deliveriesPerSec,
      };
    } finally {
      stop = true;
      await publishing;
      for (const client of [...subscribers, publisher]) client.close();
    }
  } finally {
    await target.stop();
  }
}
