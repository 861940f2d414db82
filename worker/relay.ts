/**
 * One tab's API where there is no SharedWorker: it forwards to the engine of the leader tab —
 * this tab's own worker or another tab's — and survives the leader going away. It keeps what
 * the tab asked for (subscriptions with how far they got, open documents, writes not settled)
 * and asks it again of the next leader:
 * - subscriptions resume after the last event the tab received: no gap, no repeat;
 * - writes are sent again with the keys the engine stored them under (`p:<tab>:<id>`,
 *   `t:<tab>:<n>`): one the old leader stored is found in the outbox, or its outcome is known,
 *   so none is stored twice and none is lost;
 * - calls in flight fail with `connection_lost` (they may or may not have run): never a hang.
 */
import { TAB_API_VERSION, type ChannelBatchListener, type ChannelDelivery, type ChannelListener, type DocListener, type HostMode, type InspectListener, type Outcome, type PendingWrite, type PresenceListener, type PublishedListener, type Registration, type Status, type StatusListener, type TabApi, type TabReadVersion, type TokenProvider, type TransactOutcome } from './api.js';
import type { Async, LeaderApi } from './bus.js';
import { returning } from './bus.js';
import { release } from './release.js';
import { checkedPresenceState } from './presence.js';

const CONNECTION_LOST = {
  ok: false,
  error: { code: 'connection_lost', message: 'the leader tab that held the connection went away before the answer arrived; the call may or may not have run' },
} as const;

/** How long the leader may take to attach a tab before it is asked again. */
const ATTACH_TIMEOUT_MS = 3000;

interface Subscription {
  channel: string;
  listener: ChannelListener | ChannelBatchListener;
  batched: boolean;
  /** The last position the tab received: where the next leader resumes. */
  position: { offset: number; epoch: string } | undefined;
  forward: ChannelListener | ChannelBatchListener;
  /** Asked of the current leader (set by subscribe or by a bind's replay, whichever comes first). */
  sent?: Promise<Outcome<null>>;
}

interface OpenDoc {
  doc: string;
  listener: DocListener;
  /** What the engine gets: a plain function, never the tab's proxy (an engine releases what it is given when it closes). */
  forward: DocListener;
  sent?: Promise<Outcome<null>>;
}

interface PresenceJoin {
  channel: string;
  listener: PresenceListener;
  forward: PresenceListener;
  /** The state the tab set last (given to the next leader after the join). */
  state: { value: unknown } | undefined;
  sent?: Promise<Outcome<null>>;
}

type WaitingWrite =
  | { kind: 'publish'; id: number; channel: string; data: unknown }
  | { kind: 'transact'; args: Parameters<TabApi['transact']>; settle: (outcome: Outcome<TransactOutcome>) => void };

export class TabRelay implements TabApi {
  private target: Async<TabApi> | undefined;
  /** The leader of the current generation (being attached to, or bound). */
  private leaderApi: LeaderApi | undefined;
  private generation = 0;
  private mode: HostMode = 'follower';
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly docs = new Map<string, OpenDoc>();
  private readonly presences = new Map<string, PresenceJoin>();
  /** Writes not settled yet, in the order the tab made them. */
  private readonly writes = new Map<number, WaitingWrite>();
  private nextWrite = 0;
  /** Where each waiting publish is in `writes`, by its id. */
  private readonly publishIds = new Map<number, number>();
  /** Publishes through the version-1 `publish`, by the negative id they travel under. */
  private readonly singles = new Map<number, (outcome: Outcome<{ offset: number | null }>) => void>();
  private nextSingle = 0;
  private readonly calls = new Set<(outcome: Outcome<unknown>) => void>();
  private readonly bindWaiters: (() => void)[] = [];
  private detached = false;
  private latest: Status | undefined;
  /** The tab's inspector, asked again of every new leader; `forward` is what the leader gets. */
  private inspector: { listener: InspectListener; forward: InspectListener } | undefined;

  constructor(
    private readonly registration: Registration,
    private readonly onStatus: StatusListener,
    private readonly getToken: TokenProvider | undefined,
    private readonly onPublished: PublishedListener | undefined,
    private readonly onDetach: () => void,
  ) {}

