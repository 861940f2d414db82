/**
 * Tokens and whose writes are whose. Each tab's writes belong to the user of that tab's token,
 * from the moment the tab attached; the socket carries the token of the most recently attached
 * tab that has one. A token function that fails (offline reload, a backend down) never orphans
 * a write: the tab's writes are filed under the last user this browser had a token for, kept,
 * counted, and sent once that user's token works again — and the status says the token fails.
 */
import type { ErrorShape } from '../protocol/errors.js';
import type { Tab } from './api.js';
import type { Database } from './db.js';
import { userOfToken } from './identity.js';

/** A token asked for at attach may serve the first handshake for this long. */
const UNUSED_TOKEN_MAX_AGE_MS = 10_000;
/** How long a tab may take to hand over a token before it counts as failing. */
export const TOKEN_TIMEOUT_MS = 3000;

export type TokenAnswer = { ok: true; token: string | undefined; user: string } | { ok: false; error: ErrorShape };

export class Tokens {
  private unused: { tabId: string; answer: Promise<TokenAnswer>; at: number } | undefined;
  private lastUser: string | undefined;
  /** Why the last token ask failed; undefined once one worked. */
  error: ErrorShape | undefined;

  constructor(
    private readonly url: string,
    private readonly db: () => Promise<Database>,
    private readonly onChange: () => void,
  ) {}

  /**
   * The user a new tab writes as: its token's, or when its token function fails, the last user
   * this browser had a token for (the app's user before the reload). The token is kept for the
   * first handshake, so attaching costs one ask, not two.
   */
  async userOfNewTab(tab: Tab): Promise<string> {
    const answer = this.ask(tab);
    this.unused = { tabId: tab.tabId, answer, at: Date.now() };
    const result = await answer;
    return result.ok ? result.user : await this.rememberedUser();
  }

  /** The token for the next handshake, from the newest tab that has a token function. */
  async forHandshake(tabs: Iterable<Tab>): Promise<TokenAnswer> {
    const newest = [...tabs].reverse();
    const withToken = newest.filter((tab) => tab.getToken !== undefined);
    const fresh = this.unused && Date.now() - this.unused.at < UNUSED_TOKEN_MAX_AGE_MS ? this.unused : undefined;
    this.unused = undefined;
    if (fresh && (withToken[0]?.tabId === fresh.tabId || (withToken.length === 0 && newest[0]?.tabId === fresh.tabId))) {
      const answer = await fresh.answer;
      if (answer.ok) return answer; // otherwise the tabs are asked again, newest first
    }
    if (withToken.length === 0) return { ok: true, token: undefined, user: '' };
    let last: TokenAnswer = { ok: false, error: { code: 'unauthorized', message: 'no tab gave a token' } };
    for (const tab of withToken) {
      last = await this.ask(tab);
      if (last.ok) return last;
    }
    return last;
  }

  private async ask(tab: Tab): Promise<TokenAnswer> {
    if (!tab.getToken) return { ok: true, token: undefined, user: '' };
    let timer: ReturnType<typeof setTimeout> | undefined;
    let answer: TokenAnswer;
    try {
      const token = await Promise.race([
        tab.getToken(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no token within ${TOKEN_TIMEOUT_MS} ms`)), TOKEN_TIMEOUT_MS))),
      ]);
      answer = { ok: true, token, user: userOfToken(token) };
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      answer = { ok: false, error: { code: 'unauthorized', message: `the token function failed (${reason}); writes are kept and sent once it works` } };
    } finally {
      clearTimeout(timer);
    }
    const before = this.error;
    this.error = answer.ok ? undefined : answer.error;
    if (answer.ok && answer.token !== undefined) await this.remember(answer.user);
    if (before?.message !== this.error?.message) this.onChange();
    return answer;
  }

  /** The last user with a working token (persisted: it outlives reloads). */
  private async rememberedUser(): Promise<string> {
    if (this.lastUser !== undefined) return this.lastUser;
    try {
      const db = await this.db();
      const records = await db.getAll('clients', IDBKeyRange.bound([this.url, ''], [this.url, '\uffff']));
      const latest = records.sort((a, b) => (b.lastUsedAt ?? 0) - (a.lastUsedAt ?? 0))[0];
      this.lastUser = latest?.user ?? '';
    } catch {
      this.lastUser = '';
    }
    return this.lastUser;
  }

  private async remember(user: string): Promise<void> {
    if (this.lastUser === user) return;
    this.lastUser = user;
    try {
      const db = await this.db();
      const tx = db.transaction('clients', 'readwrite');
      const record = await tx.store.get([this.url, user]);
      await Promise.all([tx.store.put({ url: this.url, user, clientId: crypto.randomUUID(), nextSeq: 1, ...record, lastUsedAt: Date.now() }), tx.done]);
    } catch {
      // Not remembered: after a reload with a failing token, writes fall back to an older user's outbox.
    }
  }
}
