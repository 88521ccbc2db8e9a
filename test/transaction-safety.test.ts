/**
 * A connection whose transaction state is unknown is never reused (issue 12). On a Galera node
 * outside the primary component, ROLLBACK itself fails (1047) and the transaction stays open;
 * Kysely's `db.transaction()` then hands the connection back to the pool, and the next BEGIN on
 * it commits the half-done work (MySQL/MariaDB: implicitly; PostgreSQL: BEGIN inside a
 * transaction is only a warning, and the next COMMIT commits it). Here a proxy makes a plain
 * server's statement and ROLLBACK fail the same way, on a pool of one connection, so that any
 * reuse of the connection would show.
 */
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { afterEach, expect, it } from 'vitest';
import { expireBatch, OutcomeUnknownError, ReservationEngine, runOutboxBatch } from '../src/index.js';
import { describeEachServerDialect, type TestDatabase, unique } from './support/db.js';
import { type ErrorProxy, type InjectedError, startErrorProxy } from './support/error-proxy.js';
import { checkInvariants } from './support/invariants.js';

/** What a Galera node outside the primary component answers (as far as each protocol can say it). */
const refused = (name: string): InjectedError =>
  name === 'mysql'
    ? { errno: 1047, sqlState: '08S01', message: 'WSREP has not yet prepared node for application use' }
    : { sqlState: 'XX000', message: 'injected: the server refused the statement' };

