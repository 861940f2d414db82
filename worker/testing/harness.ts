/**
 * Drives the real worker engine (ServerConnection and everything under it) in Node: a real
 * in-process server on port 0 with a SQLite file, a TCP proxy to cut the network, ws as the
 * socket class and fake-indexeddb as IndexedDB. A "worker restart" is a new engine on the same
 * IndexedDB database; a "server restart" is a new server on the same file.
 */
import 'fake-indexeddb/auto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import WebSocket from 'ws';
import { startServer, type ServerOptions, type TetherServer } from '../../server/server.js';
import { TcpProxy } from '../../e2e/fixtures/tcp-proxy.js';
import type { Status, TokenProvider } from '../api.js';
import { ServerConnection, type EngineDeps } from '../connection.js';
import { openTetherDB, type Database } from '../db.js';
import type { WebSocketClass } from '../socket.js';

const silent = pino({ level: 'silent' });
let databases = 0;

/** Counts every frame the engine sends, by type (a resend storm shows here). */
export class FrameCounter {
  readonly sent = new Map<string, number>();
  total = 0;

  socketClass(): WebSocketClass {
    const counter = this;
    return class CountingSocket extends WebSocket {
      override send(data: unknown, ...rest: unknown[]): void {
        counter.total++;
        try {
          const frame = JSON.parse(String(data)) as { type?: unknown; writes?: { type?: unknown }[] };
          // The writes of a `writes` frame count under their own type too (a publish is a publish).
          for (const message of [frame, ...(frame.type === 'writes' ? (frame.writes ?? []) : [])]) {
            const type = String(message.type);
            counter.sent.set(type, (counter.sent.get(type) ?? 0) + 1);
          }
        } catch {
          // not JSON: counted in total only
        }
        (super.send as (...args: unknown[]) => void)(data, ...rest);
      }
    } as unknown as WebSocketClass;
  }

  of(type: string): number {
    return this.sent.get(type) ?? 0;
  }
}

export interface EngineTab {
  tabId: string;
  statuses: Status[];
  last(): Status;
}

export class Engine {
  readonly connection: ServerConnection;
  readonly warnings: string[] = [];
  readonly frames = new FrameCounter();
  private tabs = 0;

  constructor(
    readonly url: string,
    readonly db: () => Promise<Database>,
    deps: Partial<EngineDeps> = {},
  ) {
    this.connection = new ServerConnection(url, { database: db, WebSocket: this.frames.socketClass(), warn: (m) => this.warnings.push(m), ...deps });
  }

  /** Attaches a tab (optionally with a token function, as `connect({ token })` does). */
  attach(getToken?: TokenProvider): EngineTab {
    const tabId = `tab-${++this.tabs}`;
    const statuses: Status[] = [];
    this.connection.add({ tabId, lockName: `lock-${tabId}`, url: this.url, onStatus: (s) => void statuses.push(s), getToken });
    return { tabId, statuses, last: () => statuses.at(-1) ?? this.connection.status(tabId) };
  }

  status(tab: EngineTab): Status {
    return this.connection.status(tab.tabId);
  }

  close(): void {
    this.connection.close();
  }
}

export class Harness {
  server!: TetherServer;
  proxy!: TcpProxy;
  readonly dir = mkdtempSync(join(tmpdir(), 'tether-engine-'));
  readonly dbFile = join(this.dir, 'events.db');
  private readonly engines: Engine[] = [];

  private constructor(private options: ServerOptions) {}

  static async start(options: ServerOptions = {}): Promise<Harness> {
    const harness = new Harness(options);
    harness.server = await harness.startServer();
    harness.proxy = await TcpProxy.start(harness.server.port);
    return harness;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.proxy.port}/ws`;
  }

  /** A new IndexedDB database: a browser profile of its own. */
  static newDatabase(): () => Promise<Database> {
    const name = `tether-test-${++databases}-${Date.now()}`;
    let opened: Promise<Database> | undefined;
    return () => (opened ??= openTetherDB(name));
  }

  /** An engine (a worker) on `db` (default: a new profile). */
  engine(db = Harness.newDatabase(), deps: Partial<EngineDeps> = {}): Engine {
    const engine = new Engine(this.url, db, deps);
    this.engines.push(engine);
    return engine;
  }

  /**
   * Stops the server and starts it again on the same events DB, with changed options;
   * `whileDown` runs in between (to restore a backup, say).
   */
  async restartServer(options: ServerOptions = {}, whileDown: () => void = () => {}): Promise<void> {
    await this.server.close();
    whileDown();
    this.options = { ...this.options, ...options };
    this.server = await this.startServer();
    this.proxy.retarget(this.server.port);
  }

  async close(): Promise<void> {
    for (const engine of this.engines) engine.close();
    await this.proxy.close();
    await this.server.close();
  }

  private startServer(): Promise<TetherServer> {
    return startServer({ port: 0, host: '127.0.0.1', db: this.dbFile, logger: silent, clientDir: join(this.dir, 'no-client'), heartbeatMs: 1000, idleHeartbeatMs: 1000, ...this.options });
  }
}

/** Polls `check` until it returns a truthy value (or throws after `timeoutMs`). */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 8000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
