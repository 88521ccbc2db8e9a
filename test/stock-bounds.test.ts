import { sql } from 'kysely';
import { expect, it } from 'vitest';
import { ConfigurationError, IdempotencyConflictError, InsufficientStockError, MAX_AVAILABLE_QUANTITY, NotFoundError, ReservationEngine, ValidationError, expireBatch } from '../src/index.js';
import { mysqlDialect } from '../src/dialects/mysql.js';
import { schemaNames } from '../src/schema/tables.js';
import { caught, describeEachDialect, DIALECTS, unique } from './support/db.js';

const MILLION = 1_000_000;

describeEachDialect('stock bounds', (t) => {
  const at = new Date('2026-05-01T00:00:00.000Z');
  const engine = (db = t.db) => new ReservationEngine({ db, clock: () => at, defaultTtlSeconds: 60 });
  const stock = async (itemId: number) => {
    const item = (await engine().getItem(itemId))!;
    return { available: item.availableQuantity, held: item.heldQuantity };
  };

  it('restock counts held units: held stock can always come back without overflowing the column', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'full', availableQuantity: MAX_AVAILABLE_QUANTITY });
    const a = await engine().reserve({ itemId: item.id, quantity: MILLION, idempotencyKey: 'a' });
    const b = await engine().reserve({ itemId: item.id, quantity: MILLION, idempotencyKey: 'b' });
    expect(await stock(item.id)).toEqual({ available: MAX_AVAILABLE_QUANTITY - 2 * MILLION, held: 2 * MILLION });

    const refused = await caught(() => engine().restock({ itemId: item.id, quantity: MILLION }));
    expect(refused).toBeInstanceOf(ValidationError);
    expect(refused.message).toMatch(/would take item \d+ over 2,147,483,647 units \(2,145,483,647 available, 2,000,000 held\)/);
    expect(await stock(item.id)).toEqual({ available: MAX_AVAILABLE_QUANTITY - 2 * MILLION, held: 2 * MILLION });

    // The held units come back, by cancel and by expiry, exactly.
    await engine().cancel(a.reservation.id);
    expect(await expireBatch({ db: t.db, now: new Date(at.getTime() + 61_000) })).toEqual({ expired: 1, failed: 0 });
    expect(await stock(item.id)).toEqual({ available: MAX_AVAILABLE_QUANTITY, held: 0 });
    expect((await engine().getReservation(b.reservation.id))?.status).toBe('EXPIRED');
  });

  it('held units follow every transition: reserve holds, confirm sells, cancel and expiry return', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const [r1, r2, r3] = await Promise.all(['1', '2', '3'].map((k) => engine().reserve({ itemId: item.id, quantity: 2, idempotencyKey: k })));
    expect(await stock(item.id)).toEqual({ available: 4, held: 6 });
    await engine().confirm(r1!.reservation.id);
    expect(await stock(item.id)).toEqual({ available: 4, held: 4 });
    await engine().cancel(r2!.reservation.id);
    expect(await stock(item.id)).toEqual({ available: 6, held: 2 });
    await expireBatch({ db: t.db, now: new Date(at.getTime() + 60_000) });
    expect(await stock(item.id)).toEqual({ available: 8, held: 0 });
    expect((await engine().getReservation(r3!.reservation.id))?.status).toBe('EXPIRED');
    // Idempotent repeats move nothing.
    await engine().confirm(r1!.reservation.id);
    await engine().cancel(r2!.reservation.id);
    expect(await stock(item.id)).toEqual({ available: 8, held: 0 });
  });

  it('one row the database refuses never stops expireBatch from expiring the others', async () => {
    const poisoned = await engine().createItem({ sku: unique(), name: 'poisoned', availableQuantity: 10 });
    const fine = await engine().createItem({ sku: unique(), name: 'fine', availableQuantity: 10 });
    const early = new ReservationEngine({ db: t.db, clock: () => new Date(at.getTime() - 1000), defaultTtlSeconds: 60 });
    // The poisoned item's reservation sorts first (oldest expiry).
    await early.reserve({ itemId: poisoned.id, quantity: 5, idempotencyKey: 'p' });
    for (let i = 0; i < 3; i++) await engine().reserve({ itemId: fine.id, quantity: 1, idempotencyKey: `f${i}` });
    // Damage the row outside the engine: returning 5 units now overflows the column.
    await t.db.updateTable('items').set({ available_quantity: MAX_AVAILABLE_QUANTITY }).where('id', '=', poisoned.id).execute();

    const later = new Date(at.getTime() + 120_000);
    expect(await expireBatch({ db: t.db, now: later })).toEqual({ expired: 3, failed: 1 });
    expect(await stock(fine.id)).toEqual({ available: 10, held: 0 });
    expect(await t.count('reservations', (q) => q.where('status', '=', 'PENDING'))).toBe(1);
    expect(await t.count('outbox', (q) => q.where('type', '=', 'reservation.expired'))).toBe(3);
    // Repaired, it expires with the next sweep.
    await t.db.updateTable('items').set({ available_quantity: 5 }).where('id', '=', poisoned.id).execute();
    expect(await expireBatch({ db: t.db, now: later })).toEqual({ expired: 1, failed: 0 });
    expect(await stock(poisoned.id)).toEqual({ available: 10, held: 0 });
  });

  it('expireBatch reports a sweep that fails on every row (a broken set-up), rather than counting them all as failed', async () => {
    const early = new ReservationEngine({ db: t.db, clock: () => new Date(at.getTime() - 1000), defaultTtlSeconds: 60 });
    for (const sku of [unique(), unique()]) {
      const item = await engine().createItem({ sku, name: 'poisoned', availableQuantity: 10 });
      await early.reserve({ itemId: item.id, quantity: 5, idempotencyKey: sku });
      await t.db.updateTable('items').set({ available_quantity: MAX_AVAILABLE_QUANTITY }).where('id', '=', item.id).execute();
    }
    expect(await caught(() => expireBatch({ db: t.db, now: new Date(at.getTime() + 120_000) }))).toBeInstanceOf(Error);
    expect(await t.count('reservations', (q) => q.where('status', '=', 'PENDING'))).toBe(2);
  });

  it('restock with an idempotency key adds its units once; another request with the key is a conflict', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 1 });
    expect((await engine().restock({ itemId: item.id, quantity: 5, idempotencyKey: 'delivery-1' })).availableQuantity).toBe(6);
    // A retry after a lost reply: nothing added again.
    expect((await engine().restock({ itemId: item.id, quantity: 5, idempotencyKey: 'delivery-1' })).availableQuantity).toBe(6);
    expect(await caught(() => engine().restock({ itemId: item.id, quantity: 6, idempotencyKey: 'delivery-1' }))).toBeInstanceOf(IdempotencyConflictError);
    const other = await engine().createItem({ sku: unique(), name: 'y', availableQuantity: 0 });
    expect(await caught(() => engine().restock({ itemId: other.id, quantity: 5, idempotencyKey: 'delivery-1' }))).toBeInstanceOf(IdempotencyConflictError);
    expect((await engine().getItem(other.id))?.availableQuantity).toBe(0);
    // Without a key every call adds.
    expect((await engine().restock({ itemId: item.id, quantity: 5 })).availableQuantity).toBe(11);
    // Restock keys are their own namespace: the same string as a reserve key is no conflict.
    await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'shared' });
    expect((await engine().restock({ itemId: item.id, quantity: 1, idempotencyKey: 'shared' })).availableQuantity).toBe(11);
  });

  it('a restock that fails stores no key: the same key works once the request can succeed', async () => {
    expect(await caught(() => engine().restock({ itemId: 987_654, quantity: 5, idempotencyKey: 'r' }))).toBeInstanceOf(NotFoundError);
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: MAX_AVAILABLE_QUANTITY });
    expect(await caught(() => engine().restock({ itemId: item.id, quantity: 5, idempotencyKey: 'r2' }))).toBeInstanceOf(ValidationError);
    expect(await t.count('restock_requests')).toBe(0);
    await engine().reserve({ itemId: item.id, quantity: 5, idempotencyKey: 'k' });
    await engine().confirm((await engine().reserve({ itemId: item.id, quantity: 5, idempotencyKey: 'k' })).reservation.id);
    expect((await engine().restock({ itemId: item.id, quantity: 5, idempotencyKey: 'r2' })).availableQuantity).toBe(MAX_AVAILABLE_QUANTITY);
  });

  it('concurrent restocks with one key add the units once, and all return the item', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 0 });
    const db = t.name === 'pglite' ? t.db : t.connect(8);
    const results = await Promise.all(Array.from({ length: 8 }, () => engine(db).restock({ itemId: item.id, quantity: 3, idempotencyKey: 'once' })));
    expect(results.every((r) => r.id === item.id)).toBe(true);
    expect((await engine().getItem(item.id))?.availableQuantity).toBe(3);
  });

  it('concurrent reserves with one key and stock exactly equal to the quantity: one reservation, every call returns it', async () => {
    const db = t.name === 'pglite' ? t.db : t.connect(8);
    for (let round = 0; round < 10; round++) {
      const item = await engine().createItem({ sku: unique(), name: 'last units', availableQuantity: 2 });
      const key = unique('same');
      const results = await Promise.all(Array.from({ length: 8 }, () => engine(db).reserve({ itemId: item.id, quantity: 2, idempotencyKey: key })));
      expect(new Set(results.map((r) => r.reservation.id)).size).toBe(1);
      expect(results.filter((r) => !r.replayed)).toHaveLength(1);
      expect(await stock(item.id)).toEqual({ available: 0, held: 2 });
    }
    expect(await t.count('outbox')).toBe(10);
  });

  it('concurrent reserves with one key and different payloads at the last units: one reservation, the others IDEMPOTENCY_CONFLICT, never INSUFFICIENT_STOCK', async () => {
    const db = t.name === 'pglite' ? t.db : t.connect(8);
    for (let round = 0; round < 10; round++) {
      const item = await engine().createItem({ sku: unique(), name: 'last units', availableQuantity: 2 });
      const key = unique('diff');
      const settled = await Promise.allSettled(
        [2, 1, 2, 1, 2, 1, 2, 1].map((quantity) => engine(db).reserve({ itemId: item.id, quantity, idempotencyKey: key })),
      );
      const reasons = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason] : []));
      expect(reasons.every((e) => e instanceof IdempotencyConflictError)).toBe(true);
      expect(reasons.some((e) => e instanceof InsufficientStockError)).toBe(false);
      const ids = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value.reservation.id] : []));
      expect(new Set(ids).size).toBe(1);
      expect(reasons).toHaveLength(4);
    }
  });
});

