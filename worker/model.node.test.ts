/**
 * Model-based test of the write pipeline: random sequences of publishes, transactions (with
 * deletes), oversized writes, network cuts, worker restarts, server restarts, store errors and
 * failing token functions, against the real engine and a real server. After each run:
 *  - every write was either acknowledged and stored exactly once, or failed to its caller with
 *    a reason that is its own (only oversized writes may fail); none is pending forever;
 *  - writes abandoned by a worker restart are stored exactly once all the same;
 *  - per-client order is kept;
 *  - the document as the worker shows it equals the server's.
 * The seed is printed; rerun one with TETHER_MODEL_SEED=<seed>.
 */
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { afterEach, expect, it } from 'vitest';
import type { DocSnapshot, Outcome } from './api.js';
import { Harness, eventually, type Engine, type EngineTab } from './testing/harness.js';

const SECRET = 'model-test-secret-of-at-least-32-characters';
const RUNS = Number(process.env.TETHER_MODEL_RUNS ?? 15);

type Op =
  | { kind: 'publish' }
  | { kind: 'oversized' }
  | { kind: 'transact'; key: string; del: boolean }
  | { kind: 'cut'; ms: number }
  | { kind: 'workerRestart' }
  | { kind: 'serverRestart' }
  | { kind: 'storeError'; batches: number }
  | { kind: 'tokenFailure'; ms: number }
  | { kind: 'pause'; ms: number }
  /** The app's backend changes the document over the HTTP API (another writer, deletes included). */
  | { kind: 'backend'; key: string; del: boolean };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Op>({ kind: 'publish' }) },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: 'oversized' }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('transact' as const), key: fc.constantFrom('a', 'b', 'c'), del: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('cut' as const), ms: fc.integer({ min: 20, max: 300 }) }) },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: 'workerRestart' }) },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: 'serverRestart' }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('storeError' as const), batches: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('tokenFailure' as const), ms: fc.integer({ min: 20, max: 300 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('pause' as const), ms: fc.integer({ min: 0, max: 50 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('backend' as const), key: fc.constantFrom('a', 'b', 'c'), del: fc.boolean() }) },
);
const API_KEY = 'model-test-api-key';

