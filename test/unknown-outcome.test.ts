import { type Kysely, sql } from 'kysely';
import { expect, it } from 'vitest';
import { OutcomeUnknownError, ReservationEngine, TransactionConflictError, expireBatch, runOutboxBatch, toProblem } from '../src/index.js';
import { mysqlDialect } from '../src/dialects/mysql.js';
import { postgresDialect } from '../src/dialects/postgres.js';
import { caught, describeEachDialect, describeEachServerDialect, type TestDatabase, unique } from './support/db.js';

it('classifies lost connections, shutdowns and timeouts as connection errors, and nothing else', () => {
  for (const errno of [2006, 2013, 1053, 1927]) expect(mysqlDialect.isConnectionError({ errno })).toBe(true);
  for (const code of ['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED']) expect(mysqlDialect.isConnectionError({ code })).toBe(true);
  expect(mysqlDialect.isConnectionError({ fatal: true, code: 'SOMETHING' })).toBe(true);
  expect(mysqlDialect.isConnectionError(new Error("Can't add new command when connection is in closed state"))).toBe(true);
  for (const errno of [1062, 1213, 1205, 1146]) expect(mysqlDialect.isConnectionError({ errno })).toBe(false);
  for (const code of ['57P01', '57P02', '57P03', '08006', '08003', '57014', 'ECONNRESET']) expect(postgresDialect.isConnectionError({ code })).toBe(true);
  expect(postgresDialect.isConnectionError(new Error('Connection terminated unexpectedly'))).toBe(true);
  expect(postgresDialect.isConnectionError(new Error('Client has encountered a connection error and is not queryable'))).toBe(true);
  for (const code of ['23505', '40001', '40P01', '42P01']) expect(postgresDialect.isConnectionError({ code })).toBe(false);
  expect(postgresDialect.isConnectionError(null)).toBe(false);
  expect(mysqlDialect.isConnectionError('ECONNRESET')).toBe(false);
});

it('OutcomeUnknownError is a retryable 503 that says how to find out', () => {
  const error = new OutcomeUnknownError('reserve', 'Retry with the same idempotency key.', new Error('ECONNRESET'));
  expect(error).toMatchObject({ code: 'OUTCOME_UNKNOWN', status: 503, operation: 'reserve' });
  expect(toProblem(error)).toMatchObject({ status: 503, code: 'OUTCOME_UNKNOWN', detail: expect.stringMatching(/outcome is unknown\. Retry with the same idempotency key\./) });
});

/** Holds the row lock of item `itemId` in another transaction until `release()`. */
async function holdItemLock(db: Kysely<any>, itemId: number) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const done = db.transaction().execute(async (trx) => {
    await trx.selectFrom('items').select('id').where('id', '=', itemId).forUpdate().execute();
    locked();
    await released;
  });
  await isLocked;
  return async () => (release(), done);
}

/**
 * Kills (MariaDB KILL / pg_terminate_backend) the connection that waits for a row lock on
 * `items`; returns false if `stop()` turns true before one shows up.
 */