describeEachDialect(
  'MariaDB sql_mode',
  (t) => {
    it('the reserve routine is created strict even from a lax session', async () => {
      const lax = t.connect(1, { sqlMode: '' });
      await mysqlDialect.dropRoutines(lax, schemaNames());
      await mysqlDialect.createRoutines(lax, schemaNames(), { traceContext: true });
      const { rows } = await sql<{ mode: string }>`select sql_mode as mode from information_schema.routines where routine_schema = database() and routine_name = 'reservation_engine_reserve_or_replay'`.execute(t.db);
      expect(rows[0]?.mode).toMatch(/STRICT_ALL_TABLES/);
      // The session's own mode is left as it was.
      expect((await sql<{ mode: string }>`select @@session.sql_mode as mode`.execute(lax)).rows[0]?.mode).toBe('');
    });

    it('with a lax host sql_mode nothing is truncated: the bound holds and held units come back exactly', async () => {
      const lax = t.connect(4, { sqlMode: '' });
      const engine = new ReservationEngine({ db: lax });
      const item = await engine.createItem({ sku: unique(), name: 'lax', availableQuantity: MAX_AVAILABLE_QUANTITY });
      const r = await engine.reserve({ itemId: item.id, quantity: MILLION, idempotencyKey: 'lax' });
      expect(await caught(() => engine.restock({ itemId: item.id, quantity: MILLION }))).toBeInstanceOf(ValidationError);
      await engine.cancel(r.reservation.id);
      expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: MAX_AVAILABLE_QUANTITY, heldQuantity: 0 });
    });

    it('a session with NO_BACKSLASH_ESCAPES (which mysql2 escaping cannot serve) is refused before anything is written', async () => {
      const unsafe = t.connect(2, { sqlMode: 'STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES' });
      const engine = new ReservationEngine({ db: unsafe });
      const error = await caught(() => engine.createItem({ sku: "x', 0x70776e6564, 7, now(3), now(3))#", name: 'n', availableQuantity: 1 }));
      expect(error).toBeInstanceOf(ConfigurationError);
      expect(error.message).toMatch(/NO_BACKSLASH_ESCAPES/);
      expect(await caught(() => expireBatch({ db: unsafe }))).toBeInstanceOf(ConfigurationError);
      expect(await t.count('items')).toBe(0);
    });
  },
  DIALECTS.filter((d) => d.name === 'mysql'),
);
