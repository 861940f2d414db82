import type { ErrorShape } from '../protocol/errors.js';
import type { Outcome } from './api.js';

interface Entry {
  settle: (outcome: Outcome<unknown>) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** In-flight requests awaiting the server's answer, each with its own deadline. */
export class PendingRequests {
  private readonly entries = new Map<number, Entry>();
  private nextId = 1;

  constructor(private readonly onSizeChange: () => void) {}

  get size(): number {
    return this.entries.size;
  }

  /** Reserves an id and a promise that settles on answer, failure or timeout. */
  open(timeoutMs: number): { id: number; outcome: Promise<Outcome<unknown>> } {
    const id = this.nextId++;
    const outcome = new Promise<Outcome<unknown>>((resolve) => {
      const timer = setTimeout(() => {
        this.settle(id, {
          ok: false,
          error: { code: 'timeout', message: `no answer from the server within ${timeoutMs} ms` },
        });
      }, timeoutMs);
      this.entries.set(id, { settle: resolve, timer });
    });
    this.onSizeChange();
    return { id, outcome };
  }

  settle(id: number, outcome: Outcome<unknown>): void {
    const entry = this.entries.get(id);
    if (!entry) return; // late answer after a timeout: nobody waits for it any more
    clearTimeout(entry.timer);
    this.entries.delete(id);
    entry.settle(outcome);
    this.onSizeChange();
  }

  /** Fails every request, e.g. when the connection drops. */
  failAll(error: ErrorShape): void {
    for (const id of [...this.entries.keys()]) this.settle(id, { ok: false, error });
  }
}
