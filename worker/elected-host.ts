/**
 * The host where there is no SharedWorker: each tab runs this in a dedicated Worker. The
 * election picks one of them to run the engine (worker/hub.ts) and hold the socket; every tab,
 * the leader's own included, reaches that engine through a relay (worker/relay.ts) that moves to
 * the next leader when this one goes away. The engine is the SharedWorker's, unchanged.
 */
import * as Comlink from 'comlink';
import type { PublishedListener, Registration, StatusListener, TabApi, TokenProvider, WorkerApi, WorkerStats } from './api.js';
import { BusLeader, LeaderClient, leaderInbox, type LeaderApi } from './bus.js';
import type { EngineDeps } from './connection.js';
import { Election, type ElectionTiming } from './election.js';
import { Hub } from './hub.js';
import { takeLead } from './db.js';
import { TabRelay } from './relay.js';

export class ElectedHost implements WorkerApi {
  private readonly election: Election;
  private readonly client: LeaderClient;
  private readonly relays = new Set<TabRelay>();
  private hub: Hub | undefined;
  private bus: BusLeader | undefined;
  private readonly inbox = leaderInbox();
  /** The leader the relays are bound to (undefined: none known yet). */
  private leader: { id: string; api: LeaderApi } | undefined;

  constructor(
    private readonly deps: EngineDeps,
    timing?: ElectionTiming,
  ) {
    this.election = new Election({ elected: (term) => this.lead(term), deposed: () => this.stepDown(), follow: (id) => this.follow(id) }, timing);
    this.client = new LeaderClient(this.election.id);
  }

  async attach(registration: Registration, onStatus: StatusListener, getToken?: TokenProvider, onPublished?: PublishedListener): Promise<TabApi & Comlink.ProxyMarked> {
    const relay: TabRelay = new TabRelay(registration, onStatus, getToken, onPublished, () => this.relays.delete(relay));
    this.relays.add(relay);
    if (this.leader) void relay.bind(this.leader.api, this.modeOf(this.leader.id));
    return Comlink.proxy(relay);
  }

  lifecycle(state: 'frozen' | 'active'): void {
    if (state === 'frozen') this.election.resign();
    else this.election.rejoin();
  }

  stats(): WorkerStats {
    return this.hub?.stats() ?? { tabs: this.relays.size, connections: [] };
  }

  /**
   * Takes the lead: first recorded in the database (from then on a deposed leader stores no
   * write), then the engine starts and the tabs are bound to it; the election announces it after.
   */
  private async lead(term: number): Promise<void> {
    const id = this.election.id;
    if (!(await takeLead(await this.deps.database(), { id, term }))) throw new Error('a later leader is recorded');
    if (!this.election.leading || this.hub) return;
    const hub = new Hub({ ...this.deps, mode: () => 'leader', fence: id });
    this.hub = hub;
    this.bus = new BusLeader(id, hub, this.inbox);
    this.switchTo({ id, api: hub });
  }

  private follow(id: string): void {
    if (this.leader?.id === id) return;
    this.switchTo({ id, api: this.client.api(id) });
  }

  /** Another worker took the lead from this one: the engine here closes, the tabs move over. */
  private stepDown(): void {
    this.bus?.close();
    this.bus = undefined;
    this.hub?.close();
    this.hub = undefined;
    if (this.leader?.id === this.election.id) {
      this.leader = undefined;
      for (const relay of this.relays) relay.unbind('follower');
    }
  }

  private switchTo(next: { id: string; api: LeaderApi }): void {
    const previous = this.leader;
    this.leader = next;
    // Bound first (the relays start a new generation), then the old leader's calls fail: the
    // relays send its unsettled writes again instead of failing them.
    for (const relay of this.relays) void relay.bind(next.api, this.modeOf(next.id));
    if (previous && previous.id !== this.election.id) this.client.leaderGone(previous.id);
  }

  private modeOf(leader: string): 'leader' | 'follower' {
    return leader === this.election.id ? 'leader' : 'follower';
  }
}
