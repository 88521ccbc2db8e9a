/**
 * 4. Outbox drain: N pending events, 1/2/4 concurrent callers, batch 10/100/500, a no-op
 * handler. runOutboxBatch against a bare SQL loop doing the same claim/lease/mark cycle.
 */
import { runOutboxBatch } from '../../src/index.js';
import type { BenchDatabase } from '../lib/db.js';
import { eventPayload, insertRows } from '../lib/fixtures.js';
import { type Measurement, runDrain } from '../lib/load.js';
import type { RawPool } from '../lib/raw.js';
import { rawTransaction } from '../lib/closed-loop.js';
import { Checks, computeRatios, type Scenario, type ScenarioContext, type ScenarioResult } from '../lib/scenario.js';

const LEASE_MS = 30_000;

/** Deliveries per event id, as the handler saw them. */
class Deliveries {
  readonly seen = new Map<string, number>();
  total = 0;
  add(id: string | number): void {
    const key = String(id);
    this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
    this.total++;
  }
}

async function seedEvents(bench: BenchDatabase, n: number): Promise<void> {
  const now = new Date(Date.now() - 1000);
  const expiresAt = new Date(now.getTime() + 900_000);
  const rows = Array.from({ length: n }, (_, i) => {
    const payload = eventPayload({ id: `00000000-0000-7000-8000-${String(i).padStart(12, '0')}`, itemId: 1 + (i % 100), quantity: 1, status: 'PENDING', expiresAt }, now);
    return ['reservation.created', payload, now, now, 0];
  });
  await insertRows(bench, 'outbox', ['type', 'payload', 'created_at', 'available_at', 'attempts'], rows);
}

/** One runOutboxBatch caller per worker, each with its own Kysely instance (pool of 2). */
async function drainWithEngine(ctx: ScenarioContext, workers: number, batch: number, deliveries: Deliveries, totals: { processed: number; failed: number; deadLettered: number }): Promise<Measurement> {
  const dbs = Array.from({ length: workers }, () => ctx.bench.kysely(2));
  const handler = (event: { id: string }) => deliveries.add(event.id);
  try {
    return await runDrain(
      async (w) => {
        const r = await runOutboxBatch({ db: dbs[w]!, handler, limit: batch, leaseMs: LEASE_MS });
        totals.processed += r.processed;
        totals.failed += r.failed;
        totals.deadLettered += r.deadLettered;
        return r.processed + r.failed + r.deadLettered;
      },
      { workers, counters: () => ctx.bench.counters(), profileName: `outbox-engine-W${workers}-B${batch}` },
    );
  } finally {
    for (const db of new Set(dbs)) await ctx.bench.closeKysely(db);
  }
}

/**
 * The same cycle in bare SQL, one raw connection per worker. Like runOutboxBatch it claims at
 * READ COMMITTED, but sets it once per connection (SET SESSION …) instead of per transaction;
 * a deadlock or lock-wait timeout rolls the claim back and the worker tries again (counted).
 */
async function drainBare(ctx: ScenarioContext, workers: number, batch: number, deliveries: Deliveries, retried: { count: number }): Promise<Measurement> {
  const { bench } = ctx;
  const claim = bench.sql('select id, type, payload, attempts, created_at from outbox where available_at <= ? order by available_at, id limit ? for update skip locked');
  const inList = (n: number) => Array.from({ length: n }, () => '?').join(', ');
  const lease = (n: number) => bench.sql(`update outbox set attempts = attempts + 1, available_at = ?, locked_until = ? where id in (${inList(n)})`);
  const mark = (n: number) =>
    bench.sql(`update outbox set processed_at = ?, available_at = NULL, locked_until = NULL, last_error = NULL where id in (${inList(n)}) and locked_until = ?`);
  const pools: RawPool[] = [];
  for (let i = 0; i < workers; i++) {
    const pool = await bench.raw(1);
    if (bench.dialect === 'mysql') await pool.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED');
    pools.push(pool);
  }
  const claimBatch = async (pool: RawPool, now: Date, leaseUntil: Date): Promise<any[]> => {
    for (;;) {
      try {
        return await rawTransaction(pool, async (q) => {
          const { rows } = await q(claim, [now, batch]);
          if (rows.length > 0) await q(lease(rows.length), [leaseUntil, leaseUntil, ...rows.map((r) => r.id)]);
          return rows;
        });
      } catch (error) {
        if (!isRetryable(error)) throw error;
        retried.count++;
      }
    }
  };
  try {
    return await runDrain(
      async (w) => {
        const pool = pools[w]!;
        const now = new Date();
        const leaseUntil = new Date(now.getTime() + LEASE_MS);
        const rows = await claimBatch(pool, now, leaseUntil);
        if (rows.length === 0) return 0;
        // The no-op handler gets the parsed payload, as runOutboxBatch's does.
        for (const row of rows) {
          if (typeof row.payload === 'string') JSON.parse(row.payload);
          deliveries.add(row.id);
        }
        await pool.query(mark(rows.length), [now, ...rows.map((r) => r.id), leaseUntil]);
        return rows.length;
      },
      { workers, counters: () => bench.counters(), profileName: `outbox-bare-W${workers}-B${batch}` },
    );
  } finally {
    for (const pool of pools) await pool.end();
  }
}

