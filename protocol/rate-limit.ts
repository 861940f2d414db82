/**
 * A token bucket: `rate` frames per second on average, bursts up to `burst`. The server enforces
 * its rate limit with one per connection; the worker paces its writes with one below that limit.
 */
export class TokenBucket {
  private tokens: number;
  private last = Date.now();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Takes `count` tokens, all or none; false when the bucket holds fewer. */
  take(count = 1, now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < count) return false;
    this.tokens -= count;
    return true;
  }

  /** Whether the bucket has refilled completely (an idle bucket can be forgotten). */
  full(now = Date.now()): boolean {
    return this.tokens + ((now - this.last) / 1000) * this.rate >= this.burst;
  }
}
