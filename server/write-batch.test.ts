/**
 * `writes` frames: several queued writes in one frame, each handled exactly as if it had come
 * alone — in order, once, answered on its own — and everything a hostile client can do with
 * the envelope refused with a clear error while the server keeps serving everyone else.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { randomUUID } from 'node:crypto';
import { startServer, type ServerOptions, type TetherServer } from './server.js';
import { RawClient, type Frame } from './testing/raw-client.js';
import { MAX_WRITE_BATCH, WRITES_PER_RATE_TOKEN } from '../protocol/messages.js';
import { CloseCode } from '../protocol/constants.js';

const silent = pino({ level: 'silent' });
const base: ServerOptions = { port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:' };

afterEach(() => {
  for (const c of RawClient.all) c.ws.terminate();
});

const publish = (seq: number, channel: string, data: unknown): Frame => ({ type: 'publish', seq, channel, data });

async function writer(port: number): Promise<{ client: RawClient; welcome: Frame }> {
  const client = await new RawClient(`ws://127.0.0.1:${port}/ws`).open();
  client.send({ type: 'handshake', v: 1, clientId: `c-${randomUUID()}` });
  return { client, welcome: await client.next() };
}

/** Frames received: `answers` frames counted, to check a `writes` frame is answered in one. */
const answerFrames = new WeakMap<RawClient, number>();

/** The answers to writes (ack, conflict or error with a seq), `count` of them, in arrival order (`answers` frames taken apart). */
async function answers(client: RawClient, count: number): Promise<Frame[]> {
  const got: Frame[] = [];
  while (got.length < count) {
    const frame = await client.next();
    if (frame.type === 'answers') {
      answerFrames.set(client, (answerFrames.get(client) ?? 0) + 1);
      got.push(...(frame.answers as Frame[]));
    } else if (frame.seq !== undefined) got.push(frame);
  }
  return got;
}

async function stored(server: TetherServer, channel: string): Promise<unknown[]> {
  const page = await server.store.history(channel, { offset: 0 }, 1000);
  return page.events.map((e) => JSON.parse(e.data) as unknown);
}

