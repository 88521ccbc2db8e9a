/**
 * Where the suite's time goes, file by file: `npx vitest run --reporter=default --reporter=./test/support/timing-reporter.ts`.
 *
 *   wall      from the file's start in a worker to its end
 *   import    importing the file and everything it imports (collect), and running the suite callbacks
 *   hooks     beforeAll/afterAll/beforeEach/afterEach (the databases' set-up is in here)
 *   tests     the tests themselves (their sum: tests of a file run one after the other)
 *   slowest   the file's slowest test
 *
 * TIMINGS_JSON=path also writes the numbers, and every test's duration, to that file.
 */
import { writeFileSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

interface Row {
  file: string;
  startedAt: number;
  wall: number;
  import: number;
  hooks: number;
  tests: number;
  count: number;
  slowest: { name: string; ms: number };
  testDurations: Array<{ name: string; ms: number }>;
}

export default class TimingReporter implements Reporter {
  #runStart = performance.now();
  readonly #started = new Map<string, number>();
  readonly #rows: Row[] = [];

  onTestRunStart(): void {
    this.#runStart = performance.now();
  }

  onTestModuleStart(module: TestModule): void {
    this.#started.set(module.moduleId, performance.now());
  }

  onTestModuleEnd(module: TestModule): void {
    const started = this.#started.get(module.moduleId) ?? this.#runStart;
    const diagnostic = module.diagnostic();
    const testDurations = [...module.children.allTests()].map((test) => ({ name: test.fullName, ms: test.diagnostic()?.duration ?? 0 }));
    const tests = testDurations.reduce((sum, test) => sum + test.ms, 0);
    const slowest = testDurations.reduce((a, b) => (b.ms > a.ms ? b : a), { name: '', ms: 0 });
    this.#rows.push({
      file: module.relativeModuleId,
      startedAt: started - this.#runStart,
      wall: performance.now() - started,
      import: diagnostic.collectDuration,
      hooks: Math.max(0, diagnostic.duration - tests),
      tests,
      count: testDurations.length,
      slowest,
      testDurations,
    });
  }

  onTestRunEnd(): void {
    const s = (ms: number) => (ms / 1000).toFixed(1).padStart(6);
    const rows = [...this.#rows].sort((a, b) => b.wall - a.wall);
    const total = performance.now() - this.#runStart;
    const lines = [
      '',
      `per-file timings (s), slowest first; the run took ${s(total)} s from the first file's start`,
      `${'file'.padEnd(34)} ${'start'.padStart(6)} ${'wall'.padStart(6)} ${'import'.padStart(6)} ${'hooks'.padStart(6)} ${'tests'.padStart(6)}  n     slowest test`,
      ...rows.map(
        (r) =>
          `${r.file.padEnd(34)} ${s(r.startedAt)} ${s(r.wall)} ${s(r.import)} ${s(r.hooks)} ${s(r.tests)} ${String(r.count).padStart(4)}  ${s(r.slowest.ms)} ${r.slowest.name.slice(0, 70)}`,
      ),
    ];
    console.log(lines.join('\n'));
    const out = process.env.TIMINGS_JSON;
    if (out) writeFileSync(out, JSON.stringify({ totalMs: total, files: rows }, null, 2));
  }
}