/** MySQL deadlock / lock-wait timeout, PostgreSQL deadlock / serialization failure. */
function isRetryable(error: unknown): boolean {
  const e = error as { errno?: number; code?: string } | null;
  return e?.errno === 1213 || e?.errno === 1205 || e?.code === '40P01' || e?.code === '40001';
}

export const outbox: Scenario = {
  id: 'outbox',
  title: 'Outbox drain',
  async run(ctx) {
    const n = ctx.drainSize;
    const result: ScenarioResult = {
      id: 'outbox',
      title: 'Outbox drain',
      unit: 'events/s',
      latencyOf: 'batch call',
      description: `${n.toLocaleString('en-US')} pending events drained by W concurrent callers with batch size B and a no-op handler; throughput = events ÷ time to drain all.`,
      variants: [
        { key: 'engine', label: 'runOutboxBatch', description: 'W callers of runOutboxBatch({ db, handler: no-op, limit: B }), each with its own Kysely pool of 2 connections, until a call finds nothing.' },
        {
          key: 'bare',
          label: 'bare SQL loop (raw)',
          description:
            'W raw connections: BEGIN; SELECT id, type, payload, attempts, created_at … WHERE available_at <= ? ORDER BY available_at, id LIMIT B FOR UPDATE SKIP LOCKED; UPDATE … SET attempts = attempts + 1, available_at = lease, locked_until = lease WHERE id IN (…); COMMIT; then UPDATE … processed WHERE id IN (…) AND locked_until = lease.',
        },
      ],
      baselines: ['bare'],
      rows: [],
      notes: [
        "Both claim at READ COMMITTED (no gap locks). runOutboxBatch asks for it per transaction — on MySQL/MariaDB Kysely sends SET TRANSACTION ISOLATION LEVEL … and BEGIN, two statements — the bare loop sets it once per connection and sends BEGIN only: 5 statements per batch against 6.",
        'The bare loop retries a claim that hits a deadlock or lock-wait timeout (shown as "retried" in the errors column); runOutboxBatch retries inside the engine, invisibly.',
      ],
    };
    for (const workers of ctx.outboxWorkers) {
      for (const batch of ctx.outboxBatches) {
        for (const variant of (['engine', 'bare'] as const).filter((v) => !ctx.variants || ctx.variants.includes(v))) {
          await ctx.bench.reset();
          await seedEvents(ctx.bench, n);
          const deliveries = new Deliveries();
          const totals = { processed: 0, failed: 0, deadLettered: 0 };
          const retried = { count: 0 };
          const m = variant === 'engine' ? await drainWithEngine(ctx, workers, batch, deliveries, totals) : await drainBare(ctx, workers, batch, deliveries, retried);
          if (retried.count > 0) m.retried = retried.count;
          const checks = new Checks();
          checks.expect('no failed calls', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
          if (variant === 'engine') {
            checks.equal('runOutboxBatch: processed', totals.processed, n);
            checks.equal('runOutboxBatch: failed + dead-lettered', totals.failed + totals.deadLettered, 0);
          }
          checks.equal('events delivered', deliveries.total, n);
          checks.equal('distinct events delivered (exactly once)', deliveries.seen.size, n);
          checks.equal('rows processed', await ctx.bench.count('SELECT COUNT(*) AS n FROM outbox WHERE processed_at IS NOT NULL'), n);
          checks.equal('rows with attempts ≠ 1', await ctx.bench.count('SELECT COUNT(*) AS n FROM outbox WHERE attempts <> 1'), 0);
          checks.equal('rows still due or leased', await ctx.bench.count('SELECT COUNT(*) AS n FROM outbox WHERE available_at IS NOT NULL OR locked_until IS NOT NULL'), 0);
          result.rows.push({ variant, config: { workers, batch }, m, ratios: {}, checks: checks.list });
          const failed = checks.list.filter((c) => !c.ok);
          ctx.log(
            `  W=${workers} B=${String(batch).padEnd(3)} ${variant.padEnd(6)} ${m.throughput.toFixed(0).padStart(7)} events/s  batch p50 ${m.latency.p50Ms.toFixed(2)} ms  p99 ${m.latency.p99Ms.toFixed(2)} ms` +
              (failed.length ? `  CHECK FAILED: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}` : ''),
          );
        }
      }
    }
    computeRatios(result);
    return result;
  },
};
