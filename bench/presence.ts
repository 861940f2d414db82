/**
 * Presence rows: N load clients (raw `ws`, speaking the protocol directly: a handshake with a
 * clientId in development mode, then `{"type":"presence","channel":…,"tabs":1}`) on one channel.
 *
 *   join storm — every client joins at once; until every client's latest members frame lists N
 *   state churn — one client sets its state at a fixed rate; what the others receive, and when
 *   leave      — a client's socket closes; until the others see it gone (the linger, then a frame)
 *
 * The peer for the join storm is `naive-presence` (peer-servers.ts): no coalescing, a joiner gets
 * the list and every join goes to every other connection as its own frame.
 *
 * Members frames are read with string searches, not JSON.parse: with 500 members a frame is tens
 * of KB, and the load generator shares the 2 cores with the server under test.
 */
import { randomUUID } from 'node:crypto';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { cpuMs, percentile, sleep, type Target } from './targets.js';

const CHANNEL = 'bench-presence';
const JOIN = JSON.stringify({ type: 'presence', channel: CHANNEL, tabs: 1 });
const TOTAL = /"total":(\d+)\}$/;

interface PresenceSocket {
  readonly ws: WebSocket;
  /** `client:<clientId>` on Tether (the member id in development mode). */
  readonly member: string;
  /** Presence frames received (members frames on Tether; list, join and leave frames on the naive peer). */
  frames: number;
  /** Bytes of those frames. */
  bytes: number;
  /** Members as this client last saw them (Tether: the latest frame's `total`). */
  total: number;
  /** When `total` last changed (performance.now()). */
  totalAt: number;
  /** Called with each presence frame of Tether, with its arrival time. */
  onFrame: ((text: string, at: number) => void) | undefined;
  /** Error frames received (none expected). */
  errors: string[];
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
}

async function presenceSocket(target: Target): Promise<PresenceSocket> {
  const naive = target.kind === 'naive-presence';
  const clientId = randomUUID();
  const ws = new WebSocket(naive ? `ws://127.0.0.1:${target.port}` : `ws://127.0.0.1:${target.port}/ws`);
  await opened(ws);
  const socket: PresenceSocket = { ws, member: `client:${clientId}`, frames: 0, bytes: 0, total: 0, totalAt: 0, onFrame: undefined, errors: [] };
  const seen = (total: number, at: number) => {
    if (total !== socket.total) {
      socket.total = total;
      socket.totalAt = at;
    }
  };
  let welcomed: (() => void) | undefined;
  ws.on('message', (raw) => {
    const at = performance.now();
    const text = raw.toString();
    if (naive) {
      socket.frames++;
      socket.bytes += text.length;
      if (text.startsWith('{"type":"join"')) seen(socket.total + 1, at);
      else if (text.startsWith('{"type":"leave"')) seen(socket.total - 1, at);
      else if (text.startsWith('{"type":"presence"')) seen(Number(TOTAL.exec(text)?.[1] ?? NaN), at);
    } else if (text.startsWith('{"type":"presence"')) {
      socket.frames++;
      socket.bytes += text.length;
      seen(Number(TOTAL.exec(text)?.[1] ?? NaN), at);
      socket.onFrame?.(text, at);
    } else if (text.startsWith('{"type":"welcome"')) welcomed?.();
    else if (text.startsWith('{"type":"error"')) socket.errors.push(text);
  });
  if (!naive) {
    const welcome = new Promise<void>((resolve) => (welcomed = resolve));
    ws.send(JSON.stringify({ type: 'handshake', v: 1, clientId }));
    await welcome;
  }
  return socket;
}

/** `n` presence clients of `target`, connected (and welcomed) 200 at a time. */
async function connectPresence(target: Target, n: number): Promise<PresenceSocket[]> {
  const sockets: PresenceSocket[] = [];
  for (let i = 0; i < n; i += 200) sockets.push(...(await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => presenceSocket(target)))));
  return sockets;
}

async function until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!done()) {
    if (performance.now() - start > timeoutMs) throw new Error(`presence bench: timed out waiting for ${what}`);
    await sleep(5);
  }
}

function closeAll(sockets: PresenceSocket[]): void {
  for (const s of sockets) s.ws.terminate();
}

function checkErrors(sockets: PresenceSocket[]): void {
  const errors = sockets.flatMap((s) => s.errors);
  if (errors.length > 0) throw new Error(`presence bench: ${errors.length} error frame(s), first: ${errors[0]}`);
}

/** Joins every socket and waits until each one's latest frame lists them all. */
async function joinAll(sockets: PresenceSocket[], timeoutMs = 60_000): Promise<void> {
  for (const s of sockets) s.ws.send(JOIN);
  await until(() => sockets.every((s) => s.total === sockets.length), timeoutMs, `${sockets.length} clients to see each other`);
}

export interface JoinStorm {
  /** From the first join sent until the last client's frame listing all N. */
  convergenceMs: number;
  /** Presence frames each client received until it saw all N (its own included): median and max over clients. */
  framesMedian: number;
  framesMax: number;
  /** Bytes of those frames per client (median). */
  bytesMedian: number;
  /** Server CPU from the first join until convergence, ms. */
  serverCpuMs: number;
}

