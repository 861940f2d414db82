import { defineConfig } from '@playwright/test';
import { assertChromium, CHROMIUM_ARGS, CHROMIUM_PATH } from './e2e/fixtures/chromium.js';
import type { Fixtures } from './e2e/fixtures/test.js';

assertChromium();

export default defineConfig<Pick<Fixtures, 'hostMode' | 'transport'>>({
  testDir: 'e2e',
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  reporter: process.env.CI ? [['list'], ['html', { open: 'never' }]] : 'list',
  use: {
    browserName: 'chromium',
    headless: true,
    launchOptions: { executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS },
    trace: 'retain-on-failure',
  },
  projects: [
    { name: 'shared-worker' },
    // The core tests again on a browser without SharedWorker: one tab elected to hold the socket.
    {
      name: 'leader-election',
      testMatch: /(pubsub|offline|documents|contention|presence)\.spec\.ts$/,
      use: { hostMode: 'leader-election' },
    },
    // The core tests again where WebSockets are blocked (the proxy answers upgrades 403): long polling.
    {
      name: 'long-polling',
      testMatch: /(pubsub|offline|documents|presence)\.spec\.ts$/,
      use: { transport: 'long-polling' },
    },
  ],
});