  /** Attaches the tab to `leader`'s engine and asks it again for everything still open. */
  async bind(leader: LeaderApi, mode: HostMode): Promise<void> {
    const generation = ++this.generation;
    this.leaderLost(mode);
    if (this.detached) return;
    this.leaderApi = leader;
    const current = () => generation === this.generation && !this.detached;
    const attach = () =>
      leader.attach(
        this.registration,
        (status) => {
          if (current()) this.tell(status);
        },
        this.getToken === undefined ? undefined : returning(() => this.getToken!()),
        (settled) => this.published(settled, generation),
      );
    let tab: Async<TabApi>;
    try {
      tab = await this.attempts(attach, current);
    } catch {
      return; // that leader went away: the election names the next one
    }
    if (!current()) {
      // Superseded while attaching: let that leader forget the tab, unless it is the one bound now.
      if (this.leaderApi !== leader) void Promise.resolve(tab.detach()).catch(() => {});
      return;
    }
    // Asked again in the order the tab asked: writes keep their order, subscriptions their place.
    for (const [id, sub] of this.subscriptions) sub.sent = this.subscribeOn(tab, id, sub);
    for (const [id, open] of this.docs) open.sent = this.openOn(tab, id, open);
    for (const [id, join] of this.presences) join.sent = this.presenceOn(tab, id, join);
    if (this.inspector) void this.inspectOn(tab, this.inspector.forward);
    let publishes: { id: number; channel: string; data: unknown }[] = [];
    const flush = () => {
      if (publishes.length > 0) void Promise.resolve(tab.publishMany(publishes)).catch(() => {});
      publishes = [];
    };
    for (const [n, write] of this.writes) {
      if (write.kind === 'publish') publishes.push({ id: write.id, channel: write.channel, data: write.data });
      else if (write.args[4] === undefined) {
        // Without a local number the engine cannot recognise it when sent again: it may or may not have been stored.
        this.writes.delete(n);
        write.settle(CONNECTION_LOST);
      } else {
        flush();
        this.sendTransact(tab, n, write);
      }
    }
    flush();
    this.target = tab;
    for (const wake of this.bindWaiters.splice(0)) wake();
    void Promise.resolve(tab.status()).then((status) => current() && this.tell(status), () => {});
  }

  /**
   * Attaches, asking again every ATTACH_TIMEOUT_MS while unanswered (a leader busy or a message
   * lost): the first answer counts (the leader keeps the latest attach of a tab, which is the
   * same tab). Rejects when every try failed, or when superseded.
   */
  private attempts(attach: () => Promise<Async<TabApi>>, current: () => boolean): Promise<Async<TabApi>> {
    return new Promise((resolve, reject) => {
      let tries = 0;
      let failures = 0;
      let settled = false;
      const end = () => {
        settled = true;
        clearInterval(timer);
      };
      const once = () => {
        tries++;
        attach().then(
          (tab) => {
            if (settled) return;
            end();
            resolve(tab);
          },
          (error: unknown) => {
            if (settled || ++failures < tries) return;
            end();
            reject(error instanceof Error ? error : new Error(String(error)));
          },
        );
      };
      const timer = setInterval(() => {
        if (settled) return;
        if (!current()) {
          end();
          reject(new Error('superseded'));
        } else once();
      }, ATTACH_TIMEOUT_MS);
      once();
    });
  }

  /** The leader this relay was bound to went away and none is known yet. */
  unbind(mode: HostMode): void {
    this.generation++;
    this.leaderApi = undefined;
    this.leaderLost(mode);
  }

  private leaderLost(mode: HostMode): void {
    this.target = undefined;
    this.mode = mode;
    for (const fail of [...this.calls]) fail(CONNECTION_LOST);
    // Until the next leader reports, the tab is offline (not the online of a leader that is gone).
    if (this.latest && !this.detached) this.tell({ ...this.latest, connection: 'offline', transport: null });
  }

  /** The last status the leader sent (the tab is told every change through onStatus). */
  status(): Status {
    return { ...(this.latest ?? { connection: 'connecting', pending: this.writes.size, lastSyncAt: null, error: null, transport: null }), mode: this.mode };
  }

