/**
 * Calls between the dedicated workers of an origin's tabs, where there is no SharedWorker: a
 * follower tab's worker calls the leader tab's engine; the leader calls back into the follower
 * (statuses, events, document snapshots, tokens). BroadcastChannel cannot transfer MessagePorts,
 * so Comlink's proxies cannot cross tabs: functions among the arguments travel as handles.
 *
 *   tether-leader         → the leader: calls, and the answers to its calls back
 *   tether-host:<host id> → one follower's worker: answers, and calls back into it
 *
 * Every message names the leader it is for: one sent to a leader that has since gone away is
 * ignored by its successor, and the caller learns of the change from the election instead.
 */
import type { Registration, TabApi, WorkerApi } from './api.js';

const LEADER_CHANNEL = 'tether-leader';
const hostChannel = (host: string) => `tether-host:${host}`;
/** A call back into a follower that returns something (a token) gives up after this long. */
const RETURN_TIMEOUT_MS = 15_000;

/** An argument as it travels: a value (structured clone), or a function left behind as a handle. */
type Arg = { value: unknown } | { fn: number; returns: boolean };

type ToLeader =
  | { kind: 'call'; leader: string; host: string; id: number; tab: string | null; method: string; args: Arg[] }
  | { kind: 'returned'; leader: string; id: number; ok: true; value: unknown }
  | { kind: 'returned'; leader: string; id: number; ok: false; error: string };

type ToHost =
  | { kind: 'result'; leader: string; id: number; ok: true; value: unknown }
  | { kind: 'result'; leader: string; id: number; ok: false; error: string }
  | { kind: 'fn'; leader: string; fn: number; args: unknown[]; id?: number };

/** `T` with every method's result possibly a promise: what a relay can call locally or remotely. */
export type Async<T> = { [K in keyof T]: T[K] extends (...args: infer A) => infer R ? (...args: A) => R | Promise<Awaited<R>> : T[K] };

/** What a tab's relay needs of the engine that holds the socket, here or in another tab. */
export interface LeaderApi {
  attach(...args: Parameters<WorkerApi['attach']>): Promise<Async<TabApi>>;
  /** Forgets a function lent to this leader (a listener no longer subscribed). */
  release?(fn: unknown): void;
}

/** A function whose result the caller waits for (a token provider); others are fire-and-forget. */
export function returning<F extends (...args: never[]) => unknown>(fn: F): F {
  return Object.assign(fn, { returns: true });
}

/** The remote leader went away before it answered (the election names the next one). */
export class LeaderGone extends Error {
  constructor(leader: string) {
    super(`the leader tab ${leader} went away before it answered`);
    this.name = 'LeaderGone';
  }
}

const TAB_METHODS = ['status', 'call', 'apiVersion', 'publish', 'publishMany', 'subscribe', 'unsubscribe', 'pendingWrites', 'openDoc', 'closeDoc', 'transact', 'clearConflicts', 'presenceJoin', 'presenceSet', 'presenceLeave', 'inspect', 'stopInspect', 'detach'] as const satisfies readonly (keyof TabApi)[];

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The follower's side: calls to whichever leader the election named, and the handles it lent out. */
export class LeaderClient {
  private readonly inbox: BroadcastChannel;
  private readonly outbox = new BroadcastChannel(LEADER_CHANNEL);
  private readonly pending = new Map<number, { leader: string; resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private readonly handles = new Map<number, { leader: string; fn: (...args: unknown[]) => unknown }>();
  private nextId = 0;

  constructor(readonly host: string) {
    this.inbox = new BroadcastChannel(hostChannel(host));
    this.inbox.onmessage = (event: MessageEvent<ToHost>) => this.receive(event.data);
  }

  /** The leader `leader`'s engine, as a relay calls it. */
  api(leader: string): LeaderApi {
    return {
      attach: async (registration: Registration, ...callbacks) => {
        await this.call(leader, null, 'attach', [registration, ...callbacks]);
        const tab = {} as Record<(typeof TAB_METHODS)[number], (...args: unknown[]) => Promise<unknown>>;
        for (const method of TAB_METHODS) tab[method] = (...args) => this.call(leader, registration.tabId, method, args);
        return tab as unknown as Async<TabApi>;
      },
      release: (fn) => {
        for (const [id, handle] of this.handles) if (handle.leader === leader && handle.fn === fn) this.handles.delete(id);
      },
    };
  }

  /** Fails the calls `leader` did not answer and forgets the handles lent to it. */
  leaderGone(leader: string): void {
    for (const [id, call] of this.pending) {
      if (call.leader !== leader) continue;
      this.pending.delete(id);
      call.reject(new LeaderGone(leader));
    }
    for (const [id, handle] of this.handles) if (handle.leader === leader) this.handles.delete(id);
  }

  /** Calls not answered yet (diagnostics and tests). */
  get waiting(): number {
    return this.pending.size;
  }

  close(): void {
    this.inbox.close();
    this.outbox.close();
  }

  private call(leader: string, tab: string | null, method: string, args: unknown[]): Promise<unknown> {
    const id = ++this.nextId;
    const encoded = args.map((arg): Arg => {
      if (typeof arg !== 'function') return { value: arg };
      const fn = ++this.nextId;
      this.handles.set(fn, { leader, fn: arg as (...args: unknown[]) => unknown });
      return { fn, returns: (arg as { returns?: boolean }).returns === true };
    });
    return new Promise((resolve, reject) => {
      this.pending.set(id, { leader, resolve, reject });
      this.outbox.postMessage({ kind: 'call', leader, host: this.host, id, tab, method, args: encoded } satisfies ToLeader);
    });
  }

  private receive(message: ToHost): void {
    if (message.kind === 'result') {
      const call = this.pending.get(message.id);
      if (!call || call.leader !== message.leader) return;
      this.pending.delete(message.id);
      if (message.ok) call.resolve(message.value);
      else call.reject(new Error(message.error));
      return;
    }
    const handle = this.handles.get(message.fn);
    if (!handle || handle.leader !== message.leader) return; // lent to a leader that went away
    const { id } = message;
    const answer = (reply: ToLeader) => {
      if (id !== undefined) this.outbox.postMessage(reply);
    };
    Promise.resolve()
      .then(() => handle.fn(...message.args))
      .then(
        (value) => answer({ kind: 'returned', leader: message.leader, id: id ?? 0, ok: true, value }),
        (error: unknown) => answer({ kind: 'returned', leader: message.leader, id: id ?? 0, ok: false, error: describe(error) }),
      );
  }
}

/** The leader's side: runs the followers' calls on its engine and calls their handles back. */
/**
 * The channel a leader listens on. Every worker opens it when it starts, long before it may lead:
 * a channel opened the moment a worker is elected might not be registered with the browser yet
 * when the first follower's call arrives (BroadcastChannel delivers to the channels that exist
 * when a message is posted), and that call would be lost.
 */
export function leaderInbox(): BroadcastChannel {
  return new BroadcastChannel(LEADER_CHANNEL);
}

let returnIds = 0;

export class BusLeader {
  /** The followers' tabs attached here, by tab id. */
  private readonly tabs = new Map<string, { host: string; api: Async<TabApi> }>();
  private readonly hosts = new Map<string, BroadcastChannel>();
  private readonly returns = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private closed = false;

