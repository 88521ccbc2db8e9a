import { expect, it } from 'vitest';
import { InsufficientStockError, type Item, ReservationEngine, expireBatch, runOutboxBatch } from '../src/index.js';
import { describeEachDialect, unique } from './support/db.js';

/** Runs `fn` for 0…n-1 all at once and returns the outcomes. */
async function all<T>(n: number, fn: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  return Promise.allSettled(Array.from({ length: n }, (_, i) => fn(i)));
}

describeEachDialect('concurrency', (t) => {
  const payloads = async (type: string) =>
    (await t.db.selectFrom('outbox').select('payload').where('type', '=', type).execute()).map((r) =>
      typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload,
    );

  it('300 concurrent reserves on one item with 100 units: exactly 100 succeed, never oversold', async () => {
    const db = t.connect(64);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'hot', availableQuantity: 100 });
    const results = await all(300, (i) => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `hot-${i}` }));
    const ok = results.filter((r) => r.status === 'fulfilled');
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(100);
    expect(rejected.every((r) => r.reason instanceof InsufficientStockError)).toBe(true);
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(0);
    expect(await t.count('reservations')).toBe(100);
    expect(await t.count('outbox')).toBe(100);
  });

  it('concurrent reserves of different sizes never take more than the stock', async () => {
    const db = t.connect(32);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'hot', availableQuantity: 250 });
    const results = await all(200, (i) => engine.reserve({ itemId: item.id, quantity: 1 + (i % 5), idempotencyKey: `mix-${i}` }));
    const taken = results.reduce((sum, r) => sum + (r.status === 'fulfilled' ? r.value.reservation.quantity : 0), 0);
    const left = (await engine.getItem(item.id))!.availableQuantity;
    expect(left).toBeGreaterThanOrEqual(0);
    expect(taken + left).toBe(250);
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected.every((r) => r.reason instanceof InsufficientStockError)).toBe(true);
  });

  it('concurrent requests with one key: one reservation, every request succeeds with it', async () => {
    // Separate pools, as separate app instances would have.
    const engines = [t.connect(16), t.connect(16), t.connect(16)].map((db) => new ReservationEngine({ db }));
    const item = await engines[0]!.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const results = await all(45, (i) => engines[i % 3]!.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'one-key' }));
    const values = results.map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    });
    expect(new Set(values.map((v) => v.reservation.id)).size).toBe(1);
    expect(values.filter((v) => !v.replayed)).toHaveLength(1);
    expect((await engines[0]!.getItem(item.id))?.availableQuantity).toBe(8);
    expect(await t.count('reservations')).toBe(1);
    expect(await t.count('outbox')).toBe(1);
  });

  it('concurrent expireBatch callers expire each reservation exactly once', async () => {
    const T0 = new Date('2026-08-01T00:00:00.000Z');
    const engine = new ReservationEngine({ db: t.db, clock: () => T0 });
    const items: Item[] = [];
    for (let i = 0; i < 8; i++) items.push(await engine.createItem({ sku: unique(), name: `i${i}`, availableQuantity: 200 }));
    for (let i = 0; i < 400; i++) await engine.reserve({ itemId: items[i % 8]!.id, quantity: 1 + (i % 3), idempotencyKey: `e-${i}`, ttlSeconds: 60 });
    const now = new Date(T0.getTime() + 60_000);
    const callers = [t.connect(4), t.connect(4), t.connect(4), t.connect(4)];
    const counts = await Promise.all(
      callers.map(async (db) => {
        let total = 0;
        for (;;) {
          const { expired } = await expireBatch({ db, now, limit: 25 });
          total += expired;
          if (expired === 0) return total;
        }
      }),
    );
    expect(counts.reduce((a, b) => a + b, 0)).toBe(400);
    const expired = await payloads('reservation.expired');
    expect(expired).toHaveLength(400);
    expect(new Set(expired.map((p) => p.reservationId)).size).toBe(400);
    for (const item of items) expect((await engine.getItem(item.id))?.availableQuantity).toBe(200);
    expect(await t.count('reservations', (q) => q.where('status', '=', 'EXPIRED'))).toBe(400);
  });

  it('concurrent runOutboxBatch callers deliver each event exactly once', async () => {
    const engine = new ReservationEngine({ db: t.db });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 1000 });
    for (let i = 0; i < 300; i++) await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `o-${i}` });
    const delivered: string[] = [];
    const callers = [t.connect(4), t.connect(4), t.connect(4), t.connect(4)];
    await Promise.all(
      callers.map(async (db) => {
        for (;;) {
          const { processed } = await runOutboxBatch({
            db,
            limit: 20,
            handler: async (event) => {
              delivered.push(event.id);
              await new Promise((resolve) => setImmediate(resolve));
            },
          });
          if (processed === 0) return;
        }
      }),
    );
    expect(delivered).toHaveLength(300);
    expect(new Set(delivered).size).toBe(300);
    expect(await t.count('outbox', (q) => q.where('processed_at', 'is not', null))).toBe(300);
  });

  it('confirm, cancel, restock and expiry racing keep available + held = initial + restocks', async () => {
    const T0 = new Date('2026-09-01T00:00:00.000Z');
    const expiresAt = new Date(T0.getTime() + 60_000);
    const setupEngine = new ReservationEngine({ db: t.db, clock: () => T0 });
    const items: Item[] = [];
    for (let i = 0; i < 3; i++) items.push(await setupEngine.createItem({ sku: unique(), name: `i${i}`, availableQuantity: 200 }));
    const reservations = [];
    for (let i = 0; i < 150; i++) {
      reservations.push((await setupEngine.reserve({ itemId: items[i % 3]!.id, quantity: 1 + (i % 4), idempotencyKey: `r-${i}`, ttlSeconds: 60 })).reservation);
    }
    // The confirming app's clock says "not expired yet"; the sweep runs at the expiry time.
    const engine = new ReservationEngine({ db: t.connect(32), clock: () => new Date(expiresAt.getTime() - 1) });
    const sweeper = t.connect(4);
    let restocked = 0;
    const ops: Promise<unknown>[] = [];
    reservations.forEach((r, i) => {
      ops.push(i % 3 === 2 ? engine.cancel(r.id) : engine.confirm(r.id));
      if (i % 10 === 0) ops.push(expireBatch({ db: sweeper, now: expiresAt, limit: 20 }));
      if (i % 25 === 0) {
        const n = 1 + (i % 7);
        restocked += n * 1;
        ops.push(engine.restock({ itemId: items[i % 3]!.id, quantity: n }));
      }
    });
    const results = await Promise.allSettled(ops);
    // Losers of the race get InvalidStateError (the reservation expired first); nothing else fails.
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ status: 409, code: 'INVALID_STATE' });
    await expireBatch({ db: t.db, now: expiresAt, limit: 1000 });

    const rows = await t.db.selectFrom('reservations').select(['item_id', 'quantity', 'status']).execute();
    expect(rows.every((r) => r.status !== 'PENDING')).toBe(true);
    let totalAvailable = 0;
    let held = 0;
    for (const item of items) totalAvailable += (await setupEngine.getItem(item.id))!.availableQuantity;
    for (const r of rows) if (r.status === 'CONFIRMED') held += Number(r.quantity);
    expect(totalAvailable + held).toBe(600 + restocked);
    // Each reservation ended once: exactly one terminal event each.
    const terminal = [
      ...(await payloads('reservation.confirmed')),
      ...(await payloads('reservation.cancelled')),
      ...(await payloads('reservation.expired')),
    ];
    expect(terminal).toHaveLength(150);
    // Both sides won some races.
    expect(rows.some((r) => r.status === 'EXPIRED')).toBe(true);
    expect(rows.some((r) => r.status !== 'EXPIRED')).toBe(true);
    expect(new Set(terminal.map((p) => p.reservationId)).size).toBe(150);
  });
});
