/**
 * Server metrics in the Prometheus text format (GET /metrics, see README "Metrics").
 *
 * One prom-client `Registry` per server (several servers share a process in tests, and each must
 * count only its own traffic); Node's process metrics (CPU, memory, event loop, GC) belong to the
 * process, so they live in one registry per process, registered once, and every server's answer
 * includes them.
 *
 * Hot paths (a frame received or sent, a write decided) only add to a plain number: counters with
 * a fixed set of series (`FixedCounter`) are read by the registry when it is scraped. Labels come
 * from fixed lists (message types, error and close codes, operations), never from a channel, a
 * document, a user or a session.
 */
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CloseCode, ERROR_CODES, type ErrorCode } from '../protocol/constants.js';
import { ClientMessage, ServerMessage } from '../protocol/messages.js';
import type { EventStore, WriteOutcome, WriteRequest } from './storage/event-store.js';
import type { TransportKind } from './transports/transport.js';

/** Every name starts with this, the process metrics too. */
export const METRICS_PREFIX = 'tether_';

/** The `type` of every message a client may send (from protocol/messages.ts), and `invalid` for a frame refused before it had one. */
export const CLIENT_FRAME_TYPES = [...ClientMessage.options.map((schema) => schema.entries.type.literal), 'invalid'] as const;
export type ClientFrameType = ClientMessage['type'] | 'invalid';

/** The `type` of every message the server sends (from protocol/messages.ts). */
export const SERVER_FRAME_TYPES = ServerMessage.options.map((schema) => schema.entries.type.literal);
export type ServerFrameType = ServerMessage['type'];

export const TRANSPORTS: readonly TransportKind[] = ['websocket', 'long-polling'];

/** Why a connection was refused before it had a session (admission.ts). */
export const ADMISSION_REFUSALS = ['shutting_down', 'origin', 'capacity', 'connect_rate', 'per_address'] as const;
export type AdmissionRefusal = (typeof ADMISSION_REFUSALS)[number];

/** Where a write came from: a client (with a sequence) or the HTTP API. */
type WriteSource = 'client' | 'api';

/** The EventStore operations timed by `tether_store_seconds`. */
export const STORE_OPERATIONS = ['write', 'history', 'document', 'handshake', 'positions', 'revoke', 'revokedThrough', 'prune', 'ping'] as const;
type StoreOperation = (typeof STORE_OPERATIONS)[number];

/** HTTP routes counted by `tether_http_requests_total` (a path with a name in it counts under its pattern). */
export const HTTP_ROUTES = ['/api/publish', '/api/history', '/api/disconnect', '/api/docs/:doc', '/api/docs/:doc/transact', '/api/presence', '/api/health', '/metrics', 'other'] as const;
export type HttpRoute = (typeof HTTP_ROUTES)[number];

/** The route a request path counts under, or undefined for paths that are not counted (the WebSocket, static files). */
export function httpRoute(path: string): HttpRoute | undefined {
  if (path === '/metrics') return '/metrics';
  if (!path.startsWith('/api/')) return undefined;
  if (path.startsWith('/api/docs/')) return path.endsWith('/transact') ? '/api/docs/:doc/transact' : '/api/docs/:doc';
  return (HTTP_ROUTES as readonly string[]).includes(path) ? (path as HttpRoute) : 'other';
}

/** Store calls take from well under a millisecond (SQLite in memory) to seconds (a PostgreSQL under load). */
const STORE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Handing an event to the broker is in-process work (plus queueing a Redis PUBLISH): microseconds to milliseconds. */
const PUBLISH_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];
/** Redis notifications between processes: a millisecond on one host, more across a network or under load. */
const LAG_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** One series of a `FixedCounter`: incrementing it adds to a number, nothing else. */
export class Count {
  n = 0;
  inc(by = 1): void {
    this.n += by;
  }
}

/**
 * A counter whose series are all known up front (each a combination of values from fixed lists):
 * they are exported from the start (at 0, so `rate()` and `increase()` see the first events), and
 * incrementing one costs a number addition (prom-client's own `inc` hashes the labels on every call).
 */
class FixedCounter<L extends string> {
  private readonly series = new Map<string, { labels: Record<L, string>; count: Count }>();

