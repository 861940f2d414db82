import WebSocket from 'ws';
import { test, expect, callFrom } from './fixtures/test.js';

test('each failure reaches the caller as a typed error with a clear message', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);

  expect(await callFrom(tab, 'nope', [])).toEqual({
    ok: false, code: 'not_found', message: 'unknown procedure: nope', name: 'TetherError',
  });
  expect(await callFrom(tab, 'hello', [42])).toMatchObject({ ok: false, code: 'invalid_argument', message: expect.stringContaining('one string') });
  expect(await callFrom(tab, 'adminOnly', [])).toMatchObject({ ok: false, code: 'forbidden', message: 'user anonymous may not call adminOnly' });
  expect(await callFrom(tab, 'sleep', [3000], 200)).toMatchObject({ ok: false, code: 'timeout' });
  expect(await callFrom(tab, 'bad name!', [])).toMatchObject({ ok: false, code: 'invalid_message', message: expect.stringContaining('method') });

  // A bug in a handler: `internal` to the caller, the details only in the server log.
  const boom = await callFrom(tab, 'boom', []);
  expect(boom).toMatchObject({ ok: false, code: 'internal', message: 'procedure boom failed; see the server log' });
  expect(JSON.stringify(boom)).not.toContain('secret detail');
  await expect.poll(() => server.logs.some((l) => l.msg === 'procedure threw' && JSON.stringify(l).includes('secret detail'))).toBe(true);

  // The SDK refuses nonsense before it reaches the wire.
  const typeError = await tab.evaluate(() => window.tether.rpc.call('hello', 'world' as unknown as unknown[]).catch((e: Error) => `${e.name}: ${e.message}`));
  expect(typeError).toBe('TypeError: rpc.call(method, args): args must be an array');

  // And the connection is fine after all of that.
  expect(await callFrom(tab, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  await context.close();
});

interface RawResult {
  frames: Record<string, unknown>[];
  close: { code: number; reason: string };
}

/** Opens a raw socket straight to the server, sends `frames`, collects answers until it closes or `ms` pass. */
function rawSession(url: string, frames: (string | Buffer)[], ms = 3000): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const received: Record<string, unknown>[] = [];
    const timer = setTimeout(() => ws.close(1000), ms);
    ws.on('open', () => frames.forEach((f) => ws.send(f)));
    ws.on('message', (data) => received.push(JSON.parse(data.toString()) as Record<string, unknown>));
    ws.on('error', reject);
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ frames: received, close: { code, reason: reason.toString() } });
    });
  });
}

test('junk from raw sockets is refused with codes while a normal client keeps working', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  const handshake = JSON.stringify({ type: 'handshake', v: 1 });

  // A steady stream of calls from the browser while the junk arrives.
  const normal = tab.evaluate(async () => {
    const results: unknown[] = [];
    for (let i = 0; i < 40; i++) {
      results.push(await window.tether.rpc.call('hello', [`n${i}`]));
      await new Promise((r) => setTimeout(r, 25));
    }
    return results;
  });

  const [noHandshake, wrongVersion, junkAfterHandshake, oversized, flood] = await Promise.all([
    rawSession(server.wsUrl, ['{"type":"rpc","id":1,"method":"hello","args":["x"]}']),
    rawSession(server.wsUrl, [JSON.stringify({ type: 'handshake', v: 99 })]),
    rawSession(server.wsUrl, [handshake, 'not json', Buffer.from([1, 2, 3]), '{"type":"teleport"}', '{"type":"rpc","id":7,"method":"hello"}', '[]'], 1500),
    rawSession(server.wsUrl, [handshake, JSON.stringify({ type: 'rpc', id: 1, method: 'hello', args: ['x'.repeat(70_000)] })]),
    rawSession(server.wsUrl, [handshake, ...Array.from({ length: 30 }, () => '}{')]),
  ]);

  expect(noHandshake.frames).toEqual([{ type: 'error', code: 'invalid_message', message: 'the first frame must be a handshake' }]);
  expect(noHandshake.close.code).toBe(4000);

  expect(wrongVersion.frames[0]).toMatchObject({ type: 'error', code: 'unsupported_version' });
  expect(wrongVersion.close.code).toBe(4002);

  const errors = junkAfterHandshake.frames.filter((f) => f.type === 'error');
  expect(junkAfterHandshake.frames[0]).toMatchObject({ type: 'welcome', v: 1 });
  expect(errors).toEqual([
    { type: 'error', code: 'invalid_message', message: 'frame is not valid JSON' },
    { type: 'error', code: 'invalid_message', message: 'binary frames are not supported; send JSON text' },
    expect.objectContaining({ code: 'invalid_message', message: expect.stringContaining('type') }),
    expect.objectContaining({ id: 7, code: 'invalid_message', message: expect.stringContaining('args') }),
    expect.objectContaining({ code: 'invalid_message' }),
  ]);
  expect(junkAfterHandshake.close.code).toBe(1000); // we closed it: junk alone is not fatal

  expect(oversized.close.code).toBe(1009);

  expect(flood.frames.filter((f) => f.type === 'error').length).toBeGreaterThan(20);
  expect(flood.close.code).toBe(4005);

  const results = await normal;
  expect(results).toEqual(Array.from({ length: 40 }, (_, i) => `Hello, n${i}!`));
  await context.close();
});
