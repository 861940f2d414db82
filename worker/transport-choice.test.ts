/**
 * The choice of transport for each connection attempt: WebSocket first, long polling after
 * WebSockets failed twice in a row (refused, or killed soon after opening), a WebSocket again
 * when long polling fails too, and back to WebSockets when a probe socket gets through.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TransportChoice, type TransportKind, type WebSocketClass } from './transport-choice.js';

/** A WebSocket stand-in the test opens and closes by hand (only probes and attempts use it). */
class FakeSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static made: FakeSocket[] = [];
  closedWith: number | undefined;
  constructor(readonly url: string) {
    super();
    FakeSocket.made.push(this);
  }
  open(): void {
    this.dispatchEvent(new Event('open'));
  }
  fail(): void {
    this.dispatchEvent(new Event('close'));
  }
  close(code = 1000): void {
    this.closedWith = code;
  }
}

/** An unreachable server: a long-polling attempt fails at once (and is not looked at). */
const URL = 'ws://127.0.0.1:9/ws';

function choice(transports?: TransportKind[]): { choice: TransportChoice; upgrades: number[]; attempt: () => TransportKind } {
  const upgrades: number[] = [];
  const c = new TransportChoice({ WebSocket: FakeSocket as unknown as WebSocketClass, transports, upgrade: () => upgrades.push(Date.now()) });
  return {
    choice: c,
    upgrades,
    attempt: () => {
      new c.socketClass(URL);
      return c.current;
    },
  };
}

beforeEach(() => {
  FakeSocket.made = [];
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
});
afterEach(() => vi.useRealTimers());

describe('which transport an attempt uses', () => {
  it('WebSocket first; long polling after two failed WebSocket attempts in a row, not after one', () => {
    const { choice: c, attempt } = choice();
    expect(attempt()).toBe('websocket');
    c.ended(false);
    expect(attempt()).toBe('websocket');
    c.ended(false);
    expect(attempt()).toBe('long-polling');
  });

  it('an attempt ended several times counts once; a planned end (another token) counts never', () => {
    const { choice: c, attempt } = choice();
    attempt();
    c.ended(false);
    c.ended(false);
    c.ended(false);
    expect(attempt()).toBe('websocket');
    c.ended(true);
    expect(attempt()).toBe('websocket');
    c.ended(true);
    expect(attempt()).toBe('websocket');
  });

  it('a WebSocket killed within seconds of coming online counts as failed; one that stayed resets the count', () => {
    const { choice: c, attempt } = choice();
    attempt();
    c.online();
    vi.advanceTimersByTime(1000);
    c.ended(false);
    attempt();
    c.online();
    vi.advanceTimersByTime(6000); // stable: the network lets WebSockets through
    c.ended(false);
    expect(attempt()).toBe('websocket');
    c.online();
    vi.advanceTimersByTime(500);
    c.ended(false);
    expect(attempt()).toBe('websocket'); // one failure since the stable one
    c.ended(false);
    expect(attempt()).toBe('long-polling');
  });

  it('long polling failing too (the network is down) gives the WebSocket a turn, then long polling again', () => {
    const { choice: c, attempt } = choice();
    attempt();
    c.ended(false);
    attempt();
    c.ended(false);
    expect(attempt()).toBe('long-polling');
    c.ended(false);
    expect(attempt()).toBe('websocket');
    c.ended(false);
    expect(attempt()).toBe('long-polling');
    c.online();
    vi.advanceTimersByTime(10_000);
    c.ended(false); // a long-polling connection that lasted: stay on it (WebSockets were blocked)
    expect(attempt()).toBe('long-polling');
  });

  it('forced transports are kept to', () => {
    const ws = choice(['websocket']);
    for (let i = 0; i < 5; i++) {
      expect(ws.attempt()).toBe('websocket');
      ws.choice.ended(false);
    }
    const lp = choice(['long-polling']);
    expect(lp.attempt()).toBe('long-polling');
    lp.choice.ended(false);
    expect(lp.attempt()).toBe('long-polling');
  });
});

describe('back to WebSockets', () => {
  function onLongPolling() {
    const made = choice();
    made.attempt();
    made.choice.ended(false);
    made.attempt();
    made.choice.ended(false);
    expect(made.attempt()).toBe('long-polling');
    made.choice.online();
    return made;
  }

  it('a probe socket that opens and stays open moves the link back (and the next attempt is a WebSocket)', () => {
    const { choice: c, upgrades, attempt } = onLongPolling();
    const before = FakeSocket.made.length;
    vi.advanceTimersByTime(3700);
    expect(FakeSocket.made.length).toBe(before + 1);
    const probe = FakeSocket.made.at(-1)!;
    probe.open();
    vi.advanceTimersByTime(999);
    expect(upgrades).toHaveLength(0); // it must stay open first
    vi.advanceTimersByTime(2);
    expect(upgrades).toHaveLength(1);
    expect(probe.closedWith).toBe(1000);
    c.ended(true);
    expect(attempt()).toBe('websocket');
  });

  it('a WebSocket that gets through the probe but dies within seconds sends the link back at once, and the next probe waits longer (no flapping)', () => {
    const { choice: c, upgrades, attempt } = onLongPolling();
    const probeAfter: number[] = [];
    for (let round = 0; round < 3; round++) {
      const since = Date.now();
      const before = FakeSocket.made.length;
      for (let waited = 0; FakeSocket.made.length === before; waited += 100) {
        if (waited > 120_000) throw new Error(`no probe in round ${round}`);
        vi.advanceTimersByTime(100);
      }
      probeAfter.push(Date.now() - since);
      FakeSocket.made.at(-1)!.open();
      vi.advanceTimersByTime(1001);
      expect(upgrades).toHaveLength(round + 1);
      c.ended(true);
      expect(attempt()).toBe('websocket');
      c.online();
      vi.advanceTimersByTime(2000); // killed by the network 2 s after its welcome
      c.ended(false);
      expect(attempt()).toBe('long-polling'); // one failure is enough after a probe
      c.online();
    }
    expect(probeAfter[1]!).toBeGreaterThan(probeAfter[0]! * 1.1);
    expect(probeAfter[2]!).toBeGreaterThan(probeAfter[1]! * 1.1);
  });

  it('a probe killed right after opening does not move the link; probes go on, further apart', () => {
    const { upgrades } = onLongPolling();
    const times: number[] = [];
    const start = Date.now();
    for (let i = 0; i < 4; i++) {
      const before = FakeSocket.made.length;
      for (let waited = 0; FakeSocket.made.length === before; waited += 100) {
        if (waited > 60_000) throw new Error(`no probe ${i + 1} within 60 s`);
        vi.advanceTimersByTime(100);
      }
      times.push(Date.now() - start);
      const probe = FakeSocket.made.at(-1)!;
      probe.open();
      vi.advanceTimersByTime(200);
      probe.fail();
    }
    expect(upgrades).toHaveLength(0);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps[2]!).toBeGreaterThan(gaps[0]!);
  });

  it('no probe once the link is offline (the probe is closed with it)', () => {
    const { choice: c } = onLongPolling();
    vi.advanceTimersByTime(3700);
    const probe = FakeSocket.made.at(-1)!;
    c.ended(false);
    expect(probe.closedWith).toBe(1000);
    const count = FakeSocket.made.length;
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.made.length).toBe(count);
  });
});
