import { Kysely, type LogEvent, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { expect, it } from 'vitest';
import { IdempotencyConflictError, InsufficientStockError, NotFoundError, ReservationEngine } from '../src/index.js';
import { caught, describeEachServerDialect, type TestDatabase, unique } from './support/db.js';

/** Rows of the tables a reserve writes. */
async function written(db: Kysely<any>) {
  const count = async (table: string) => Number((await db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  return { reservations: await count('reservations'), keys: await count('idempotency_requests'), events: await count('outbox') };
}

/**
 * Runs `work` while another connection holds the row lock of `itemId` in an open transaction,
 * after running `inLock` in that transaction (e.g. an uncommitted decrement).
 */
async function whileItemLocked<T>(t: TestDatabase, itemId: number, work: () => Promise<T>, inLock?: (trx: Kysely<any>) => Promise<unknown>): Promise<T> {
  const holder = t.connect(1);
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const done = holder.transaction().execute(async (trx) => {
    await trx.selectFrom('items').select('id').where('id', '=', itemId).forUpdate().execute();
    await inLock?.(trx);
    locked();
    await released;
  });
  await isLocked;
  try {
    return await work();
  } finally {
    release();
    await done;
  }
}

/** Waits until a reserve's stock decrement runs (and so waits for the row lock the test holds). */
async function someoneWaitsForALock(t: TestDatabase): Promise<void> {
  for (let i = 0; i < 400; i++) {
    // MariaDB does not list a transaction begun inside a procedure in innodb_trx: look for the statement.
    const query =
      t.name === 'mysql'
        ? sql<{ n: number }>`select count(*) as n from information_schema.processlist where db = database() and info like '%available_quantity >=%'`
        : sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`;
    if (Number((await query.execute(t.db)).rows[0]?.n) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('no connection waits for a row lock');
}

describeEachServerDialect('reserve_or_replay: sold-out items and replays take no lock', (t) => {
  // Lock waits give up after 1 s: a reserve that waited for the item's lock would fail with a
  // conflict, not answer INSUFFICIENT_STOCK or replay.
  const engine = () => new ReservationEngine({ db: t.connect(4, { lockTimeoutMs: 1000 }) });

  it('a sold-out item answers INSUFFICIENT_STOCK while its row is locked, and writes nothing', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'sold out', availableQuantity: 1 });
    await e.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'winner' });
    const before = await written(t.db);
    const errors = await whileItemLocked(t, item.id, () =>
      Promise.all(Array.from({ length: 8 }, (_, i) => caught(() => e.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `late-${i}` })))),
    );
    for (const error of errors) {
      expect(error).toBeInstanceOf(InsufficientStockError);
      expect(error.message).toBe(`Item ${item.id} has 0 available, 1 requested`);
    }
    expect(await written(t.db)).toEqual(before);
  });

  it('more than the stock, and an unknown item, answer without the lock too', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'few', availableQuantity: 3 });
    const before = await written(t.db);
    await whileItemLocked(t, item.id, async () => {
      expect(await caught(() => e.reserve({ itemId: item.id, quantity: 4, idempotencyKey: unique() }))).toBeInstanceOf(InsufficientStockError);
      expect(await caught(() => e.reserve({ itemId: item.id + 1000, quantity: 1, idempotencyKey: unique() }))).toBeInstanceOf(NotFoundError);
    });
    expect(await written(t.db)).toEqual(before);
  });

  it('a replay, and a conflicting reuse of a key, answer while the row is locked', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'replayed', availableQuantity: 5 });
    const first = await e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'order-1' });
    await whileItemLocked(t, item.id, async () => {
      const again = await e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'order-1' });
      expect(again).toEqual({ reservation: first.reservation, replayed: true });
      expect(await caught(() => e.reserve({ itemId: item.id, quantity: 3, idempotencyKey: 'order-1' }))).toBeInstanceOf(IdempotencyConflictError);
    });
  });

  it('a reserve that passed the stock check but loses the last units at the decrement rolls back all its writes', async () => {
    const e = new ReservationEngine({ db: t.connect(2) });
    const item = await e.createItem({ sku: unique(), name: 'last unit', availableQuantity: 1 });
    const before = await written(t.db);
    const { pending } = await whileItemLocked(
      t,
      item.id,
      async () => {
        // The committed stock is still 1: the reserve passes its check, writes, and waits for the
        // lock at its decrement; the holder then commits its own decrement of the last unit.
        const pending = caught(() => e.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'loser' }));
        await someoneWaitsForALock(t);
        return { pending };
      },
      (trx) => trx.updateTable('items').set({ available_quantity: 0 }).where('id', '=', item.id).execute(),
    );
    const error = await pending;
    expect(error).toBeInstanceOf(InsufficientStockError);
    expect(error.message).toBe(`Item ${item.id} has 0 available, 1 requested`);
    expect(await written(t.db)).toEqual(before);
    // Nothing of the loser is left: its key is free for a new request once stock comes back.
    await e.restock({ itemId: item.id, quantity: 1 });
    expect((await e.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'loser' })).replayed).toBe(false);
  });
});

describeEachServerDialect('reserve_or_replay: one round trip', (t) => {
  /** A host's Kysely on this file's database with Kysely's query log on. */
  async function logged(sent: string[]): Promise<Kysely<any>> {
    const log = (event: LogEvent) => void sent.push(event.query.sql);
    if (t.name === 'mysql') {
      const mysql = await import('mysql2');
      return new Kysely({ dialect: new MysqlDialect({ pool: mysql.createPool({ uri: t.url, connectionLimit: 2, timezone: 'Z' }) }), log });
    }
    const { default: pg } = await import('pg');
    return new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: t.url, max: 2 }) }), log });
  }

  it('a fresh reserve, a replay, a conflict, a sold-out answer and an unknown item each cost one statement', async () => {
    const sent: string[] = [];
    const db = await logged(sent);
    try {
      const engine = new ReservationEngine({ db });
      const item = await engine.createItem({ sku: unique(), name: 'one trip', availableQuantity: 1 });
      const calls: Array<() => Promise<unknown>> = [
        () => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'a' }),
        () => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'a' }),
        () => engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'a' }).catch((e) => e),
        () => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'b' }).catch((e) => e),
        () => engine.reserve({ itemId: item.id + 1000, quantity: 1, idempotencyKey: 'c' }).catch((e) => e),
      ];
      const results = [];
      for (const call of calls) {
        sent.length = 0;
        results.push(await call());
        expect(sent).toHaveLength(1);
        expect(sent[0]).toMatch(/reservation_engine_reserve_or_replay/);
      }
      expect(results.slice(2).map((r) => (r as Error).constructor)).toEqual([IdempotencyConflictError, InsufficientStockError, NotFoundError]);
    } finally {
      await db.destroy();
    }
  });

  it('after a sold-out answer the item is asked with one plain read; stock that comes back is reserved at once', async () => {
    const sent: string[] = [];
    const db = await logged(sent);
    try {
      const engine = new ReservationEngine({ db });
      const other = new ReservationEngine({ db: t.db });
      const item = await engine.createItem({ sku: unique(), name: 'flash sale', availableQuantity: 2 });
      const winner = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'winner' });
      expect(await caught(() => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'late-1' }))).toBeInstanceOf(InsufficientStockError);

      // Noted as sold out: a new request, a replay and a conflicting reuse each cost one SELECT.
      for (const [input, expected] of [
        [{ idempotencyKey: 'late-2', quantity: 1 }, InsufficientStockError],
        [{ idempotencyKey: 'winner', quantity: 2 }, undefined],
        [{ idempotencyKey: 'winner', quantity: 1 }, IdempotencyConflictError],
      ] as const) {
        sent.length = 0;
        const outcome = await engine.reserve({ itemId: item.id, ...input }).catch((e: unknown) => e);
        if (expected) expect(outcome).toBeInstanceOf(expected);
        else expect(outcome).toEqual({ reservation: winner.reservation, replayed: true });
        expect(sent).toHaveLength(1);
        expect(sent[0]).toMatch(/^select i\.available_quantity/);
      }

      // Another process returns the stock: the note is stale, and the next reserve gets the unit
      // (a read, then the routine), never a false "sold out".
      await other.cancel(winner.reservation.id);
      sent.length = 0;
      const fresh = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'late-3' });
      expect(fresh.replayed).toBe(false);
      expect(sent).toHaveLength(2);
      expect(sent[1]).toMatch(/reserve_or_replay/);
      // The note is gone: the next reserve goes straight to the routine (and finds it sold out again).
      sent.length = 0;
      expect(await caught(() => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'late-4' }))).toBeInstanceOf(InsufficientStockError);
      expect(sent).toHaveLength(1);
      expect(sent[0]).toMatch(/reserve_or_replay/);
      expect(await other.getItem(item.id)).toMatchObject({ availableQuantity: 0, heldQuantity: 2 });
    } finally {
      await db.destroy();
    }
  });

  it('a note never outlives a restock that a concurrent crowd races for: no oversell, every unit sold', async () => {
    const engine = new ReservationEngine({ db: t.connect(8) });
    const item = await engine.createItem({ sku: unique(), name: 'restocked', availableQuantity: 0 });
    let sold = 0;
    for (let round = 0; round < 5; round++) {
      // A crowd finds it sold out, then 10 units arrive while the crowd keeps asking.
      const crowd = (n: number) =>
        Promise.allSettled(Array.from({ length: n }, (_, i) => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique(`r${round}-${i}`) })));
      await crowd(8);
      await engine.restock({ itemId: item.id, quantity: 10 });
      const settled = await crowd(30);
      const won = settled.filter((s) => s.status === 'fulfilled').length;
      const refused = settled.filter((s) => s.status === 'rejected');
      expect(refused.every((s) => s.status === 'rejected' && s.reason instanceof InsufficientStockError)).toBe(true);
      expect(won).toBe(10);
      sold += won;
    }
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 0, heldQuantity: sold });
  });
});

