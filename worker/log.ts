/**
 * The worker's log for the inspector (`client.inspect()`): a ring of the last lines of one
 * connection's engine, because a SharedWorker's console is out of a developer's sight (it needs
 * chrome://inspect). Lines say what happened — states, handshakes, refusals, conflicts — never
 * a write's data or a token.
 */
import type { Inspection } from './api.js';

export type LogLine = Inspection['log'][number];
export type LogLevel = LogLine['level'];

/** Lines kept per engine. */
export const LOG_LINES = 300;

export class LogRing {
  private readonly lines: LogLine[] = [];
  /** Where the oldest line is once the ring is full. */
  private start = 0;

  constructor(
    private readonly capacity = LOG_LINES,
    /** Called after every line (the inspector pushes a new snapshot). */
    private readonly added: () => void = () => {},
  ) {}

  add(level: LogLevel, message: string): void {
    const line = { at: Date.now(), level, message };
    if (this.lines.length < this.capacity) this.lines.push(line);
    else {
      this.lines[this.start] = line;
      this.start = (this.start + 1) % this.capacity;
    }
    this.added();
  }

  /** The lines, oldest first. */
  list(): LogLine[] {
    return [...this.lines.slice(this.start), ...this.lines.slice(0, this.start)];
  }
}
