/**
 * How the suite stays fast (issue 10). On a 2-core machine the run is bound by CPU, not by
 * waiting: measure before changing any of this (`--reporter=./test/support/timing-reporter.ts`
 * gives the per-file breakdown).
 *
 * - Test files share worker processes (isolate: false): modules load once per worker, not once
 *   per file, and a file's PGlite is handed to the next file once it is pristine again.
 * - PGlite never runs initdb per file: global setup makes a migrated template once, in a process
 *   of its own while the servers start; files start from it (test/support/pglite.ts).
 * - Three workers: the files mostly wait for the databases and for child processes.
 * - The longest files start first (test/support/sequencer.ts); test/tarball.test.ts runs its tests
 *   side by side after one build, pack and install per run (test/support/shared.ts).
 * - Scripts run as child processes are compiled once, not by tsx at every start
 *   (test/support/compile.ts); short-lived processes that start PGlite skip V8's optimizing
 *   compiler (test/support/wasm-baseline-only.cjs).
 * - No outcome depends on how busy the machine is: tests poll for what they wait for, and check
 *   what the code asked for (the pauses it took, its lease clock), not how much fits in a second.
 */
import { configDefaults, defineConfig } from 'vitest/config';
import LongestFirst from './test/support/sequencer.js';

export default defineConfig({
  // Examples import 'reservation-engine': resolve it to src/ (tsconfig paths), never to a stale dist/.
  resolve: { tsconfigPaths: true },
  test: {
    include: ['test/**/*.test.ts'],
    // The fault-injection suite has its own command and config (vitest.faults.config.ts).
    exclude: [...configDefaults.exclude, 'test/faults/**'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // expect.poll() waits for work to be done: 1 s (the default) is short on a busy machine.
    expect: { poll: { timeout: 15_000 } },
    // Test files run in parallel, each on its own database per dialect (PGlite: its own instance).
    pool: 'forks',
    maxWorkers: 3,
    isolate: false,
    sequence: { sequencer: LongestFirst },
    allowOnly: false,
  },
});
