/**
 * The shape shared by the hot-item, many-items and replay scenarios: at every concurrency, each
 * variant in turn gets a freshly emptied and seeded database, its own pool of `concurrency`
 * connections, a warm-up and a fixed measured duration; then the invariants are checked.
 */
import { ReservationEngine } from '../../src/index.js';
import type { BenchDatabase } from './db.js';
import { type Measurement, mergeMeasurements, runClosedLoop } from './load.js';
import type { RawPool } from './raw.js';
import { type Check, Checks, computeRatios, type ScenarioContext, type ScenarioResult, type VariantInfo } from './scenario.js';

export interface Driver {
  op(worker: number): Promise<void>;
  close(): Promise<void>;
}

export interface ClosedLoopVariant<F> extends VariantInfo {
  open(bench: BenchDatabase, concurrency: number, fixture: F): Promise<Driver>;
}

export interface ClosedLoopSpec<F> extends Omit<ScenarioResult, 'rows' | 'variants' | 'unit' | 'latencyOf'> {
  variants: Array<ClosedLoopVariant<F>>;
  /** Seeds the emptied database for one variant run. */
  setup(bench: BenchDatabase): Promise<F>;
  /** `ops`: every successful op of the run, warm-up included. */
  check(bench: BenchDatabase, fixture: F, variant: string, ops: number, checks: Checks): Promise<void>;
}

export async function runClosedLoopScenario<F>(ctx: ScenarioContext, spec: ClosedLoopSpec<F>): Promise<ScenarioResult> {
  const { variants, setup, check, ...info } = spec;
  const result: ScenarioResult = {
    ...info,
    unit: 'ops/s',
    latencyOf: 'op',
    variants: variants.map(({ key, label, description }) => ({ key, label, description })),
    rows: [],
  };
  const selected = variants.filter((v) => !ctx.variants || ctx.variants.includes(v.key));
  for (const concurrency of ctx.concurrencies) {
    const slices = new Map<string, { parts: Measurement[]; checks: Check[][] }>(selected.map((v) => [v.key, { parts: [], checks: [] }]));
    for (let round = 1; round <= ctx.rounds; round++) {
      for (const variant of selected) {
        await ctx.bench.reset();
        const fixture = await setup(ctx.bench);
        const driver = await variant.open(ctx.bench, concurrency, fixture);
        let m: Measurement;
        try {
          m = await runClosedLoop((w) => driver.op(w), {
            concurrency,
            durationMs: ctx.durationMs / ctx.rounds,
            warmupMs: ctx.warmupMs,
            counters: () => ctx.bench.counters(),
            profileName: `${spec.id}-${variant.key}-c${concurrency}${ctx.rounds > 1 ? `-r${round}` : ''}`,
          });
        } finally {
          await driver.close();
        }
        const checks = new Checks();
        checks.expect('no failed ops', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
        await check(ctx.bench, fixture, variant.key, m.ops + m.warmupOps, checks);
        slices.get(variant.key)!.parts.push(m);
        slices.get(variant.key)!.checks.push(checks.list);
      }
    }
    for (const variant of selected) {
      const { parts, checks } = slices.get(variant.key)!;
      const m = mergeMeasurements(parts);
      const merged = mergeChecks(checks);
      result.rows.push({ variant: variant.key, config: { concurrency }, m, ratios: {}, checks: merged });
      const failed = merged.filter((c) => !c.ok);
      ctx.log(
        `  c=${String(concurrency).padStart(2)} ${variant.key.padEnd(10)} ${m.throughput.toFixed(0).padStart(7)} ops/s  p50 ${m.latency.p50Ms.toFixed(2)} ms  p99 ${m.latency.p99Ms.toFixed(2)} ms` +
          (parts.length > 1 ? `  (rounds: ${parts.map((p) => p.throughput.toFixed(0)).join(', ')})` : '') +
          (failed.length ? `  CHECK FAILED: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}` : ''),
      );
    }
  }
  computeRatios(result);
  return result;
}

/** The checks of several slices as one list: a check passes if it passed in every slice. */
function mergeChecks(slices: Check[][]): Check[] {
  if (slices.length === 1) return slices[0]!;
  return slices[0]!.map((first, i) => {
    const all = slices.map((list) => list[i]!);
    const failed = all.find((c) => !c.ok);
    return failed ? { ...failed, detail: `${failed.detail} (in one of ${slices.length} rounds)` } : { ...first, detail: `${first.detail} (each of ${slices.length} rounds)` };
  });
}

/** The engine over a Kysely instance with a pool of `concurrency` connections. */
export function openEngine(bench: BenchDatabase, concurrency: number): { engine: ReservationEngine; close(): Promise<void> } {
  const db = bench.kysely(concurrency);
  return { engine: new ReservationEngine({ db }), close: () => bench.closeKysely(db) };
}

/** Runs `fn` between BEGIN and COMMIT on one raw connection; ROLLBACK if it throws. */
export async function rawTransaction<T>(pool: RawPool, fn: (q: (sql: string, params?: unknown[]) => Promise<{ rows: any[]; affectedRows: number }>) => Promise<T>): Promise<T> {
  return pool.withConnection(async (conn) => {
    await conn.query('begin');
    try {
      const value = await fn((sql, params) => conn.query(sql, params));
      await conn.query('commit');
      return value;
    } catch (error) {
      await conn.query('rollback').catch(() => {});
      throw error;
    }
  });
}

/** A unique idempotency key per op: the variant, the concurrency and a counter. */
export function keyMaker(prefix: string): () => string {
  let n = 0;
  const run = Math.random().toString(36).slice(2, 8);
  return () => `${prefix}-${run}-${++n}`;
}
