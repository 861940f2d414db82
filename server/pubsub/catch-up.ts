/**
 * A subscriber catching up: frames are numbered by a growing position (a channel offset, a
 * document version). Live frames are held while the past is read and sent, then each frame
 * goes out once, in order — none lost in between, none twice.
 */
export class CatchUp {
  private last = -1;
  private held: { position: number; frame: string }[] | undefined = [];
  private heldBytes = 0;

  /**
   * @param maxHeldBytes live frames held beyond this many bytes call `overflow` (the subscriber
   *   does not keep up) and are dropped: a slow catch-up must not hold unbounded memory.
   */
  constructor(
    private readonly send: (frame: string) => void,
    private readonly maxHeldBytes = Infinity,
    private readonly overflow: () => void = () => {},
  ) {}

  /** The position of the last frame the client has. */
  get position(): number {
    return this.last;
  }

  /** A live frame from the broker: held until `release()`. */
  live(position: number, frame: string): void {
    if (!this.held) return this.deliver(position, frame);
    this.heldBytes += frame.length;
    if (this.heldBytes > this.maxHeldBytes) {
      this.held = [];
      this.heldBytes = 0;
      return this.overflow();
    }
    this.held.push({ position, frame });
  }

  /** Sends a frame unless the client already has that position. */
  deliver(position: number, frame: string): void {
    if (position <= this.last) return;
    this.last = position;
    this.send(frame);
  }

  /** The client already has everything up to `position` (its resume point, or a state just sent). */
  skipTo(position: number): void {
    this.last = Math.max(this.last, position);
  }

  /** The past is sent: deliver what was held, and every live frame from now on. */
  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const { position, frame } of held) this.deliver(position, frame);
  }
}