  private tell(status: Status): void {
    this.latest = status;
    this.onStatus({ ...status, mode: this.mode });
  }

  apiVersion(): number {
    return TAB_API_VERSION;
  }

  async call(method: string, args: unknown[], options: { timeoutMs: number }): Promise<Outcome<unknown>> {
    const deadline = Date.now() + options.timeoutMs;
    const tab = await this.bound(options.timeoutMs);
    if (!tab) return { ok: false, error: { code: 'timeout', message: `no answer within ${options.timeoutMs} ms: no tab held the connection meanwhile (a new leader tab is being chosen); the call was not sent` } };
    return new Promise((resolve) => {
      const done = (outcome: Outcome<unknown>) => {
        if (!this.calls.delete(done)) return;
        resolve(outcome);
      };
      this.calls.add(done);
      Promise.resolve(tab.call(method, args, { timeoutMs: Math.max(1, deadline - Date.now()) })).then(done, () => done(CONNECTION_LOST));
    });
  }

  publish(channel: string, data: unknown): Promise<Outcome<{ offset: number | null }>> {
    return new Promise((resolve) => {
      const id = --this.nextSingle;
      this.singles.set(id, resolve);
      this.publishMany([{ id, channel, data }]);
    });
  }

  publishMany(publishes: { id: number; channel: string; data: unknown }[]): void {
    for (const publish of publishes) {
      this.writes.set(++this.nextWrite, { kind: 'publish', ...publish });
      this.publishIds.set(publish.id, this.nextWrite);
    }
    // Not bound: they go out, in order, when a leader is (see bind).
    if (this.target) void Promise.resolve(this.target.publishMany(publishes)).catch(() => {});
  }

  /**
   * Outcomes of publishes: an acknowledgement from any leader, old or new (the first counts); a
   * failure only from the current one, and never `connection_lost` (a deposed leader's refusal
   * to store it): the write goes to the next leader.
   */
  private published(settled: [number, Outcome<{ offset: number | null }>][], generation: number): void {
    const forTab: typeof settled = [];
    for (const [id, outcome] of settled) {
      if (!outcome.ok && (generation !== this.generation || outcome.error.code === 'connection_lost')) continue;
      const n = this.publishIds.get(id);
      if (n === undefined) continue; // settled already (told by an earlier leader)
      this.publishIds.delete(id);
      this.writes.delete(n);
      const single = this.singles.get(id);
      this.singles.delete(id);
      if (single) single(outcome);
      else forTab.push([id, outcome]);
    }
    if (forTab.length > 0) void Promise.resolve(this.onPublished?.(forTab)).catch(() => {});
  }

  transact(doc: string, reads: Record<string, TabReadVersion>, writes: Record<string, unknown>, final: boolean, local?: number): Promise<Outcome<TransactOutcome>> {
    return new Promise((settle) => {
      const n = ++this.nextWrite;
      const write: WaitingWrite = { kind: 'transact', args: [doc, reads, writes, final, local], settle };
      this.writes.set(n, write);
      if (this.target) this.sendTransact(this.target, n, write);
    });
  }

  private sendTransact(tab: Async<TabApi>, n: number, write: Extract<WaitingWrite, { kind: 'transact' }>): void {
    const generation = this.generation;
    const settle = (outcome: Outcome<TransactOutcome>) => {
      if (!outcome.ok && (generation !== this.generation || outcome.error.code === 'connection_lost')) return; // sent again to the next leader
      if (!this.writes.delete(n)) return;
      write.settle(outcome);
    };
    Promise.resolve(tab.transact(...write.args)).then(settle, () => {
      if (generation !== this.generation) return; // sent again to the next leader (see bind)
      settle({ ok: false, error: { code: 'internal', message: 'the leader tab could not take the transaction' } });
    });
  }

