import type { Kysely, Selectable } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import { toDate } from '../rows.js';
import { inTransaction } from '../transaction.js';
import type { Database, OutboxEvent, OutboxTable } from '../types.js';
import { type DeadLetter, deadLetter } from './complete.js';

/** @internal An event this worker holds a lease on, with the lease end that fences its updates. */
export interface ClaimedEvent {
  readonly rowId: string | number;
  readonly event: OutboxEvent;
}

/** @internal What one claim took: events to deliver, and events it dead-lettered instead. */
export interface Claim {
  readonly events: readonly ClaimedEvent[];
  readonly deadLettered: readonly DeadLetter[];
}

type DueRow = Pick<Selectable<OutboxTable>, 'id' | 'type' | 'payload' | 'attempts' | 'created_at' | 'locked_until' | 'trace_context'>;

/**
 * @internal
 * Claims up to `limit` due events: locks them with SKIP LOCKED (concurrent workers take
 * different rows), counts the attempt and stamps a lease ending at `leaseUntil`, then commits,
 * so no lock is held while the handler runs. Until the lease ends no other worker claims them.
 *
 * An attempt counts when it is claimed, so a delivery that never reports back (the worker
 * crashed or hung past its lease) uses one up too. In the same transaction the claim:
 * - dead-letters due events that have used up `maxAttempts` that way;
 * - delivers a *suspect* — an event whose last lease ran out with no outcome recorded, which may
 *   be what crashed that worker — alone, in a batch of its own, so that a poison event cannot
 *   take its neighbours down with it again.
 */
export async function claimEvents(
  db: Kysely<Database>,
  dialect: SqlDialect,
  options: { readonly now: Date; readonly leaseUntil: Date; readonly limit: number; readonly maxAttempts: number },
): Promise<Claim> {
  const { now, leaseUntil, limit, maxAttempts } = options;
  return inTransaction(db, dialect, async (trx) => {
    const rows: DueRow[] = await trx
      .selectFrom('outbox')
      .select(['id', 'type', 'payload', 'attempts', 'created_at', 'locked_until', 'trace_context'])
      .where('available_at', '<=', now)
      .orderBy('available_at')
      .orderBy('id')
      .limit(limit)
      .forUpdate()
      .skipLocked()
      .execute();

    const dead: DeadLetter[] = [];
    const batch: ClaimedEvent[] = [];
    for (const row of rows) {
      const attempts = Number(row.attempts);
      const suspect = row.locked_until !== null;
      if (attempts >= maxAttempts) {
        dead.push({ rowId: row.id, type: row.type, error: `Gave up after ${attempts} attempts: the last delivery never reported back (the worker crashed, or the handler outlived its lease)` });
        continue;
      }
      const event = readEvent(dialect, row);
      // A suspect goes alone; a batch of fresh events stops before the first suspect.
      if (suspect && batch.length > 0) break;
      batch.push({ rowId: row.id, event });
      if (suspect) break;
    }

    await deadLetter(trx, dead, now);
    if (batch.length > 0) {
      await trx
        .updateTable('outbox')
        .set((eb) => ({ attempts: eb('attempts', '+', 1), available_at: leaseUntil, locked_until: leaseUntil }))
        .where(
          'id',
          'in',
          batch.map((claimed) => claimed.rowId),
        )
        .execute();
    }
    return { events: batch, deadLettered: dead };
  });
}

function readEvent(dialect: SqlDialect, row: DueRow): OutboxEvent {
  // The type and its payload were written together: the pair is one of OutboxEvent's.
  return Object.freeze({
    id: String(row.id),
    type: row.type,
    payload: dialect.parseJson(row.payload),
    attempts: Number(row.attempts) + 1,
    createdAt: toDate(row.created_at),
    ...(row.trace_context ? { traceparent: row.trace_context } : {}),
  }) as OutboxEvent;
}
