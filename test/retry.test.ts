import { type Kysely, sql } from 'kysely';
import { expect, it } from 'vitest';
import { dialectOf } from '../src/dialects/index.js';
import { ReservationEngine, TransactionConflictError } from '../src/index.js';
import { mysqlDialect } from '../src/dialects/mysql.js';
import { postgresDialect } from '../src/dialects/postgres.js';
import { MAX_TRANSACTION_ATTEMPTS, inTransaction, withRetries } from '../src/transaction.js';
import { caught, describeEachServerDialect, unique } from './support/db.js';

/** Opens a transaction on `db` that holds the row lock of `itemId` until `release()` is called. */
async function holdRowLock(db: Kysely<any>, itemId: number) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => {
    locked = resolve;
  });
  const done = db.transaction().execute(async (trx) => {
    await trx.selectFrom('items').select('id').where('id', '=', itemId).forUpdate().execute();
    locked();
    await released;
  });
  await isLocked;
  return { release: async () => (release(), done) };
}

it('classifies the databases\' deadlock, lock-timeout and serialization errors as retryable, and nothing else', () => {
  for (const errno of [1213, 1205]) expect(mysqlDialect.isRetryable({ errno })).toBe(true);
  for (const errno of [1062, 1146]) expect(mysqlDialect.isRetryable({ errno })).toBe(false);
  for (const code of ['40P01', '40001', '55P03']) expect(postgresDialect.isRetryable({ code })).toBe(true);
  for (const code of ['23505', '42P01']) expect(postgresDialect.isRetryable({ code })).toBe(false);
  expect(mysqlDialect.isDuplicateKey({ errno: 1062 })).toBe(true);
  expect(postgresDialect.isDuplicateKey({ code: '23505' })).toBe(true);
  expect(mysqlDialect.isRetryable(null)).toBe(false);
});

it(`withRetries runs a retryable failure at most ${MAX_TRANSACTION_ATTEMPTS} times, then throws TransactionConflictError`, async () => {
  let calls = 0;
  const deadlock = Object.assign(new Error('Deadlock found'), { errno: 1213 });
  const error = await caught(() =>
    withRetries(mysqlDialect, async () => {
      calls++;
      throw deadlock;
    }),
  );
  expect(calls).toBe(MAX_TRANSACTION_ATTEMPTS);
  expect(error).toBeInstanceOf(TransactionConflictError);
  expect(error.cause).toBe(deadlock);
  let tries = 0;
  expect(await withRetries(mysqlDialect, async () => (++tries < 3 ? Promise.reject(deadlock) : 'ok'))).toBe('ok');
  expect(tries).toBe(3);
});

describeEachServerDialect('deadlocks and lock-wait timeouts', (t) => {
  it('a real deadlock is retried and both transactions complete', async () => {
    const engine = new ReservationEngine({ db: t.db });
    const a = await engine.createItem({ sku: unique(), name: 'a', availableQuantity: 10 });
    const b = await engine.createItem({ sku: unique(), name: 'b', availableQuantity: 10 });
    const db = t.connect(4);
    const dialect = dialectOf(db);
    let attempts = 0;
    let firstLocks = 0;
    let bothLocked!: () => void;
    const barrier = new Promise<void>((resolve) => {
      bothLocked = resolve;
    });
    const tries: [number, number] = [0, 0];
    const finished: Array<() => void> = [];
    const committed = [0, 1].map((i) => new Promise<void>((resolve) => (finished[i] = resolve)));
    // Two transactions take the same two row locks in opposite order: a deadlock on first try.
    // The one the database fails runs again once the other has committed. Sooner, on a busy
    // machine, its retry can take its first row back before the other's waiting update gets it
    // (PostgreSQL does not queue an update behind a waiter), and deadlock again: correct, and
    // retried, but then the count of attempts depends on the machine's load.
    const transfer = (i: 0 | 1, first: number, second: number) =>
      inTransaction(db, dialect, async (trx) => {
        attempts++;
        if (tries[i]++ > 0) await committed[1 - i];
        await trx.updateTable('items').set((eb) => ({ available_quantity: eb('available_quantity', '-', 1) })).where('id', '=', first).execute();
        if (++firstLocks === 2) bothLocked();
        if (firstLocks <= 2) await barrier;
        await trx.updateTable('items').set((eb) => ({ available_quantity: eb('available_quantity', '+', 1) })).where('id', '=', second).execute();
        return 'done';
      }).finally(() => finished[i]!());
    expect(await Promise.all([transfer(0, a.id, b.id), transfer(1, b.id, a.id)])).toEqual(['done', 'done']);
    expect(attempts).toBe(3); // one of them ran twice
    expect([...tries].sort()).toEqual([1, 2]);
    expect((await engine.getItem(a.id))?.availableQuantity).toBe(10);
    expect((await engine.getItem(b.id))?.availableQuantity).toBe(10);
  });

  it(`gives up after ${MAX_TRANSACTION_ATTEMPTS} lock-wait timeouts with a TransactionConflictError, writing nothing`, async () => {
    const engine = new ReservationEngine({ db: t.connect(2, { lockTimeoutMs: 200 }) });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const lock = await holdRowLock(t.connect(1), item.id);
    try {
      const error = await caught(() => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'blocked' }));
      expect(error).toBeInstanceOf(TransactionConflictError);
      expect(error).toMatchObject({ code: 'TRANSACTION_CONFLICT', status: 503, attempts: MAX_TRANSACTION_ATTEMPTS });
      expect(dialectOf(t.db).isRetryable(error.cause)).toBe(true);
    } finally {
      await lock.release();
    }
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(10);
    expect(await t.count('reservations')).toBe(0);
    expect(await t.count('idempotency_requests')).toBe(0);
    // The key is free: the same request now succeeds.
    expect((await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'blocked' })).replayed).toBe(false);
  });

  it('succeeds when the lock is released while it retries', async () => {
    const engine = new ReservationEngine({ db: t.connect(2, { lockTimeoutMs: 200 }) });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
    const lock = await holdRowLock(t.connect(1), item.id);
    const reserving = engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'eventually' });
    await new Promise((resolve) => setTimeout(resolve, t.name === 'mysql' ? 1_200 : 250)); // at least one timeout
    await lock.release();
    expect((await reserving).reservation.status).toBe('PENDING');
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(9);
  });

  it('does not retry other errors', async () => {
    let attempts = 0;
    const error = await caught(() =>
      inTransaction(t.db, dialectOf(t.db), async (trx) => {
        attempts++;
        await sql`select * from no_such_table`.execute(trx);
      }),
    );
    expect(error).not.toBeInstanceOf(TransactionConflictError);
    expect(attempts).toBe(1);
  });
});
