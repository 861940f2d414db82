import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['protocol/**/*.test.ts', 'server/**/*.test.ts', 'worker/**/*.test.ts', 'sdk/**/*.test.ts'],
    environment: 'node',
    testTimeout: 10_000,
  },
});
