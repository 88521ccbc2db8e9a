/** What every fault scenario shares: its size (quick or soak) and how it reports and asserts its figures. */
import { expect, inject } from 'vitest';
import { appendFigures, type ScenarioFigures } from './report.js';

/** `npm run test:faults -- --soak`: every scenario runs ten times as long. */
export const SOAK = process.env.FAULTS_SOAK === '1';

/** `quick` in a quick run, ten times as much in a soak run. */
export const scaled = (quick: number): number => (SOAK ? quick * 10 : quick);

/**
 * Adds the scenario's figures to the run's summary table, then fails the test on any violation
 * or raw error (after reporting: the table shows the failure too).
 */
export function reportAndAssert(
  figures: Omit<ScenarioFigures, 'violations' | 'rawErrors' | 'details'>,
  violations: readonly string[],
  rawErrors: readonly string[],
  rawErrorCount = rawErrors.length,
  note = '',
): void {
  appendFigures(inject('scratchDir'), {
    ...figures,
    violations: violations.length,
    rawErrors: rawErrorCount,
    details: [...violations.slice(0, 10), ...rawErrors.slice(0, 10).map((e) => `raw error: ${e}`)],
  });
  console.log(`[faults] ${figures.scenario} [${figures.dialect}]: ${figures.operations} ops, ${figures.faults} faults, ${violations.length} violations, ${rawErrorCount} raw errors, ${figures.duplicatesDelivered} duplicates, recovery ${figures.recoveryMs === null ? '–' : `${Math.round(figures.recoveryMs)} ms`}${note ? `; ${note}` : ''}`);
  expect(violations, 'violations').toEqual([]);
  expect(rawErrors, 'errors that were not ReservationErrors').toEqual([]);
}
