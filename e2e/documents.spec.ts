import { test, expect, apiDoc, docView, waitForConnection } from './fixtures/test.js';

test('the seed DSTM sequence: A offline changes hello, B changes it too, A is rejected, resynced, retried; both converge', async ({ browser, openTab, network, server }) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  const a = await openTab(ca); // through the proxy the test cuts
  const b = await openTab(cb, { direct: true });
  await b.evaluate(() => window.tether.state.doc('object').transact((tx) => tx.set('hello', 'initial')));

  // A and B connect and receive the object.
  await expect.poll(() => docView(a, 'object')).toEqual({ hello: 'initial' });
  await expect.poll(() => docView(b, 'object')).toEqual({ hello: 'initial' });

  network.refuse();
  await waitForConnection(a, 'offline');
  // A, offline, reads hello and changes it to "code camp": it sees the change at once.
  await a.evaluate(() => {
    const w = window as unknown as { runs: unknown[]; result?: Promise<unknown> };
    w.runs = [];
    w.result = window.tether.state.doc('object').transact((tx) => {
      const seen = tx.get('hello');
      w.runs.push(seen);
      tx.set('hello', 'code camp');
      return seen;
    });
  });
  // Optimistic: A's view shows it as soon as the worker applied it (a message away), offline.
  await expect.poll(() => docView(a, 'object'), { timeout: 2000 }).toEqual({ hello: 'code camp' });
  expect(await a.evaluate(() => window.tether.state.doc('object').status.getState().pending)).toBe(1);

  // B changes hello to "world" and commits.
  await b.evaluate(() => window.tether.state.doc('object').transact((tx) => {
    tx.get('hello');
    tx.set('hello', 'world');
  }));
  expect(await docView(b, 'object')).toEqual({ hello: 'world' });

  // A reconnects: its transaction is rejected, synchronisation is forced, its function runs again on "world".
  await network.restore();
  expect(await a.evaluate(() => (window as unknown as { result: Promise<unknown> }).result)).toBe('world');
  expect(await a.evaluate(() => (window as unknown as { runs: unknown[] }).runs)).toEqual(['initial', 'world']);

  await expect.poll(() => docView(a, 'object')).toEqual({ hello: 'code camp' });
  await expect.poll(() => docView(b, 'object')).toEqual({ hello: 'code camp' });
  expect(await apiDoc(server.httpUrl, 'object')).toMatchObject({ version: 3, keys: { hello: { value: 'code camp', version: 3 } } });
  expect(await a.evaluate(() => window.tether.state.doc('object').status.getState())).toMatchObject({ pending: 0, conflicts: [] });
  await Promise.all([ca.close(), cb.close()]);
});

test("two tabs of one client see each other's optimistic changes immediately, even offline", async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const [t1, t2] = [await openTab(context), await openTab(context)];
  await expect.poll(() => t2.evaluate(() => window.tether.state.doc('notes').status.getState().synced)).toBe(true);
  network.refuse();
  await waitForConnection(t1, 'offline');
  await t1.evaluate(() => {
    void window.tether.state.doc('notes').transact((tx) => tx.set('draft', 'typed in tab 1'));
  });
  await expect.poll(() => docView(t2, 'notes')).toEqual({ draft: 'typed in tab 1' });
  await t2.evaluate(() => {
    void window.tether.state.doc('notes').transact((tx) => {
      tx.set('draft', `${tx.get('draft')} and tab 2`);
    });
  });
  await expect.poll(() => docView(t1, 'notes')).toEqual({ draft: 'typed in tab 1 and tab 2' });
  await network.restore();
  await expect.poll(() => t1.evaluate(() => window.tether.state.doc('notes').status.getState().pending)).toBe(0);
  expect(await docView(t1, 'notes')).toEqual({ draft: 'typed in tab 1 and tab 2' });
  // A key an object record would drop (acknowledged, never stored) fails in the app, before anything is queued.
  const reserved = await t1.evaluate(() =>
    window.tether.state.doc('notes').transact((tx) => tx.set('__proto__', 'x')).then(() => 'committed', (error: unknown) => String(error)),
  );
  expect(reserved).toBe('TypeError: transact: set(key): __proto__ cannot be a document key (reserved: __proto__, constructor, prototype)');
  expect(await t1.evaluate(() => window.tether.state.doc('notes').status.getState().pending)).toBe(0);
  expect(await docView(t2, 'notes')).toEqual({ draft: 'typed in tab 1 and tab 2' });
  await context.close();
});

