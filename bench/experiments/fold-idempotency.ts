/**
 * Experiment (MariaDB/MySQL, not part of `npm run bench`): what would folding the idempotency
 * lookup into the reserve routine buy, and what would it cost replays?
 *
 *   npx tsx bench/experiments/fold-idempotency.ts [concurrencies, default 8,32]
 *
 * Installs a prototype procedure, `bench_reserve_folded`, in the bench's throwaway database: the
 * engine's `reservation_engine_reserve` preceded by "if the key exists, return its reservation".
 * Then compares, through the raw driver, over 1,000 items with 10,000 existing reservations:
 * - fresh-now: the engine's current fresh path (idempotency SELECT, then CALL) — the baseline;
 * - replay-now: the engine's current replay path (the SELECT);
 * - fresh-fold / replay-fold: one CALL of the prototype;
 * - engine-fresh: engine.reserve, for reference.
 */
import { payloadHash } from '../../src/idempotency/payload-hash.js';
import { uuidv7 } from '../../src/uuid.js';
import { type ClosedLoopSpec, keyMaker, runClosedLoopScenario } from '../lib/closed-loop.js';
import { BenchDatabase } from '../lib/db.js';
import { insertRows, pick, type ReservationValues, reservationValues, reservedByStatement, seedItems, statements } from '../lib/fixtures.js';
import { scenarioTable } from '../lib/report.js';
import { engineReserve } from '../lib/reserve-drivers.js';
import type { ScenarioContext } from '../lib/scenario.js';

const FOLDED_PROCEDURE = `
create procedure bench_reserve_folded(
  in p_key varchar(64) character set ascii, in p_hash char(64) character set ascii, in p_id char(36) character set ascii,
  in p_item_id int, in p_quantity int, in p_expires_at datetime(3), in p_now datetime(3), in p_payload text character set utf8mb4)
modifies sql data
begin
  declare exit handler for sqlexception begin rollback; resignal; end;
  if exists (select 1 from idempotency_requests where idempotency_key = p_key) then
    select 2 as reserved, null as available, r.*, i.payload_hash
      from idempotency_requests as i inner join reservations as r on r.id = i.reservation_id where i.idempotency_key = p_key;
  else
    start transaction;
    insert into idempotency_requests (idempotency_key, payload_hash, reservation_id, created_at) values (p_key, p_hash, p_id, p_now);
    insert into reservations (id, item_id, quantity, status, idempotency_key, expires_at, created_at, updated_at)
      values (p_id, p_item_id, p_quantity, 'PENDING', p_key, p_expires_at, p_now, p_now);
    insert into outbox (type, payload, created_at, available_at, attempts) values ('reservation.created', p_payload, p_now, p_now, 0);
    update items set available_quantity = available_quantity - p_quantity, updated_at = p_now
      where id = p_item_id and available_quantity >= p_quantity;
    if row_count() = 1 then commit; select 1 as reserved, null as available;
    else rollback; select 0 as reserved, (select available_quantity from items where id = p_item_id) as available;
    end if;
  end if;
end`;
const FOLDED_CALL = 'call bench_reserve_folded(?, ?, ?, ?, ?, ?, ?, ?)';
const foldedParams = (v: ReservationValues) => [v.key, v.hash, v.id, v.itemId, v.quantity, v.expiresAt, v.now, v.payload];
const EXISTING = 10_000;

interface Fixture {
  ids: number[];
  existing: Array<{ key: string; itemId: number; id: string }>;
}

