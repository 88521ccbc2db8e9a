/**
 * `npm run test:faults`: the fault-injection scenarios of test/faults/ against real MariaDB and
 * PostgreSQL servers (issue 12). Quick by default (well under 10 minutes on 2 cores);
 * `npm run test:faults -- --soak` (scripts/test-faults.mjs) runs every scenario about ten times
 * longer. At the end the global teardown prints one summary table of every scenario's figures.
 */
import { defineConfig } from 'vitest/config';

const soak = process.env.FAULTS_SOAK === '1';

export default defineConfig({
  resolve: { tsconfigPaths: true },
  test: {
    include: ['test/faults/**/*.test.ts'],
    globalSetup: ['test/faults/global-setup.ts'],
    // A scenario is one long test per dialect; soak runs ten times as many operations.
    testTimeout: soak ? 3_600_000 : 300_000,
    hookTimeout: 180_000,
    expect: { poll: { timeout: 30_000 } },
    pool: 'forks',
    // Two files at a time: the machine has 2 cores, and the servers and child processes need them too.
    maxWorkers: 2,
    allowOnly: false,
  },
});
