import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Examples import 'reservation-engine': resolve it to src/ (tsconfig paths), never to a stale dist/.
  resolve: { tsconfigPaths: true },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // expect.poll() waits for work to be done: 1 s (the default) is short on a busy machine.
    expect: { poll: { timeout: 15_000 } },
    // Test files run in parallel, each on its own database per dialect (PGlite: its own
    // instance); files share worker processes: modules load once per worker, and a file's
    // PGlite goes to the next file once pristine again (test/support/pglite.ts).
    pool: 'forks',
    maxWorkers: 3,
    isolate: false,
    allowOnly: false,
  },
});
