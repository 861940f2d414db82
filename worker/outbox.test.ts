import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { database } from './db.js';
import { clientIdentity, userOfToken } from './identity.js';
import { Outbox } from './outbox.js';

describe('outbox', () => {
  it('stores concurrent writes in one transaction with consecutive sequences, per user', async () => {
    const db = await database();
    const alice = await clientIdentity(db, 'ws://a/ws', 'alice');
    const bob = await clientIdentity(db, 'ws://a/ws', 'bob');
    expect(alice.clientId).not.toBe(bob.clientId);
    expect(await clientIdentity(db, 'ws://a/ws', 'alice')).toEqual(alice); // stable per user

    const outbox = new Outbox(database, 'ws://a/ws', alice);
    const entries = await Promise.all([0, 1, 2].map((i) => outbox.add({ op: 'publish', channel: 'c', data: i })));
    expect(entries.map((e) => e.seq)).toEqual([1, 2, 3]);
    const later = await outbox.add({ op: 'publish', channel: 'c', data: 3 });
    expect(later.seq).toBe(4);
    expect((await outbox.list()).map((e) => (e.op === 'publish' ? e.data : null))).toEqual([0, 1, 2, 3]);
    expect(await new Outbox(database, 'ws://a/ws', bob).list()).toEqual([]);

    outbox.remove(1);
    outbox.remove(2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await outbox.list()).map((e) => e.seq)).toEqual([3, 4]);
    // Sequences never go back, even after the queue drained.
    expect((await outbox.add({ op: 'publish', channel: 'c', data: 4 })).seq).toBe(5);
  });

  it('reads the user from a token without trusting it', () => {
    const payload = btoa(JSON.stringify({ sub: 'user-17', exp: 1 })).replace(/=+$/, '');
    expect(userOfToken(`h.${payload}.sig`)).toBe('user-17');
    expect(userOfToken(undefined)).toBe('');
    expect(userOfToken('garbage')).toBe('');
    expect(userOfToken('a.!!!.c')).toBe('');
  });
});
