import { test, expect, apiHistory, apiPublish, receivedIn, resetsIn, subscribeIn, waitForConnection } from './fixtures/test.js';

test('a subscriber cut off while 25 events are published through the HTTP API gets all 25 after reconnecting, in order', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  expect(await subscribeIn(tab, 'news')).toBeUndefined();
  network.blackhole();
  await waitForConnection(tab, 'offline', 6000);

  const offsets: number[] = [];
  for (let i = 0; i < 25; i++) {
    const response = await apiPublish(server.httpUrl, 'news', { headline: i });
    expect(response.status).toBe(200);
    offsets.push(((await response.json()) as { offset: number }).offset);
  }
  await network.restore();
  await expect.poll(async () => (await receivedIn(tab, 'news')).length, { timeout: 15_000 }).toBe(25);
  const events = await receivedIn(tab, 'news');
  expect(events.map((e) => e.data)).toEqual([...Array(25).keys()].map((i) => ({ headline: i })));
  expect(events.map((e) => e.offset)).toEqual(offsets);
  expect(await resetsIn(tab, 'news')).toEqual([]);

  // A reload resumes after the last delivered offset: nothing again, then only what is new.
  await tab.reload();
  await waitForConnection(tab, 'online');
  expect(await subscribeIn(tab, 'news')).toBeUndefined();
  await apiPublish(server.httpUrl, 'news', { headline: 'after reload' });
  await expect.poll(() => receivedIn(tab, 'news')).toEqual([{ data: { headline: 'after reload' }, offset: offsets.at(-1)! + 1 }]);
  await context.close();
});

test.describe('with a history of 10 events per channel', () => {
  test.use({ serverEnv: { TETHER_HISTORY_MAX_EVENTS: '10' } });

  test('a subscriber that missed more than the history holds gets an explicit reset, then what is left', async ({ browser, openTab, network, server }) => {
    const context = await browser.newContext();
    const tab = await openTab(context);
    expect(await subscribeIn(tab, 'ticker')).toBeUndefined();
    await apiPublish(server.httpUrl, 'ticker', 'seen');
    await expect.poll(() => receivedIn(tab, 'ticker')).toEqual([{ data: 'seen', offset: 1 }]);

    network.refuse();
    await waitForConnection(tab, 'offline');
    for (let i = 0; i < 25; i++) expect((await apiPublish(server.httpUrl, 'ticker', i)).status).toBe(200);
    await network.restore();

    // Offsets 2..16 are gone (26 events, 10 kept): the reset says so; 17..26 follow.
    await expect.poll(() => resetsIn(tab, 'ticker'), { timeout: 15_000 }).toEqual([expect.objectContaining({ channel: 'ticker', offset: 16 })]);
    await expect.poll(async () => (await receivedIn(tab, 'ticker')).length).toBe(11);
    const events = await receivedIn(tab, 'ticker');
    expect(events.slice(1).map((e) => e.offset)).toEqual([...Array(10).keys()].map((i) => i + 17));
    expect(events.slice(1).map((e) => e.data)).toEqual([...Array(10).keys()].map((i) => i + 15));
    await context.close();
  });
});

test('the HTTP API: key required (header only, constant-time), idempotent retries, clear errors', async ({ server }) => {
  const body = JSON.stringify({ channel: 'billing', data: { invoice: 7 } });
  const post = (headers: Record<string, string>, url = `${server.httpUrl}/api/publish`, payload = body) =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: payload });

  for (const [name, response] of [
    ['no key', await post({})],
    ['wrong key', await post({ authorization: 'Bearer not-the-key' })],
    ['wrong scheme', await post({ authorization: 'Basic e2e-api-key' })],
    ['key in the query string', await post({}, `${server.httpUrl}/api/publish?key=e2e-api-key&api_key=e2e-api-key`)],
  ] as const) {
    expect(response.status, name).toBe(401);
    expect(await response.json(), name).toEqual({ error: { code: 'unauthorized', message: 'missing or wrong API key (Authorization: Bearer <TETHER_API_KEY>)' } });
  }
  const history401 = await fetch(`${server.httpUrl}/api/history?channel=billing`);
  expect(history401.status).toBe(401);

  const auth = { authorization: 'Bearer e2e-api-key' };
  const first = await post({ ...auth, 'idempotency-key': 'invoice-7' });
  const retry = await post({ ...auth, 'idempotency-key': 'invoice-7' });
  expect(first.status).toBe(200);
  expect(retry.status).toBe(200);
  const { offset } = (await first.json()) as { offset: number };
  expect(await retry.json()).toEqual({ channel: 'billing', offset });
  expect(retry.headers.get('idempotent-replayed')).toBe('true');
  expect(await apiHistory(server.httpUrl, 'billing')).toEqual([{ offset, data: { invoice: 7 }, createdAt: expect.any(String), publisher: { backend: true } }]);

  const bad = async (payload: string, code: string, message: RegExp, status = 400) => {
    const response = await post(auth, undefined, payload);
    expect(response.status, payload.slice(0, 40)).toBe(status);
    const json = (await response.json()) as { error: { code: string; message: string } };
    expect(json.error.code).toBe(code);
    expect(json.error.message).toMatch(message);
  };
  await bad('not json', 'invalid_message', /not valid JSON/);
  await bad(JSON.stringify({ channel: 'has space', data: 1 }), 'invalid_message', /channel/);
  await bad(JSON.stringify({ channel: 'room:*', data: 1 }), 'invalid_message', /channel/);
  await bad(JSON.stringify({ data: 1 }), 'invalid_message', /channel/);
  await bad(JSON.stringify({ channel: 'big', data: 'x'.repeat(70_000) }), 'message_too_big', /larger than/, 413);
  const since = await fetch(`${server.httpUrl}/api/history?channel=billing&since=-1`, { headers: auth });
  expect(since.status).toBe(400);
  const wrongMethod = await fetch(`${server.httpUrl}/api/publish`, { headers: auth });
  expect(wrongMethod.status).toBe(405);
});
