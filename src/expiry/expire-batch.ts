import { type Kysely, sql } from 'kysely';
import { z } from 'zod';
import { dialectOf } from '../dialects/index.js';
import { eventRow } from '../outbox/event-row.js';
import { toDate } from '../rows.js';
import { inTransaction } from '../transaction.js';
import type { Database } from '../types.js';
import { batchLimitSchema, dateSchema, kyselySchema, parse } from '../validation.js';

/** Options of {@link expireBatch}. */
export interface ExpireBatchOptions {
  /** The host's Kysely instance (see {@link ReservationEngineOptions.db}). */
  readonly db: Kysely<any>;
  /**
   * Most reservations expired by this call, 1–10,000.
   * @defaultValue 500
   */
  readonly limit?: number;
  /**
   * The time this call treats as current: PENDING reservations with `expiresAt` ≤ `now` expire.
   * @defaultValue the current time
   */
  readonly now?: Date;
}

const optionsSchema = z.strictObject({
  db: kyselySchema,
  limit: batchLimitSchema(500),
  now: dateSchema.optional(),
});

/**
 * Expires up to `limit` PENDING reservations past their `expiresAt`, returns their stock and
 * writes a `reservation.expired` event for each, in one transaction. Concurrent callers skip
 * each other's rows (SKIP LOCKED) and lock items in id order, so each reservation expires
 * exactly once and callers never deadlock. Call it until `expired` is less than `limit` to drain.
 *
 * @example
 * ```ts
 * const { expired } = await expireBatch({ db, limit: 1000 });
 * ```
 */
export async function expireBatch(options: ExpireBatchOptions): Promise<{ expired: number }> {
  const o = parse(optionsSchema, options, 'options');
  const db = o.db as Kysely<Database>;
  const dialect = dialectOf(db);
  const now = o.now ?? new Date();

  const expired = await inTransaction(
    db,
    dialect,
    async (trx) => {
      const due = await trx
        .selectFrom('reservations')
        .select(['id', 'item_id', 'quantity', 'expires_at'])
        .where('status', '=', 'PENDING')
        .where('expires_at', '<=', now)
        .orderBy('expires_at')
        .limit(o.limit)
        .forUpdate()
        .skipLocked()
        .execute();
      if (due.length === 0) return 0;

      await trx
        .updateTable('reservations')
        .set({ status: 'EXPIRED', updated_at: now })
        .where(
          'id',
          'in',
          due.map((r) => r.id),
        )
        .where('status', '=', 'PENDING')
        .execute();

      const returned = new Map<number, number>();
      for (const r of due) returned.set(Number(r.item_id), (returned.get(Number(r.item_id)) ?? 0) + Number(r.quantity));
      const itemIds = [...returned.keys()].sort((a, b) => a - b);
      // Lock the items in id order first, so two sweeps over overlapping items cannot deadlock.
      await trx.selectFrom('items').select('id').where('id', 'in', itemIds).orderBy('id').forUpdate().execute();
      const increment = sql<number>`case id ${sql.join(
        itemIds.map((id) => sql`when ${sql.lit(id)} then ${sql.lit(returned.get(id)!)}`),
        sql` `,
      )} else 0 end`;
      await trx
        .updateTable('items')
        .set((eb) => ({ available_quantity: eb('available_quantity', '+', increment), updated_at: now }))
        .where('id', 'in', itemIds)
        .execute();

      await trx
        .insertInto('outbox')
        .values(
          due.map((r) =>
            eventRow(
              dialect,
              'reservation.expired',
              { id: r.id, itemId: Number(r.item_id), quantity: Number(r.quantity), status: 'EXPIRED', expiresAt: toDate(r.expires_at) },
              now,
            ),
          ),
        )
        .execute();
      return due.length;
    },
    // No gap locks: the sweep must not block new reservations' inserts.
    'read committed',
  );
  return { expired };
}
