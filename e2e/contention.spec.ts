import { test, expect, apiDoc } from './fixtures/test.js';

const CLIENTS = 5;
const TRANSFERS = 200;
const ACCOUNTS = 10;
const START = 100;

test('an invariant under contention: 5 clients × 200 random transfers (some closing accounts: deletes) with network cuts keep the total; each commits once or is reported', async ({ browser, openTab, network, server }) => {
  test.setTimeout(240_000);
  const contexts = await Promise.all(Array.from({ length: CLIENTS }, () => browser.newContext()));
  const tabs = await Promise.all(contexts.map((c) => openTab(c)));
  await tabs[0]!.evaluate(
    ({ accounts, start }) =>
      window.tether.state.doc('bank').transact((tx) => {
        for (let i = 0; i < accounts; i++) tx.set(`acct${i}`, start);
      }),
    { accounts: ACCOUNTS, start: START },
  );

  // Each client runs its transfers, a few at a time, and counts how each one ended.
  const runs = tabs.map((tab, client) =>
    tab.evaluate(
      async ({ transfers, accounts, client }) => {
        const doc = window.tether.state.doc<Record<string, number>>('bank');
        const tally = { committed: 0, noop: 0, conflict: 0, closed: 0, other: [] as string[] };
        let seed = client * 7919 + 1;
        const random = (n: number) => {
          seed = (seed * 48271) % 2147483647;
          return seed % n;
        };
        const one = async () => {
          const from = `acct${random(accounts)}`;
          let to = `acct${random(accounts)}`;
          if (to === from) to = `acct${(Number(from.slice(4)) + 1) % accounts}`;
          const amount = 1 + random(10);
          // One transfer in eight moves the whole balance and closes the account (deletes the key);
          // a closed account reads as absent (0) and is reopened by the next transfer into it.
          const closing = random(8) === 0;
          try {
            const wrote = await doc.transact((tx) => {
              const a = tx.get(from) ?? 0;
              const b = tx.get(to) ?? 0;
              const moved = closing ? a : amount;
              if (moved === 0 || a < moved) return false;
              if (a === moved) tx.delete(from);
              else tx.set(from, a - moved);
              tx.set(to, b + moved);
              return a === moved ? 'closed' : true;
            });
            if (wrote === 'closed') tally.closed++;
            if (wrote) tally.committed++;
            else tally.noop++;
          } catch (error) {
            const code = (error as { code?: string }).code;
            if (code === 'conflict') tally.conflict++;
            else tally.other.push(`${code}: ${(error as Error).message}`);
          }
        };
        const inFlight = 4;
        for (let i = 0; i < transfers; i += inFlight) {
          await Promise.all(Array.from({ length: Math.min(inFlight, transfers - i) }, one));
        }
        return tally;
      },
      { transfers: TRANSFERS, accounts: ACCOUNTS, client },
    ),
  );

  // Random cuts while they run: refused or blackholed for a moment, then restored.
  let running = true;
  const all = Promise.all(runs).finally(() => (running = false));
  // Bounded, so the test's length does not depend on how slow the machine is.
  const cuts = (async () => {
    let n = 0;
    while (running && n < 40) {
      await new Promise((r) => setTimeout(r, 400 + Math.random() * 800));
      if (!running) break;
      if (n++ % 4 === 3) network.blackhole();
      else network.refuse();
      await new Promise((r) => setTimeout(r, 200 + Math.random() * 600));
      await network.restore();
    }
    return n;
  })();
  const tallies = await all;
  const cutCount = await cuts;

  const totals = tallies.reduce(
    (t, x) => ({ committed: t.committed + x.committed, noop: t.noop + x.noop, conflict: t.conflict + x.conflict, closed: t.closed + x.closed }),
    { committed: 0, noop: 0, conflict: 0, closed: 0 },
  );
  console.log(`contention: ${JSON.stringify(totals)} over ${cutCount} network cuts`);
  expect(tallies.flatMap((t) => t.other)).toEqual([]);
  expect(totals.committed + totals.noop + totals.conflict).toBe(CLIENTS * TRANSFERS);
  expect(cutCount).toBeGreaterThan(0);
  // A contention test with few commits proves nothing: most transfers must go through, accounts
  // must have been closed (keys deleted) and reopened along the way.
  // (Seen: ~600 of 1,000 commit; transfers out of a closed account are no-ops.)
  expect(totals.committed).toBeGreaterThanOrEqual(CLIENTS * TRANSFERS * 0.35);
  expect(totals.closed).toBeGreaterThan(10);

  // The server's state: the total is unchanged, and exactly one version per committed transaction.
  const bank = await apiDoc(server.httpUrl, 'bank');
  const balances = Object.values(bank.keys).map((k) => k.value as number);
  expect(balances.length).toBeLessThanOrEqual(ACCOUNTS); // closed accounts are absent
  expect(balances.reduce((a, b) => a + b, 0)).toBe(ACCOUNTS * START);
  expect(balances.every((b) => b > 0)).toBe(true); // an account drained to 0 was closed, not kept at 0
  expect(bank.version).toBe(1 + totals.committed);

  // Every client converged on that state.
  for (const tab of tabs) {
    await expect.poll(() => tab.evaluate(() => window.tether.state.doc('bank').status.getState().pending)).toBe(0);
    await expect.poll(() => tab.evaluate(() => window.tether.state.doc('bank').getState())).toEqual(
      Object.fromEntries(Object.entries(bank.keys).map(([k, v]) => [k, v.value])),
    );
  }
  await Promise.all(contexts.map((c) => c.close()));
});
