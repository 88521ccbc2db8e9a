/**
 * Retry classification (issue 12): every error code the drivers produce for a conflict, a lost
 * connection or a server that cannot work now, as the real driver reports it, and what the engine
 * does with it. A proxy answers one statement of a restock's transaction with the code (the
 * driver parses a real error reply), so each code is met at the same point:
 *
 * - `retry`: the transaction rolled back; the engine runs it again, and the restock succeeds,
 *   its units added once;
 * - `unknown`: the outcome is unknown (or the server is unavailable): a restock without a key is
 *   not safe to repeat, so it answers OUTCOME_UNKNOWN (503), and nothing is added.
 *
 * The conflicts that a real server produces on demand are provoked for real below.
 */
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { afterEach, expect, it } from 'vitest';
import { OutcomeUnknownError, ReservationEngine, TransactionConflictError } from '../src/index.js';
import { describeEachServerDialect, type TestDatabase, unique } from './support/db.js';
import { type ErrorProxy, type InjectedError, startErrorProxy } from './support/error-proxy.js';

type Expected = 'retry' | 'unknown';
interface Case extends InjectedError {
  readonly expected: Expected;
  readonly what: string;
}

const MYSQL: Case[] = [
  { errno: 1213, sqlState: '40001', message: 'Deadlock found when trying to get lock; try restarting transaction', expected: 'retry', what: 'deadlock, or a Galera certification failure / brute-force abort' },
  { errno: 1205, sqlState: 'HY000', message: 'Lock wait timeout exceeded; try restarting transaction', expected: 'retry', what: 'lock wait timeout' },
  { errno: 1020, sqlState: 'HY000', message: "Record has changed since last read in table 'items'", expected: 'retry', what: 'snapshot conflict (innodb_snapshot_isolation)' },
  { errno: 1047, sqlState: '08S01', message: 'WSREP has not yet prepared node for application use', expected: 'unknown', what: 'Galera node outside the primary component' },
  { errno: 1180, sqlState: 'HY000', message: 'Got error 6 "No such device or address" during COMMIT', expected: 'unknown', what: 'error during COMMIT' },
  { errno: 1568, sqlState: '25001', message: "Transaction characteristics can't be changed while a transaction is in progress", expected: 'unknown', what: 'a transaction open that should not be' },
  { errno: 1053, sqlState: '08S01', message: 'Server shutdown in progress', expected: 'unknown', what: 'server shutting down' },
  { errno: 1927, sqlState: '70100', message: 'Connection was killed', expected: 'unknown', what: 'connection killed' },
  { errno: 1317, sqlState: '70100', message: 'Query execution was interrupted', expected: 'unknown', what: 'query killed' },
  { errno: 1969, sqlState: '70100', message: 'Query execution was interrupted (max_statement_time exceeded)', expected: 'unknown', what: 'statement timeout' },
  { errno: 4031, sqlState: 'HY000', message: 'The client was disconnected by the server because of inactivity', expected: 'unknown', what: 'idle session closed' },
  { errno: 1158, sqlState: '08S01', message: 'Got an error reading communication packets', expected: 'unknown', what: 'network read error' },
  { errno: 1160, sqlState: '08S01', message: 'Got an error writing communication packets', expected: 'unknown', what: 'network write error' },
  { errno: 1040, sqlState: '08004', message: 'Too many connections', expected: 'unknown', what: 'too many connections' },
  { errno: 1290, sqlState: 'HY000', message: 'The MariaDB server is running with the --read-only option so it cannot execute this statement', expected: 'unknown', what: 'read-only server (a demoted primary)' },
  { errno: 1792, sqlState: '25006', message: 'Cannot execute statement in a READ ONLY transaction', expected: 'unknown', what: 'read-only transaction' },
];

const POSTGRES: Case[] = [
  { sqlState: '40001', message: 'could not serialize access due to concurrent update', expected: 'retry', what: 'serialization failure' },
  { sqlState: '40P01', message: 'deadlock detected', expected: 'retry', what: 'deadlock' },
  { sqlState: '55P03', message: 'canceling statement due to lock timeout', expected: 'retry', what: 'lock timeout' },
  { sqlState: '57P01', message: 'terminating connection due to administrator command', expected: 'unknown', what: 'server shutdown, pg_terminate_backend' },
  { sqlState: '57P02', message: 'terminating connection because of crash of another server process', expected: 'unknown', what: 'crash shutdown' },
  { sqlState: '57P03', message: 'the database system is starting up', expected: 'unknown', what: 'cannot connect now' },
  { sqlState: '57014', message: 'canceling statement due to statement timeout', expected: 'unknown', what: 'statement timeout' },
  { sqlState: '25P03', message: 'terminating connection due to idle-in-transaction timeout', expected: 'unknown', what: 'idle-in-transaction timeout' },
  { sqlState: '25006', message: 'cannot execute UPDATE in a read-only transaction', expected: 'unknown', what: 'a standby (after a failover)' },
  { sqlState: '53300', message: 'sorry, too many clients already', expected: 'unknown', what: 'too many connections' },
  { sqlState: '08006', message: 'connection failure', expected: 'unknown', what: 'connection failure' },
];

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function throughProxy(t: TestDatabase): Promise<{ proxy: ErrorProxy; db: Kysely<any> }> {
  const url = new URL(t.url);
  const proxy = await startErrorProxy(t.name === 'mysql' ? 'mysql' : 'postgres', { host: url.hostname, port: Number(url.port) });
  let db: Kysely<any>;
  if (t.name === 'mysql') {
    const mysql = await import('mysql2');
    const pool = mysql.createPool({ uri: proxy.url(t.url), connectionLimit: 2, timezone: 'Z' });
    pool.on('connection', (connection) => connection.on('error', () => {}));
    db = new Kysely({ dialect: new MysqlDialect({ pool }) });
  } else {
    const { default: pg } = await import('pg');
    const pool = new pg.Pool({ connectionString: proxy.url(t.url), max: 2 });
    pool.on('error', () => {});
    pool.on('connect', (client) => client.on('error', () => {}));
    db = new Kysely({ dialect: new PostgresDialect({ pool }) });
  }
  cleanups.push(async () => {
    await db.destroy().catch(() => {});
    await proxy.close();
  });
  return { proxy, db };
}

