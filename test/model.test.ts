/**
 * Model-based tests (issue 12): random sequences of engine calls, each answer checked against the
 * in-memory model of test/support/model.ts, and the tables checked against it after every run.
 * PGlite only, and short, to stay in the normal suite; test/faults/model-servers.test.ts runs the
 * same model longer on MariaDB and PostgreSQL. A failure prints fast-check's seed and path:
 * replay it with MODEL_SEED / MODEL_PATH.
 */
import fc from 'fast-check';
import { it } from 'vitest';
import { DIALECTS, describeEachDialect } from './support/db.js';
import { modelProperty, replayParameters } from './support/model-commands.js';
import { concurrencyProperty } from './support/model-concurrency.js';

describeEachDialect(
  'model-based',
  (t) => {
    it('sequential calls answer as the model does, and the tables hold what it holds', async () => {
      await fc.assert(modelProperty(t, { maxCommands: 25 }), { numRuns: 40, ...replayParameters() });
    });

    it('concurrent reserves, carts, confirms, cancels, extensions, write-offs and expiry are each equivalent to some order of the same calls', async () => {
      await fc.assert(concurrencyProperty(t), { numRuns: 30, ...replayParameters() });
    });
  },
  DIALECTS.filter((dialect) => dialect.name === 'pglite'),
);
