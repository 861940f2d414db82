/**
 * The worker inspector in a browser: the panel (`/tether-inspector.js`, `Tether.mountInspector`)
 * mounted in the demo page renders what the one worker holds, live — the outbox while the
 * network is cut (through the TCP proxy: setOffline does not reach a SharedWorker), subscription
 * offsets as events come, the same state from every tab, and (leader election) the same after
 * the leader tab goes away.
 */
import type { Locator, Page } from '@playwright/test';
import { test, expect, apiPublish, subscribeIn, waitForConnection } from './fixtures/test.js';

/** Mounts the panel at the end of the page, by script tag, as a developer would from the console. */
async function mountPanel(page: Page): Promise<Locator> {
  await page.addScriptTag({ url: '/tether-inspector.js' });
  await page.evaluate(() => {
    const host = document.createElement('div');
    host.id = 'tether-inspector';
    document.body.append(host);
    const tether = window.Tether as unknown as { mountInspector: (element: HTMLElement, client: unknown) => () => void };
    (window as unknown as { unmountInspector: () => void }).unmountInspector = tether.mountInspector(host, window.tether);
  });
  return page.locator('#tether-inspector');
}

const outboxRows = (panel: Locator) => panel.locator('section[data-section="outbox"] tbody tr');
const field = (panel: Locator, name: string) => panel.locator(`header [data-field="${name}"]`);

function publishInBackground(page: Page, channel: string, data: unknown): Promise<void> {
  return page.evaluate(
    ({ channel, data }) => {
      const w = window as unknown as { published?: Promise<unknown>[] };
      (w.published ??= []).push(window.tether.pubsub.publish(channel, data));
    },
    { channel, data },
  );
}

const allPublished = (page: Page) => page.evaluate(() => Promise.all((window as unknown as { published: Promise<{ offset: number | null }>[] }).published));

test('a write made offline shows in both tabs’ panels (seq, channel, not sent yet) and leaves them once acknowledged', async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const a = await openTab(context);
  const b = await openTab(context);
  const [panelA, panelB] = [await mountPanel(a), await mountPanel(b)];
  for (const panel of [panelA, panelB]) {
    await expect(field(panel, 'connection')).toHaveText('online');
    await expect(field(panel, 'tabs')).toHaveText('2'); // one worker for both tabs
  }

  network.refuse();
  await waitForConnection(a, 'offline', 6000);
  await expect(field(panelA, 'connection')).toHaveText('offline');
  await publishInBackground(a, 'inspector-orders', { item: 'not shown anywhere' });
  const [pending] = await a.evaluate(() => window.tether.pubsub.pending());
  expect(pending).toMatchObject({ op: 'publish', channel: 'inspector-orders' });
  for (const panel of [panelA, panelB]) {
    await expect(outboxRows(panel)).toHaveCount(1);
    // seq, kind, target, age, attempts, bytes
    await expect(outboxRows(panel).first().locator('td')).toHaveText([String(pending!.seq), 'publish', 'inspector-orders', /now|\d+ s/, '0', /^\d+$/]);
  }
  await expect(panelA.locator('section[data-section="log"] .line.warn').filter({ hasText: /\d{3}offline \(websocket closed, code \d+\)$/ })).not.toHaveCount(0);
  await expect(panelA).not.toContainText('not shown anywhere');

  await network.restore();
  expect(await allPublished(a)).toEqual([{ offset: 1 }]);
  for (const panel of [panelA, panelB]) {
    await expect(outboxRows(panel)).toHaveCount(0);
    await expect(panel.locator('section[data-section="outbox"]')).toContainText('nothing waits for the server');
    await expect(field(panel, 'connection')).toHaveText('online');
  }
  await expect(panelB.locator('section[data-section="log"] .line.info').filter({ hasText: /online over websocket: session/ })).not.toHaveCount(0);
  // Unmounted: the panel is gone and the page's own DOM is untouched.
  await a.evaluate(() => (window as unknown as { unmountInspector: () => void }).unmountInspector());
  await expect(panelA.locator('section')).toHaveCount(0);
  await context.close();
});

test('a subscription’s offset in the panel advances as events come, in every tab', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const a = await openTab(context);
  const b = await openTab(context);
  expect(await subscribeIn(a, 'inspector-feed')).toBeUndefined();
  const [panelA, panelB] = [await mountPanel(a), await mountPanel(b)];
  const row = (panel: Locator) => panel.locator('section[data-section="subscriptions"] tr[data-key="inspector-feed"] td');
  for (const panel of [panelA, panelB]) await expect(row(panel)).toHaveText(['inspector-feed', '0', /.+/, '1', 'live']);
  for (let n = 1; n <= 3; n++) {
    expect((await apiPublish(server.httpUrl, 'inspector-feed', { n })).status).toBe(200);
    for (const panel of [panelA, panelB]) await expect(row(panel).nth(1)).toHaveText(String(n));
  }
  await context.close();
});

