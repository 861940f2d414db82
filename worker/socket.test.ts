import { describe, expect, it } from 'vitest';
import { reconnectOptions } from './socket.js';

describe('reconnect options', () => {
  it('turn off the socket library queue (the worker queues nothing in memory)', () => {
    expect(reconnectOptions().maxEnqueuedMessages).toBe(0);
  });

  it('draw a new random delay on every read, within the documented bounds', () => {
    const options = reconnectOptions();
    const mins = Array.from({ length: 200 }, () => options.minReconnectionDelay!);
    const maxes = Array.from({ length: 200 }, () => options.maxReconnectionDelay!);
    expect(Math.min(...mins)).toBeGreaterThanOrEqual(100);
    expect(Math.max(...mins)).toBeLessThanOrEqual(1000);
    expect(new Set(mins).size).toBeGreaterThan(150);
    expect(Math.min(...maxes)).toBeGreaterThanOrEqual(5000);
    expect(Math.max(...maxes)).toBeLessThanOrEqual(10000);
    // Spread: clients cut at once must not all retry within the same 100 ms.
    expect(Math.max(...mins) - Math.min(...mins)).toBeGreaterThan(500);
  });
});
