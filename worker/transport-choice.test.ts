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

interface Made {
  choice: TransportChoice;
  upgrades: number[];
  attempt: () => TransportKind;
  /** Ends the current attempt and lets the reachability check answer. */
  end: (planned: boolean) => Promise<void>;
  /** What the reachability check answers (plain HTTP to the server works). */
  http: { reachable: boolean };
}

function choice(transports?: TransportKind[]): Made {
  const upgrades: number[] = [];
  const http = { reachable: true };
  const c = new TransportChoice({ WebSocket: FakeSocket as unknown as WebSocketClass, transports, upgrade: () => upgrades.push(Date.now()), reachable: async () => http.reachable });
  return {
    choice: c,
    upgrades,
    http,
    attempt: () => {
      new c.socketClass(URL);
      return c.current;
    },
    end: async (planned) => {
      c.ended(planned);
      for (let i = 0; i < 5; i++) await Promise.resolve();
    },
  };
}

beforeEach(() => {
  FakeSocket.made = [];
  // Probe delays are jittered ±20%: fixed here, so "further apart" compares the schedule, not luck.
  vi.spyOn(Math, 'random').mockReturnValue(0.5);
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('which transport an attempt uses', () => {
  it('WebSocket first; long polling after two failed WebSocket attempts in a row, not after one', async () => {
    const { end, attempt } = choice();
    expect(attempt()).toBe('websocket');
    await end(false);
    expect(attempt()).toBe('websocket');
    await end(false);
    expect(attempt()).toBe('long-polling');
  });

  it('an attempt ended several times counts once; a planned end (another token) counts never', async () => {
    const { end, attempt } = choice();
    attempt();
    await end(false);
    await end(false);
    await end(false);
    expect(attempt()).toBe('websocket');
    await end(true);
    expect(attempt()).toBe('websocket');
    await end(true);
    expect(attempt()).toBe('websocket');
  });

  it('a WebSocket killed within seconds of coming online counts as failed; one that stayed resets the count', async () => {
    const { choice: c, end, attempt } = choice();
    attempt();
    c.online();
    vi.advanceTimersByTime(1000);
    await end(false);
    attempt();
    c.online();
    vi.advanceTimersByTime(6000); // stable: the network lets WebSockets through
    await end(false);
    expect(attempt()).toBe('websocket');
    c.online();
    vi.advanceTimersByTime(500);
    await end(false);
    expect(attempt()).toBe('websocket'); // one failure since the stable one
    await end(false);
    expect(attempt()).toBe('long-polling');
  });

  it('long polling failing too (the network is down) gives the WebSocket a turn, then long polling again', async () => {
    const { choice: c, end, attempt } = choice();
    attempt();
    await end(false);
    attempt();
    await end(false);
    expect(attempt()).toBe('long-polling');
    await end(false);
    expect(attempt()).toBe('websocket');
    await end(false);
    expect(attempt()).toBe('long-polling');
    c.online();
    vi.advanceTimersByTime(10_000);
    await end(false); // a long-polling connection that lasted: stay on it (WebSockets were blocked)
    expect(attempt()).toBe('long-polling');
  });

  it('an outage (plain HTTP does not reach the server either) never sends the link to long polling', async () => {
    const { end, attempt, http } = choice();
    http.reachable = false;
    for (let i = 0; i < 6; i++) {
      expect(attempt()).toBe('websocket');
      await end(false);
    }
    http.reachable = true; // the network is back, WebSockets refused
    expect(attempt()).toBe('websocket');
    await end(false);
    expect(attempt()).toBe('websocket');
    await end(false);
    expect(attempt()).toBe('long-polling');
  });

  it('forced transports are kept to', async () => {
    const ws = choice(['websocket']);
    for (let i = 0; i < 5; i++) {
      expect(ws.attempt()).toBe('websocket');
      await ws.end(false);
    }
    const lp = choice(['long-polling']);
    expect(lp.attempt()).toBe('long-polling');
    await lp.end(false);
    expect(lp.attempt()).toBe('long-polling');
  });
});

describe('back to WebSockets', () => {
  async function onLongPolling() {
    const made = choice();
    made.attempt();
    await made.end(false);
    made.attempt();
    await made.end(false);
    expect(made.attempt()).toBe('long-polling');
    made.choice.online();
    return made;
  }

  it('a probe socket that opens and stays open moves the link back (and the next attempt is a WebSocket)', async () => {
    const { choice: c, end, upgrades, attempt } = await onLongPolling();
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
    await end(true);
    expect(attempt()).toBe('websocket');
  });

  it('a WebSocket that gets through the probe but dies within seconds sends the link back at once, and the next probe waits longer (no flapping)', async () => {
    const { choice: c, end, upgrades, attempt } = await onLongPolling();
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
      await end(true);
      expect(attempt()).toBe('websocket');
      c.online();
      vi.advanceTimersByTime(2000); // killed by the network 2 s after its welcome
      await end(false);
      expect(attempt()).toBe('long-polling'); // one failure is enough after a probe
      c.online();
    }
    expect(probeAfter[1]!).toBeGreaterThan(probeAfter[0]! * 1.1);
    expect(probeAfter[2]!).toBeGreaterThan(probeAfter[1]! * 1.1);
  });

  it('a probe killed right after opening does not move the link; probes go on, further apart', async () => {
    const { upgrades } = await onLongPolling();
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

  it('no probe once the link is offline (the probe is closed with it)', async () => {
    const { end } = await onLongPolling();
    vi.advanceTimersByTime(3700);
    const probe = FakeSocket.made.at(-1)!;
    await end(false);
    expect(probe.closedWith).toBe(1000);
    const count = FakeSocket.made.length;
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.made.length).toBe(count);
  });
});