  constructor(registry: Registry, name: string, help: string, labelNames: readonly L[], combinations: readonly Record<L, string>[]) {
    for (const labels of combinations) this.series.set(labelNames.map((l) => labels[l]).join('\u0000'), { labels, count: new Count() });
    const series = this.series;
    new Counter({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        for (const { labels, count } of series.values()) this.inc(labels, count.n);
      },
    });
  }

  /** The series with these label values, in `labelNames` order (resolve it once, outside a hot path). */
  get(...values: string[]): Count {
    const found = this.series.get(values.join('\u0000'));
    if (!found) throw new RangeError(`no series ${values.join(', ')}`);
    return found.count;
  }

  /** Every series of one label, by its value (for a hot path that looks one up per call). */
  byValue(): Map<string, Count> {
    return new Map([...this.series.values()].map(({ labels, count }) => [Object.values<string>(labels)[0]!, count]));
  }
}

function each<L extends string>(label: L, values: readonly (string | number)[]): Record<L, string>[] {
  return values.map((value) => ({ [label]: String(value) }) as Record<L, string>);
}

function cross<A extends string, B extends string>(a: Record<A, string>[], b: Record<B, string>[]): Record<A | B, string>[] {
  return a.flatMap((x) => b.map((y) => ({ ...x, ...y })));
}

let processRegistry: Registry | undefined;
/** Node's process metrics, registered once per process (they describe the process, not one server). */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, prefix: METRICS_PREFIX });
  }
  return processRegistry;
}

/** What a session counts; one object per server, shared by its sessions. */
export interface SessionMetrics {
  frameReceived(type: ClientFrameType): void;
  frameSent(type: ServerFrameType): void;
  errorSent(code: ErrorCode): void;
  closed(code: number): void;
  catchUpEvents(via: 'subscribe' | 'history', events: number): void;
}

/** What the write queue counts. */
export interface WriteMetrics {
  /** One write decided by the store. */
  decided(request: WriteRequest, outcome: WriteOutcome): void;
  /** Time `broker.publish` / `publishDoc` took, in seconds. */
  published(kind: 'event' | 'doc', seconds: number): void;
}

/** What a broker across processes counts. */
export interface BrokerMetrics {
  /** A notification from a process (this one: `self`, through Redis and back) arrived `seconds` after it was published. */
  deliveryLag(origin: 'self' | 'other', seconds: number): void;
}

export interface ServerMetrics extends SessionMetrics, WriteMetrics, BrokerMetrics {
  /** Every metric of this server and of the process. */
  readonly registry: Registry;
  sessionOpened(transport: TransportKind): void;
  /** Where the connections-open gauge reads its values at each scrape. */
  connectionsFrom(read: () => Record<TransportKind, number>): void;
  admissionRefused(reason: AdmissionRefusal): void;
  /** One request answered with `status`, or `aborted`: its connection ended before an answer was begun. */
  httpRequest(route: HttpRoute, status: number | 'aborted'): void;
  /** `store` with each call timed in `tether_store_seconds`. */
  timeStore(store: EventStore): EventStore;
}

