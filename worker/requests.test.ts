import { describe, expect, it, vi } from 'vitest';
import { PendingRequests } from './requests.js';

describe('PendingRequests', () => {
  it('settles each request once, by id, and reports its size', async () => {
    const sizes: number[] = [];
    const requests = new PendingRequests(() => sizes.push(requests.size));
    const a = requests.open(1000);
    const b = requests.open(1000);
    expect(b.id).not.toBe(a.id);
    requests.settle(b.id, { ok: true, value: 'b' });
    requests.settle(b.id, { ok: true, value: 'late duplicate' });
    requests.settle(a.id, { ok: false, error: { code: 'not_found', message: 'x' } });
    expect(await b.outcome).toEqual({ ok: true, value: 'b' });
    expect(await a.outcome).toEqual({ ok: false, error: { code: 'not_found', message: 'x' } });
    expect(sizes).toEqual([1, 2, 1, 0]);
  });

  it('times out a request that gets no answer', async () => {
    vi.useFakeTimers();
    const requests = new PendingRequests(() => {});
    const { outcome } = requests.open(500);
    vi.advanceTimersByTime(500);
    expect(await outcome).toMatchObject({ ok: false, error: { code: 'timeout' } });
    expect(requests.size).toBe(0);
    vi.useRealTimers();
  });

  it('fails everything in flight at once', async () => {
    const requests = new PendingRequests(() => {});
    const outcomes = [requests.open(1000), requests.open(1000)].map((r) => r.outcome);
    requests.failAll({ code: 'connection_lost', message: 'gone' });
    expect(await Promise.all(outcomes)).toEqual([
      { ok: false, error: { code: 'connection_lost', message: 'gone' } },
      { ok: false, error: { code: 'connection_lost', message: 'gone' } },
    ]);
  });
});