interface Tracked {
  id: number;
  kind: 'publish' | 'oversized' | 'transact';
  result: Outcome<unknown> | undefined;
  /** Made by a worker that was restarted before it answered: the caller is gone. */
  orphaned: boolean;
}

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(ops: Op[]): Promise<void> {
  harness = await Harness.start({ tokenSecret: SECRET, apiKey: API_KEY });
  const h = harness;
  const token = await new SignJWT({ channels: ['*'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('model-user').setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
  let tokenWorks = true;
  let storeFailures = 0;
  const wrapStore = () => {
    const store = h.server.store;
    const write = store.write.bind(store);
    store.write = async (requests) => {
      if (storeFailures > 0) {
        storeFailures--;
        throw new Error('store error injected by the model test');
      }
      return write(requests);
    };
  };
  wrapStore();

  const db = Harness.newDatabase();
  let engine: Engine;
  let tab: EngineTab;
  let snapshot: DocSnapshot | undefined;
  const start = () => {
    engine = h.engine(db);
    tab = engine.attach(async () => {
      if (!tokenWorks) throw new Error('token endpoint down (injected)');
      return token;
    });
    void engine.connection.openDoc(tab.tabId, 'view', 'doc', (s) => void (snapshot = s));
  };
  start();

  const writes: Tracked[] = [];
  const current = new Set<Tracked>();
  let nextId = 0;
  let backendWrites = 0;
  const track = (kind: Tracked['kind'], made: Promise<Outcome<unknown>>): void => {
    const tracked: Tracked = { id: nextId++, kind, result: undefined, orphaned: false };
    writes.push(tracked);
    current.add(tracked);
    void made.then((result) => {
      tracked.result = result;
      current.delete(tracked);
    });
  };

  for (const step of ops) {
    switch (step.kind) {
      case 'publish': {
        const id = nextId;
        track('publish', engine!.connection.publish(tab!.tabId, 'model', { id }));
        break;
      }
      case 'oversized': {
        const id = nextId;
        track('oversized', engine!.connection.publish(tab!.tabId, 'model', { id, pad: '€'.repeat(30_000) }));
        break;
      }
      case 'transact': {
        const version = snapshot?.versions[step.key] ?? 0;
        const id = nextId;
        // Transactions are tracked like publishes: committed or conflicted, never pending forever.
        track('transact', engine!.connection.transact(tab!.tabId, 'doc', { [step.key]: version }, { [step.key]: step.del ? null : id }, true));
        break;
      }
      case 'cut':
        h.proxy.refuse();
        await sleep(step.ms);
        await h.proxy.restore();
        break;
      case 'workerRestart':
        engine!.close();
        for (const tracked of current) tracked.orphaned = true;
        current.clear();
        start();
        break;
      case 'serverRestart':
        await h.restartServer();
        wrapStore();
        break;
      case 'storeError':
        storeFailures = step.batches;
        break;
      case 'tokenFailure':
        tokenWorks = false;
        h.proxy.refuse(); // the token is asked again on the reconnect
        await sleep(step.ms);
        await h.proxy.restore();
        await sleep(step.ms);
        tokenWorks = true;
        break;
      case 'pause':
        await sleep(step.ms);
        break;
      case 'backend': {
        // A backend retries a failed request (a store error is a 500) with the same Idempotency-Key.
        const key = `backend-${++backendWrites}`; // one key per request: reusing one for another body is a 422
        const body = JSON.stringify({ writes: { [step.key]: step.del ? null : key } });
        let status = 0;
        for (let attempt = 0; attempt < 10 && status !== 200; attempt++) {
          const response = await fetch(`http://127.0.0.1:${h.server.port}/api/docs/doc/transact`, {
            method: 'POST',
            headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json', 'idempotency-key': key },
            body,
          });
          status = response.status;
          if (status !== 200) await sleep(20);
        }
        expect(status, 'the backend write-only transaction commits').toBe(200);
        break;
      }
    }
  }

  // Everything heals; every write of the live worker must settle, and the queue must drain.
  tokenWorks = true;
  storeFailures = 0;
  await eventually(() => current.size === 0, 40_000, 'every write of the live worker settled');
  await eventually(() => engine!.status(tab!).pending === 0, 20_000, 'the queue drained');
  // Nothing is left in IndexedDB either: a write stored by a worker that was restarted meanwhile is sent too.
  const writer = await engine!.connection.writerOf('model-user');
  await eventually(async () => (await writer.outbox.list()).length === 0, 10_000, 'the outbox in IndexedDB drained');

  const stored = (await h.server.store.history('model', { offset: 0 }, 100_000)).events.map((e) => (JSON.parse(e.data) as { id: number }).id);
  const counts = new Map<number, number>();
  for (const id of stored) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const [id, count] of counts) expect(count, `write ${id} stored ${count} times`).toBe(1);
  // Per-client order: one user, one client id, so the channel holds the writes in the order made.
  expect(stored).toEqual([...stored].sort((a, b) => a - b));
  for (const w of writes) {
    if (w.kind === 'oversized') {
      // Refused before anything is stored, so it settles even when its worker restarts right after.
      expect(w.result, `oversized write ${w.id}`).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
      expect(counts.has(w.id), `oversized write ${w.id} is not stored`).toBe(false);
    } else if (!w.orphaned) {
      // Publishes are acknowledged; transactions commit or conflict (both answers, never an error).
      expect(w.result, `write ${w.id} (${w.kind}) did not fail: ${JSON.stringify(w.result)}`).toMatchObject({ ok: true });
      if (w.kind === 'publish') expect(counts.get(w.id), `acknowledged publish ${w.id} is stored once`).toBe(1);
    }
    // A write whose worker was restarted before it answered has no caller left: stored once if it
    // reached IndexedDB (the outbox drained above), and never twice (above).
  }

  const tally = (kind: string) => ops.filter((o) => o.kind === kind).length;
  console.log(`run: ${ops.length} steps (${tally('backend')} backend writes, ${tally('cut')} cuts, ${tally('workerRestart')} worker and ${tally('serverRestart')} server restarts, ${tally('storeError')} store errors, ${tally('tokenFailure')} token failures); ${writes.length} writes, ${stored.length} events stored, ${writes.filter((w) => w.orphaned).length} orphaned`);

  // The worker's view of the document equals the server's, once nothing is pending.
  await eventually(() => snapshot?.pending === 0 && snapshot.synced, 10_000, 'the document synced');
  const server = await h.server.store.document('doc', undefined);
  const serverView = Object.fromEntries(Object.entries(server.keys).flatMap(([k, s]) => ('value' in s ? [[k, JSON.parse(s.value) as unknown]] : [])));
  await eventually(() => JSON.stringify(sortKeys(snapshot!.view)) === JSON.stringify(sortKeys(serverView)), 5000, `view ${JSON.stringify(snapshot?.view)} equals the server's ${JSON.stringify(serverView)}`);
}

function sortKeys(view: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(view).sort(([a], [b]) => a.localeCompare(b)));
}

it('model: every write stored once or failed to its caller, in order, the view equal to the server, under random faults', async () => {
  const seed = Number(process.env.TETHER_MODEL_SEED ?? Date.now() % 2 ** 31);
  console.log(`model test seed: ${seed} (rerun with TETHER_MODEL_SEED=${seed})`);
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 30 }), async (ops) => {
      try {
        await run(ops);
      } finally {
        await harness?.close();
        harness = undefined;
      }
    }),
    { seed, numRuns: RUNS, endOnFailure: true },
  );
}, 600_000);
