import { test, expect, callFrom, waitForConnection } from './fixtures/test.js';

test('workerUrl: an explicit same-origin worker works; a cross-origin one is refused with a clear error', async ({ browser, server }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.httpUrl}/api/health`);
  await page.addScriptTag({ url: '/tether.js' });

  // The app hosts the worker file itself (here: the path the server serves it at).
  await page.evaluate((url) => {
    window.tether = window.Tether.connect({ url, workerUrl: '/tether-worker.js' });
  }, server.wsUrl);
  await waitForConnection(page, 'online');
  expect(await callFrom(page, 'hello', ['worker'])).toEqual({ ok: true, value: 'Hello, worker!' });

  // localhost and 127.0.0.1 are different origins: the browser refuses such a SharedWorker.
  const refused = await page.evaluate(
    ({ url, workerUrl }) => {
      try {
        window.Tether.connect({ url, workerUrl });
        return 'connected';
      } catch (error) {
        const e = error as { name: string; code: string; message: string };
        return { name: e.name, code: e.code, message: e.message };
      }
    },
    { url: server.wsUrl, workerUrl: `http://localhost:${server.port}/tether-worker.js` },
  );
  expect(refused).toMatchObject({ name: 'TetherError', code: 'worker_unavailable', message: expect.stringContaining('same-origin') });

  const badOptions = await page.evaluate(() => {
    try {
      window.Tether.connect({ url: 'ftp://example.com' });
      return 'connected';
    } catch (error) {
      return `${(error as Error).name}: ${(error as Error).message}`;
    }
  });
  expect(badOptions).toBe('TypeError: connect(options): url must be ws:// or wss://, got ftp:');
  await context.close();
});