describe('writes frames', () => {
  let server: TetherServer;
  let port: number;

  beforeAll(async () => {
    server = await startServer(base);
    port = server.port;
  });
  afterAll(async () => server.close());

  it('the welcome offers them', async () => {
    const { welcome } = await writer(port);
    expect(welcome).toMatchObject({ type: 'welcome', maxWriteBatch: MAX_WRITE_BATCH });
  });

  it('applies each write once, in order, with its own answer; a resent frame has no second effect', async () => {
    const { client } = await writer(port);
    const channel = `batch-${randomUUID()}`;
    const batch = { type: 'writes', writes: Array.from({ length: MAX_WRITE_BATCH }, (_, i) => publish(i + 1, channel, { i, text: 'é😀\u2028' })) };
    client.send(batch);
    const first = await answers(client, MAX_WRITE_BATCH);
    // Stored in one commit, answered in one frame (batching on the way back too).
    expect(answerFrames.get(client)).toBe(1);
    expect(first.map((a) => a.seq)).toEqual(Array.from({ length: MAX_WRITE_BATCH }, (_, i) => i + 1));
    expect(first.every((a) => a.type === 'ack')).toBe(true);
    const offsets = first.map((a) => a.offset as number);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    // The same frame again (the ack was lost): the same answers, nothing stored twice.
    client.send(batch);
    const again = await answers(client, MAX_WRITE_BATCH);
    expect(again.map((a) => a.offset)).toEqual(offsets);
    expect(await stored(server, channel)).toEqual(Array.from({ length: MAX_WRITE_BATCH }, (_, i) => ({ i, text: 'é😀\u2028' })));
  });

  it('mixes with single frames in sequence order, and a gap inside a frame is out_of_order for the rest', async () => {
    const { client } = await writer(port);
    const channel = `mix-${randomUUID()}`;
    client.send(publish(1, channel, 'one'));
    client.send({ type: 'writes', writes: [publish(2, channel, 'two'), publish(4, channel, 'four')] });
    const got = await answers(client, 3);
    expect(got[0]).toMatchObject({ type: 'ack', seq: 1 });
    expect(got[1]).toMatchObject({ type: 'ack', seq: 2 });
    expect(got[2]).toMatchObject({ type: 'error', seq: 4, code: 'out_of_order' });
    expect(await stored(server, channel)).toEqual(['one', 'two']);
  });

  it('a malformed write inside a frame is refused with its seq and takes its place; the others are stored', async () => {
    const { client } = await writer(port);
    const channel = `bad-${randomUUID()}`;
    client.send({
      type: 'writes',
      writes: [
        publish(1, channel, 'before'),
        { type: 'publish', seq: 2, channel: 'no spaces allowed', data: 1 },
        { type: 'transact', seq: 3, doc: 'd', reads: {}, writes: { __proto__x: 1, ['k'.repeat(201)]: 2 } },
        publish(4, channel, 'after'),
      ],
    });
    const got = await answers(client, 4);
    expect(got.map((a) => [a.seq, a.type, a.code])).toEqual([
      [1, 'ack', undefined],
      [2, 'error', 'invalid_message'],
      [3, 'error', 'invalid_message'],
      [4, 'ack', undefined],
    ]);
    expect(await stored(server, channel)).toEqual(['before', 'after']);
  });

  it.each([
    ['an empty frame', { type: 'writes', writes: [] }, /1 to 100 writes/],
    ['too many writes', { type: 'writes', writes: Array.from({ length: MAX_WRITE_BATCH + 1 }, (_, i) => publish(i + 1, 'c', i)) }, /1 to 100 writes per frame, got 101/],
    ['writes that are not an array', { type: 'writes', writes: { 0: publish(1, 'c', 1) } }, /must be an array/],
    ['an unknown field', { type: 'writes', writes: [publish(1, 'c', 1)], id: 7 }, /unknown field "id"/],
    ['a frame inside a frame', { type: 'writes', writes: [{ type: 'writes', writes: [publish(1, 'c', 1)] }] }, /type/],
    ['an rpc inside', { type: 'writes', writes: [{ type: 'rpc', id: 1, method: 'hello', args: ['world'] }] }, /type/],
  ])('refuses %s with invalid_message, stores nothing, and keeps serving', async (_name, frame, message) => {
    const { client } = await writer(port);
    client.send(frame);
    const error = await client.next();
    expect(error).toMatchObject({ type: 'error', code: 'invalid_message' });
    expect(String(error.message)).toMatch(message);
    expect(error.seq).toBeUndefined();
    // The connection still works, from seq 1: nothing was applied.
    client.send(publish(1, `after-${randomUUID()}`, 'fine'));
    expect(await answers(client, 1)).toMatchObject([{ type: 'ack', seq: 1 }]);
  });

  it('before the handshake, a writes frame closes the connection like any other frame', async () => {
    const client = await new RawClient(`ws://127.0.0.1:${port}/ws`).open();
    client.send({ type: 'writes', writes: [publish(1, 'c', 1)] });
    expect(await client.next()).toMatchObject({ type: 'error', code: 'invalid_message', message: 'the first frame must be a handshake' });
    expect((await client.closed).code).toBe(CloseCode.HandshakeExpected);
  });
});

describe('the rate limit counts the writes of a frame', () => {
  let server: TetherServer;

  beforeAll(async () => {
    server = await startServer({ ...base, rateLimit: 10 });
  });
  afterAll(async () => server.close());

  it(`a frame of 100 writes costs ${MAX_WRITE_BATCH / WRITES_PER_RATE_TOKEN} frames: the burst of 2× runs out on the third`, async () => {
    const { client } = await writer(server.port);
    const bystander = await writer(server.port);
    const channel = `rate-${randomUUID()}`;
    const frame = (from: number) => ({ type: 'writes', writes: Array.from({ length: MAX_WRITE_BATCH }, (_, i) => publish(from + i, channel, i)) });
    client.send(frame(1)); // 10 tokens of the burst of 20 (the handshake took one)
    expect(await answers(client, MAX_WRITE_BATCH)).toHaveLength(MAX_WRITE_BATCH);
    client.send(frame(101));
    client.send(frame(201));
    const refusal = await client.until((f) => f.type === 'error' && f.code === 'rate_limited');
    expect(String(refusal.message)).toMatch(/one per 10 writes/);
    expect((await client.closed).code).toBe(CloseCode.RateLimited);
    // The third frame was not applied; everyone else is still served.
    expect((await stored(server, channel)).length).toBeLessThan(3 * MAX_WRITE_BATCH);
    bystander.client.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
    expect(await bystander.client.until((f) => f.id === 1)).toMatchObject({ type: 'result', value: 'Hello, world!' });
  });
});
