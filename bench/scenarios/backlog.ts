/**
 * Backlog: `getBacklog` on small tables and on tables of a million rows (delivered events and
 * finished reservations) with the same small backlog, measured one after the other in one run.
 * Each figure is an index range, so the large tables should cost about what the small ones do.
 */
import { getBacklog } from '../../src/index.js';
import type { BenchDatabase } from '../lib/db.js';
import { runClosedLoop } from '../lib/load.js';
import { Checks, computeRatios, type Scenario, type ScenarioResult } from '../lib/scenario.js';

const DUE = 100;
const OVERDUE = 100;
const DEAD = 10;

/** `rows` delivered events and finished reservations, plus the same backlog every time. */
async function seed(bench: BenchDatabase, rows: number): Promise<void> {
  await bench.reset();
  const mysql = bench.dialect === 'mysql';
  const series = (n: number) => (mysql ? `seq_1_to_${n} s` : `generate_series(1, ${n}) as s(seq)`);
  const past = (interval: string) => (mysql ? `now(3) - interval ${interval}` : `now() - interval '${interval}'`);
  const json = mysql ? `'{}'` : `'{}'::jsonb`;
  const id = mysql ? 'uuid()' : 'gen_random_uuid()';
  const text = (expr: string) => (mysql ? `concat(${expr})` : expr.split(', ').join(' || '));
  const filler = async (n: number, outbox: string, reservation: string) => {
    if (n === 0) return;
    await bench.admin.query(`insert into outbox (type, payload, created_at, available_at, attempts, processed_at, dead_lettered_at) select 'reservation.created', ${json}, ${past('2 day')}, ${outbox} from ${series(n)}`);
    await bench.admin.query(
      `insert into reservations (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
       select ${id}, 1, 1, ${reservation}, '', ${text(`'bk-', ${reservation === "'PENDING'" ? "'due-'" : "''"}, seq`)}, ${past('1 day')}, ${past('2 day')}, ${past('2 day')} from ${series(n)}`,
    );
  };
  // The bulk: delivered events, confirmed reservations.
  await filler(rows, `null, 1, ${past('1 day')}, null`, "'CONFIRMED'");
  // The backlog: due events and overdue PENDING reservations; dead letters.
  await bench.admin.query(`insert into outbox (type, payload, created_at, available_at, attempts) select 'reservation.created', ${json}, ${past('1 minute')}, ${past('1 minute')}, 0 from ${series(DUE)}`);
  await bench.admin.query(
    `insert into outbox (type, payload, created_at, available_at, attempts, last_error, dead_lettered_at) select 'reservation.created', ${json}, ${past('1 day')}, null, 10, 'x', ${past('1 day')} from ${series(DEAD)}`,
  );
  await bench.admin.query(
    `insert into reservations (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
     select ${id}, 1, 1, 'PENDING', '', ${text(`'overdue-', seq`)}, ${past('1 minute')}, ${past('20 minute')}, ${past('20 minute')} from ${series(OVERDUE)}`,
  );
  if (!mysql) await bench.admin.query('analyze');
}

export const backlog: Scenario = {
  id: 'backlog',
  title: 'Backlog on large tables',
  async run(ctx) {
    const large = ctx.mode === 'full' ? 1_000_000 : 20_000;
    const small = 1_000;
    const result: ScenarioResult = {
      id: 'backlog',
      title: 'Backlog on large tables',
      unit: 'calls/s',
      latencyOf: 'call',
      description: `getBacklog() in a closed loop from one caller: first with ${small.toLocaleString('en-US')} delivered events and finished reservations, then with ${large.toLocaleString('en-US')} of each; both with ${DUE} due events, ${DEAD} dead letters and ${OVERDUE} overdue reservations.`,
      variants: [
        { key: 'small', label: `${small.toLocaleString('en-US')} rows per table`, description: 'small tables' },
        { key: 'large', label: `${large.toLocaleString('en-US')} rows per table`, description: 'large tables, the same backlog' },
      ],
      baselines: ['small'],
      rows: [],
      notes: ['Not interleaved: each variant needs its own table contents, seeded before it runs.'],
    };
    for (const [key, rows] of [
      ['small', small],
      ['large', large],
    ] as const) {
      await seed(ctx.bench, rows);
      const db = ctx.bench.kysely(1);
      let last: Awaited<ReturnType<typeof getBacklog>> | undefined;
      try {
        const m = await runClosedLoop(async () => (last = await getBacklog({ db })), { concurrency: 1, durationMs: ctx.durationMs, warmupMs: ctx.warmupMs });
        const checks = new Checks();
        checks.expect('no failed calls', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
        checks.equal('outboxDue', last?.outboxDue ?? -1, DUE);
        checks.equal('deadLetters', last?.deadLetters ?? -1, DEAD);
        checks.equal('expiryBacklog', last?.expiryBacklog ?? -1, OVERDUE);
        result.rows.push({ variant: key, config: { concurrency: 1 }, m, ratios: {}, checks: checks.list });
        ctx.log(`  ${key.padEnd(5)} ${rows.toLocaleString('en-US').padStart(9)} rows  ${m.throughput.toFixed(0).padStart(6)} calls/s  p50 ${m.latency.p50Ms.toFixed(2)} ms  p99 ${m.latency.p99Ms.toFixed(2)} ms`);
      } finally {
        await ctx.bench.closeKysely(db);
      }
    }
    computeRatios(result);
    return result;
  },
};
