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
});
