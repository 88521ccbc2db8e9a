import {
  CamelCasePlugin,
  DeduplicateJoinsPlugin,
  type Dialect,
  type DialectAdapter,
  Kysely,
  MysqlDialect,
  ParseJSONResultsPlugin,
  PostgresDialect,
  sql,
} from 'kysely';
import { PGliteDialect } from '../src/embedded/pglite-dialect.js';
import { expect, it } from 'vitest';
import {
  ConfigurationError,
  IdempotencyConflictError,
  InsufficientStockError,
  ReservationEngine,
  TransactionConflictError,
  UnsupportedDatabaseError,
  expireBatch,
  migrateToLatest,
  runOutboxBatch,
} from '../src/index.js';
import { caught, describeEachDialect, freshPGlite, type TestDatabase, unique } from './support/db.js';

/** A new Kysely dialect for the test's database (PGlite: a new one in memory). */
async function newDialect(t: TestDatabase): Promise<Dialect> {
  if (t.name === 'mysql') return new MysqlDialect({ pool: (await import('mysql2')).createPool({ uri: t.url, connectionLimit: 2, timezone: 'Z' }) });
  if (t.name === 'postgres') return new PostgresDialect({ pool: new (await import('pg')).default.Pool({ connectionString: t.url, max: 2 }) });
  return new PGliteDialect(await freshPGlite());
}

/** A fresh prefix per test, so each test has tables of its own. */
const prefix = () => `h${unique('').slice(1, 9).replace(/-/g, '')}_`;