  async subscribe(id: string, channel: string, listener: ChannelListener | ChannelBatchListener, since?: { offset: number; epoch: string }, batched = false): Promise<Outcome<null>> {
    const sub: Subscription = { channel, listener, batched, position: since, forward: listener };
    const track = (delivery: ChannelDelivery) => {
      if (delivery.kind === 'subscribed' || delivery.kind === 'reset') sub.position = { offset: delivery.offset, epoch: delivery.epoch };
      else if (delivery.kind === 'event' && sub.position && delivery.offset > sub.position.offset) sub.position = { offset: delivery.offset, epoch: sub.position.epoch };
    };
    sub.forward = batched
      ? (deliveries: ChannelDelivery[]) => {
          for (const delivery of deliveries) track(delivery);
          return (listener as ChannelBatchListener)(deliveries);
        }
      : (delivery: ChannelDelivery) => {
          track(delivery);
          return (listener as ChannelListener)(delivery);
        };
    return this.register(this.subscriptions, id, sub, (tab) => this.subscribeOn(tab, id, sub));
  }

  /**
   * Keeps `entry` (a subscription, open document or presence join: what bind asks every new
   * leader for) and asks the leader for it now, or once one is bound.
   */
  private async register<E extends { sent?: Promise<Outcome<null>> }>(entries: Map<string, E>, id: string, entry: E, ask: (tab: Async<TabApi>) => Promise<Outcome<null>>): Promise<Outcome<null>> {
    entries.set(id, entry);
    if (this.target) return (entry.sent = ask(this.target));
    const tab = await this.bound();
    // Detached or removed meanwhile; or asked already by the bind that woke this call.
    if (!tab || entries.get(id) !== entry) return { ok: true, value: null };
    return (entry.sent ??= ask(tab));
  }

  private async subscribeOn(tab: Async<TabApi>, id: string, sub: Subscription): Promise<Outcome<null>> {
    try {
      const outcome = await tab.subscribe(id, sub.channel, sub.forward, sub.position, sub.batched);
      if (!outcome.ok && this.subscriptions.get(id) === sub) this.subscriptions.delete(id);
      return outcome;
    } catch {
      return { ok: true, value: null }; // the leader went away: the next one is asked again
    }
  }

  unsubscribe(id: string): void {
    this.unregister(this.subscriptions, id, (tab) => tab.unsubscribe(id));
  }

  /** Forgets what `register` kept under `id`, releases its listeners, and tells the leader. */
  private unregister(entries: Map<string, { listener: unknown; forward: unknown }>, id: string, tell: (tab: Async<TabApi>) => unknown): void {
    const entry = entries.get(id);
    entries.delete(id);
    if (!entry) return;
    release(entry.listener);
    this.leaderApi?.release?.(entry.forward);
    if (this.target) void Promise.resolve(tell(this.target)).catch(() => {});
  }

  async pendingWrites(): Promise<Outcome<PendingWrite[]>> {
    const tab = await this.bound();
    if (!tab) return { ok: false, error: { code: 'closed', message: 'this tab is not attached (was the client closed?)' } };
    return Promise.resolve(tab.pendingWrites()).catch(() => CONNECTION_LOST);
  }

  async openDoc(id: string, doc: string, listener: DocListener): Promise<Outcome<null>> {
    const open: OpenDoc = { doc, listener, forward: (snapshot) => listener(snapshot) };
    return this.register(this.docs, id, open, (tab) => this.openOn(tab, id, open));
  }

  private openOn(tab: Async<TabApi>, id: string, open: OpenDoc): Promise<Outcome<null>> {
    // The leader went away: the next one is asked again.
    return Promise.resolve(tab.openDoc(id, open.doc, open.forward)).catch(() => ({ ok: true, value: null }) as const);
  }

  closeDoc(id: string): void {
    this.unregister(this.docs, id, (tab) => tab.closeDoc(id));
  }

  async clearConflicts(doc: string): Promise<void> {
    const tab = await this.bound();
    await Promise.resolve(tab?.clearConflicts(doc)).catch(() => {});
  }

  async presenceJoin(id: string, channel: string, listener: PresenceListener): Promise<Outcome<null>> {
    const join: PresenceJoin = { channel, listener, forward: (snapshot) => listener(snapshot), state: undefined };
    return this.register(this.presences, id, join, (tab) => this.presenceOn(tab, id, join));
  }

