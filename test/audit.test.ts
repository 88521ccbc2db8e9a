import { Migrator, sql } from 'kysely';
import { expect, it } from 'vitest';
import {
  expireBatch,
  IdempotencyConflictError,
  InsufficientStockError,
  migrateToLatest,
  NotFoundError,
  purgeBatch,
  ReservationEngine,
  reservationEngineMigrationProvider,
  ValidationError,
} from '../src/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';

describeEachDialect('audit and write-offs', (t) => {
  const at = new Date('2026-03-01T12:00:00.000Z');
  const engine = (db = t.db) => new ReservationEngine({ db, clock: () => at });
  const item = (availableQuantity: number) => engine().createItem({ sku: unique('sku'), name: 'thing', availableQuantity });
  const parse = (payload: unknown) => (typeof payload === 'string' ? JSON.parse(payload) : payload);

  it('is clean after a concurrent workload of carts, single reservations, confirms, cancels, expiry, restocks, write-offs and extensions', async () => {
    const ids = [(await item(40)).id, (await item(40)).id, (await item(40)).id];
    const pool = t.name === 'pglite' ? t.db : t.connect(10, { lockTimeoutMs: 5_000 });
    const worker = engine(pool);
    const settled = await Promise.allSettled(
      Array.from({ length: 60 }, async (_, i) => {
        const [a, b, c] = i % 2 === 0 ? ids : [...ids].reverse();
        switch (i % 6) {
          case 0:
            return worker.reserve({ lines: [{ itemId: a!, quantity: 2 }, { itemId: b!, quantity: 1 }, { itemId: c!, quantity: 1 }], idempotencyKey: `w-${i}`, ttlSeconds: 30 });
          case 1: {
            const { reservation } = await worker.reserve({ itemId: a!, quantity: 2, idempotencyKey: `w-${i}` });
            return worker.confirm(reservation.id);
          }
          case 2: {
            const { reservation } = await worker.reserve({ lines: [{ itemId: c!, quantity: 1 }, { itemId: a!, quantity: 1 }], idempotencyKey: `w-${i}` });
            return worker.cancel(reservation.id);
          }
          case 3:
            return worker.restock({ itemId: b!, quantity: 3 });
          case 4:
            return worker.writeOff({ itemId: c!, quantity: 1, reason: 'damaged' });
          default: {
            const { reservation } = await worker.reserve({ lines: [{ itemId: b!, quantity: 1 }, { itemId: c!, quantity: 2 }], idempotencyKey: `w-${i}` });
            await worker.extend(reservation.id, { ttlSeconds: 1200 });
            return worker.confirm(reservation.id);
          }
        }
      }),
    );
    // Only the stock may say no (the items run short under this load).
    for (const outcome of settled) if (outcome.status === 'rejected') expect(outcome.reason, String(outcome.reason)).toBeInstanceOf(InsufficientStockError);
    expect(settled.filter((o) => o.status === 'fulfilled').length).toBeGreaterThan(30);
    expect(await expireBatch({ db: t.db, now: new Date(at.getTime() + 60_000) })).toMatchObject({ failed: 0 });
    const report = await engine().audit();
    expect(report).toEqual({ ok: true, itemsChecked: 3, discrepancies: [], unknownItemIds: [] });
  });

  it('reports every item whose stock does not add up, with the figures, and only those', async () => {
    const [a, b, c, d] = [await item(10), await item(10), await item(10), await item(10)];
    const cart = (await engine().reserve({ lines: [{ itemId: b.id, quantity: 2 }, { itemId: c.id, quantity: 3 }], idempotencyKey: 'cart' })).reservation;
    const sold = (await engine().reserve({ itemId: d.id, quantity: 4, idempotencyKey: 'sold' })).reservation;
    await engine().confirm(sold.id);
    await engine().restock({ itemId: a.id, quantity: 5 });
    await engine().writeOff({ itemId: a.id, quantity: 2, reason: 'lost' });
    expect((await engine().audit()).ok).toBe(true);

    // Damage, written behind the engine's back: a unit appears on a; a cart line changes on c;
    // a sale on d is rewritten as cancelled without its units coming back.
    await t.db.updateTable('items').set({ available_quantity: 14 }).where('id', '=', a.id).execute();
    await t.db.updateTable('reservation_lines').set({ quantity: 1 }).where('reservation_id', '=', cart.id).where('item_id', '=', c.id).execute();
    await t.db.updateTable('reservations').set({ status: 'CANCELLED' }).where('id', '=', sold.id).execute();

    const report = await engine().audit();
    expect(report.ok).toBe(false);
    expect(report.itemsChecked).toBe(4);
    expect(report.discrepancies).toEqual([
      {
        itemId: a.id,
        sku: a.sku,
        received: 15,
        writtenOff: 2,
        available: 14,
        held: 0,
        pending: 0,
        confirmed: 0,
        difference: -1,
        problems: ['received 15 − written off 2 ≠ available 14 + PENDING 0 + CONFIRMED 0: 1 unit too many'],
      },
      {
        itemId: c.id,
        sku: c.sku,
        received: 10,
        writtenOff: 0,
        available: 7,
        held: 3,
        pending: 1,
        confirmed: 0,
        difference: 2,
        problems: ['received 10 − written off 0 ≠ available 7 + PENDING 1 + CONFIRMED 0: 2 units missing', 'held counter 3 ≠ PENDING units 1'],
      },
      expect.objectContaining({ itemId: d.id, received: 10, available: 6, confirmed: 0, difference: 4, problems: ['received 10 − written off 0 ≠ available 6 + PENDING 0 + CONFIRMED 0: 4 units missing'] }),
    ]);
    // Only some items, and ids that name none.
    const some = await engine().audit({ itemIds: [b.id, c.id, c.id, 999_999] });
    expect(some).toMatchObject({ ok: false, itemsChecked: 2, unknownItemIds: [999_999] });
    expect(some.discrepancies.map((x) => x.itemId)).toEqual([c.id]);
    expect(await engine().audit({ itemIds: [b.id] })).toEqual({ ok: true, itemsChecked: 1, discrepancies: [], unknownItemIds: [] });
  });

  it('counts confirmed reservations that retention deleted, so that the audit stays clean', async () => {
    const [a, b] = [await item(10), await item(10)];
    const cart = (await engine().reserve({ lines: [{ itemId: a.id, quantity: 1 }, { itemId: b.id, quantity: 2 }], idempotencyKey: 'p1' })).reservation;
    const single = (await engine().reserve({ itemId: a.id, quantity: 3, idempotencyKey: 'p2' })).reservation;
    const cancelled = (await engine().reserve({ lines: [{ itemId: a.id, quantity: 1 }, { itemId: b.id, quantity: 1 }], idempotencyKey: 'p3' })).reservation;
    await engine().confirm(cart.id);
    await engine().confirm(single.id);
    await engine().cancel(cancelled.id);
    const later = new Date(at.getTime() + 3 * 86_400_000);
    expect(await purgeBatch({ db: t.db, now: later, finishedReservationsMs: 86_400_000 })).toMatchObject({ reservations: 3 });
    expect(await t.db.selectFrom('reservation_lines').selectAll().execute()).toEqual([]);
    expect(await engine().audit()).toEqual({ ok: true, itemsChecked: 2, discrepancies: [], unknownItemIds: [] });
    const rows = await t.db.selectFrom('items').select(['id', 'purged_confirmed_quantity']).orderBy('id').execute();
    expect(rows.map((r: any) => Number(r.purged_confirmed_quantity))).toEqual([4, 2]);
  });

  it('writeOff takes units for good, with an item.written_off event, and never below zero', async () => {
    const a = await item(5);
    await engine().reserve({ itemId: a.id, quantity: 2, idempotencyKey: 'held' });
    const after = await engine().writeOff({ itemId: a.id, quantity: 2, reason: 'damaged in transit' });
    expect(after).toMatchObject({ availableQuantity: 1, heldQuantity: 2 });
    const events = (await t.db.selectFrom('outbox').select(['type', 'payload']).orderBy('id').execute()).map((row: any) => ({ type: row.type, payload: parse(row.payload) }));
    expect(events.at(-1)).toEqual({
      type: 'item.written_off',
      payload: { itemId: a.id, quantity: 2, reason: 'damaged in transit', availableQuantity: 1, occurredAt: at.toISOString() },
    });
    // Held units cannot be written off: 1 available, 2 asked.
    const error = await caught(() => engine().writeOff({ itemId: a.id, quantity: 2, reason: 'lost' }));
    expect(error).toBeInstanceOf(InsufficientStockError);
    expect(error).toMatchObject({ code: 'INSUFFICIENT_STOCK', itemId: a.id, requested: 2, available: 1 });
    expect(await engine().getItem(a.id)).toMatchObject({ availableQuantity: 1, heldQuantity: 2 });
    expect(await t.db.selectFrom('outbox').select('type').where('type', '=', 'item.written_off').execute()).toHaveLength(1);
    expect(await caught(() => engine().writeOff({ itemId: 999_999, quantity: 1, reason: 'lost' }))).toBeInstanceOf(NotFoundError);
    expect(await engine().audit()).toMatchObject({ ok: true });
    const row = await t.db.selectFrom('items').select(['received_quantity', 'written_off_quantity']).where('id', '=', a.id).executeTakeFirstOrThrow();
    expect([Number(row.received_quantity), Number(row.written_off_quantity)]).toEqual([5, 2]);
  });

  it('writeOff with an idempotency key takes its units once; the key space is shared with restock', async () => {
    const a = await item(10);
    const first = await engine().writeOff({ itemId: a.id, quantity: 3, reason: 'stolen', idempotencyKey: 'count-1' });
    const again = await engine().writeOff({ itemId: a.id, quantity: 3, reason: 'stolen', idempotencyKey: 'count-1' });
    expect([first.availableQuantity, again.availableQuantity]).toEqual([7, 7]);
    expect(await caught(() => engine().writeOff({ itemId: a.id, quantity: 3, reason: 'lost', idempotencyKey: 'count-1' }))).toBeInstanceOf(IdempotencyConflictError);
    expect(await caught(() => engine().restock({ itemId: a.id, quantity: 3, idempotencyKey: 'count-1' }))).toBeInstanceOf(IdempotencyConflictError);
    await engine().restock({ itemId: a.id, quantity: 3, idempotencyKey: 'restock-1' });
    expect(await caught(() => engine().writeOff({ itemId: a.id, quantity: 3, reason: 'x', idempotencyKey: 'restock-1' }))).toBeInstanceOf(IdempotencyConflictError);
    expect((await engine().getItem(a.id))!.availableQuantity).toBe(10);
    expect(await t.db.selectFrom('outbox').select('type').where('type', '=', 'item.written_off').execute()).toHaveLength(1);
  });

  it('writeOff in a host transaction: committed with it, gone with its rollback; a refused one leaves it usable', async () => {
    const a = await item(5);
    await t.db
      .transaction()
      .execute(async (trx) => {
        await engine().writeOff({ itemId: a.id, quantity: 2, reason: 'rolled back' }, { trx });
        throw new Error('the host changes its mind');
      })
      .catch(() => {});
    expect((await engine().getItem(a.id))!.availableQuantity).toBe(5);
    await t.db.transaction().execute(async (trx) => {
      expect(await caught(() => engine().writeOff({ itemId: a.id, quantity: 6, reason: 'too many' }, { trx }))).toBeInstanceOf(InsufficientStockError);
      await engine().writeOff({ itemId: a.id, quantity: 1, reason: 'committed', idempotencyKey: 'host-w' }, { trx });
    });
    expect((await engine().getItem(a.id))!.availableQuantity).toBe(4);
    const reasons = (await t.db.selectFrom('outbox').select('payload').execute()).map((row: any) => parse(row.payload).reason);
    expect(reasons).toEqual(['committed']);
    expect(await engine().audit()).toMatchObject({ ok: true });
  });

  it('refuses bad write-offs and bad audit input with a ValidationError, writing nothing', async () => {
    const a = await item(10);
    for (const input of [
      { itemId: a.id, quantity: 1 },
      { itemId: a.id, quantity: 0, reason: 'x' },
      { itemId: a.id, quantity: 1, reason: '' },
      { itemId: a.id, quantity: 1, reason: ' padded ' },
      { itemId: a.id, quantity: 1, reason: 'x', extra: true },
      { itemId: 'a', quantity: 1, reason: 'x' },
    ]) {
      expect(await caught(() => engine().writeOff(input as never)), JSON.stringify(input)).toBeInstanceOf(ValidationError);
    }
    for (const input of [{ itemIds: 'all' }, { itemIds: [0] }, { itemIds: [1.5] }, { items: [1] }, { itemIds: Array.from({ length: 10_001 }, (_, i) => i + 1) }]) {
      expect(await caught(() => engine().audit(input as never)), JSON.stringify(input).slice(0, 40)).toBeInstanceOf(ValidationError);
    }
    expect((await engine().getItem(a.id))!.availableQuantity).toBe(10);
    expect(await t.db.selectFrom('outbox').selectAll().execute()).toEqual([]);
  });

  it('migration 0006 starts existing items from what adds up, and the audit then finds what does not', async () => {
    // A database at migration 0005, with rows an older engine wrote, under a prefix of its own.
    const prefix = `m${unique('').replace(/[^a-z0-9]/g, '')}_`;
    const migrator = new Migrator({
      db: t.db.withoutPlugins(),
      provider: reservationEngineMigrationProvider({ tablePrefix: prefix }),
      migrationTableName: `${prefix}migration`,
      migrationLockTableName: `${prefix}migration_lock`,
    });
    expect((await migrator.migrateTo('reservation_engine_0005_outbox_trace_context')).error).toBeUndefined();
    const table = (name: string) => sql.table(`${prefix}${name}`);
    const raw = t.db.withoutPlugins();
    for (const [sku, available, held] of [['old-1', 5, 3], ['old-2', 0, 2]] as const) {
      await sql`insert into ${table('items')} (sku, name, available_quantity, held_quantity, created_at, updated_at) values (${sku}, 'old', ${available}, ${held}, ${at}, ${at})`.execute(raw);
    }
    const ids = (await sql<{ id: number }>`select id from ${table('items')} order by id`.execute(raw)).rows.map((r) => Number(r.id));
    const reservation = async (itemId: number, quantity: number, status: string) =>
      sql`insert into ${table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
        values (${crypto.randomUUID()}, ${itemId}, ${quantity}, ${status}, '', ${unique('k')}, ${at}, ${at}, ${at})`.execute(raw);
    await reservation(ids[0]!, 3, 'PENDING');
    await reservation(ids[0]!, 4, 'CONFIRMED');
    await reservation(ids[0]!, 1, 'CANCELLED');
    // Item 2 holds 2 units on its counter, but no PENDING reservation backs them.
    await reservation(ids[1]!, 6, 'CONFIRMED');

    await migrateToLatest(t.db, { tablePrefix: prefix });
    const received = (await sql<{ received: string | number }>`select received_quantity as received from ${table('items')} order by id`.execute(raw)).rows.map((r) => Number(r.received));
    expect(received).toEqual([5 + 3 + 4, 0 + 0 + 6]);
    const report = await new ReservationEngine({ db: t.db, tablePrefix: prefix }).audit();
    expect(report.discrepancies).toEqual([expect.objectContaining({ itemId: ids[1], held: 2, pending: 0, difference: 0, problems: ['held counter 2 ≠ PENDING units 0'] })]);
  });
});
