import type { Kysely } from 'kysely';
import type { Database } from '../types.js';

/**
 * @internal
 * Marks delivered events processed, in one statement. Fenced by the lease: a worker whose lease
 * ran out (and whose rows another worker may have claimed since) changes nothing.
 */
export async function markProcessed(db: Kysely<Database>, rowIds: ReadonlyArray<string | number>, leaseUntil: Date, now: Date): Promise<void> {
  if (rowIds.length === 0) return;
  await db
    .updateTable('outbox')
    .set({ processed_at: now, available_at: null, locked_until: null, last_error: null })
    .where('id', 'in', rowIds)
    .where('locked_until', '=', leaseUntil)
    .execute();
}

/**
 * @internal
 * Records a failed delivery: schedules the next attempt at `retryAt`, or dead-letters the event
 * (`retryAt` null), after which it is never claimed again. Fenced by the lease like {@link markProcessed}.
 */
export async function markFailed(
  db: Kysely<Database>,
  rowId: string | number,
  leaseUntil: Date,
  now: Date,
  error: string,
  retryAt: Date | null,
): Promise<void> {
  await db
    .updateTable('outbox')
    .set({ available_at: retryAt, locked_until: null, last_error: error, dead_lettered_at: retryAt ? null : now })
    .where('id', '=', rowId)
    .where('locked_until', '=', leaseUntil)
    .execute();
}
