import { describe, expect, it } from 'vitest';
import { CatchUp } from './catch-up.js';

describe('CatchUp', () => {
  it('holds live frames while the past is sent, then sends each position once, in order', () => {
    const sent: string[] = [];
    const feed = new CatchUp((frame) => sent.push(frame));
    feed.live(5, 'e5'); // arrives while history is read
    feed.live(6, 'e6');
    feed.skipTo(2); // the client has up to 2
    for (const n of [2, 3, 4, 5]) feed.deliver(n, `e${n}`); // history: 2 is skipped, 5 is in both
    expect(sent).toEqual(['e3', 'e4', 'e5']);
    feed.release();
    feed.live(6, 'e6 again');
    feed.live(7, 'e7');
    expect(sent).toEqual(['e3', 'e4', 'e5', 'e6', 'e7']);
    expect(feed.position).toBe(7);
  });

  it('holds at most the shared budget across the catch-ups of a connection, and gives bytes back', () => {
    const budget = { used: 0, max: 10 };
    let overflows = 0;
    const a = new CatchUp(() => {}, budget, () => overflows++);
    const b = new CatchUp(() => {}, budget, () => overflows++);
    a.live(1, 'aaaa');
    b.live(1, 'bbbb');
    expect(budget.used).toBe(8);
    a.release(); // delivered: its 4 bytes are free again
    expect(budget.used).toBe(4);
    b.live(2, 'bbbb');
    expect(overflows).toBe(0);
    b.live(3, 'bbb'); // 8 + 3 > 10
    expect(overflows).toBe(1);
    expect(budget.used).toBe(0); // the overflowing feed dropped what it held
    const c = new CatchUp(() => {}, budget, () => overflows++);
    c.live(1, 'cccccc');
    c.discard(); // unsubscribed while catching up
    expect(budget.used).toBe(0);
  });
});