test('leader election: a follower tab’s panel shows the leader’s engine, and again after the leader tab closes', async ({ browser, server, network }) => {
  const context = await browser.newContext();
  const open = async () => {
    const page = await context.newPage();
    await page.goto(`${server.httpUrl}/?mode=leader-election&ws=${encodeURIComponent(`ws://127.0.0.1:${network.port}/ws`)}`);
    await waitForConnection(page, 'online', 20_000);
    return page;
  };
  const leader = await open();
  const follower = await open();
  await expect.poll(() => follower.evaluate(() => window.tether.status.getState().mode)).toBe('follower');
  const panel = await mountPanel(follower);
  await expect(panel.locator('header .chip').nth(1)).toHaveText('follower');
  await expect(field(panel, 'tabs')).toHaveText('2');

  network.refuse();
  await waitForConnection(follower, 'offline', 6000);
  await publishInBackground(follower, 'inspector-relay', 'from the follower');
  await expect(outboxRows(panel)).toHaveCount(1);
  await expect(outboxRows(panel).first().locator('td').nth(2)).toHaveText('inspector-relay');

  await leader.close();
  // The follower's worker is elected; its relay asks the new engine for the inspection again.
  await expect(panel.locator('header .chip').nth(1)).toHaveText('leader', { timeout: 20_000 });
  await expect(field(panel, 'tabs')).toHaveText('1');
  await expect(outboxRows(panel)).toHaveCount(1);
  await network.restore();
  expect(await allPublished(follower)).toEqual([{ offset: 1 }]);
  await expect(outboxRows(panel)).toHaveCount(0);
  await context.close();
});

test('a push changes only what changed: a selection in the log survives while lines are appended and rows are the same nodes', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const a = await openTab(context);
  expect(await subscribeIn(a, 'inspector-select')).toBeUndefined();
  const panel = await mountPanel(a);
  const lines = panel.locator('section[data-section="log"] .line');
  await expect(lines.filter({ hasText: /online over websocket/ })).not.toHaveCount(0);
  const row = panel.locator('section[data-section="subscriptions"] tr[data-key="inspector-select"] td');
  await expect(row).toHaveText(['inspector-select', '0', /.+/, '1', 'live']);

  // Select the first log line (as a reader about to copy it), and mark it and the row.
  const selected = await a.evaluate(() => {
    const root = document.getElementById('tether-inspector')!.shadowRoot!;
    const first = root.querySelector('section[data-section="log"] .line')!;
    const range = document.createRange();
    range.selectNodeContents(first);
    getSelection()!.removeAllRanges();
    getSelection()!.addRange(range);
    Object.assign(first, { marked: true });
    Object.assign(root.querySelector('tr[data-key="inspector-select"]')!, { marked: true });
    return first.textContent;
  });
  expect(selected).toMatch(/\d{2}:\d{2}:\d{2}\.\d{3}/);
  const count = await lines.count();

  // Pushes: new log lines (tabs attaching) and a subscription offset moving.
  await openTab(context);
  await openTab(context);
  for (let n = 1; n <= 3; n++) expect((await apiPublish(server.httpUrl, 'inspector-select', { n })).status).toBe(200);
  await expect(row.nth(1)).toHaveText('3');
  await expect(lines.filter({ hasText: /attached \(3 in all\)/ })).toHaveCount(1);
  await expect.poll(() => lines.count()).toBeGreaterThanOrEqual(count + 2);

  const after = await a.evaluate(() => {
    const root = document.getElementById('tether-inspector')!.shadowRoot!;
    const selection = (root as unknown as { getSelection?: () => Selection | null }).getSelection?.() ?? getSelection()!;
    return {
      selection: selection.toString(),
      lineKept: (root.querySelector('section[data-section="log"] .line') as unknown as { marked?: boolean }).marked === true,
      rowKept: (root.querySelector('tr[data-key="inspector-select"]') as unknown as { marked?: boolean }).marked === true,
    };
  });
  expect(after).toEqual({ selection: selected, lineKept: true, rowKept: true });
  await context.close();
});

test('mounting twice on one element: the second takes it over; unmounting the first leaves the second alone', async ({ browser, openTab }) => {
  const context = await browser.newContext();
  const a = await openTab(context);
  const panel = await mountPanel(a);
  await expect(field(panel, 'connection')).toHaveText('online');
  await a.evaluate(() => {
    const host = document.getElementById('tether-inspector')!;
    // The app's own node in the shadow root: no mount may remove it.
    host.shadowRoot!.append(Object.assign(document.createElement('p'), { id: 'own', textContent: 'the app’s' }));
    const tether = window.Tether as unknown as { mountInspector: (element: HTMLElement, client: unknown) => () => void };
    (window as unknown as { unmountSecond: () => void }).unmountSecond = tether.mountInspector(host, window.tether);
  });
  await expect(panel.locator('.panel')).toHaveCount(1);
  await expect(panel.locator('section')).toHaveCount(5);
  await a.evaluate(() => (window as unknown as { unmountInspector: () => void }).unmountInspector()); // the first
  await expect(panel.locator('.panel')).toHaveCount(1);
  await expect(field(panel, 'connection')).toHaveText('online');
  // Still live: a tab attaching shows.
  await openTab(context);
  await expect(field(panel, 'tabs')).toHaveText('2');
  await a.evaluate(() => (window as unknown as { unmountSecond: () => void }).unmountSecond());
  await expect(panel.locator('section')).toHaveCount(0);
  await expect(panel.locator('#own')).toHaveText('the app’s');
  await context.close();
});
