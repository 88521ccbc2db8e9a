/**
 * The ways of reserving 1 unit that the hot-item and many-items scenarios compare. Each opens
 * its own pool of `concurrency` connections and returns an op that reserves one unit of
 * `item()` under a fresh idempotency key, throwing if it did not.
 */
import type { Driver } from './closed-loop.js';
import { keyMaker, openEngine, rawTransaction } from './closed-loop.js';
import type { BenchDatabase } from './db.js';
import { reservationValues, reserveOutcomeOf, statements } from './fixtures.js';

type PickItem = () => number;

/** engine.reserve({ itemId, quantity: 1, idempotencyKey }). */
export async function engineReserve(bench: BenchDatabase, concurrency: number, item: PickItem, tag: string): Promise<Driver> {
  const { engine, close } = openEngine(bench, concurrency);
  const key = keyMaker(tag);
  return {
    async op() {
      const { replayed } = await engine.reserve({ itemId: item(), quantity: 1, idempotencyKey: key() });
      if (replayed) throw new Error('a fresh key was replayed');
    },
    close,
  };
}

/**
 * What engine.reserve sends, through the raw driver: the one-round-trip reserve routine
 * (CALL / SELECT of the function) in autocommit.
 */
export async function rawEngineStatements(bench: BenchDatabase, concurrency: number, item: PickItem, tag: string): Promise<Driver> {
  const pool = await bench.raw(concurrency);
  const s = statements(bench);
  const key = keyMaker(tag);
  return {
    async op() {
      const v = reservationValues(item(), 1, key());
      const { rows } = await pool.withConnection((conn) => conn.query(s.reserve.sql, s.reserve.params(v)));
      const outcome = reserveOutcomeOf(rows);
      if (outcome !== 'reserved') throw new Error(`not reserved: ${outcome}`);
    },
    close: () => pool.end(),
  };
}

/**
 * The client-side transaction the engine sent before its one-round-trip reserve, raw: the
 * idempotency SELECT, then BEGIN; INSERT idempotency_requests; INSERT reservations; INSERT
 * outbox; guarded UPDATE items (last: the row lock is held for one round trip + COMMIT); COMMIT.
 */
export async function rawClientTransaction(bench: BenchDatabase, concurrency: number, item: PickItem, tag: string): Promise<Driver> {
  const pool = await bench.raw(concurrency);
  const s = statements(bench);
  const key = keyMaker(tag);
  return {
    async op() {
      const v = reservationValues(item(), 1, key());
      const earlier = await pool.withConnection((conn) => conn.query(s.findByKey.sql, s.findByKey.params(v)));
      if (earlier.rows.length > 0) throw new Error('a fresh key was found');
      await rawTransaction(pool, async (q) => {
        await q(s.insertIdempotency.sql, s.insertIdempotency.params(v));
        await q(s.insertReservation.sql, s.insertReservation.params(v));
        await q(s.insertOutbox.sql, s.insertOutbox.params(v));
        const { affectedRows } = await q(s.guardedDecrement.sql, s.guardedDecrement.params(v));
        if (affectedRows !== 1) throw new Error('out of stock');
      });
    },
    close: () => pool.end(),
  };
}

/**
 * The architecture's order, raw: BEGIN; SELECT available_quantity … FOR UPDATE (the row lock,
 * held from here); UPDATE items; INSERT idempotency_requests; INSERT reservations; INSERT outbox; COMMIT.
 */
export async function rawArchitectureOrder(bench: BenchDatabase, concurrency: number, item: PickItem, tag: string): Promise<Driver> {
  const pool = await bench.raw(concurrency);
  const s = statements(bench);
  const key = keyMaker(tag);
  return {
    op: () =>
      rawTransaction(pool, async (q) => {
        const v = reservationValues(item(), 1, key());
        const { rows } = await q(s.lockItem.sql, s.lockItem.params(v));
        if (!rows[0] || Number(rows[0].available_quantity) < 1) throw new Error('out of stock');
        await q(s.decrement.sql, s.decrement.params(v));
        await q(s.insertIdempotency.sql, s.insertIdempotency.params(v));
        await q(s.insertReservation.sql, s.insertReservation.params(v));
        await q(s.insertOutbox.sql, s.insertOutbox.params(v));
      }),
    close: () => pool.end(),
  };
}

/** The limit, raw, autocommit: UPDATE items SET available_quantity = available_quantity - 1 WHERE id = ? AND available_quantity >= 1. */
export async function rawBareUpdate(bench: BenchDatabase, concurrency: number, item: PickItem): Promise<Driver> {
  const pool = await bench.raw(concurrency);
  const s = statements(bench);
  return {
    async op() {
      const itemId = item();
      const { affectedRows } = await pool.query(s.bareDecrement.sql, [itemId]);
      if (affectedRows !== 1) throw new Error(`UPDATE changed ${affectedRows} rows`);
    },
    close: () => pool.end(),
  };
}