  /** Joins on `tab` (a new leader), with the state the tab set last. */
  private async presenceOn(tab: Async<TabApi>, id: string, join: PresenceJoin): Promise<Outcome<null>> {
    let outcome: Outcome<null>;
    try {
      // A leader tab still running an older worker (a deploy while tabs are open) has no presence.
      if ((await Promise.resolve(tab.apiVersion()).catch(() => 1)) < 3) {
        outcome = { ok: false, error: { code: 'worker_unavailable', message: "the leader tab runs an older Tether worker without presence; it updates once every tab of this site was reloaded" } };
      } else {
        outcome = await tab.presenceJoin(id, join.channel, join.forward);
        // The latest state the tab set, also one set while this join was on its way (see presenceSet).
        if (outcome.ok && join.state !== undefined) await tab.presenceSet(id, join.state.value);
      }
    } catch {
      return { ok: true, value: null }; // the leader went away: the next one is asked again
    }
    if (!outcome.ok && this.presences.get(id) === join) {
      this.presences.delete(id);
      this.leaderApi?.release?.(join.forward);
    }
    return outcome;
  }

  async presenceSet(id: string, state: unknown): Promise<Outcome<null>> {
    const join = this.presences.get(id);
    if (!join) return { ok: false, error: { code: 'closed', message: 'this presence was left; join the channel again' } };
    // Checked here too: a refused state must not replace the last good one for the next leader.
    const checked = checkedPresenceState(state);
    if (!checked.ok) return checked;
    // Recorded first: a join on its way to a new leader sets it after joining, never an older one.
    join.state = { value: checked.value };
    const sent = join.sent;
    if (sent) await sent;
    const target = this.target;
    if (!target || this.presences.get(id) !== join) return { ok: true, value: null }; // set on the next leader after its join
    return Promise.resolve(target.presenceSet(id, state)).catch(() => ({ ok: true, value: null }) as const);
  }

  presenceLeave(id: string): void {
    this.unregister(this.presences, id, (tab) => tab.presenceLeave(id));
  }

  async inspect(listener: InspectListener): Promise<Outcome<null>> {
    this.stopInspect();
    // The leader's engine reports its own mode: this tab's is said here, as in its statuses.
    const forward: InspectListener = (inspection) => listener({ ...inspection, mode: this.mode });
    this.inspector = { listener, forward };
    // Not bound: asked of the leader once there is one (see bind).
    return this.target ? this.inspectOn(this.target, forward) : { ok: true, value: null };
  }

  private inspectOn(tab: Async<TabApi>, forward: InspectListener): Promise<Outcome<null>> {
    // A leader that went away (or an older one without `inspect`): the next one is asked again.
    return Promise.resolve(tab.inspect(forward)).catch(() => ({ ok: true, value: null }) as const);
  }

  stopInspect(): void {
    const inspector = this.inspector;
    this.inspector = undefined;
    if (!inspector) return;
    release(inspector.listener);
    this.leaderApi?.release?.(inspector.forward);
    if (this.target) void Promise.resolve(this.target.stopInspect()).catch(() => {});
  }

  detach(): void {
    if (this.detached) return;
    this.stopInspect();
    this.detached = true;
    if (this.target) void Promise.resolve(this.target.detach()).catch(() => {});
    this.target = undefined;
    for (const fail of [...this.calls]) fail({ ok: false, error: { code: 'closed', message: 'the client was closed' } });
    for (const wake of this.bindWaiters.splice(0)) wake();
    for (const sub of this.subscriptions.values()) release(sub.listener);
    for (const { listener } of this.docs.values()) release(listener);
    for (const { listener } of this.presences.values()) release(listener);
    release(this.onStatus);
    if (this.getToken) release(this.getToken);
    if (this.onPublished) release(this.onPublished);
    this.onDetach();
  }

  /** The leader's API for this tab once there is one (undefined: detached, or `timeoutMs` passed). */
  private bound(timeoutMs?: number): Promise<Async<TabApi> | undefined> {
    if (this.target || this.detached) return Promise.resolve(this.target);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(this.target);
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.bindWaiters.splice(this.bindWaiters.indexOf(wake) >>> 0, 1);
              resolve(undefined);
            }, timeoutMs);
      this.bindWaiters.push(wake);
    });
  }
}
