/**
 * A subscriber catching up: frames are numbered by a growing position (a channel offset, a
 * document version). Live frames are held while the past is read and sent, then each frame
 * goes out once, in order — none lost in between, none twice.
 */
/** Bytes of live frames held by all the catch-ups of one connection, and how many it may hold. */
export interface HeldBudget {
  used: number;
  readonly max: number;
}

export class CatchUp {
  private last = -1;
  private held: { position: number; frame: string }[] | undefined = [];
  private heldBytes = 0;

  /**
   * @param budget shared by every catch-up of a connection: live frames held beyond it call
   *   `overflow` (the subscriber does not keep up): slow catch-ups must not hold unbounded memory.
   */
  constructor(
    /** Sends a frame; returns false when it was dropped (the connection is closing). */
    private readonly send: (frame: string) => unknown,
    private readonly budget: HeldBudget = { used: 0, max: Infinity },
    private readonly overflow: () => void = () => {},
  ) {}

  /** The position of the last frame the client has. */
  get position(): number {
    return this.last;
  }

  /** A live frame from the broker: held until `release()`. */
  live(position: number, frame: string): void {
    if (!this.held) {
      this.deliver(position, frame);
      return;
    }
    if (this.budget.used + frame.length > this.budget.max) {
      this.discard();
      return this.overflow();
    }
    this.heldBytes += frame.length;
    this.budget.used += frame.length;
    this.held.push({ position, frame });
  }

  /** Drops what is held and gives its bytes back to the budget (the subscription ended). */
  discard(): void {
    this.budget.used -= this.heldBytes;
    this.heldBytes = 0;
    if (this.held) this.held = [];
  }

  /**
   * Sends a frame unless the client already has that position. True when it went out: not
   * skipped, and not refused by `send` (returning false: the connection is closing).
   */
  deliver(position: number, frame: string): boolean {
    if (position <= this.last) return false;
    this.last = position;
    return this.send(frame) !== false;
  }

  /** The client already has everything up to `position` (its resume point, or a state just sent). */
  skipTo(position: number): void {
    this.last = Math.max(this.last, position);
  }

  /** The past is sent: deliver what was held, and every live frame from now on. */
  release(): void {
    const held = this.held ?? [];
    this.discard();
    this.held = undefined;
    for (const { position, frame } of held) this.deliver(position, frame);
  }
}
