/**
 * A normal client's RPC latency on a quiet server, and while hostile clients attack it: a flood
 * of junk frames (reconnecting each time the server closes them for it) and a catch-up storm
 * (subscribes from offset 0 of a large history, by clients that never read). The server runs
 * with its default limits, except connections per address (every client here is on loopback).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { startTarget, type Target } from './targets.js';
import { DEFAULT_CONFIG } from '../server/config.js';

export interface AttackPlan {
  /** Seconds each phase (quiet, attacked) measures. */
  seconds: number;
  /** Events of ~60 KB stored in the channel the storm catches up on. */
  historyEvents: number;
  /** Connections flooding junk frames. */
  junkConnections: number;
  /** Connections storming catch-ups (each sends `stormSubscribes` subscribes, reads nothing). */
  stormConnections: number;
  stormSubscribes: number;
}

export interface AttackResult {
  quiet: { p50: number; p99: number; calls: number };
  attacked: { p50: number; p99: number; calls: number };
  junkFramesSent: number;
  junkConnectionsClosed: number;
  stormSubscribesSent: number;
}

const API_KEY = 'bench-key';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Attackers connect from another loopback address than the normal client, as they would from another host. */
const ATTACKER_ADDRESS = '127.0.0.2';
/**
 * A refused attacker (HTTP 429: new connections per address) tries again after this long. A
 * connection flood without pause is a different attack, for the network in front of the server.
 */
const REFUSED_RETRY_MS = 50;

async function open(port: number, localAddress?: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, localAddress === undefined ? {} : { localAddress });
  await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
  ws.on('error', () => {}); // closes under attack are expected
  return ws;
}

async function handshaken(port: number, localAddress?: string): Promise<WebSocket> {
  const ws = await open(port, localAddress);
  const welcome = new Promise<void>((resolve) => ws.once('message', () => resolve()));
  ws.send(JSON.stringify({ type: 'handshake', v: 1, clientId: randomUUID() }));
  await welcome;
  return ws;
}

/** Calls hello(['world']) one after another, 10 ms apart, for `seconds`; returns each call's latency. */
async function measureRpc(port: number, seconds: number): Promise<number[]> {
  const ws = await handshaken(port);
  const latencies: number[] = [];
  let id = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const callId = ++id;
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('a normal RPC call got no answer in 10 s')), 10_000);
      const onMessage = (raw: WebSocket.RawData) => {
        const message = JSON.parse(raw.toString()) as { id?: number };
        if (message.id !== callId) return;
        clearTimeout(timer);
        ws.off('message', onMessage);
        resolve();
      };
      ws.on('message', onMessage);
      ws.send(JSON.stringify({ type: 'rpc', id: callId, method: 'hello', args: ['world'] }));
    });
    latencies.push(performance.now() - t0);
    await sleep(10);
  }
  ws.close();
  return latencies;
}

