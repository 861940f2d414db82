/**
 * A walk through the demo as a team uses it, two people in two browsers: choose a name, fill the
 * board, chat, see who is here and who is typing, lose the network (pending badges, the inspector's outbox), come back (badges go, a
 * conflict is resolved by re-running). It writes the README's screenshots to docs/screenshots/ at fixed viewport sizes.
 */
import { fileURLToPath } from 'node:url';
import type { BrowserContext, Page } from '@playwright/test';
import { test, expect } from './fixtures/test.js';

const VIEWPORT = { width: 1280, height: 800 };
async function shot(page: Page, name: string): Promise<void> {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: fileURLToPath(new URL(`../docs/screenshots/${name}.png`, import.meta.url)), animations: 'disabled' });
}

/** Gives the browser of `context` a display name without the welcome prompt (as if chosen earlier). */
async function knownAs(context: BrowserContext, name: string, color: string): Promise<void> {
  await context.addInitScript(
    ({ name, color }) => {
      if (!localStorage.getItem('tether-demo:identity')) localStorage.setItem('tether-demo:identity', JSON.stringify({ name, color, uid: crypto.randomUUID(), confirmed: true }));
    },
    { name, color },
  );
}

async function addCard(page: Page, text: string): Promise<void> {
  await page.getByLabel('new card').fill(text);
  await page.getByRole('button', { name: 'Add' }).click();
  await expect(page.locator(`#board li[data-card="${text}"]`)).toBeVisible();
}