const spec: ClosedLoopSpec<Fixture> = {
  id: 'fold-idempotency',
  title: 'Folding the idempotency lookup into the reserve routine',
  description: '',
  baselines: ['fresh-now'],
  notes: [],
  variants: [
    {
      key: 'fresh-now',
      label: 'fresh: SELECT + CALL (raw, current)',
      description: '',
      async open(bench, c, f) {
        const pool = await bench.raw(c);
        const s = statements(bench);
        const key = keyMaker('fn');
        return {
          async op() {
            const v = reservationValues(pick(f.ids), 1, key());
            await pool.withConnection((conn) => conn.query(s.findByKey.sql, s.findByKey.params(v)));
            const { rows } = await pool.withConnection((conn) => conn.query(s.reserve.sql, s.reserve.params(v)));
            if (!reservedByStatement(rows)) throw new Error('not reserved');
          },
          close: () => pool.end(),
        };
      },
    },
    {
      key: 'replay-now',
      label: 'replay: SELECT (raw, current)',
      description: '',
      async open(bench, c, f) {
        const pool = await bench.raw(c);
        const s = statements(bench);
        return {
          async op() {
            const r = pick(f.existing);
            const { rows } = await pool.withConnection((conn) => conn.query(s.findByKey.sql, ['', r.key]));
            if (rows[0]?.id !== r.id) throw new Error('not replayed');
          },
          close: () => pool.end(),
        };
      },
    },
    {
      key: 'fresh-fold',
      label: 'fresh: folded CALL (raw, prototype)',
      description: '',
      async open(bench, c, f) {
        const pool = await bench.raw(c);
        const key = keyMaker('ff');
        return {
          async op() {
            const { rows } = await pool.withConnection((conn) => conn.query(FOLDED_CALL, foldedParams(reservationValues(pick(f.ids), 1, key()))));
            if (!reservedByStatement(rows)) throw new Error('not reserved');
          },
          close: () => pool.end(),
        };
      },
    },
    {
      key: 'replay-fold',
      label: 'replay: folded CALL (raw, prototype)',
      description: '',
      async open(bench, c, f) {
        const pool = await bench.raw(c);
        return {
          async op() {
            const r = pick(f.existing);
            const { rows } = await pool.withConnection((conn) => conn.query(FOLDED_CALL, foldedParams(reservationValues(r.itemId, 1, r.key))));
            const row = rows[0]?.[0];
            if (Number(row?.reserved) !== 2 || row.id !== r.id) throw new Error('not replayed');
          },
          close: () => pool.end(),
        };
      },
    },
    { key: 'engine-fresh', label: 'fresh: engine.reserve', description: '', open: (bench, c, f) => engineReserve(bench, c, () => pick(f.ids), 'ef') },
  ],
  async setup(bench) {
    const ids = await seedItems(bench, 1000, 1_000_000);
    const now = new Date();
    const expiresAt = new Date(now.getTime() + 900_000);
    const existing = Array.from({ length: EXISTING }, (_, i) => ({ key: `existing-${i}`, itemId: pick(ids), id: uuidv7(now.getTime() - EXISTING + i) }));
    await insertRows(
      bench,
      'reservations',
      ['id', 'item_id', 'quantity', 'status', 'idempotency_key', 'expires_at', 'created_at', 'updated_at'],
      existing.map((r) => [r.id, r.itemId, 1, 'PENDING', r.key, expiresAt, now, now]),
    );
    await insertRows(
      bench,
      'idempotency_requests',
      ['idempotency_key', 'payload_hash', 'reservation_id', 'created_at'],
      existing.map((r) => [r.key, payloadHash({ itemId: r.itemId, quantity: 1, ttlSeconds: 900 }), r.id, now]),
    );
    return { ids, existing };
  },
  async check() {},
};

const bench = await BenchDatabase.open('mysql');
try {
  await bench.admin.query(FOLDED_PROCEDURE);
  const ctx: ScenarioContext = {
    bench,
    mode: 'full',
    durationMs: 6000,
    warmupMs: 500,
    rounds: 3,
    concurrencies: (process.argv[2] ?? '8,32').split(',').map(Number),
    drainSize: 0,
    outboxWorkers: [],
    outboxBatches: [],
    expiryWorkers: [],
    expiryBatches: [],
    log: console.log,
  };
  console.log(scenarioTable(await runClosedLoopScenario(ctx, spec)));
} finally {
  await bench.close();
}
