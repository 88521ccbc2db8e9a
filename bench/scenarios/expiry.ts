/**
 * 5. Expiry: N expired PENDING reservations over 100 items, swept by 1 or 4 concurrent callers
 * of expireBatch with batch 100 or 1,000, until nothing is left.
 */
import { randomUUID } from 'node:crypto';
import { expireBatch } from '../../src/index.js';
import type { BenchDatabase } from '../lib/db.js';
import { insertRows, seedItems } from '../lib/fixtures.js';
import { runDrain } from '../lib/load.js';
import { Checks, type Scenario, type ScenarioResult } from '../lib/scenario.js';

const ITEMS = 100;
const STOCK = 1_000_000;

/** `n` PENDING reservations expired in the last hour, over the items, whose stock is reduced to match. */
async function seedExpired(bench: BenchDatabase, n: number): Promise<number[]> {
  const held = new Array<number>(ITEMS).fill(0);
  const quantities = Array.from({ length: n }, (_, i) => 1 + (i % 3));
  const itemIndex = Array.from({ length: n }, () => Math.floor(Math.random() * ITEMS));
  for (let i = 0; i < n; i++) held[itemIndex[i]!]! += quantities[i]!;
  const itemIds = await seedItems(bench, ITEMS, (i) => STOCK - held[i]!, (i) => held[i]!);
  const now = Date.now();
  const run = Math.random().toString(36).slice(2, 8);
  await insertRows(
    bench,
    'reservations',
    ['id', 'item_id', 'quantity', 'status', 'idempotency_key', 'expires_at', 'created_at', 'updated_at'],
    Array.from({ length: n }, (_, i) => {
      const expiresAt = new Date(now - 3_600_000 + Math.floor((i * 3_500_000) / n));
      const createdAt = new Date(expiresAt.getTime() - 900_000);
      return [randomUUID(), itemIds[itemIndex[i]!], quantities[i], 'PENDING', `expiry-${run}-${i}`, expiresAt, createdAt, createdAt];
    }),
  );
  return itemIds;
}

export const expiry: Scenario = {
  id: 'expiry',
  title: 'Expiry',
  async run(ctx) {
    const n = ctx.drainSize;
    const result: ScenarioResult = {
      id: 'expiry',
      title: 'Expiry',
      unit: 'reservations/s',
      latencyOf: 'batch call',
      description: `${n.toLocaleString('en-US')} expired PENDING reservations over ${ITEMS} items, swept by W concurrent expireBatch callers with limit B until nothing is left; throughput = reservations ÷ time to sweep all.`,
      variants: [{ key: 'engine', label: 'expireBatch', description: 'W callers of expireBatch({ db, limit: B }), each with its own Kysely pool of 2 connections, until a call expires nothing.' }],
      baselines: [],
      rows: [],
      notes: [],
    };
    for (const workers of ctx.expiryWorkers) {
      for (const batch of ctx.expiryBatches) {
        await ctx.bench.reset();
        const itemIds = await seedExpired(ctx.bench, n);
        const dbs = Array.from({ length: workers }, () => ctx.bench.kysely(2));
        let expired = 0;
        let m;
        try {
          m = await runDrain(
            async (w) => {
              const r = await expireBatch({ db: dbs[w]!, limit: batch });
              expired += r.expired;
              return r.expired;
            },
            { workers, counters: () => ctx.bench.counters(), profileName: `expiry-engine-W${workers}-B${batch}` },
          );
        } finally {
          for (const db of new Set(dbs)) await ctx.bench.closeKysely(db);
        }
        const checks = new Checks();
        const { bench } = ctx;
        checks.expect('no failed calls', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
        checks.equal('expireBatch: expired', expired, n);
        checks.equal('reservations EXPIRED', await bench.count(bench.sql('SELECT COUNT(*) AS n FROM reservations WHERE status = ?'), ['EXPIRED']), n);
        checks.equal('reservations PENDING', await bench.count(bench.sql('SELECT COUNT(*) AS n FROM reservations WHERE status = ?'), ['PENDING']), 0);
        checks.equal('items with stock ≠ initial (stock fully returned)', await bench.count(bench.sql('SELECT COUNT(*) AS n FROM items WHERE available_quantity <> ?'), [STOCK]), 0);
        checks.equal('items', itemIds.length, ITEMS);
        checks.equal('reservation.expired events', await bench.count(bench.sql('SELECT COUNT(*) AS n FROM outbox WHERE type = ?'), ['reservation.expired']), n);
        result.rows.push({ variant: 'engine', config: { workers, batch }, m, ratios: {}, checks: checks.list });
        const failed = checks.list.filter((c) => !c.ok);
        ctx.log(
          `  W=${workers} B=${String(batch).padEnd(4)} ${m.throughput.toFixed(0).padStart(7)} reservations/s  batch p50 ${m.latency.p50Ms.toFixed(2)} ms  p99 ${m.latency.p99Ms.toFixed(2)} ms` +
            (failed.length ? `  CHECK FAILED: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}` : ''),
        );
      }
    }
    return result;
  },
};
