import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { pino } from 'pino';
import { OrderedStreams } from './ordered-streams.js';

const silent = pino({ level: 'silent' });

/** A store of items 1…head per key, read with a random delay, as a networked database answers. */
class FakeStore {
  head = 0;
  reads = 0;
  down = false;
  constructor(private readonly delay: () => number) {}
  private wait(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, this.delay()));
  }
  async readAfter(_key: string, from: number): Promise<{ items: number[]; more: boolean }> {
    this.reads++;
    await this.wait();
    if (this.down) throw new Error('store down');
    const upTo = Math.min(this.head, from + 7); // pages of 7, to exercise paging
    return { items: Array.from({ length: Math.max(0, upTo - from) }, (_, i) => from + i + 1), more: upTo < this.head };
  }
  position(item: number): number {
    return item;
  }
  /** StreamSource's `head(key)`. */
  readonly headOf = async (): Promise<{ position: number }> => {
    await this.wait();
    if (this.down) throw new Error('store down');
    return { position: this.head };
  };
}

function streamsOver(store: FakeStore): OrderedStreams<number> {
  return new OrderedStreams<number>({ head: store.headOf, readAfter: (k, f) => store.readAfter(k, f), position: (i) => i }, silent, 'channel');
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('ordered streams: notifications lost, late, early or repeated still deliver every item once, in order', () => {
  it('model: random commits, notifications and listeners', async () => {
    type Step =
      | { op: 'commit'; n: number }
      | { op: 'notify'; back: number; times: number }
      | { op: 'listen' }
      | { op: 'poll' }
      | { op: 'outage'; on: boolean }
      | { op: 'wait' };
    const step: fc.Arbitrary<Step> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ op: fc.constant('commit' as const), n: fc.integer({ min: 1, max: 4 }) }) },
      { weight: 6, arbitrary: fc.record({ op: fc.constant('notify' as const), back: fc.integer({ min: 0, max: 6 }), times: fc.integer({ min: 0, max: 2 }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('listen' as const) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('poll' as const) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('outage' as const), on: fc.boolean() }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('wait' as const) }) },
    );
    const seed = Number(process.env.TETHER_SEED ?? Date.now() % 2 ** 31);
    console.log(`ordered-streams model: seed ${seed} (TETHER_SEED=${seed} to replay)`);
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 60 }), fc.integer({ min: 0, max: 3 }), async (steps, maxDelay) => {
        const store = new FakeStore(() => Math.floor(Math.random() * (maxDelay + 1)));
        const streams = streamsOver(store);
        const listeners: { headWhenReady: number; failed: boolean; got: number[]; ready: Promise<void> }[] = [];
        const listen = () => {
          // The promise: every item after a point no later than the store's head when `ready` resolves.
          const entry = { headWhenReady: Infinity, failed: false, got: [] as number[], ready: Promise.resolve() };
          entry.ready = streams.listen('k', (item) => void entry.got.push(item)).ready.then(() => void (entry.headWhenReady = store.head), () => void (entry.failed = true));
          listeners.push(entry);
        };
        listen();
        for (const s of steps) {
          switch (s.op) {
            case 'commit':
              store.head += s.n;
              break;
            case 'notify': {
              const item = store.head - s.back;
              for (let i = 0; i < s.times && item >= 1; i++) streams.offer('k', item);
              break;
            }
            case 'listen':
              listen();
              break;
            case 'poll':
              streams.known('k', store.head);
              break;
            case 'outage':
              store.down = s.on;
              break;
            case 'wait':
              await settle();
              break;
          }
        }
        // The outage ends; polls run until every listener is at the head.
        store.down = false;
        const behind = (l: (typeof listeners)[number]) => !l.failed && (l.got.at(-1) ?? l.headWhenReady) < store.head;
        for (let i = 0; i < 200 && listeners.some(behind); i++) {
          streams.known('k', store.head);
          if (!streams.has('k')) listen(); // a head read failed: the stream was dropped, as the broker does
          await settle();
        }
        for (const l of listeners) {
          // A listener whose stream's head could not be read was told so (ready rejected) and gets nothing.
          if (l.failed) {
            expect(l.got).toEqual([]);
            continue;
          }
          // Consecutive from where it joined (no later than the head then), up to the head, each once.
          const first = l.got[0] ?? store.head + 1;
          expect(first).toBeLessThanOrEqual(l.headWhenReady + 1);
          expect(l.got).toEqual(Array.from({ length: store.head - first + 1 }, (_, i) => first + i));
        }
      }),
      { seed, numRuns: 60 },
    );
  }, 60_000);

  it('a notification two ahead waits for the one between, read from the store once', async () => {
    const store = new FakeStore(() => 0);
    const streams = streamsOver(store);
    const got: number[] = [];
    const { ready } = streams.listen('k', (item) => void got.push(item));
    await ready;
    store.head = 3;
    streams.offer('k', 3);
    streams.offer('k', 1);
    await settle();
    expect(got).toEqual([1, 2, 3]);
    expect(store.reads).toBe(1);
    streams.offer('k', 2);
    streams.offer('k', 3);
    expect(got).toEqual([1, 2, 3]);
  });

  it('items nobody announced are found by a poll', async () => {
    const store = new FakeStore(() => 0);
    const streams = streamsOver(store);
    const got: number[] = [];
    await streams.listen('k', (item) => void got.push(item)).ready;
    store.head = 2; // a publisher killed between its commit and its notification
    await settle();
    expect(got).toEqual([]);
    streams.known('k', 2);
    await settle();
    expect(got).toEqual([1, 2]);
  });
});
