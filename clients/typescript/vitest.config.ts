import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.{ts,tsx}'],
    globalSetup: ['test/server.ts'],
    // Starting the comments example may compile it first.
    hookTimeout: 60_000,
    testTimeout: 20_000,
  },
});