test('a reload while offline shows the pending state; after reconnecting it is committed once', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  await tab.evaluate(() => window.tether.state.doc('todo').transact((tx) => tx.set('milk', false)));
  network.refuse();
  await waitForConnection(tab, 'offline');
  await tab.evaluate(() => {
    void window.tether.state.doc('todo').transact((tx) => {
      tx.set('milk', true);
      tx.set('eggs', false);
    });
  });
  await expect.poll(() => tab.evaluate(() => window.tether.state.doc('todo').status.getState().pending)).toBe(1);

  await tab.reload(); // the only tab: the worker restarts from IndexedDB
  await waitForConnection(tab, 'offline', 15_000);
  await expect.poll(() => docView(tab, 'todo')).toEqual({ milk: true, eggs: false });
  expect(await tab.evaluate(() => window.tether.state.doc('todo').status.getState().pending)).toBe(1);

  await network.restore();
  await expect.poll(() => tab.evaluate(() => window.tether.state.doc('todo').status.getState().pending), { timeout: 15_000 }).toBe(0);
  const state = await apiDoc(server.httpUrl, 'todo');
  expect(state.version).toBe(2); // the setup, then the offline transaction: once
  expect(state.keys).toEqual({ milk: { value: true, version: 2 }, eggs: { value: false, version: 2 } });
  await context.close();
});

test('a rejected transaction whose tab was closed is reported on the document, not dropped', async ({ browser, openTab, network }) => {
  const [cx, cy] = [await browser.newContext(), await browser.newContext()];
  const [x1, x2] = [await openTab(cx), await openTab(cx)];
  const y = await openTab(cy, { direct: true });
  await y.evaluate(() => window.tether.state.doc('shared').transact((tx) => tx.set('hello', 'initial')));
  await expect.poll(() => docView(x2, 'shared')).toEqual({ hello: 'initial' });

  network.refuse();
  await waitForConnection(x1, 'offline');
  await x1.evaluate(() => {
    void window.tether.state.doc('shared').transact((tx) => {
      tx.get('hello');
      tx.set('hello', 'from a closed tab');
    });
  });
  await expect.poll(() => docView(x2, 'shared')).toEqual({ hello: 'from a closed tab' });
  await x1.close(); // nobody can run that function again
  await y.evaluate(() => window.tether.state.doc('shared').transact((tx) => {
    tx.get('hello');
    tx.set('hello', 'world');
  }));

  await network.restore();
  await expect.poll(() => x2.evaluate(() => window.tether.state.doc('shared').status.getState().conflicts.length)).toBe(1);
  const [conflict] = await x2.evaluate(() => window.tether.state.doc('shared').status.getState().conflicts);
  expect(conflict).toMatchObject({ writes: { hello: 'from a closed tab' }, current: { hello: 'world' } });
  expect(await docView(x2, 'shared')).toEqual({ hello: 'world' });
  await x2.evaluate(() => window.tether.state.doc('shared').clearConflicts());
  await expect.poll(() => x2.evaluate(() => window.tether.state.doc('shared').status.getState().conflicts)).toEqual([]);
  await Promise.all([cx.close(), cy.close()]);
});

