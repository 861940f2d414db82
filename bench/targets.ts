/**
 * Servers under test, each in its own process (so its CPU and memory are its own), and the
 * clients that load them. Tether's clients speak its wire protocol directly (raw `ws`), so the
 * load generator costs the same for every server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { io, type Socket } from 'socket.io-client';

/** `naive-presence` speaks only presence (bench/presence.ts); every other row loads the first three. */
export type Kind = 'tether' | 'socketio' | 'ws' | 'naive-presence';

export interface Target {
  kind: Kind;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

const CLK_TCK = 100; // Linux USER_HZ

/** CPU time (user + system) the process has used, in milliseconds. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** Resident memory of the process, in bytes. */
export function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line?.match(/(\d+)/)?.[1] ?? 0) * 1024;
}

export async function startTarget(kind: Kind, env: Record<string, string> = {}): Promise<Target> {
  const child: ChildProcess =
    kind === 'tether'
      ? spawn(process.execPath, ['server/dist/server/index.js'], {
          env: {
            ...process.env,
            PORT: '0',
            HOST: '127.0.0.1',
            TETHER_DB: join(mkdtempSync(join(tmpdir(), 'tether-bench-')), 'events.db'),
            TETHER_LOG_LEVEL: 'info',
            // The product's default limits, except the per-address ones: every load client is on
            // loopback, one address for thousands of connections. A row that needs more says so.
            TETHER_MAX_CONNECTIONS: '100000',
            TETHER_MAX_CONNECTIONS_PER_IP: '100000',
            TETHER_CONNECT_RATE_PER_IP: '100000',
            ...env,
          },
          stdio: ['ignore', 'pipe', 'inherit'],
        })
      : spawn(process.execPath, ['dist/bench/peer-servers.js', kind], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${kind} did not start`)), 15_000);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      // Tether logs JSON ({"msg":"listening","port":…}); the peers print "listening <port>".
      const peer = /^listening (\d+)$/.exec(line);
      let port: number | undefined = peer ? Number(peer[1]) : undefined;
      if (port === undefined && line.startsWith('{')) {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === 'listening') port = entry.port;
      }
      if (port !== undefined) {
        clearTimeout(timer);
        resolve(port);
      }
    });
  });
  return {
    kind,
    port,
    pid: child.pid!,
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A connected client of any kind: can subscribe, publish, and be closed. */
export interface LoadClient {
  /** Resolves once the server confirmed the subscription. */
  subscribe(channel: string, onMessage: (data: { t: number }) => void): Promise<void>;
  /** Tether: resolves when the server acknowledged (stored) it; peers: when sent. */
  publish(channel: string, data: { t: number }): Promise<void>;
  close(): void;
}

/**
 * `heartbeat`: a Tether client pings at the pace the server's welcome asks of an idle client, as
 * the worker does (Socket.IO's client answers its server's pings by itself; raw ws has none).
 */
export async function connectClient(target: Target, { heartbeat = false }: { heartbeat?: boolean } = {}): Promise<LoadClient> {
  if (target.kind === 'socketio') return socketIoClient(target.port);
  if (target.kind === 'ws') return wsClient(target.port);
  if (target.kind === 'naive-presence') throw new Error('the naive-presence peer speaks only presence (bench/presence.ts)');
  return tetherClient(target.port, heartbeat);
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
}

async function tetherClient(port: number, heartbeat: boolean): Promise<LoadClient> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  await opened(ws);
  let seq = 0;
  const acks = new Map<number, () => void>();
  const subscribed = new Map<string, () => void>();
  const listeners = new Map<string, (data: { t: number }) => void>();
  let welcomed!: (pace: number) => void;
  const welcome = new Promise<number>((resolve) => (welcomed = resolve));
  ws.on('message', (raw) => {
    const message = JSON.parse(raw.toString()) as { type: string; seq?: number; channel?: string; data?: { t: number }; heartbeatMs?: number; idleHeartbeatMs?: number };
    if (message.type === 'event') listeners.get(message.channel!)?.(message.data!);
    else if (message.type === 'ack') {
      acks.get(message.seq!)?.();
      acks.delete(message.seq!);
    } else if (message.type === 'subscribed') subscribed.get(message.channel!)?.();
    else if (message.type === 'welcome') welcomed(message.idleHeartbeatMs ?? message.heartbeatMs ?? 2000);
  });
  ws.send(JSON.stringify({ type: 'handshake', v: 1, clientId: randomUUID() }));
  const pace = await welcome;
  // Spread over the interval, as browsers that opened at different times are.
  let pinger: NodeJS.Timeout | undefined;
  if (heartbeat) {
    setTimeout(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      pinger = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: 'ping', t: Date.now() })), pace);
    }, Math.random() * pace).unref();
  }
  ws.once('close', () => clearInterval(pinger));
  return {
    subscribe(channel, onMessage) {
      listeners.set(channel, onMessage);
      return new Promise((resolve) => {
        subscribed.set(channel, resolve);
        ws.send(JSON.stringify({ type: 'subscribe', channel }));
      });
    },
    publish(channel, data) {
      const id = ++seq;
      return new Promise((resolve) => {
        acks.set(id, resolve);
        ws.send(JSON.stringify({ type: 'publish', seq: id, channel, data }));
      });
    },
    close: () => ws.terminate(),
  };
}

async function wsClient(port: number): Promise<LoadClient> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`);
  await opened(ws);
  let listener: ((data: { t: number }) => void) | undefined;
  ws.on('message', (raw) => listener?.(JSON.parse(raw.toString()) as { t: number }));
  return {
    async subscribe(_channel, onMessage) {
      listener = onMessage; // a raw broadcast has no channels: every client gets every message
    },
    async publish(_channel, data) {
      ws.send(JSON.stringify(data));
    },
    close: () => ws.terminate(),
  };
}

