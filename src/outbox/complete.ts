import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import { withRetries } from '../transaction.js';
import type { Database } from '../types.js';

/**
 * @internal
 * Marks delivered events processed, in one statement. Fenced by the lease: a worker whose lease
 * ran out (and whose rows another worker may have claimed since) changes nothing.
 */
export async function markProcessed(db: Kysely<Database>, dialect: SqlDialect, rowIds: ReadonlyArray<string | number>, leaseUntil: Date, now: Date): Promise<void> {
  if (rowIds.length === 0) return;
  await withRetries(dialect, () =>
    db
      .updateTable('outbox')
      .set({ processed_at: now, available_at: null, locked_until: null, last_error: null })
      .where('id', 'in', rowIds)
      .where('locked_until', '=', leaseUntil)
      .execute(),
  );
}

/**
 * @internal
 * Records a failed delivery: schedules the next attempt at `retryAt`, or dead-letters the event
 * (`retryAt` null), after which it is never claimed again. Fenced by the lease like {@link markProcessed}.
 */
export async function markFailed(
  db: Kysely<Database>,
  dialect: SqlDialect,
  rowId: string | number,
  leaseUntil: Date,
  now: Date,
  error: string,
  retryAt: Date | null,
): Promise<void> {
  await withRetries(dialect, () =>
    db
      .updateTable('outbox')
      .set({ available_at: retryAt, locked_until: null, last_error: error, dead_lettered_at: retryAt ? null : now })
      .where('id', '=', rowId)
      .where('locked_until', '=', leaseUntil)
      .execute(),
  );
}

/**
 * @internal
 * Hands claimed events back undelivered: due again at once, their claim's attempt not counted.
 * Fenced by the lease like {@link markProcessed}.
 */
export async function releaseEvents(db: Kysely<Database>, dialect: SqlDialect, rowIds: ReadonlyArray<string | number>, leaseUntil: Date, now: Date): Promise<void> {
  if (rowIds.length === 0) return;
  await withRetries(dialect, () =>
    db
      .updateTable('outbox')
      .set((eb) => ({ attempts: eb('attempts', '-', 1), available_at: now, locked_until: null }))
      .where('id', 'in', rowIds)
      .where('locked_until', '=', leaseUntil)
      .execute(),
  );
}

/** @internal An event to dead-letter at claim time, and why. */
export interface DeadLetter {
  readonly rowId: string | number;
  readonly type: string;
  readonly error: string;
}

/** @internal Dead-letters events that are locked by the caller's transaction (see `claimEvents`). */
export async function deadLetter(db: Kysely<Database>, events: readonly DeadLetter[], now: Date): Promise<void> {
  for (const { rowId, error } of events) {
    await db.updateTable('outbox').set({ available_at: null, locked_until: null, last_error: error, dead_lettered_at: now }).where('id', '=', rowId).execute();
  }
}