/** The metrics of one server. */
export function createMetrics(): ServerMetrics {
  const registry = new Registry();
  const p = METRICS_PREFIX;

  let connections: () => Record<TransportKind, number> = () => ({ websocket: 0, 'long-polling': 0 });
  new Gauge({
    name: `${p}connections`, registers: [registry], labelNames: ['transport'],
    help: 'Client connections open now, by transport (websocket, long-polling): the connections /api/health counts.',
    collect() {
      const now = connections();
      for (const transport of TRANSPORTS) this.set({ transport }, now[transport]);
    },
  });
  const sessions = new FixedCounter(registry, `${p}sessions_opened_total`,
    'Client connections admitted (a WebSocket upgrade or a long-polling open), by transport; each becomes a session that may then handshake.',
    ['transport'], each('transport', TRANSPORTS));
  const sessionsBy = { websocket: sessions.get('websocket'), 'long-polling': sessions.get('long-polling') };

  const closeCodes = [...new Set(Object.values(CloseCode))];
  const closes = new FixedCounter(registry, `${p}server_closes_total`,
    'Connections the server closed, by close code (PROTOCOL.md): 4000 no handshake first, 4001 unauthorized (a bad, expired or revoked token, or /api/disconnect), 4002 protocol version, 4003/4004 silent clients, 4005 junk, 4006 slow consumers, 4007 rate limits, 1009 oversized frames, 1001 shutdown, 1011 events DB failures. Closes by clients are not counted.',
    ['code'], each('code', closeCodes)).byValue();

  const received = new FixedCounter(registry, `${p}frames_received_total`,
    'Frames received from clients, by message type (a `writes` frame counts once, whatever it carries); `invalid`: not JSON, not a known message, or binary.',
    ['type'], each('type', CLIENT_FRAME_TYPES)).byValue();
  const sent = new FixedCounter(registry, `${p}frames_sent_total`,
    'Protocol frames sent to clients, by message type (answers to batched writes count as one `answers` frame). Live frames of a subscription count as `event`, including a `reset` a cluster\'s broker sends when retention overtook it.',
    ['type'], each('type', SERVER_FRAME_TYPES)).byValue();
  const errors = new FixedCounter(registry, `${p}errors_sent_total`,
    'Error frames sent to clients (on its own or in an `answers` frame), by error code (protocol/constants.ts ERROR_CODES).',
    ['code'], each('code', ERROR_CODES)).byValue();
  const catchUp = new FixedCounter(registry, `${p}catch_up_events_total`,
    'Events read from the history and sent: to a subscriber catching up from an offset (`subscribe`), or in answer to a `history` request.',
    ['via'], each('via', ['subscribe', 'history']));
  const catchUpBy = { subscribe: catchUp.get('subscribe'), history: catchUp.get('history') };

  const sources: WriteSource[] = ['client', 'api'];
  const acknowledged = new FixedCounter(registry, `${p}writes_acknowledged_total`,
    'Writes applied and acknowledged, by kind (publish: an event stored; transact: a transaction committed) and source (client: a queued client write; api: the HTTP API). Resends are not counted here (see writes_duplicate_total).',
    ['kind', 'source'], cross(each('kind', ['publish', 'transact']), each('source', sources)));
  const duplicates = new FixedCounter(registry, `${p}writes_duplicate_total`,
    'Writes acknowledged again without a second effect: a client resending a write the store already applied (exactly once), or an HTTP API retry with the same Idempotency-Key. By source.',
    ['source'], each('source', sources));
  const conflicts = new FixedCounter(registry, `${p}transaction_conflicts_total`,
    'Transactions answered with a conflict because a key they read changed before they committed (the client re-runs them), by source. A resend of a rejected transaction is answered, and counted, again.',
    ['source'], each('source', sources));
  const refused = new FixedCounter(registry, `${p}writes_refused_total`,
    'Writes refused by the write queue, by error code: forbidden channels or documents, malformed or oversized writes, documents over TETHER_MAX_DOC_BYTES (limit_exceeded), out_of_order sequences, a reused Idempotency-Key (invalid_argument). A resend of a refused write is answered, and counted, again.',
    ['code'], each('code', ERROR_CODES)).byValue();
  const writesBy = {
    acknowledged: { client: { publish: acknowledged.get('publish', 'client'), transact: acknowledged.get('transact', 'client') }, api: { publish: acknowledged.get('publish', 'api'), transact: acknowledged.get('transact', 'api') } },
    duplicates: { client: duplicates.get('client'), api: duplicates.get('api') },
    conflicts: { client: conflicts.get('client'), api: conflicts.get('api') },
  };

  const admissions = new FixedCounter(registry, `${p}admissions_refused_total`,
    'Connections (WebSocket upgrades, long-polling opens) refused before a session, by reason: origin (TETHER_ALLOWED_ORIGINS), capacity (TETHER_MAX_CONNECTIONS), connect_rate (TETHER_CONNECT_RATE_PER_IP), per_address (TETHER_MAX_CONNECTIONS_PER_IP), shutting_down.',
    ['reason'], each('reason', ADMISSION_REFUSALS));
  const admissionsBy = new Map(ADMISSION_REFUSALS.map((reason) => [reason, admissions.get(reason)]));

  const httpStatuses = [200, 400, 401, 404, 405, 409, 413, 415, 422, 500, 503];
  const http = new FixedCounter(registry, `${p}http_requests_total`,
    'HTTP requests to the API, /api/health and /metrics, by route and status (a status outside the usual ones counts as `other`; a request whose connection ended before an answer was begun as `aborted`).',
    ['route', 'status'], cross(each('route', HTTP_ROUTES), each('status', [...httpStatuses, 'other', 'aborted'])));

  const store = new Histogram({
    name: `${p}store_seconds`, registers: [registry], labelNames: ['operation'], buckets: STORE_BUCKETS,
    help: 'Time of each events DB call, by operation: write (one group commit of every write submitted in one event-loop turn), history (a page of a channel, or its head), document (a document\'s state), handshake (a client\'s sequence), positions (the cluster broker\'s check for missed notifications), revoke, revokedThrough, prune, ping.',
  });
  const storeBy = new Map(STORE_OPERATIONS.map((operation) => [operation, store.labels(operation)]));
  for (const operation of STORE_OPERATIONS) store.zero({ operation });

  const publish = new Histogram({
    name: `${p}broker_publish_seconds`, registers: [registry], labelNames: ['kind'], buckets: PUBLISH_BUCKETS,
    help: 'Time to hand one stored event (kind=event) or committed document change (kind=doc) to the broker: the in-process fan-out to this process\'s subscribers, plus queueing the Redis notification when there is one. Long times mean many subscribers per channel or a busy event loop.',
  });
  const publishBy = { event: publish.labels('event'), doc: publish.labels('doc') };
  for (const kind of ['event', 'doc']) publish.zero({ kind });
  const lag = new Histogram({
    name: `${p}broker_delivery_lag_seconds`, registers: [registry], labelNames: ['origin'], buckets: LAG_BUCKETS,
    help: 'With TETHER_REDIS_URL: time from a process publishing a notification on Redis to this process receiving it. origin=self: this process\'s own notification back from Redis (the Redis round trip, one clock); origin=other: another process\'s (includes the clock difference between hosts).',
  });
  const lagBy = { self: lag.labels('self'), other: lag.labels('other') };
  for (const origin of ['self', 'other']) lag.zero({ origin });

  function time<T>(operation: StoreOperation, run: () => Promise<T>): Promise<T> {
    const start = performance.now();
    const done = () => storeBy.get(operation)!.observe((performance.now() - start) / 1000);
    return run().finally(done);
  }

  return {
    registry: Registry.merge([processMetrics(), registry]),
    frameReceived: (type) => received.get(type)?.inc(),
    frameSent: (type) => sent.get(type)?.inc(),
    errorSent: (code) => errors.get(code)?.inc(),
    closed: (code) => closes.get(String(code))?.inc(),
    catchUpEvents: (via, events) => catchUpBy[via].inc(events),
    sessionOpened: (transport) => sessionsBy[transport].inc(),
    connectionsFrom: (read) => void (connections = read),
    admissionRefused: (reason) => admissionsBy.get(reason)?.inc(),
    httpRequest(route, status) {
      http.get(route, status === 'aborted' || httpStatuses.includes(status) ? String(status) : 'other').inc();
    },
    decided(request, outcome) {
      const source: WriteSource = request.clientId === null ? 'api' : 'client';
      switch (outcome.status) {
        case 'stored':
          return writesBy.acknowledged[source].publish.inc();
        case 'committed':
          return writesBy.acknowledged[source].transact.inc();
        case 'duplicate':
          return writesBy.duplicates[source].inc();
        case 'conflict':
          return writesBy.conflicts[source].inc();
        case 'refused':
          return refused.get(outcome.code)?.inc();
        case 'out_of_order':
          return refused.get('out_of_order')?.inc();
        case 'forbidden':
          return refused.get('forbidden')?.inc();
        case 'idempotency_mismatch':
          return refused.get('invalid_argument')?.inc();
      }
    },
    published: (kind, seconds) => publishBy[kind].observe(seconds),
    deliveryLag: (origin, seconds) => lagBy[origin].observe(seconds),
    timeStore(inner) {
      return {
        get kind() {
          return inner.kind;
        },
        ping: () => time('ping', () => inner.ping()),
        write: (requests) => time('write', () => inner.write(requests)),
        history: (...args) => time('history', () => inner.history(...args)),
        document: (...args) => time('document', () => inner.document(...args)),
        handshake: (...args) => time('handshake', () => inner.handshake(...args)),
        revoke: (...args) => time('revoke', () => inner.revoke(...args)),
        revokedThrough: (user) => time('revokedThrough', () => inner.revokedThrough(user)),
        positions: (...args) => time('positions', () => inner.positions(...args)),
        prune: (now) => time('prune', () => inner.prune(now)),
        close: () => inner.close(),
      };
    },
  };
}
