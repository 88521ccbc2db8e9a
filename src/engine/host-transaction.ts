import { type Kysely, sql } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import { ConfigurationError, TransactionConflictError } from '../errors.js';
import { engineDb, type SchemaNames } from '../schema/tables.js';
import { inTransaction } from '../transaction.js';
import type { Database } from '../types.js';

/** Options of the engine's writes: `reserve`, `confirm`, `cancel`, `restock`. */
export interface WriteOptions {
  /**
   * A transaction of the host's (`db.transaction().execute(async (trx) => …)`) whose fate this
   * call's writes share: committed with it, or gone with its rollback (stock, reservation, event,
   * idempotency key all as before). The item's row lock is then held until the host commits, and
   * the transaction keeps the host's isolation level. The engine's statements run under a
   * savepoint: when a call fails, its writes are undone and the host's transaction stays usable.
   * A deadlock, lock timeout or serialization failure is not retried inside it (a deadlock rolls
   * back the whole transaction on MySQL/MariaDB): it throws a {@link TransactionConflictError}
   * saying to roll back and retry the whole transaction.
   * @defaultValue none: the call runs in a transaction of its own, retried on deadlocks
   */
  readonly trx?: Kysely<any>;
}

/** @internal Where one call writes: the engine's own transactions, or a host's transaction. */
export interface WriteTarget {
  /** The connection to read and write on: the engine's database, or the host's transaction. */
  readonly db: Kysely<Database>;
  /** Whether `db` is a host's transaction (no transaction control of the engine's own). */
  readonly hosted: boolean;
}

/** @internal The target of a write for `options` (validated: `trx` must be a Transaction). */
export function writeTarget(engine: Kysely<Database>, names: SchemaNames, options: WriteOptions | undefined): WriteTarget {
  if (options === undefined || options === null || options.trx === undefined) return { db: engine, hosted: false };
  const trx = options.trx as { isTransaction?: unknown; getExecutor?: unknown } | null;
  if (typeof trx?.getExecutor !== 'function' || trx.isTransaction !== true) {
    throw new ConfigurationError(['trx: must be a Kysely Transaction (the argument of db.transaction().execute(async (trx) => …))']);
  }
  return { db: engineDb(options.trx, names), hosted: true };
}

/**
 * @internal
 * Runs `work` in a transaction: the engine's own (READ COMMITTED, retried on deadlocks), or, in
 * a host's transaction, directly on it, where a deadlock or lock timeout becomes a
 * {@link TransactionConflictError} for the host to retry the whole transaction.
 */
export async function transact<T>(target: WriteTarget, dialect: SqlDialect, work: (db: Kysely<Database>) => Promise<T>): Promise<T> {
  if (!target.hosted) return inTransaction(target.db, dialect, work);
  try {
    return await work(target.db);
  } catch (error) {
    if (dialect.isRetryable(error)) throw new TransactionConflictError(1, error, { hosted: true });
    throw error;
  }
}

let savepoints = 0;

/**
 * @internal
 * Runs `work` under a savepoint of the host's transaction: when it throws, its writes are rolled
 * back and the host's transaction stays usable (PostgreSQL would otherwise refuse every later
 * statement); the error is rethrown.
 */
export async function underSavepoint<T>(db: Kysely<Database>, work: () => Promise<T>): Promise<T> {
  const name = sql.id(`reservation_engine_sp_${++savepoints}`);
  await sql`savepoint ${name}`.execute(db);
  try {
    const result = await work();
    await sql`release savepoint ${name}`.execute(db);
    return result;
  } catch (error) {
    // After a deadlock MySQL has rolled back the whole transaction and the savepoint with it.
    await sql`rollback to savepoint ${name}`.execute(db).catch(() => {});
    throw error;
  }
}
