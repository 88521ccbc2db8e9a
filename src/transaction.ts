import { type Kysely, sql } from 'kysely';
import type { SqlDialect } from './dialects/index.js';
import { CommitFailedError, isDeadConnection } from './dialects/dialect.js';
import { TransactionConflictError } from './errors.js';
import { recordRetry } from './observability/telemetry.js';
import type { Database } from './types.js';

/** How often a transaction that hit a deadlock or lock-wait timeout runs in all. */
export const MAX_TRANSACTION_ATTEMPTS = 5;

/**
 * @internal
 * Runs `work` in a READ COMMITTED transaction (or one that `begin` starts) on one connection; on a deadlock, lock-wait
 * timeout, serialization failure or certification failure rolls back and runs it again (see
 * {@link withRetries}). Other errors pass through.
 *
 * Every transaction states its isolation level: the engine's locking (conditional UPDATEs,
 * SKIP LOCKED claims, no gap locks) was designed for READ COMMITTED, and a host's default of
 * REPEATABLE READ or SERIALIZABLE would turn contention into serialization failures.
 *
 * The transaction is the engine's own, not Kysely's `db.transaction()`: when its ROLLBACK fails,
 * Kysely hands the connection back to the pool with the transaction still open, and the next
 * BEGIN on it (MySQL/MariaDB) commits the half-done work. Here such a connection never goes
 * back (see {@link onConnection}).
 */
export async function inTransaction<T>(
  db: Kysely<Database>,
  dialect: SqlDialect,
  work: (trx: Kysely<Database>) => Promise<T>,
  { begin = dialect.beginReadCommitted }: { readonly begin?: readonly string[] } = {},
): Promise<T> {
  return withRetries(dialect, () =>
    onConnection(db, dialect, async (connection) => {
      for (const statement of begin) await sql.raw(statement).execute(connection);
      const result = await work(connection);
      try {
        await sql`commit`.execute(connection);
      } catch (error) {
        // A deadlock or certification failure at COMMIT (Galera: 1213) rolled back: retry.
        if (dialect.isRetryable(error) || dialect.isConnectionError(error)) throw error;
        throw new CommitFailedError(error);
      }
      return result;
    }),
  );
}

/**
 * @internal
 * Runs `work` on one connection of `db`, held for its duration. When `work` throws, the
 * connection may still be inside a transaction (a failed statement, a failed COMMIT, a stored
 * procedure whose own ROLLBACK failed): it is rolled back before the connection goes back to the
 * pool. When that ROLLBACK fails too — a Galera node outside the primary component refuses it
 * (1047), a reply was garbled — the transaction's state is unknown, and the connection is not
 * reused as it is: the dialect ends the transaction another way (MariaDB Galera: ROLLBACK with
 * dirty reads allowed; else the session is ended, MySQL `KILL`, PostgreSQL
 * `pg_terminate_backend`, which rolls it back on the server); if even that fails, the connection
 * stays out of the pool, its ROLLBACK tried again in the background until it succeeds or the
 * connection dies. `work`'s error reaches the caller after the ROLLBACK, or at once when the
 * ROLLBACK failed.
 */
export function onConnection<T>(db: Kysely<Database>, dialect: SqlDialect, work: (connection: Kysely<Database>) => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    db.connection()
      .execute(async (connection) => {
        try {
          resolve(await work(connection));
          return;
        } catch (error) {
          // The caller hears of the failure once its locks are gone: a refused confirm must not
          // still hold the reservation's row lock when the caller's next call looks for it.
          const clean = await rollBack(connection);
          reject(error);
          if (clean) return;
        }
        // The connection goes back only once no transaction is open on it.
        if (await dialect.endTransaction(connection)) return;
        await quarantine(connection);
      })
      .catch(reject);
  });
}

/** Whether no transaction is left open on the connection: rolled back, or the connection is dead (and will not be reused). */
async function rollBack(connection: Kysely<Database>): Promise<boolean> {
  try {
    await sql`rollback`.execute(connection);
    return true;
  } catch (error) {
    return isDeadConnection(error);
  }
}

/** Longest pause between two ROLLBACKs of a connection kept out of the pool. */
const QUARANTINE_MAX_PAUSE_MS = 5_000;
/** How long a connection is kept out of the pool before the engine stops trying (the driver's pool is left a slot short). */
const QUARANTINE_LIMIT_MS = 10 * 60_000;

/** Keeps the connection (held by the caller) until a ROLLBACK on it succeeds or fails with a dead connection. */
async function quarantine(connection: Kysely<Database>): Promise<void> {
  const until = Date.now() + QUARANTINE_LIMIT_MS;
  for (let pause = 100; Date.now() < until; pause = Math.min(pause * 2, QUARANTINE_MAX_PAUSE_MS)) {
    await sleep(pause);
    if (await rollBack(connection)) return;
  }
  // Never hand it back with its transaction open: keep holding it (one pool slot) for good.
  await new Promise<never>(() => {});
}

/**
 * @internal
 * Runs `attempt` (one whole transaction) again after a short jittered pause when the database
 * reports a deadlock, lock-wait timeout, serialization or certification failure, at most
 * {@link MAX_TRANSACTION_ATTEMPTS} times in all, then throws {@link TransactionConflictError}.
 */
export async function withRetries<T>(dialect: SqlDialect, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (!dialect.isRetryable(error)) throw error;
      if (n >= MAX_TRANSACTION_ATTEMPTS) throw new TransactionConflictError(n, error);
      recordRetry('conflict');
      // 2–10 ms, then doubling: enough for the competing transaction to commit.
      await sleep((2 + Math.random() * 8) * 2 ** (n - 1));
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
