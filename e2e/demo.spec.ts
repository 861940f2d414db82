import type { Page } from '@playwright/test';
import { test, expect, apiDoc, waitForConnection } from './fixtures/test.js';

/** Adds a card through the board's form. */
async function addCard(page: Page, text: string): Promise<void> {
  await page.getByLabel('new card').fill(text);
  await page.getByRole('button', { name: 'Add' }).click();
}

const cards = (page: Page) => page.locator('#board .card-text');

test('the board: an edit made offline meets a concurrent edit, is re-applied on the latest version, and both browsers converge', async ({ browser, openTab, network }) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  const a = await openTab(ca);
  const b = await openTab(cb, { direct: true });
  await addCard(a, 'Write the agenda');
  await expect(cards(b)).toHaveText(['Write the agenda']);

  network.refuse();
  await expect(a.locator('#status')).toHaveAttribute('data-state', 'offline');
  await a.getByRole('button', { name: 'edit: Write the agenda' }).click();
  await a.getByLabel('text of Write the agenda').fill('Agenda, by A');
  await a.getByRole('button', { name: 'Save' }).click();
  await expect(cards(a)).toHaveText(['Agenda, by A']); // optimistic: at once, offline
  await expect(a.locator('#pending')).toHaveText('1 pending');

  await b.getByRole('button', { name: 'edit: Write the agenda' }).click();
  await b.getByLabel('text of Write the agenda').fill('Agenda, by B');
  await b.getByRole('button', { name: 'Save' }).click();
  await expect(cards(b)).toHaveText(['Agenda, by B']);

  await network.restore();
  await expect(a.locator('#board-notice')).toContainText('Conflict resolved: “Agenda, by A” met a change from someone else');
  await expect(cards(a)).toHaveText(['Agenda, by A']);
  await expect(cards(b)).toHaveText(['Agenda, by A']);
  await expect(a.locator('#status')).toHaveAttribute('data-state', 'online');
  await expect(a.locator('#last-sync')).toContainText('last sync: just now');
  await a.screenshot({ path: test.info().outputPath('board-conflict-resolved.png') });
  await Promise.all([ca.close(), cb.close()]);
});

test('the offline app shell: edit offline, reload with no network, the edit is still there; back online the other browser sees it once', async ({ browser, openTab, network, server }) => {
  // A loads the app through the proxy too, so cutting it takes away the page's network as well as the socket.
  const ca = await browser.newContext();
  const a = await ca.newPage();
  await a.goto(`http://127.0.0.1:${network.port}/`);
  await waitForConnection(a, 'online');
  await a.evaluate(() => navigator.serviceWorker.ready.then(() => undefined));
  const cb = await browser.newContext();
  const b = await openTab(cb, { direct: true });

  await addCard(a, 'Before the outage');
  await expect(cards(b)).toHaveText(['Before the outage']);

  network.refuse();
  await expect(a.locator('#status')).toHaveAttribute('data-state', 'offline');
  await addCard(a, 'Made offline');
  await expect(cards(a)).toHaveText(['Before the outage', 'Made offline']);

  await a.reload(); // no network: the service worker serves the app, IndexedDB the data
  await expect(a.locator('#status')).toHaveAttribute('data-state', 'offline');
  await expect(cards(a)).toHaveText(['Before the outage', 'Made offline']);
  await expect(a.locator('#pending')).toHaveText('1 pending');
  // Pending across the reload (from the outbox), on that card only.
  await expect(a.locator('#board li[data-pending]')).toHaveCount(1);
  await expect(a.locator('#board li[data-card="Made offline"] .badge-pending')).toBeVisible();
  await a.screenshot({ path: test.info().outputPath('offline-reload.png') });

  await network.restore();
  await expect(cards(b)).toHaveText(['Before the outage', 'Made offline']);
  await expect(a.locator('#pending')).toHaveText('');
  await expect(a.locator('#board .badge-pending')).toHaveCount(0);
  const board = await apiDoc(server.httpUrl, 'board');
  expect(Object.values(board.keys).map((k) => (k.value as { text: string }).text).sort()).toEqual(['Before the outage', 'Made offline']);
  expect(board.version).toBe(2); // each card committed once
  await Promise.all([ca.close(), cb.close()]);
});

test('the demo at a glance (screenshot for the README)', async ({ browser, openTab }) => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await openTab(context);
  for (const text of ['Plan the release', 'Review the offline demo', 'Book the room']) await addCard(page, text);
  await page.getByRole('checkbox', { name: 'done: Book the room' }).click(); // a transaction: the box follows the document
  await page.getByLabel('message').fill('Board is up to date');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.getByRole('button', { name: 'Call' }).click();
  await expect(page.locator('#rpc-result')).toHaveText('"Hello, world!"');
  await expect(page.locator('#chat-log .msg-text')).toHaveText(['Board is up to date']);
  await expect(page.locator('.badge-pending')).toHaveCount(0);
  await expect(page.locator('#board li.done .card-text')).toHaveText(['Book the room']);
  await page.screenshot({ path: test.info().outputPath('demo.png') });
  await context.close();
});