async function socketIoClient(port: number): Promise<LoadClient> {
  const socket: Socket = io(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true, reconnection: false });
  await new Promise<void>((resolve, reject) => socket.once('connect', () => resolve()).once('connect_error', reject));
  return {
    async subscribe(channel, onMessage) {
      socket.on('msg', onMessage);
      await new Promise<void>((resolve) => socket.emit('join', channel, () => resolve()));
    },
    async publish(channel, data) {
      socket.emit('pub', channel, data);
    },
    close: () => socket.disconnect(),
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** `n` clients of `target`, connected 200 at a time. */
export async function connectMany(target: Target, n: number, options: { heartbeat?: boolean } = {}): Promise<LoadClient[]> {
  const clients: LoadClient[] = [];
  for (let i = 0; i < n; i += 200) {
    clients.push(...(await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => connectClient(target, options)))));
  }
  return clients;
}

export async function waitFor(done: () => boolean, timeoutMs: number): Promise<void> {
  const start = performance.now();
  while (!done()) {
    if (performance.now() - start > timeoutMs) throw new Error('timed out waiting for deliveries');
    await sleep(5);
  }
}

/** Publishes/s acknowledged (stored) from P concurrent publishers of `target`, each waiting for its ack, for `seconds`. */
export async function durableRate(target: Target, publishers: number, seconds: number, channel: string): Promise<number> {
  const clients = await connectMany(target, publishers);
  let acked = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(clients.map(async (client) => {
    while (performance.now() < end) {
      await client.publish(channel, { t: 0 });
      acked++;
    }
  }));
  const rate = acked / ((performance.now() - t0) / 1000);
  for (const client of clients) client.close();
  return rate;
}

/**
 * Publishes as fast as `n` subscribers take the deliveries, keeping at most 20 messages' worth in
 * flight (for every server alike), for `seconds`; returns how many were published.
 */
export async function publishFullSpeed(publisher: LoadClient, channel: string, n: number, seconds: number, delivered: () => number): Promise<number> {
  const t0 = performance.now();
  let published = 0;
  while (performance.now() - t0 < seconds * 1000) {
    if (published * n - delivered() < 20 * n) {
      void publisher.publish(channel, { t: performance.now() });
      published++;
    } else await new Promise((resolve) => setImmediate(resolve));
  }
  return published;
}