async function throughProxy(t: TestDatabase): Promise<{ proxy: ErrorProxy; db: Kysely<any>; sessions: () => Promise<number> }> {
  const url = new URL(t.url);
  const proxy = await startErrorProxy(t.name === 'mysql' ? 'mysql' : 'postgres', { host: url.hostname, port: Number(url.port) });
  let db: Kysely<any>;
  if (t.name === 'mysql') {
    const mysql = await import('mysql2');
    const pool = mysql.createPool({ uri: proxy.url(t.url), connectionLimit: 1, timezone: 'Z' });
    pool.on('connection', (connection) => connection.on('error', () => {}));
    db = new Kysely({ dialect: new MysqlDialect({ pool }) });
  } else {
    const { default: pg } = await import('pg');
    const pool = new pg.Pool({ connectionString: proxy.url(t.url), max: 1 });
    pool.on('error', () => {});
    pool.on('connect', (client) => client.on('error', () => {}));
    db = new Kysely({ dialect: new PostgresDialect({ pool }) });
  }
  // Server sessions of this test's database, the proxy's included (the test's own pool is idle).
  const sessions = async () => {
    const query =
      t.name === 'mysql'
        ? sql<{ n: number }>`select count(*) as n from information_schema.processlist where db = database()`
        : sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = current_database() and backend_type = 'client backend'`;
    return Number((await query.execute(t.db)).rows[0]?.n);
  };
  cleanups.push(async () => {
    await db.destroy().catch(() => {});
    await proxy.close();
  });
  return { proxy, db, sessions };
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

describeEachServerDialect('a connection whose ROLLBACK failed is never reused', (t) => {
  it('an expiry whose statement and ROLLBACK both fail leaves nothing half-done, and the next sweep expires it whole', async () => {
    const now = new Date();
    const { proxy, db, sessions } = await throughProxy(t);
    const engine = new ReservationEngine({ db, clock: () => now });
    const item = await engine.createItem({ sku: unique(), name: 'held', availableQuantity: 10 });
    const { reservation } = await engine.reserve({ itemId: item.id, quantity: 3, idempotencyKey: unique(), ttlSeconds: 60 });
    const later = new Date(now.getTime() + 61_000);
    const baseline = await sessions();

    // The sweep marks the reservation EXPIRED, then the statement returning its stock fails, and
    // so does the ROLLBACK: the connection holds an open transaction with half the work in it.
    proxy.failNext(/update .*items/i, refused(t.name));
    // MariaDB: the ROLLBACK with dirty reads allowed (what ends it on a Galera node) fails too,
    // so the session is ended.
    proxy.failNext(/^rollback/i, refused(t.name), t.name === 'mysql' ? 2 : 1);
    let first: unknown;
    try {
      first = await expireBatch({ db, now: later });
    } catch (error) {
      first = error;
    }
    // MariaDB's 1047 is a failure of the server, not of the sweep: its outcome is unknown. The
    // injected PostgreSQL error is the sweep's: it falls back to one reservation at a time.
    if (t.name === 'mysql') expect(first).toBeInstanceOf(OutcomeUnknownError);
    else expect(first).toEqual({ expired: 1, failed: 0 });
    await expect.poll(() => proxy.injected.length).toBe(t.name === 'mysql' ? 3 : 2);

    // The session that held the half-done transaction is gone: ended, and so rolled back.
    await expect.poll(sessions).toBeLessThanOrEqual(baseline);

    // Whatever runs next on the pool (its one connection is a new one) commits nothing of it.
    await engine.restock({ itemId: item.id, quantity: 1 });
    await expireBatch({ db, now: later });
    expect((await engine.getReservation(reservation.id))?.status).toBe('EXPIRED');
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 11, heldQuantity: 0 });
    const delivered: string[] = [];
    await runOutboxBatch({ db, now: later, handler: (event) => void delivered.push(event.id) });
    const report = await checkInvariants(t.db, { received: new Map([[item.id, 11]]), delivered });
    expect(report.violations).toEqual([]);
  });

  it('a confirm whose COMMIT and ROLLBACK fail is confirmed once, on a new connection', async () => {
    const { proxy, db, sessions } = await throughProxy(t);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'held', availableQuantity: 10 });
    const { reservation } = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: unique() });
    const baseline = await sessions();

    proxy.failNext(/^commit/i, refused(t.name));
    proxy.failNext(/^rollback/i, refused(t.name));
    // A failed COMMIT leaves the outcome unknown; a confirm is safe to repeat, so the engine
    // repeats it on a new connection, once the first one has been ended (and so rolled back).
    const confirmed = await engine.confirm(reservation.id);
    expect(confirmed.status).toBe('CONFIRMED');
    await expect.poll(() => proxy.injected.length).toBe(2);
    await expect.poll(sessions).toBeLessThanOrEqual(baseline);
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 8, heldQuantity: 0 });
    expect((await checkInvariants(t.db, { received: new Map([[item.id, 10]]) })).violations).toEqual([]);
    expect(await t.count('outbox', (q) => q.where('type', '=', 'reservation.confirmed'))).toBe(1);
  });

  it('a restock without a key whose COMMIT and ROLLBACK fail answers OUTCOME_UNKNOWN, and its units are not added later', async () => {
    const { proxy, db, sessions } = await throughProxy(t);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'restocked', availableQuantity: 10 });
    const baseline = await sessions();
    proxy.failNext(/^commit/i, refused(t.name));
    proxy.failNext(/^rollback/i, refused(t.name));
    const error = await engine.restock({ itemId: item.id, quantity: 5 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect(error).toMatchObject({ code: 'OUTCOME_UNKNOWN', status: 503 });
    await expect.poll(() => proxy.injected.length).toBe(2);
    await expect.poll(sessions).toBeLessThanOrEqual(baseline);
    // The next write on the pool does not carry the lost restock's units with it.
    await engine.restock({ itemId: item.id, quantity: 1 });
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 11 });
  });

  it('when the server refuses to end the session too, the connection stays out of the pool until a ROLLBACK succeeds', async () => {
    const { proxy, db } = await throughProxy(t);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'quarantined', availableQuantity: 10 });
    proxy.failNext(/^commit/i, refused(t.name));
    proxy.failNext(/^rollback/i, refused(t.name), t.name === 'mysql' ? 2 : 1);
    proxy.failNext(/kill connection|pg_terminate_backend/i, refused(t.name));
    const error = await engine.restock({ itemId: item.id, quantity: 5 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    // The pool has one connection, held until its ROLLBACK goes through (the proxy lets the
    // second one pass): the next call waits for it, and finds no trace of the lost restock.
    await engine.restock({ itemId: item.id, quantity: 1 });
    expect(proxy.injected.map((statement) => statement.split(' ')[0]?.toLowerCase())).toEqual(t.name === 'mysql' ? ['commit', 'rollback', 'rollback', 'kill'] : ['commit', 'rollback', 'select']);
    expect(await engine.getItem(item.id)).toMatchObject({ availableQuantity: 11 });
  });

  it('a refused confirm has released its row locks when the caller hears of it (found by the model-based test)', async () => {
    let now = new Date('2026-05-01T10:00:00.000Z');
    const engine = new ReservationEngine({ db: t.db, clock: () => now });
    const skipped: number[] = [];
    for (let i = 0; i < 100; i++) {
      now = new Date('2026-05-01T10:00:00.000Z');
      const item = await engine.createItem({ sku: unique(), name: 'lapsed', availableQuantity: 1 });
      const { reservation } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique(), ttlSeconds: 1 });
      now = new Date(reservation.expiresAt.getTime() + 1000);
      await expect(engine.confirm(reservation.id)).rejects.toMatchObject({ code: 'RESERVATION_EXPIRED' });
      // The confirm locked the reservation (SELECT … FOR UPDATE) before refusing: a sweep that
      // ran while that lock was held would skip the row (SKIP LOCKED).
      if ((await expireBatch({ db: t.db, now })).expired !== 1) skipped.push(i);
    }
    expect(skipped).toEqual([]);
  });
});