async function say(page: Page, text: string): Promise<void> {
  await page.getByLabel('message').fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

const card = (page: Page, text: string) => page.locator(`#board li[data-card="${text}"]`);
const column = (page: Page, id: 'todo' | 'doing' | 'done') => page.locator(`#board [data-column="${id}"] .card-text`);
const messages = (page: Page) => page.locator('#chat-log .msg-text');

test('a team day on the demo: names, board, chat, an outage with pending badges, the way back (README screenshots)', async ({ browser, openTab, network }) => {
  const ca = await browser.newContext({ viewport: VIEWPORT });
  const cb = await browser.newContext({ viewport: VIEWPORT, colorScheme: 'dark' }); // Bob works in dark mode
  await knownAs(cb, 'Bob Marley', '#175cd3');
  const alice = await openTab(ca);
  const bob = await openTab(cb, { direct: true });

  // Alice is asked once for a name (a friendly one was made up); she picks hers and a colour.
  await expect(alice.locator('#welcome')).toContainText('Your team will see you as');
  await alice.getByRole('button', { name: 'Choose another name' }).click();
  await alice.getByLabel('Your name').fill('Alice Chen');
  await alice.getByRole('radio', { name: 'pink' }).check();
  await shot(alice, 'name-prompt');
  await alice.getByRole('button', { name: 'Done' }).click();
  await expect(alice.locator('#welcome')).toHaveCount(0);
  await expect(alice.locator('#profile-button')).toContainText('Alice Chen');
  await expect(bob.locator('#welcome')).toHaveCount(0);

  // The board: cards added, one dragged to "In progress", one ticked done; Bob sees it all.
  for (const text of ['Plan the release', 'Write the changelog', 'Review the offline demo', 'Book the room', 'Update the roadmap']) await addCard(alice, text);
  await card(alice, 'Write the changelog').dragTo(alice.locator('#board [data-column="doing"]'));
  await alice.getByRole('checkbox', { name: 'done: Book the room' }).click();
  await bob.getByRole('button', { name: 'move Update the roadmap to In progress' }).click();
  await expect(column(bob, 'todo')).toHaveText(['Plan the release', 'Review the offline demo']);
  await expect(column(alice, 'doing')).toHaveText(['Write the changelog', 'Update the roadmap']);
  await expect(column(alice, 'done')).toHaveText(['Book the room']);
  await expect(card(alice, 'Update the roadmap')).toContainText('Bob Marley');

  // The chat: bubbles with author and time; your own on the right.
  await say(alice, 'Morning! The board is up to date.');
  await say(bob, 'Thanks, I will take the roadmap.');
  await say(alice, 'Great, I am on the changelog.');
  await expect(messages(alice)).toHaveText(['Morning! The board is up to date.', 'Thanks, I will take the roadmap.', 'Great, I am on the changelog.']);
  await expect(messages(bob)).toHaveText(['Morning! The board is up to date.', 'Thanks, I will take the roadmap.', 'Great, I am on the changelog.']);
  await expect(alice.locator('#chat-log li.msg.mine')).toHaveCount(2);

  // Presence: each sees the other, on the board and in the chat; Alice's second tab counts under her.
  const alice2 = await openTab(ca);
  for (const channel of ['board', 'chat']) {
    await expect(bob.locator(`.presence[data-channel="${channel}"] [data-member="Alice Chen"]`)).toHaveAttribute('data-tabs', '2');
    await expect(alice.locator(`.presence[data-channel="${channel}"] [data-member="Bob Marley"]`)).toHaveAttribute('data-tabs', '1');
    await expect(alice.locator(`.presence[data-channel="${channel}"] .presence-count`)).toHaveText('2 here');
  }
  await expect(alice.locator('.presence-person.self [title]').first()).toHaveAttribute('title', 'Alice Chen (you): 2 tabs · 1 browser');
  // Bob types (without sending): Alice sees it; the list of who is here says who has how many tabs.
  await bob.getByLabel('message').fill('I can review the offline demo');
  await expect(alice.locator('#typing')).toHaveText('Bob Marley is typing…');
  await alice.getByRole('button', { name: 'Chat: 2 people here' }).click();
  await expect(alice.locator('#presence-chat-list .presence-name')).toHaveText(['Alice Chen (you)', 'Bob Marley']);
  await expect(alice.locator('#presence-chat-list .presence-spread')).toHaveText(['2 tabs · 1 browser', '1 tab · 1 browser']);
  await shot(alice, 'presence-typing');
  await bob.getByLabel('message').fill('');
  await expect(alice.locator('#typing')).toHaveText('');
  await alice.keyboard.press('Escape');
  await expect(alice.locator('#presence-chat-list')).toHaveCount(0);
  await alice.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
  await alice2.close();
  await expect(bob.locator('.presence[data-channel="chat"] [data-member="Alice Chen"]')).toHaveAttribute('data-tabs', '1');
  await expect(alice.locator('#status')).toHaveAttribute('data-state', 'online');
  await expect(alice.locator('.badge-pending')).toHaveCount(0);
  await card(alice, 'Write the changelog').hover(); // its actions show
  await shot(alice, 'board-and-chat');

  // Alice loses the network: what she does waits in her browser, each thing marked pending.
  network.refuse();
  await expect(alice.locator('#status')).toHaveAttribute('data-state', 'offline');
  await expect(alice.locator('#offline-banner')).toBeVisible();
  await addCard(alice, 'Draft the announcement');
  await alice.getByRole('button', { name: 'move Plan the release to In progress' }).click();
  await alice.getByRole('button', { name: 'edit: Review the offline demo' }).click();
  await alice.getByLabel('text of Review the offline demo').fill('Review the offline demo (Alice)');
  await alice.getByRole('button', { name: 'Save' }).click();
  await say(alice, 'On the train, this goes out when I am back.');
  await expect(alice.locator('#pending')).toHaveText('4 pending');
  // Exactly the three cards and the message she changed carry the badge.
  await expect(alice.locator('#board li[data-pending]')).toHaveCount(3);
  for (const text of ['Draft the announcement', 'Plan the release', 'Review the offline demo (Alice)']) await expect(card(alice, text).locator('.badge-pending')).toBeVisible();
  await expect(alice.locator('#chat-log li[data-pending] .msg-text')).toHaveText(['On the train, this goes out when I am back.']);
  await expect(alice.locator('#chat-log .badge-pending')).toHaveCount(1);
  // Nothing of it reached Bob, who edits the same card meanwhile.
  await expect(messages(bob)).toHaveCount(3);
  await bob.getByRole('button', { name: 'edit: Review the offline demo' }).click();
  await bob.getByLabel('text of Review the offline demo').fill('Review the offline demo (Bob)');
  await bob.getByRole('button', { name: 'Save' }).click();
  await expect(bob.locator('.badge-pending')).toHaveCount(0); // Bob is online: acknowledged at once
  await shot(alice, 'offline-pending');

  // The inspector, one click away: the worker's outbox holds exactly those four writes.
  await alice.getByRole('button', { name: 'Inspector' }).click();
  const inspector = alice.locator('#inspector');
  await expect(inspector.locator('[data-field="connection"]')).toContainText('offline');
  await expect(inspector.locator('section[data-section="outbox"] h3 .badge')).toHaveText('4');
  await expect(inspector.locator('section[data-section="outbox"] tbody tr')).toHaveCount(4);
  await shot(alice, 'inspector-offline');
  await alice.getByRole('button', { name: 'Close the inspector' }).click();
  await expect(inspector).toHaveCount(0);

  // Back online: sent once, the badges go, and Alice's edit met Bob's: re-run on the latest version.
  await network.restore();
  await expect(alice.locator('#board-notice')).toContainText('Conflict resolved: “Review the offline demo (Alice)” met a change from someone else');
  await expect(alice.locator('#pending')).toHaveText('');
  await expect(alice.locator('.badge-pending')).toHaveCount(0);
  await expect(alice.locator('#board li[data-pending]')).toHaveCount(0);
  await expect(messages(bob)).toHaveText([
    'Morning! The board is up to date.',
    'Thanks, I will take the roadmap.',
    'Great, I am on the changelog.',
    'On the train, this goes out when I am back.',
  ]);
  await expect(column(bob, 'todo')).toHaveText(['Review the offline demo (Alice)', 'Draft the announcement']);
  await expect(column(bob, 'doing')).toHaveText(['Plan the release', 'Write the changelog', 'Update the roadmap']);
  await expect(alice.locator('#status')).toHaveAttribute('data-state', 'online');
  await shot(alice, 'back-online-conflict');
  await bob.mouse.move(640, 790);
  await shot(bob, 'dark');
  await alice.getByRole('button', { name: 'Dismiss notice' }).click();
  await expect(alice.locator('#board-notice')).toHaveCount(0);

  // The same board on a phone.
  const cp = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await knownAs(cp, 'Chloe Park', '#067647');
  const phone = await openTab(cp, { direct: true });
  await expect(column(phone, 'todo')).toHaveText(['Review the offline demo (Alice)', 'Draft the announcement']);
  await shot(phone, 'phone');
  await Promise.all([ca.close(), cb.close(), cp.close()]);
});
