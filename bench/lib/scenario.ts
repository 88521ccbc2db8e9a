/** What a scenario gets, and what it hands back to the report. */
import type { BenchDatabase } from './db.js';
import type { Measurement } from './load.js';

export type Mode = 'quick' | 'full';

export interface ScenarioContext {
  bench: BenchDatabase;
  mode: Mode;
  /** Measured time per variant and concurrency, in total over the rounds. */
  durationMs: number;
  /** Warm-up before each slice. */
  warmupMs: number;
  /**
   * Closed-loop scenarios: each variant's duration is split into this many slices, run
   * interleaved (A B C A B C …) so that bursts of load from elsewhere hit every variant alike.
   */
  rounds: number;
  /** Concurrencies of the closed-loop scenarios (pool size = concurrency). */
  concurrencies: number[];
  /** Outbox events / expired reservations to seed and drain. */
  drainSize: number;
  /** Outbox and expiry: callers and batch sizes. */
  outboxWorkers: number[];
  outboxBatches: number[];
  expiryWorkers: number[];
  expiryBatches: number[];
  /** Run only these variant keys (profiling); all when undefined. */
  variants?: string[];
  log(message: string): void;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface VariantInfo {
  key: string;
  label: string;
  description: string;
}

export interface Row {
  variant: string;
  /** What the row was run with, e.g. { concurrency: 32 } or { workers: 4, batch: 100 }. */
  config: Record<string, number>;
  m: Measurement;
  /** Throughput ÷ the baseline variant's throughput at the same config, by baseline key. */
  ratios: Record<string, number>;
  checks: Check[];
}

export interface ScenarioResult {
  id: string;
  title: string;
  /** What throughput counts: "ops/s", "events/s", "reservations/s". */
  unit: string;
  /** What one latency sample is: "op", "batch call". */
  latencyOf: string;
  description: string;
  variants: VariantInfo[];
  /** Variant keys the ratios are computed against. */
  baselines: string[];
  rows: Row[];
  notes: string[];
}

export interface Scenario {
  id: string;
  title: string;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}

/** Collects the correctness checks of one variant run. */
export class Checks {
  readonly list: Check[] = [];

  expect(name: string, ok: boolean, detail: string): void {
    this.list.push({ name, ok, detail });
  }

  equal(name: string, actual: number, expected: number): void {
    this.expect(name, actual === expected, `${actual} (expected ${expected})`);
  }
}

/** Fills in every row's ratios to the baselines at the same config. */
export function computeRatios(result: ScenarioResult): void {
  const sameConfig = (a: Row, b: Row) => JSON.stringify(a.config) === JSON.stringify(b.config);
  for (const row of result.rows) {
    for (const baseline of result.baselines) {
      const base = result.rows.find((r) => r.variant === baseline && sameConfig(r, row));
      if (base && base.m.throughput > 0) row.ratios[baseline] = row.m.throughput / base.m.throughput;
    }
  }
}
