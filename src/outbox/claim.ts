import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import { toDate } from '../rows.js';
import { inTransaction } from '../transaction.js';
import type { Database, OutboxEvent } from '../types.js';

/** @internal An event this worker holds a lease on, with the lease end that fences its updates. */
export interface ClaimedEvent {
  readonly rowId: string | number;
  readonly event: OutboxEvent;
}

/**
 * @internal
 * Claims up to `limit` due events: locks them with SKIP LOCKED (concurrent workers take
 * different rows), counts the attempt and stamps a lease ending at `leaseUntil`, then commits,
 * so no lock is held while the handler runs. Until the lease ends no other worker claims them.
 */
export async function claimEvents(db: Kysely<Database>, dialect: SqlDialect, now: Date, leaseUntil: Date, limit: number): Promise<ClaimedEvent[]> {
  return inTransaction(
    db,
    dialect,
    async (trx) => {
      const rows = await trx
        .selectFrom('outbox')
        .select(['id', 'type', 'payload', 'attempts', 'created_at'])
        .where('available_at', '<=', now)
        .orderBy('available_at')
        .orderBy('id')
        .limit(limit)
        .forUpdate()
        .skipLocked()
        .execute();
      if (rows.length === 0) return [];
      await trx
        .updateTable('outbox')
        .set((eb) => ({ attempts: eb('attempts', '+', 1), available_at: leaseUntil, locked_until: leaseUntil }))
        .where(
          'id',
          'in',
          rows.map((row) => row.id),
        )
        .execute();
      return rows.map((row) => ({
        rowId: row.id,
        event: Object.freeze({
          id: String(row.id),
          type: row.type,
          payload: dialect.parseJson(row.payload) as OutboxEvent['payload'],
          attempts: Number(row.attempts) + 1,
          createdAt: toDate(row.created_at),
        }),
      }));
    },
    // No gap locks: a claim must not block the engine's inserts of new events.
    'read committed',
  );
}