/** N connected clients join one channel as fast as the load generator sends the frames. */
export async function joinStorm(target: Target, n: number): Promise<JoinStorm> {
  const sockets = await connectPresence(target, n);
  try {
    await sleep(300); // the connection burst settles
    const converged = new Map<PresenceSocket, { at: number; frames: number; bytes: number }>();
    const cpu0 = cpuMs(target.pid);
    const t0 = performance.now();
    for (const s of sockets) s.ws.send(JOIN);
    await until(
      () => {
        for (const s of sockets) if (!converged.has(s) && s.total === n) converged.set(s, { at: s.totalAt, frames: s.frames, bytes: s.bytes });
        return converged.size === n;
      },
      60_000,
      `${n} clients to see all ${n} members`,
    );
    const serverCpuMs = cpuMs(target.pid) - cpu0;
    checkErrors(sockets);
    const all = [...converged.values()];
    return {
      convergenceMs: Math.max(...all.map((c) => c.at)) - t0,
      framesMedian: percentile(all.map((c) => c.frames), 50),
      framesMax: Math.max(...all.map((c) => c.frames)),
      bytesMedian: percentile(all.map((c) => c.bytes), 50),
      serverCpuMs,
    };
  } finally {
    closeAll(sockets);
  }
}

export interface StateChurn {
  /** States set (sent) by the one setting client. */
  sets: number;
  /** Members frames per second per receiving client while the sets ran: median, min and max over receivers. */
  framesPerSecMedian: number;
  framesPerSecMin: number;
  framesPerSecMax: number;
  /** From a set until a receiver's frame shows it or a later state (a coalesced-away state counts as seen then), ms, over every (receiver, set). */
  p50Ms: number;
  p99Ms: number;
  /** Bytes of one members frame with N members and the state. */
  frameBytes: number;
  /** Server CPU while the sets ran, % of one core. */
  serverCpuPercent: number;
  /** The load generator's own event-loop delay p99 while the sets ran, ms (its lateness is in the latencies). */
  loadLoopP99Ms: number;
}

const STATE_AT = /"state":\{"x":(\d+)\}/;

/** N clients joined; one sets its state `rate` times a second for `seconds`; the others measure. */
export async function stateChurn(target: Target, n: number, rate: number, seconds: number): Promise<StateChurn> {
  const sockets = await connectPresence(target, n);
  try {
    await joinAll(sockets);
    await sleep(300); // the join frames are out
    checkErrors(sockets);
    const [setter, ...receivers] = sockets as [PresenceSocket, ...PresenceSocket[]];
    const total = Math.max(1, Math.round(rate * seconds));
    const sentAt: number[] = [];
    const latencies: number[] = [];
    let frameBytes = 0;
    let t0 = 0;
    let tEnd = Infinity;
    const state = receivers.map((s) => {
      const r = { seenUpTo: -1, frames: 0 };
      s.onFrame = (text, at) => {
        if (at >= t0 && at <= tEnd) r.frames++;
        // The setter's entry: its id, then user, tabs, devices, state (members.ts builds it in that order).
        const i = text.indexOf(`"id":"${setter.member}"`);
        if (i < 0) return;
        const x = STATE_AT.exec(text.slice(i, i + 200));
        if (!x) return;
        frameBytes = text.length;
        const j = Number(x[1]);
        for (let k = r.seenUpTo + 1; k <= j; k++) latencies.push(at - sentAt[k]!);
        if (j > r.seenUpTo) r.seenUpTo = j;
      };
      return r;
    });
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    const cpu0 = cpuMs(target.pid);
    t0 = performance.now();
    // Every set that is due is sent, so the rate holds when a timer is late.
    for (let i = 0; i < total; ) {
      const due = t0 + (i * 1000) / rate;
      const now = performance.now();
      if (now < due) {
        await sleep(due - now);
        continue;
      }
      sentAt[i] = performance.now();
      setter.ws.send(JSON.stringify({ type: 'presence', channel: CHANNEL, tabs: 1, state: { x: i } }));
      i++;
    }
    // The window is the sets' schedule: `total` sets at `rate` span total/rate seconds.
    await sleep(Math.max(0, t0 + (total * 1000) / rate - performance.now()));
    tEnd = performance.now();
    const serverCpuMs = cpuMs(target.pid) - cpu0;
    loop.disable();
    await until(() => state.every((r) => r.seenUpTo === total - 1), 30_000, 'every receiver to see the last state');
    checkErrors(sockets);
    const windowS = (tEnd - t0) / 1000;
    const perSec = state.map((r) => r.frames / windowS);
    return {
      sets: total,
      framesPerSecMedian: percentile(perSec, 50),
      framesPerSecMin: Math.min(...perSec),
      framesPerSecMax: Math.max(...perSec),
      p50Ms: percentile(latencies, 50),
      p99Ms: percentile(latencies, 99),
      frameBytes,
      serverCpuPercent: (serverCpuMs / (tEnd - t0)) * 100,
      loadLoopP99Ms: loop.percentile(99) / 1e6,
    };
  } finally {
    closeAll(sockets);
  }
}

/** N clients joined; `leaves` of them close their sockets one after another. Returns, for each, ms until every remaining client saw it gone. */
export async function leaveTimes(target: Target, n: number, leaves: number): Promise<number[]> {
  const sockets = await connectPresence(target, n);
  try {
    await joinAll(sockets);
    await sleep(300);
    const times: number[] = [];
    for (let k = 0; k < leaves; k++) {
      const leaving = sockets[k]!;
      const staying = sockets.slice(k + 1);
      const expected = n - k - 1;
      const t0 = performance.now();
      leaving.ws.terminate();
      await until(() => staying.every((s) => s.total === expected), 70_000, `the others to see client ${k + 1} gone`);
      times.push(Math.max(...staying.map((s) => s.totalAt)) - t0);
      await sleep(100);
    }
    checkErrors(sockets);
    return times;
  } finally {
    closeAll(sockets);
  }
}
