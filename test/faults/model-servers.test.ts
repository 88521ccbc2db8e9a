/**
 * The model-based tests of test/model.test.ts on MariaDB and PostgreSQL (real servers, several
 * connections: the concurrent calls really run side by side), longer: more runs and longer
 * sequences. FAULTS_SOAK=1 runs many more. A failure prints fast-check's seed and path: replay it
 * with MODEL_SEED / MODEL_PATH.
 */
import fc from 'fast-check';
import { it } from 'vitest';
import { describeEachServerDialect } from '../support/db.js';
import { modelProperty, replayParameters } from '../support/model-commands.js';
import { concurrencyProperty } from '../support/model-concurrency.js';

const soak = process.env.FAULTS_SOAK === '1';
const timeout = soak ? 4 * 3_600_000 : 600_000;

describeEachServerDialect('model-based on a server', (t) => {
  it(
    'sequential calls answer as the model does, and the tables hold what it holds',
    async () => {
      await fc.assert(modelProperty(t, { maxCommands: 40 }), { numRuns: soak ? 5000 : 200, ...replayParameters() });
    },
    timeout,
  );

  it(
    'concurrent reserves, carts, confirms, cancels, extensions, write-offs and expiry are each equivalent to some order of the same calls',
    async () => {
      await fc.assert(concurrencyProperty(t), { numRuns: soak ? 5000 : 200, ...replayParameters() });
    },
    timeout,
  );
});
