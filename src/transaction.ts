import type { Kysely, Transaction } from 'kysely';
import type { SqlDialect } from './dialects/index.js';
import { TransactionConflictError } from './errors.js';
import type { Database } from './types.js';

/** How often a transaction that hit a deadlock or lock-wait timeout runs in all. */
export const MAX_TRANSACTION_ATTEMPTS = 5;

/**
 * @internal
 * Runs `work` in a READ COMMITTED transaction; on a deadlock, lock-wait timeout or serialization
 * failure rolls back and runs it again (see {@link withRetries}). Other errors pass through.
 *
 * Every transaction states its isolation level: the engine's locking (conditional UPDATEs,
 * SKIP LOCKED claims, no gap locks) was designed for READ COMMITTED, and a host's default of
 * REPEATABLE READ or SERIALIZABLE would turn contention into serialization failures.
 */
export async function inTransaction<T>(db: Kysely<Database>, dialect: SqlDialect, work: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
  return withRetries(dialect, () => db.transaction().setIsolationLevel('read committed').execute(work));
}

/**
 * @internal
 * Runs `attempt` (one whole transaction) again after a short jittered pause when the database
 * reports a deadlock, lock-wait timeout or serialization failure, at most
 * {@link MAX_TRANSACTION_ATTEMPTS} times in all, then throws {@link TransactionConflictError}.
 */
export async function withRetries<T>(dialect: SqlDialect, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (!dialect.isRetryable(error)) throw error;
      if (n >= MAX_TRANSACTION_ATTEMPTS) throw new TransactionConflictError(n, error);
      // 2–10 ms, then doubling: enough for the competing transaction to commit.
      await sleep((2 + Math.random() * 8) * 2 ** (n - 1));
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