describeEachServerDialect('error classification', (t) => {
  const cases = () => (t.name === 'mysql' ? MYSQL : POSTGRES);

  it('each code, as the driver reports it, is retried or answered OUTCOME_UNKNOWN', async () => {
    const { proxy, db } = await throughProxy(t);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'classified', availableQuantity: 0 });
    let expected = 0;
    const outcomes: string[] = [];
    for (const c of cases()) {
      proxy.failNext(/update .*items/i, c);
      const result = await engine.restock({ itemId: item.id, quantity: 1 }).then(
        () => 'retry' as const,
        (error: unknown) => (error instanceof OutcomeUnknownError ? ('unknown' as const) : error),
      );
      if (result === 'retry') expected++;
      outcomes.push(`${c.errno ?? c.sqlState} (${c.what}): ${typeof result === 'string' ? result : String(result)}`);
      // Units added once for a retried code, never for an unknown outcome.
      expect((await engine.getItem(item.id))?.availableQuantity, c.what).toBe(expected);
    }
    expect(outcomes).toEqual(cases().map((c) => `${c.errno ?? c.sqlState} (${c.what}): ${c.expected}`));
  });

  it('a conflict that outlasts every attempt is a TRANSACTION_CONFLICT (503) carrying the driver error, and writes nothing', async () => {
    const { proxy, db } = await throughProxy(t);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'conflicted', availableQuantity: 0 });
    const conflict = cases()[0]!;
    proxy.failNext(/update .*items/i, conflict, 5);
    const error = await engine.restock({ itemId: item.id, quantity: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransactionConflictError);
    expect(error).toMatchObject({ code: 'TRANSACTION_CONFLICT', status: 503 });
    expect((error as Error).cause).toMatchObject(t.name === 'mysql' ? { errno: conflict.errno } : { code: conflict.sqlState });
    expect(proxy.injected).toHaveLength(5);
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(0);
  });

  it('a real lock-wait timeout is retried: the restock succeeds once the lock is released', async () => {
    const engine = new ReservationEngine({ db: t.connect(2, { lockTimeoutMs: 1000 }) });
    const item = await engine.createItem({ sku: unique(), name: 'locked', availableQuantity: 0 });
    const holder = t.connect(1);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const held = holder.transaction().execute(async (trx) => {
      await trx.selectFrom('items').select('id').where('id', '=', item.id).forUpdate().execute();
      locked();
      await released;
    });
    await isLocked;
    // Held past the first attempt's timeout (1 s), released before the attempts run out.
    setTimeout(release, 1_500);
    await engine.restock({ itemId: item.id, quantity: 3 });
    await held;
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(3);
  });

  it('a session killed mid-transaction by the server (KILL / pg_terminate_backend) is an unknown outcome, and the pool recovers', async () => {
    const db = t.connect(1);
    const engine = new ReservationEngine({ db });
    const item = await engine.createItem({ sku: unique(), name: 'killed', availableQuantity: 0 });
    const holder = t.connect(1);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const held = holder.transaction().execute(async (trx) => {
      await trx.selectFrom('items').select('id').where('id', '=', item.id).forUpdate().execute();
      locked();
      await released;
    });
    await isLocked;
    const restock = engine.restock({ itemId: item.id, quantity: 3 }).catch((e: unknown) => e);
    // Kill the session that waits for the lock.
    const waiting =
      t.name === 'mysql'
        ? sql<{ id: number }>`select id from information_schema.processlist where db = database() and info like 'update%items%'`
        : sql<{ id: number }>`select pid as id from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`;
    let victim: number | undefined;
    await expect.poll(async () => (victim = (await waiting.execute(t.db)).rows[0]?.id)).toBeDefined();
    if (t.name === 'mysql') await sql.raw(`kill ${Number(victim)}`).execute(t.db);
    else await sql`select pg_terminate_backend(${victim})`.execute(t.db);
    release();
    await held;
    const error = await restock;
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(0);
    // The pool's one connection died; the next call gets a new one.
    await engine.restock({ itemId: item.id, quantity: 1 });
    expect((await engine.getItem(item.id))?.availableQuantity).toBe(1);
  });
});
