/**
 * Runs the longest test files first, so that none of them starts last and keeps the run going
 * alone on one core at the end; the others follow in vitest's own order (by the last run's
 * durations, when it knows them).
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Longest first, as measured (see ./timing-reporter.ts). */
const LONGEST = [
  'tarball',
  'outbox-poison',
  'example-db-restart',
  'worker',
  'concurrency',
  'operations',
  'http',
  'retry',
  'cron',
  'unknown-outcome',
  'host-integration',
  'docs-snippets',
  'dual-build',
];

const rank = (spec: TestSpecification) => {
  const index = LONGEST.findIndex((name) => spec.moduleId.endsWith(`/test/${name}.test.ts`));
  return index === -1 ? LONGEST.length : index;
};

export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...(await super.sort(files))].sort((a, b) => rank(a) - rank(b));
  }
}
