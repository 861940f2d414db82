/**
 * Group commit: every write submitted during one turn of the event loop is applied in one
 * durable transaction, then fanned out in order. One batch at a time keeps per-client order.
 */
import { performance } from 'node:perf_hooks';
import type { Broker } from './broker.js';
import type { WriteMetrics } from '../metrics.js';
import type { EventStore, WriteOutcome, WriteRequest } from '../storage/event-store.js';

interface Pending {
  request: WriteRequest;
  resolve: (outcome: WriteOutcome) => void;
  reject: (error: unknown) => void;
}

export class WriteQueue {
  private queue: Pending[] = [];
  private running = false;

  constructor(
    private readonly store: EventStore,
    private readonly broker: Broker,
    /** Counts each write's outcome and times each hand-over to the broker. */
    private readonly metrics?: WriteMetrics,
  ) {}

  submit(request: WriteRequest): Promise<WriteOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      try {
        const outcomes = await this.store.write(batch.map((p) => p.request));
        const metrics = this.metrics;
        outcomes.forEach((outcome, i) => {
          const start = metrics ? performance.now() : 0;
          if (outcome.status === 'stored') this.broker.publish(outcome.event);
          else if (outcome.status === 'committed') this.broker.publishDoc(outcome.change);
          if (metrics) {
            if (outcome.status === 'stored' || outcome.status === 'committed') metrics.published(outcome.status === 'stored' ? 'event' : 'doc', (performance.now() - start) / 1000);
            metrics.decided(batch[i]!.request, outcome);
          }
          batch[i]!.resolve(outcome);
        });
      } catch (error) {
        // Nothing of this batch was committed: every writer gets the error, clients resend.
        for (const pending of batch) pending.reject(error);
      }
    }
    this.running = false;
  }
}
