/**
 * The fault suite's figures: each scenario appends one row per dialect to a file in the run's
 * scratch directory; the global teardown (../global-setup.ts) prints them as one table and writes
 * them to `faults-report.json`. No vitest import here: the global setup uses this module too.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** What one scenario did on one dialect. */
export interface ScenarioFigures {
  readonly scenario: string;
  readonly dialect: string;
  /** Engine calls made (reserve, confirm, cancel, restock, batches), retries included. */
  readonly operations: number;
  /** Faults injected: connections killed, replies swallowed, servers crashed, workers killed… */
  readonly faults: number;
  /** Broken promises found in the database and by the harness: must be 0. */
  readonly violations: number;
  /** Errors that reached the harness without being one of the library's typed errors: must be 0. */
  readonly rawErrors: number;
  /** Deliveries beyond the first per outbox event (at-least-once redeliveries). */
  readonly duplicatesDelivered: number;
  /** The scenario's recovery measure in ms (see its `recoveryMeaning`), null when it has none. */
  readonly recoveryMs: number | null;
  readonly recoveryMeaning: string;
  readonly seconds: number;
  /** The first violations and raw errors, for the report. */
  readonly details: readonly string[];
}

const ROWS_FILE = 'faults-report.jsonl';

export function appendFigures(scratchDir: string, figures: ScenarioFigures): void {
  appendFileSync(path.join(scratchDir, ROWS_FILE), `${JSON.stringify(figures)}\n`);
}

export function readFigures(scratchDir: string): ScenarioFigures[] {
  const file = path.join(scratchDir, ROWS_FILE);
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ScenarioFigures)
    .sort((a, b) => a.scenario.localeCompare(b.scenario) || a.dialect.localeCompare(b.dialect));
}

/** The figures as a fixed-width text table. */
export function formatTable(rows: readonly ScenarioFigures[]): string {
  const header = ['scenario', 'dialect', 'ops', 'faults', 'violations', 'raw errors', 'dup. delivered', 'recovery', 'time'];
  const body = rows.map((r) => [
    r.scenario,
    r.dialect,
    String(r.operations),
    String(r.faults),
    String(r.violations),
    String(r.rawErrors),
    String(r.duplicatesDelivered),
    r.recoveryMs === null ? '–' : `${Math.round(r.recoveryMs)} ms`,
    `${r.seconds.toFixed(1)} s`,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((row) => row[column]!.length)));
  const line = (cells: string[]) => cells.map((cell, column) => (column < 2 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ');
  const meanings = [...new Set(rows.map((r) => `${r.scenario}: recovery = ${r.recoveryMeaning}`))];
  const details = rows.flatMap((r) => r.details.map((d) => `  ${r.scenario} [${r.dialect}]: ${d}`));
  return [
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
    ...meanings,
    ...(details.length > 0 ? ['', 'Violations and raw errors:', ...details] : []),
  ].join('\n');
}
