import type { IsolationLevel, Kysely, Transaction } from 'kysely';
import type { SqlDialect } from './dialects/index.js';
import { TransactionConflictError } from './errors.js';
import type { Database } from './types.js';

/** How often a transaction that hit a deadlock or lock-wait timeout runs in all. */
export const MAX_TRANSACTION_ATTEMPTS = 5;

/**
 * @internal
 * Runs `work` in a transaction; on a deadlock, lock-wait timeout or serialization failure rolls
 * back and runs it again after a short jittered pause, at most {@link MAX_TRANSACTION_ATTEMPTS}
 * times in all, then throws {@link TransactionConflictError}. Other errors pass through.
 */
export async function inTransaction<T>(
  db: Kysely<Database>,
  dialect: SqlDialect,
  work: (trx: Transaction<Database>) => Promise<T>,
  isolationLevel?: IsolationLevel,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      const builder = db.transaction();
      return await (isolationLevel ? builder.setIsolationLevel(isolationLevel) : builder).execute(work);
    } catch (error) {
      if (!dialect.isRetryable(error)) throw error;
      if (attempt >= MAX_TRANSACTION_ATTEMPTS) throw new TransactionConflictError(attempt, error);
      // 2–10 ms, then doubling: enough for the competing transaction to commit.
      await sleep((2 + Math.random() * 8) * 2 ** (attempt - 1));
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