export async function rpcUnderAttack(plan: AttackPlan): Promise<AttackResult> {
  const target: Target = await startTarget('tether', {
    TETHER_API_KEY: API_KEY,
    TETHER_RATE_LIMIT: '2000',
    TETHER_MAX_SUBSCRIPTIONS: '100',
    TETHER_MAX_BUFFERED_BYTES: String(8 * 1024 * 1024),
    TETHER_HEARTBEAT_MS: '2000',
    // The defaults, as a server on the internet runs (startTarget raises them for the load tests).
    TETHER_CONNECT_RATE_PER_IP: String(DEFAULT_CONFIG.connectRatePerIp),
    TETHER_MAX_CONNECTIONS_PER_IP: String(DEFAULT_CONFIG.maxConnectionsPerIp),
  });
  try {
    const payload = 'x'.repeat(60_000);
    for (let i = 0; i < plan.historyEvents; i++) {
      const response = await fetch(`http://127.0.0.1:${target.port}/api/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ channel: 'big', data: { i, payload } }),
      });
      if (!response.ok) throw new Error(`seeding the history failed: HTTP ${response.status}`);
    }
    const epochWs = await handshaken(target.port);
    const epoch = await new Promise<string>((resolve) => {
      epochWs.on('message', (raw) => {
        const message = JSON.parse(raw.toString()) as { type: string; epoch?: string };
        if (message.type === 'subscribed') resolve(message.epoch!);
      });
      epochWs.send(JSON.stringify({ type: 'subscribe', channel: 'big' }));
    });
    epochWs.close();

    const quiet = await measureRpc(target.port, plan.seconds);

    // The attackers run in their own process, so that their work does not delay the measuring
    // client's event loop (they still share the machine's 2 cores with it and the server).
    const attacker = spawn(process.execPath, [fileURLToPath(new URL('./under-attack.js', import.meta.url)), 'attack', String(target.port), epoch, JSON.stringify(plan)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const report = new Promise<Record<string, number>>((resolve, reject) => {
      let out = '';
      attacker.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      attacker.once('exit', () => {
        try {
          resolve(JSON.parse(out) as Record<string, number>);
        } catch {
          reject(new Error(`the attacker process reported nothing: ${out}`));
        }
      });
    });
    let attacked: number[];
    try {
      await sleep(1000); // let the attack build up
      attacked = await measureRpc(target.port, plan.seconds);
    } finally {
      attacker.kill('SIGTERM');
    }
    const { junkFramesSent = 0, junkConnectionsClosed = 0, stormSubscribesSent = 0 } = await report;
    return {
      quiet: { p50: percentile(quiet, 50), p99: percentile(quiet, 99), calls: quiet.length },
      attacked: { p50: percentile(attacked, 50), p99: percentile(attacked, 99), calls: attacked.length },
      junkFramesSent,
      junkConnectionsClosed,
      stormSubscribesSent,
    };
  } finally {
    await target.stop();
  }
}

/** A connection from the attackers' address, or undefined after a refusal and a pause. */
async function attackerConnection(port: number): Promise<{ ws: WebSocket; closed: Promise<void> } | undefined> {
  const ws = await handshaken(port, ATTACKER_ADDRESS).catch(() => undefined);
  if (!ws) {
    await sleep(REFUSED_RETRY_MS);
    return undefined;
  }
  return { ws, closed: new Promise<void>((resolve) => ws.once('close', () => resolve())) };
}

/** The attacker process: floods and storms `port` until SIGTERM, then prints what it sent. */
async function attack(port: number, epoch: string, plan: AttackPlan): Promise<void> {
  let running = true;
  const sent = { junkFramesSent: 0, junkConnectionsClosed: 0, stormSubscribesSent: 0 };
  process.once('SIGTERM', () => (running = false));
  // Never outlive the run that started us (if it crashed, nobody sends SIGTERM).
  setTimeout(() => (running = false), (plan.seconds + 30) * 1000).unref();
  const junk = async () => {
    while (running) {
      const connection = await attackerConnection(port);
      if (!connection) continue;
      const { ws, closed } = connection;
      // Past the junk limit (20): the server closes with 4005, the attacker comes back.
      for (let i = 0; i < 25 && ws.readyState === ws.OPEN; i++) {
        ws.send(i % 2 ? '{"type":"nope"' : `{"type":"publish","seq":"x","channel":${JSON.stringify('!'.repeat(300))}}`);
        sent.junkFramesSent++;
      }
      await Promise.race([closed, sleep(2000)]);
      sent.junkConnectionsClosed++;
      ws.terminate();
    }
  };
  const storm = async () => {
    while (running) {
      const connection = await attackerConnection(port);
      if (!connection) continue;
      const { ws, closed } = connection;
      // Never read: the server must not buffer the history for us.
      (ws as unknown as { _socket: { pause(): void } })._socket.pause();
      for (let i = 0; i < plan.stormSubscribes; i++) {
        ws.send(JSON.stringify({ type: 'subscribe', channel: i % 3 === 0 ? 'big' : `big${i % 7}`, since: { offset: 0, epoch } }));
        sent.stormSubscribesSent++;
      }
      await Promise.race([closed, sleep(3000)]);
      ws.terminate();
    }
  };
  await Promise.all([...Array.from({ length: plan.junkConnections }, junk), ...Array.from({ length: plan.stormConnections }, storm)]);
  process.stdout.write(JSON.stringify(sent));
  process.exit(0);
}

if (process.argv[2] === 'attack' && process.argv[1] === fileURLToPath(import.meta.url)) {
  void attack(Number(process.argv[3]), process.argv[4]!, JSON.parse(process.argv[5]!) as AttackPlan);
}