  constructor(
    readonly id: string,
    private readonly engine: LeaderApi,
    /** This worker's leaderInbox(): its messages for other leaders are ignored. */
    private readonly inbox: BroadcastChannel,
  ) {
    this.inbox.onmessage = (event: MessageEvent<ToLeader>) => {
      const message = event.data;
      if (message.leader !== this.id || this.closed) return;
      if (message.kind === 'returned') {
        const waiting = this.returns.get(message.id);
        this.returns.delete(message.id);
        if (message.ok) waiting?.resolve(message.value);
        else waiting?.reject(new Error(message.error));
        return;
      }
      void this.run(message);
    };
  }

  close(): void {
    this.closed = true;
    this.inbox.onmessage = null; // the worker keeps it, to lead again
    for (const channel of this.hosts.values()) channel.close();
    this.hosts.clear();
    this.tabs.clear();
    for (const waiting of this.returns.values()) waiting.reject(new Error('the leader stepped down'));
    this.returns.clear();
  }

  private async run(message: Extract<ToLeader, { kind: 'call' }>): Promise<void> {
    const args = message.args.map((arg) => ('fn' in arg ? this.handle(message.host, arg.fn, arg.returns) : arg.value));
    let reply: ToHost;
    try {
      let value: unknown;
      if (message.tab === null) {
        if (message.method !== 'attach') throw new Error(`unknown call ${message.method}`);
        const registration = args[0] as Registration;
        const api = await this.engine.attach(registration, ...(args.slice(1) as [never, never?, never?]));
        this.tabs.set(registration.tabId, { host: message.host, api });
        // The tab's lock goes with it: then its handles and its channel are of no more use.
        void navigator.locks.request(registration.lockName, async () => this.forget(registration.tabId));
        value = null;
      } else {
        const tab = this.tabs.get(message.tab);
        if (!tab || !(TAB_METHODS as readonly string[]).includes(message.method)) throw new Error(`this tab is not attached to the leader (${message.method})`);
        value = await (tab.api[message.method as (typeof TAB_METHODS)[number]] as (...args: unknown[]) => unknown)(...args);
      }
      reply = { kind: 'result', leader: this.id, id: message.id, ok: true, value };
    } catch (error) {
      reply = { kind: 'result', leader: this.id, id: message.id, ok: false, error: describe(error) };
    }
    if (!this.closed) this.channel(message.host).postMessage(reply);
    if (message.method === 'detach' && message.tab !== null) this.forget(message.tab);
  }

  private forget(tabId: string): void {
    const tab = this.tabs.get(tabId);
    this.tabs.delete(tabId);
    if (!tab || [...this.tabs.values()].some((t) => t.host === tab.host)) return;
    this.hosts.get(tab.host)?.close();
    this.hosts.delete(tab.host);
  }

  private channel(host: string): BroadcastChannel {
    let channel = this.hosts.get(host);
    if (!channel) {
      channel = new BroadcastChannel(hostChannel(host));
      this.hosts.set(host, channel);
    }
    return channel;
  }

  /** A function that calls the handle `fn` in the follower `host`. */
  private handle(host: string, fn: number, returns: boolean): (...args: unknown[]) => unknown {
    if (!returns) {
      return (...args: unknown[]) => {
        if (!this.closed) this.channel(host).postMessage({ kind: 'fn', leader: this.id, fn, args } satisfies ToHost);
      };
    }
    return (...args: unknown[]) =>
      new Promise((resolve, reject) => {
        if (this.closed) return reject(new Error('the leader stepped down'));
        // Numbered across this worker's terms: a late answer to an earlier term's call matches nothing.
        const id = ++returnIds;
        const timer = setTimeout(() => {
          this.returns.delete(id);
          reject(new Error(`the tab did not answer within ${RETURN_TIMEOUT_MS} ms`));
        }, RETURN_TIMEOUT_MS);
        this.returns.set(id, {
          resolve: (value) => (clearTimeout(timer), resolve(value)),
          reject: (error) => (clearTimeout(timer), reject(error)),
        });
        this.channel(host).postMessage({ kind: 'fn', leader: this.id, fn, args, id } satisfies ToHost);
      });
  }
}