async function killLockWaiter(t: TestDatabase, stop: () => boolean = () => false): Promise<boolean> {
  // A deadline far beyond the moment it shows up (milliseconds, on a quiet machine), not a count
  // of polls: however slowly the call gets to its lock wait, it is found.
  const deadline = performance.now() + 30_000;
  while (performance.now() < deadline && !stop()) {
    if (t.name === 'mysql') {
      // The engine's statement: the lock holder sleeps inside its transaction.
      const { rows } = await sql<{ id: number }>`select id from information_schema.processlist where db = database() and id <> connection_id() and command = 'Query'`.execute(t.db);
      if (rows[0]) return (await sql.raw(`kill ${rows[0].id}`).execute(t.db), true);
    } else {
      const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and (query ilike '%items%' or query ilike '%reserve_or_replay%')`.execute(t.db);
      if (rows[0]) return (await sql`select pg_terminate_backend(${rows[0].pid}::int)`.execute(t.db), true);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  if (stop()) return false;
  throw new Error('no connection waiting for the item lock');
}

/**
 * Runs `call` while another transaction holds the row lock of `itemId`, and kills its
 * connection while it waits for that lock: once (`'once'`), or every time until the call gives
 * up (`'always'`: the engine repeats work that is safe to repeat). Returns what `call` threw,
 * as `{ error }`, or its result.
 */
async function interrupted<T>(t: TestDatabase, itemId: number, kills: 'once' | 'always', call: () => Promise<T>): Promise<T | { error: any }> {
  const release = await holdItemLock(t.connect(1), itemId);
  let settled = false;
  const pending = call().then(
    (value) => value,
    (error) => ({ error }),
  );
  void pending.finally(() => (settled = true));
  try {
    expect(await killLockWaiter(t)).toBe(true);
    if (kills === 'always') while (await killLockWaiter(t, () => settled));
  } finally {
    await release();
  }
  return pending;
}

describeEachServerDialect('a connection killed mid-call', (t) => {
  const engine = () => new ReservationEngine({ db: t.connect(2) });

  it('reserve: one lost connection is retried inside the call, with exactly one effect', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const result = await interrupted(t, item.id, 'once', () => e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'once' }));
    expect(result).toMatchObject({ replayed: false, reservation: { status: 'PENDING' } });
    expect(await e.getItem(item.id)).toMatchObject({ availableQuantity: 3, heldQuantity: 2 });
    expect(await t.count('outbox')).toBe(1);
  });

  it('reserve: OUTCOME_UNKNOWN (503) when the retry is lost too; a retry with the same key resolves it with exactly one effect', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const { error } = (await interrupted(t, item.id, 'always', () => e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'lost' }))) as { error: any };
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect(error).toMatchObject({ code: 'OUTCOME_UNKNOWN', status: 503, operation: 'reserve' });
    expect(error.message).toMatch(/Retry with the same idempotency key/);
    expect(t.name === 'mysql' ? mysqlDialect.isConnectionError(error.cause) : postgresDialect.isConnectionError(error.cause)).toBe(true);
    const retried = await e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'lost' });
    expect(retried.reservation.status).toBe('PENDING');
    expect((await e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'lost' })).replayed).toBe(true);
    expect(await e.getItem(item.id)).toMatchObject({ availableQuantity: 3, heldQuantity: 2 });
    expect(await t.count('reservations')).toBe(1);
    expect(await t.count('outbox')).toBe(1);
  });

  it('cancel: OUTCOME_UNKNOWN, and cancelling again resolves it: stock returned once, one event', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const { reservation } = await e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'c' });
    const { error } = (await interrupted(t, item.id, 'always', () => e.cancel(reservation.id))) as { error: any };
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect(error.message).toMatch(/Cancel it again/);
    expect((await e.cancel(reservation.id)).status).toBe('CANCELLED');
    expect((await e.cancel(reservation.id)).status).toBe('CANCELLED');
    expect(await e.getItem(item.id)).toMatchObject({ availableQuantity: 5, heldQuantity: 0 });
    expect(await t.count('outbox', (q) => q.where('type', '=', 'reservation.cancelled'))).toBe(1);
  });

  it('restock with a key: OUTCOME_UNKNOWN, and the retry adds the units once', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const { error } = (await interrupted(t, item.id, 'always', () => e.restock({ itemId: item.id, quantity: 10, idempotencyKey: 'truck-7' }))) as { error: any };
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect((await e.restock({ itemId: item.id, quantity: 10, idempotencyKey: 'truck-7' })).availableQuantity).toBe(15);
    expect((await e.restock({ itemId: item.id, quantity: 10, idempotencyKey: 'truck-7' })).availableQuantity).toBe(15);
  });

  it('restock without a key is not repeated: OUTCOME_UNKNOWN after one lost connection, saying to check the stock', async () => {
    const e = engine();
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const { error } = (await interrupted(t, item.id, 'once', () => e.restock({ itemId: item.id, quantity: 10 }))) as { error: any };
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect(error.message).toMatch(/pass an idempotencyKey/);
    expect((await e.getItem(item.id))?.availableQuantity).toBe(5);
  });

  it('expireBatch: OUTCOME_UNKNOWN, and the next call expires each reservation once', async () => {
    const e = new ReservationEngine({ db: t.db, clock: () => new Date(Date.now() - 3_600_000) });
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    await e.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'old' });
    const { error } = (await interrupted(t, item.id, 'once', () => expireBatch({ db: t.connect(2) }))) as { error: any };
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect(await expireBatch({ db: t.db })).toEqual({ expired: 1, failed: 0 });
    expect(await e.getItem(item.id)).toMatchObject({ availableQuantity: 5, heldQuantity: 0 });
  });
});

describeEachDialect("the host's default isolation level changes nothing", (t) => {
  for (const isolation of ['repeatable read', 'serializable'] as const) {
    it(`${isolation}: a busy item's reserves and cancels all succeed, no TRANSACTION_CONFLICT`, async () => {
      let db = t.db;
      if (t.name === 'pglite') await sql.raw(`set default_transaction_isolation = '${isolation}'`).execute(t.db);
      else db = t.connect(16, { isolation });
      try {
        const engine = new ReservationEngine({ db });
        // The setting took: a plain transaction on this pool runs at the host's level.
        const level =
          t.name === 'mysql'
            ? (await sql<{ level: string }>`select @@session.tx_isolation as level`.execute(db)).rows[0]?.level
            : (await sql<{ level: string }>`select current_setting('default_transaction_isolation') as level`.execute(db)).rows[0]?.level;
        expect(level?.toLowerCase().replace('-', ' ')).toBe(isolation);

        const item = await engine.createItem({ sku: unique(), name: 'busy', availableQuantity: 100 });
        const held = await Promise.all(Array.from({ length: 30 }, (_, i) => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `h${i}` })));
        const outcomes = await Promise.allSettled([
          ...held.map(({ reservation }) => engine.cancel(reservation.id)),
          ...Array.from({ length: 30 }, (_, i) => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `n${i}` })),
          engine.restock({ itemId: item.id, quantity: 5 }),
        ]);
        const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
        expect(failures.filter((e) => e instanceof TransactionConflictError)).toEqual([]);
        expect(failures).toEqual([]);
        expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 75, heldQuantity: 30 });
        expect(await runOutboxBatch({ db, handler: () => {} })).toMatchObject({ processed: 90 });
        expect(await expireBatch({ db, now: new Date(Date.now() + 3_600_000) })).toEqual({ expired: 30, failed: 0 });
      } finally {
        if (t.name === 'pglite') await sql`set default_transaction_isolation = 'read committed'`.execute(t.db);
      }
    });
  }
});
