import { Kysely, sql } from 'kysely';
import { expect, it } from 'vitest';
import { ReservationEngine, UnsupportedDatabaseError, migrateToLatest, reservationEngineMigrations } from '../src/index.js';
import { describeEachDialect } from './support/db.js';

describeEachDialect('migrations', (t) => {
  it('a repeat call is a no-op', async () => {
    const again = await migrateToLatest(t.db);
    expect(again.error).toBeUndefined();
    expect(again.results).toEqual([]);
    const applied = await t.db.selectFrom('reservation_engine_migration').select('name').execute();
    expect(applied.map((r) => r.name)).toEqual(Object.keys(reservationEngineMigrations()));
  });

  it('concurrent calls from several processes are safe', async () => {
    const results = await Promise.all([migrateToLatest(t.connect(1)), migrateToLatest(t.connect(1)), migrateToLatest(t.db)]);
    expect(results.every((r) => r.error === undefined)).toBe(true);
  });

  it('creates the five tables, prefixed, with the indexes the claim and sweep use', async () => {
    const tables = await t.db.introspection.getTables();
    const names = tables.map((table) => table.name);
    for (const name of ['items', 'reservations', 'idempotency_requests', 'restock_requests', 'outbox']) expect(names).toContain(`reservation_engine_${name}`);
    const indexes =
      t.name === 'mysql'
        ? (await sql<{ name: string }>`select distinct index_name as name from information_schema.statistics where table_schema = database()`.execute(t.db)).rows
        : (await sql<{ name: string }>`select indexname as name from pg_indexes where schemaname = 'public'`.execute(t.db)).rows;
    const indexNames = indexes.map((r) => r.name);
    expect(indexNames).toEqual(
      expect.arrayContaining(['reservation_engine_reservations_status_expires_at', 'reservation_engine_outbox_available_at', 'reservation_engine_reservations_item_id']),
    );
  });

  it('the stock column refuses to go negative even when written directly', async () => {
    const item = await new ReservationEngine({ db: t.db }).createItem({ sku: 'chk', name: 'x', availableQuantity: 0 });
    await expect(t.db.updateTable('items').set({ available_quantity: -1 }).where('id', '=', item.id).execute()).rejects.toThrow();
  });
});

it('an unsupported database is a typed error', () => {
  const db = new Kysely<any>({
    dialect: {
      createAdapter: () => new (class FancyAdapter {})() as never,
      createDriver: () => ({}) as never,
      createQueryCompiler: () => ({}) as never,
      createIntrospector: () => ({}) as never,
    },
  });
  expect(() => new ReservationEngine({ db })).toThrow(UnsupportedDatabaseError);
});
