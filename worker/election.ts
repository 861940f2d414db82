/**
 * Which tab's worker holds the socket when there is no SharedWorker: the holder of the Web Lock
 * `tether-leader`. A closed, crashed or navigated tab releases it and the next in line takes it.
 * A frozen tab (a phone's background tab) keeps holding it, so the leader says it is alive on a
 * BroadcastChannel; when it stays silent too long, the next in line steals the lock. Only one
 * worker is next in line (the holder of `tether-candidate`): the others wait behind it, so a
 * silent leader is replaced once, not by every tab at the same moment.
 */

const LEADER_LOCK = 'tether-leader';
const CANDIDATE_LOCK = 'tether-candidate';
const CHANNEL = 'tether-election';

export interface ElectionTiming {
  /** How often the leader says it is alive. @default 1000 */
  beatMs: number;
  /** How long the next in line waits for a sign of life before it takes over. @default 3500 */
  silenceMs: number;
}

export const DEFAULT_TIMING: ElectionTiming = { beatMs: 1000, silenceMs: 3500 };

type Message = { kind: 'leader'; leader: string; term: number } | { kind: 'who' };

export interface ElectionEvents {
  /**
   * This worker holds the lock, for `term`: resolves once its engine serves (only then is it
   * announced, so the followers' first calls find it listening); a rejection hands the lead back.
   */
  elected(term: number): Promise<void>;
  /** This worker lost the lock (stolen while it was frozen or silent): it is a follower again. */
  deposed(): void;
  /** Another worker leads. */
  follow(leader: string): void;
}

export class Election {
  readonly id = crypto.randomUUID();
  private readonly channel = new BroadcastChannel(CHANNEL);
  /** The leader this worker knows of; `term` is when it took the lock (a later one wins). */
  private leader: { id: string; term: number } | undefined;
  private lastSign = 0;
  private beat: ReturnType<typeof setInterval> | undefined;
  private closed = false;
  /** Releases the leader lock (set while this worker leads). */
  private release: (() => void) | undefined;
  /** Ends this worker's candidacy (set while it waits to be, or is, next in line). */
  private candidate: AbortController | undefined;
  /** Out of the running: its tab is frozen or in the back/forward cache. */
  private resigned = false;
  /** The latest term heard of: a new term is later, even if the clock went back. */
  private highestTerm = 0;
  /** Leading and announced (its engine serves). */
  private serving = false;

  constructor(
    private readonly events: ElectionEvents,
    private readonly timing: ElectionTiming = DEFAULT_TIMING,
  ) {
    this.channel.onmessage = (event: MessageEvent<Message>) => this.heard(event.data);
    this.channel.postMessage({ kind: 'who' } satisfies Message);
    this.candidacy();
  }

  get leading(): boolean {
    return this.release !== undefined;
  }

  /**
   * The tab is about to be frozen (or cached): hand the lead over now, rather than hold the lock
   * silent until the next in line steals it, and stay out of the running until `rejoin`.
   */
  resign(): void {
    if (this.resigned || this.closed) return;
    this.resigned = true;
    this.candidate?.abort();
    this.candidate = undefined;
    const release = this.release;
    if (release) {
      this.stepDown();
      release();
    }
  }

  /** The tab is active again: it may lead again, after the others in line. */
  rejoin(): void {
    if (!this.resigned || this.closed) return;
    this.resigned = false;
    this.candidacy();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.beat);
    this.channel.close();
  }

  private heard(message: Message): void {
    if (this.closed) return;
    if (message.kind === 'who') {
      this.announce();
      return;
    }
    this.highestTerm = Math.max(this.highestTerm, message.term);
    const known = this.leader;
    if (known?.id === message.leader) {
      this.lastSign = Date.now();
      return;
    }
    if (known && message.term < known.term) return; // a deposed leader that has not noticed yet
    if (known?.id === this.id) this.stepDown(); // it took the lock from this worker
    this.leader = { id: message.leader, term: message.term };
    this.lastSign = Date.now();
    this.events.follow(message.leader);
  }

  /** Waits to be next in line, then for the lead; holds the candidate lock until elected. */
  private candidacy(): void {
    if (this.resigned || this.closed) return;
    const candidate = new AbortController();
    this.candidate = candidate;
    void navigator.locks.request(CANDIDATE_LOCK, { signal: candidate.signal }, () => this.runForLeader(candidate.signal)).catch(() => {});
  }

  private runForLeader(resigned: AbortSignal): Promise<void> {
    return new Promise<void>((elected) => {
      const waiting = new AbortController();
      let done = false;
      // Resigned while next in line: out of the queue, and the candidate lock goes to the next.
      resigned.addEventListener('abort', () => {
        if (done) return;
        done = true;
        clearInterval(watch);
        waiting.abort();
        elected();
      });
      const take = (steal: boolean) => {
        const options: LockOptions = steal ? { steal: true } : { signal: waiting.signal };
        navigator.locks
          .request(LEADER_LOCK, options, () => {
            if (done) return; // resigned meanwhile: released at once
            done = true;
            this.candidate = undefined;
            clearInterval(watch);
            elected(); // the next worker becomes next in line
            return this.lead();
          })
          .catch((error: unknown) => {
            // Stolen from: a follower again.
            if (this.release !== undefined) return this.stepDown();
            // Aborted by this worker (it steals instead, or resigned).
            if (error instanceof DOMException && error.name === 'AbortError') return;
            // Anything else: out of the line (the next worker becomes next in line), and back in a while.
            if (done) return;
            done = true;
            clearInterval(watch);
            elected();
            console.error(`[tether] waiting for the leader lock failed (${String(error)}); trying again in 1 s`);
            setTimeout(() => this.candidacy(), 1000);
          });
      };
      this.lastSign = Date.now();
      const watch = setInterval(() => {
        if (this.closed || done || Date.now() - this.lastSign <= this.timing.silenceMs) return;
        clearInterval(watch);
        waiting.abort();
        take(true);
      }, Math.min(500, this.timing.silenceMs / 4));
      take(false);
    });
  }

  /** Holds the lock for as long as this worker lives (or until it is stolen or handed back). */
  private lead(): Promise<void> {
    const term = Math.max(Date.now(), this.highestTerm + 1);
    this.highestTerm = term;
    this.leader = { id: this.id, term };
    const held = new Promise<void>((release) => (this.release = release));
    this.events.elected(term).then(
      () => {
        if (this.release === undefined || this.leader?.term !== term) return; // stepped down meanwhile
        this.serving = true;
        this.announce();
        this.beat = setInterval(() => this.announce(), this.timing.beatMs);
      },
      (error: unknown) => {
        console.error(`[tether] could not take the lead (${String(error)}); another tab will`);
        this.resign();
        setTimeout(() => this.rejoin(), 1000);
      },
    );
    return held;
  }

  private announce(): void {
    if (this.serving && this.leader && !this.closed) this.channel.postMessage({ kind: 'leader', leader: this.leader.id, term: this.leader.term } satisfies Message);
  }

  private stepDown(): void {
    if (this.release === undefined) return;
    clearInterval(this.beat);
    this.beat = undefined;
    this.release = undefined;
    this.serving = false;
    if (this.leader?.id === this.id) this.leader = undefined;
    this.events.deposed();
    if (!this.closed) this.candidacy();
  }
}