describeEachDialect('inside a host app', (t) => {
  const at = new Date('2026-09-01T10:00:00.000Z');

  it("migrates beside a host's own items, reservations, outbox and idempotency_requests tables without touching them", async () => {
    const host = t.connectRaw(2);
    for (const table of ['items', 'reservations', 'outbox', 'idempotency_requests']) {
      await sql`drop table if exists ${sql.table(table)}`.execute(host);
      await sql`create table ${sql.table(table)} (id integer primary key, note varchar(50))`.execute(host);
      await sql`insert into ${sql.table(table)} (id, note) values (1, ${`host ${table}`})`.execute(host);
    }
    const tablePrefix = prefix();
    await migrateToLatest(host, { tablePrefix });
    const engine = new ReservationEngine({ db: host, tablePrefix, clock: () => at });
    const item = await engine.createItem({ sku: 'S', name: 'n', availableQuantity: 3 });
    const { reservation } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'k' });
    await engine.confirm(reservation.id);
    expect(await runOutboxBatch({ db: host, tablePrefix, now: at, handler: () => {} })).toMatchObject({ processed: 2 });
    for (const table of ['items', 'reservations', 'outbox', 'idempotency_requests']) {
      const { rows } = await sql<{ id: number; note: string }>`select id, note from ${sql.table(table)}`.execute(host);
      expect(rows).toEqual([{ id: 1, note: `host ${table}` }]);
    }
    const { rows } = await sql<{ n: number }>`select count(*) as n from ${sql.table(`${tablePrefix}reservations`)}`.execute(host);
    expect(Number(rows[0]?.n)).toBe(1);
    for (const table of ['items', 'reservations', 'outbox', 'idempotency_requests']) await sql`drop table ${sql.table(table)}`.execute(host);
  });

  it('refuses a table prefix that is not a plain identifier', async () => {
    for (const tablePrefix of ['', 'a-b', '1x_', 'x'.repeat(31), 'drop table;']) {
      expect(() => new ReservationEngine({ db: t.db, tablePrefix })).toThrow(ConfigurationError);
      expect(await caught(() => migrateToLatest(t.db, { tablePrefix }))).toBeInstanceOf(ConfigurationError);
    }
  });

  it.each([
    ['CamelCasePlugin', () => new CamelCasePlugin()],
    ['ParseJSONResultsPlugin', () => new ParseJSONResultsPlugin()],
    ['DeduplicateJoinsPlugin', () => new DeduplicateJoinsPlugin()],
  ])("a host Kysely with %s: the whole lifecycle and both batch functions behave as without it", async (_name, plugin) => {
    const host = t.connectRaw(4).withPlugin(plugin());
    let now = at;
    let tick = 0;
    const engine = new ReservationEngine({ db: host, clock: () => new Date(now.getTime() + tick++), defaultTtlSeconds: 60 });
    const item = await engine.createItem({ sku: unique(), name: 'plugged', availableQuantity: 10 });
    expect(await engine.getItem(item.id)).toEqual(item);
    expect(item.availableQuantity).toBe(10);
    const first = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'p1' });
    const replayed = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'p1' });
    expect(replayed).toEqual({ reservation: first.reservation, replayed: true });
    expect(await caught(() => engine.reserve({ itemId: item.id, quantity: 3, idempotencyKey: 'p1' }))).toBeInstanceOf(IdempotencyConflictError);
    expect((await engine.confirm(first.reservation.id)).status).toBe('CONFIRMED');
    const second = await engine.reserve({ itemId: item.id, quantity: 3, idempotencyKey: 'p2' });
    expect((await engine.cancel(second.reservation.id)).status).toBe('CANCELLED');
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'p3' });
    expect((await engine.restock({ itemId: item.id, quantity: 5, idempotencyKey: 'r1' })).availableQuantity).toBe(12);
    now = new Date(at.getTime() + 120_000);
    expect(await expireBatch({ db: host, now })).toEqual({ expired: 1, failed: 0 });
    const delivered: unknown[] = [];
    expect(await runOutboxBatch({ db: host, now, handler: (event) => void delivered.push(event.payload) })).toMatchObject({ processed: 6 });
    expect(delivered[0]).toMatchObject({ reservationId: first.reservation.id, itemId: item.id, quantity: 2, status: 'PENDING' });
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 13, heldQuantity: 0 });
    expect((await engine.listReservations({ itemId: item.id })).reservations.map((r) => r.status)).toEqual(['CONFIRMED', 'CANCELLED', 'EXPIRED']);
  });

  it("refuses a Transaction passed as db, saying to pass it per call", async () => {
    await t.db.transaction().execute(async (trx) => {
      for (const make of [() => new ReservationEngine({ db: trx }), () => expireBatch({ db: trx }), () => runOutboxBatch({ db: trx, handler: () => {} })]) {
        const error = await caught(async () => make());
        expect(error).toBeInstanceOf(ConfigurationError);
        expect(error.message).toMatch(/db: must be the Kysely instance, not a Transaction: pass a host transaction per call as \{ trx \}/);
      }
    });
  });

  it('takes the database from a `dialect` option when the adapter cannot tell, and says how when it is missing', async () => {
    // A minified build: every class is renamed, Kysely's adapters too.
    const base = await newDialect(t);
    class a {}
    const minified: Dialect = {
      createAdapter: () => {
        const adapter = base.createAdapter();
        return Object.assign(new a(), {
          supportsCreateIfNotExists: adapter.supportsCreateIfNotExists,
          supportsTransactionalDdl: adapter.supportsTransactionalDdl,
          supportsReturning: adapter.supportsReturning,
          supportsOutput: adapter.supportsOutput,
          acquireMigrationLock: adapter.acquireMigrationLock.bind(adapter),
          releaseMigrationLock: adapter.releaseMigrationLock.bind(adapter),
        }) as unknown as DialectAdapter;
      },
      createDriver: () => base.createDriver(),
      createQueryCompiler: () => base.createQueryCompiler(),
      createIntrospector: (db) => base.createIntrospector(db),
    };
    const db = new Kysely<any>({ dialect: minified });
    try {
      const error = await caught(async () => new ReservationEngine({ db }));
      expect(error).toBeInstanceOf(UnsupportedDatabaseError);
      expect(error.message).toMatch(/pass dialect: 'mysql' or dialect: 'postgres'/);
      expect(await caught(() => expireBatch({ db }))).toBeInstanceOf(UnsupportedDatabaseError);
      const dialect = t.name === 'mysql' ? 'mysql' : 'postgres';
      const tablePrefix = prefix();
      await migrateToLatest(db, { dialect, tablePrefix });
      const engine = new ReservationEngine({ db, dialect, tablePrefix });
      const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 1 });
      expect((await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'd' })).replayed).toBe(false);
      expect(await expireBatch({ db, dialect, tablePrefix })).toEqual({ expired: 0, failed: 0 });
      expect(await caught(async () => new ReservationEngine({ db, dialect: 'oracle' as never }))).toBeInstanceOf(ConfigurationError);
    } finally {
      await db.destroy();
    }
  });

  it('idempotency scopes: the same key in two scopes is two requests; a replay never crosses scopes', async () => {
    const engine = new ReservationEngine({ db: t.db, clock: () => at });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const a = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'order-1', idempotencyScope: 'tenant-a' });
    const b = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'order-1', idempotencyScope: 'tenant-b' });
    const none = await engine.reserve({ itemId: item.id, quantity: 3, idempotencyKey: 'order-1' });
    expect(new Set([a, b, none].map((r) => r.reservation.id)).size).toBe(3);
    expect([a, b, none].map((r) => r.reservation.idempotencyScope)).toEqual(['tenant-a', 'tenant-b', null]);
    expect(await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'order-1', idempotencyScope: 'tenant-a' })).toEqual({ reservation: a.reservation, replayed: true });
    expect(await caught(() => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'order-1', idempotencyScope: 'tenant-b' }))).toBeInstanceOf(IdempotencyConflictError);
    // Restock keys have scopes too.
    await engine.restock({ itemId: item.id, quantity: 1, idempotencyKey: 'r', idempotencyScope: 'tenant-a' });
    await engine.restock({ itemId: item.id, quantity: 1, idempotencyKey: 'r', idempotencyScope: 'tenant-b' });
    await engine.restock({ itemId: item.id, quantity: 1, idempotencyKey: 'r', idempotencyScope: 'tenant-b' });
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(6);
    // Keys and scopes up to 255 characters.
    const long = 'k'.repeat(255);
    expect((await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: long, idempotencyScope: 's'.repeat(255) })).reservation.idempotencyKey).toBe(long);
  });

  it('listReservations pages through a filter with keyset pagination', async () => {
    let now = at.getTime();
    const engine = new ReservationEngine({ db: t.db, clock: () => new Date((now += 1)) });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    const other = await engine.createItem({ sku: unique(), name: 'y', availableQuantity: 100 });
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `l${i}`, idempotencyScope: i % 2 ? 'odd' : 'even' })).reservation.id);
    await engine.reserve({ itemId: other.id, quantity: 1, idempotencyKey: 'other' });
    await engine.cancel(ids[3]!);
    const seen: string[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const page = await engine.listReservations({ itemId: item.id, limit: 3, after });
      seen.push(...page.reservations.map((r) => r.id));
      after = page.next;
      pages++;
    } while (after);
    expect(seen).toEqual(ids);
    expect(pages).toBe(3);
    expect((await engine.listReservations({ itemId: item.id, status: 'CANCELLED' })).reservations.map((r) => r.id)).toEqual([ids[3]]);
    expect((await engine.listReservations({ idempotencyScope: 'odd' })).reservations.map((r) => r.id)).toEqual([ids[1], ids[3], ids[5]]);
    expect(await engine.listReservations({ itemId: item.id, after: ids[6]!.toUpperCase() })).toEqual({ reservations: [], next: undefined });
    expect(await caught(() => engine.listReservations({ limit: 0 }))).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await caught(() => engine.listReservations({ after: 'page-2' }))).toMatchObject({ code: 'VALIDATION_ERROR' });
  });

  it("a host transaction: reserve, confirm, cancel and restock commit with the host's own writes", async () => {
    const engine = new ReservationEngine({ db: t.db, clock: () => at });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const earlier = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'before' });
    const toCancel = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'before-2' });
    const { reservation } = await t.db.transaction().execute(async (trx) => {
      const result = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'in-trx' }, { trx });
      await engine.confirm(earlier.reservation.id, { trx });
      await engine.cancel(toCancel.reservation.id, { trx });
      await engine.restock({ itemId: item.id, quantity: 4, idempotencyKey: 'trx-restock' }, { trx });
      // The host's own write, in the same transaction.
      await trx.insertInto('outbox').values({ type: 'host.order', payload: JSON.stringify({ host: true }), created_at: at, available_at: null, attempts: 0 }).execute();
      return result;
    });
    expect((await engine.getReservation(reservation.id))?.status).toBe('PENDING');
    expect((await engine.getReservation(earlier.reservation.id))?.status).toBe('CONFIRMED');
    expect((await engine.getReservation(toCancel.reservation.id))?.status).toBe('CANCELLED');
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 11, heldQuantity: 2 });
    expect((await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'in-trx' })).replayed).toBe(true);
  });

  it("a host transaction rolled back: nothing of the engine's happened, and the keys can be used again", async () => {
    const engine = new ReservationEngine({ db: t.db, clock: () => at });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const earlier = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'before' });
    const toCancel = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'before-2' });
    const outboxBefore = await t.count('outbox');
    const rolledBack = new Error('the host changes its mind');
    const error = await caught(() =>
      t.db.transaction().execute(async (trx) => {
        await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'in-trx' }, { trx });
        await engine.confirm(earlier.reservation.id, { trx });
        await engine.cancel(toCancel.reservation.id, { trx });
        await engine.restock({ itemId: item.id, quantity: 4, idempotencyKey: 'trx-restock' }, { trx });
        throw rolledBack;
      }),
    );
    expect(error).toBe(rolledBack);
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 8, heldQuantity: 2 });
    expect((await engine.getReservation(earlier.reservation.id))?.status).toBe('PENDING');
    expect((await engine.getReservation(toCancel.reservation.id))?.status).toBe('PENDING');
    expect(await t.count('outbox')).toBe(outboxBefore);
    expect(await t.count('reservations')).toBe(2);
    expect(await t.count('restock_requests')).toBe(0);
    expect((await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'in-trx' })).replayed).toBe(false);
    expect((await engine.restock({ itemId: item.id, quantity: 4, idempotencyKey: 'trx-restock' })).availableQuantity).toBe(10);
  });

  it("a refused reserve inside a host transaction leaves the host's transaction usable and its writes in place", async () => {
    const engine = new ReservationEngine({ db: t.db, clock: () => at });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 1 });
    await t.db.transaction().execute(async (trx) => {
      await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'fits' }, { trx });
      expect(await caught(() => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'too-many' }, { trx }))).toBeInstanceOf(InsufficientStockError);
      expect(await caught(() => engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'fits' }, { trx }))).toBeInstanceOf(IdempotencyConflictError);
      expect((await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'fits' }, { trx })).replayed).toBe(true);
    });
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 0, heldQuantity: 1 });
    expect(await t.count('reservations')).toBe(1);
    expect(await t.count('idempotency_requests')).toBe(1);
  });

  it('refuses a trx that is not a Transaction', async () => {
    const engine = new ReservationEngine({ db: t.db });
    const error = await caught(() => engine.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'x' }, { trx: t.db }));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(error.message).toMatch(/trx: must be a Kysely Transaction/);
  });

  if (t.name !== 'pglite') {
    it("concurrent host transactions reserving with nearby keys never deadlock each other (no gap locks from the key lookup)", async () => {
      const engine = new ReservationEngine({ db: t.db, clock: () => at });
      const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10_000 });
      const db = t.connect(8);
      for (let round = 0; round < 10; round++) {
        let arrived = 0;
        let allIn!: () => void;
        const barrier = new Promise<void>((resolve) => (allIn = resolve));
        const outcomes = await Promise.allSettled(
          Array.from({ length: 6 }, (_, i) =>
            db.transaction().execute(async (trx) => {
              // Each host transaction reads first (taking its snapshot), as a host's would.
              await trx.selectFrom('items').select('id').where('id', '=', item.id).execute();
              if (++arrived === 6) allIn();
              await barrier;
              await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `near-${round}-${i}` }, { trx });
            }),
          ),
        );
        expect(outcomes.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason))).toEqual([]);
      }
      expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 10_000 - 60, heldQuantity: 60 });
    });

    it('a cancel refused by a lock timeout inside a host transaction leaves none of its writes behind, and the transaction usable', async () => {
      const engine = new ReservationEngine({ db: t.db, clock: () => at });
      const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
      const { reservation } = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'c' });
      const events = await t.count('outbox');
      // Another transaction holds the item's row lock.
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let locked!: () => void;
      const isLocked = new Promise<void>((resolve) => (locked = resolve));
      const holder = t.connect(1).transaction().execute(async (trx) => {
        await trx.selectFrom('items').select('id').where('id', '=', item.id).forUpdate().execute();
        locked();
        await released;
      });
      await isLocked;
      try {
        await t.connect(1, { lockTimeoutMs: 300 }).transaction().execute(async (trx) => {
          const error = await caught(() => engine.cancel(reservation.id, { trx }));
          expect(error).toBeInstanceOf(TransactionConflictError);
          expect(error.message).toMatch(/retry the whole transaction/);
          // The host's transaction still works, and holds none of the cancel's writes.
          expect((await trx.selectFrom('reservations').select('status').where('id', '=', reservation.id).executeTakeFirstOrThrow()).status).toBe('PENDING');
          expect(Number((await trx.selectFrom('outbox').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)).toBe(events);
        });
      } finally {
        release();
        await holder;
      }
      expect((await engine.getReservation(reservation.id))?.status).toBe('PENDING');
      expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 8, heldQuantity: 2 });
    });

    it('a deadlock inside a host transaction is not retried: TRANSACTION_CONFLICT says to retry the whole transaction', async () => {
      const engine = new ReservationEngine({ db: t.db, clock: () => at });
      const a = await engine.createItem({ sku: unique(), name: 'a', availableQuantity: 10 });
      const b = await engine.createItem({ sku: unique(), name: 'b', availableQuantity: 10 });
      const db = t.connect(4);
      let bothLocked!: () => void;
      let locked = 0;
      const barrier = new Promise<void>((resolve) => (bothLocked = resolve));
      // Each host transaction locks one item, then reserves the other: a deadlock cycle.
      const run = (first: number, second: number, key: string) =>
        db.transaction().execute(async (trx) => {
          await trx.updateTable('items').set({ name: 'locked' }).where('id', '=', first).execute();
          if (++locked === 2) bothLocked();
          await barrier;
          await engine.reserve({ itemId: second, quantity: 1, idempotencyKey: key }, { trx });
        });
      const outcomes = await Promise.allSettled([run(a.id, b.id, 'ab'), run(b.id, a.id, 'ba')]);
      const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
      expect(failures).toHaveLength(1);
      expect(failures[0]).toBeInstanceOf(TransactionConflictError);
      expect(failures[0].message).toMatch(/retry the whole transaction/);
    });
  }
});