test("the app's backend reads and commits through the HTTP API under the same version checks; when retries run out the conflict is listed", async ({ browser, openTab, server, network }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  await tab.evaluate(() => window.tether.state.doc('cart').transact((tx) => tx.set('items', 1)));
  const post = (body: unknown) =>
    fetch(`${server.httpUrl}/api/docs/cart/transact`, {
      method: 'POST',
      headers: { authorization: 'Bearer e2e-api-key', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  const stale = await post({ reads: { items: 0 }, writes: { items: 5 } });
  expect(stale.status).toBe(409);
  expect(await stale.json()).toMatchObject({ error: { code: 'conflict' }, current: { items: { value: 1, version: 1 } } });
  const ok = await post({ reads: { items: 1 }, writes: { items: 2, coupon: 'SPRING' } });
  expect(await ok.json()).toEqual({ doc: 'cart', version: 2 });
  await expect.poll(() => docView(tab, 'cart')).toEqual({ items: 2, coupon: 'SPRING' }); // live in the browser
  expect((await fetch(`${server.httpUrl}/api/docs/cart`)).status).toBe(401);

  // A transaction that may not run again (maxRetries 0) and meets a change: rejected, and listed.
  network.refuse();
  await waitForConnection(tab, 'offline');
  const result = tab.evaluate(() =>
    window.tether.state.doc('cart').transact((tx) => tx.set('items', (tx.get('items') as number) + 1), { maxRetries: 0 }).then(
      () => 'committed',
      (e: { code: string }) => e.code,
    ),
  );
  await post({ writes: { items: 10 } });
  await network.restore();
  expect(await result).toBe('conflict');
  expect(await tab.evaluate(() => window.tether.state.doc('cart').status.getState().conflicts)).toEqual([
    expect.objectContaining({ writes: { items: 3 }, current: { items: 10 } }),
  ]);
  expect(await docView(tab, 'cart')).toEqual({ items: 10, coupon: 'SPRING' });
  await context.close();
});

test('typing fast: each keystroke shows in its own tab before transact returns, nothing lags or jumps back, in any tab; every keystroke commits once, none conflicts', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const [typist, reader] = [await openTab(context), await openTab(context)];
  const doc = `typing-${Date.now()}`;
  for (const tab of [typist, reader]) {
    await tab.evaluate((doc) => {
      const d = window.tether.state.doc(doc);
      const w = window as unknown as { lengths: number[] };
      w.lengths = [];
      d.subscribe((state) => w.lengths.push(String((state as { text?: unknown }).text ?? '').length));
    }, doc);
    await expect.poll(() => tab.evaluate((doc) => window.tether.state.doc(doc).status.getState().synced, doc)).toBe(true);
  }
  const text = 'Hello, wörld! 😀 typed one key at a time…';
  const chars = [...text];
  // One keystroke per task, as a user types: each transaction reads what the previous one wrote.
  const result = await typist.evaluate(async ({ doc, chars }) => {
    const d = window.tether.state.doc(doc);
    const shownAtOnce: boolean[] = [];
    const runs: number[] = [];
    const done: Promise<unknown>[] = [];
    let expected = '';
    for (const char of chars) {
      expected += char;
      let count = 0;
      done.push(
        d.transact((tx) => {
          count++;
          tx.set('text', `${(tx.get('text') as string | undefined) ?? ''}${char}`);
        }).then(() => runs.push(count)),
      );
      // Before transact returned: the tab's own view shows the keystroke already.
      shownAtOnce.push((d.getState() as { text?: string }).text === expected);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await Promise.all(done);
    return { shownAtOnce, runs };
  }, { doc, chars });
  expect(result.shownAtOnce.every(Boolean)).toBe(true);
  expect(result.runs).toEqual(chars.map(() => 1)); // no keystroke ran twice (no conflict)
  await expect.poll(() => docView(reader, doc)).toEqual({ text });
  for (const tab of [typist, reader]) {
    const lengths = await tab.evaluate(() => (window as unknown as { lengths: number[] }).lengths);
    // The text only ever grew, in either tab: no keystroke vanished and came back.
    expect(lengths).toEqual([...lengths].sort((a, b) => a - b));
    expect(lengths.at(-1)).toBe(text.length);
  }
  // One document version per keystroke, on the server.
  expect(await apiDoc(server.httpUrl, doc)).toMatchObject({ version: chars.length, keys: { text: { value: text } } });
  expect(await typist.evaluate((doc) => window.tether.state.doc(doc).status.getState(), doc)).toMatchObject({ pending: 0, conflicts: [] });
  await context.close();
});
