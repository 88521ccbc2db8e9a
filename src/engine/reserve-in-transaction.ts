import type { Kysely } from 'kysely';
import type { NewReservation, ReserveOutcome, SqlDialect } from '../dialects/dialect.js';
import type { Database } from '../types.js';
import { underSavepoint } from './host-transaction.js';

/**
 * @internal
 * The reserve writes inside a host's transaction, as plain statements: the database's own
 * reserve routine would start (MySQL: and so commit) a transaction of its own. The same order as
 * the routine — idempotency record, reservation, event, then the guarded decrement, which takes
 * the item's row lock last — under a savepoint, so that a failure (no stock, a duplicate key)
 * undoes exactly these writes and leaves the host's transaction usable.
 */
export async function reserveInHostTransaction(trx: Kysely<Database>, dialect: SqlDialect, r: NewReservation): Promise<ReserveOutcome> {
  const noStock = Symbol('no stock');
  try {
    return await underSavepoint(trx, async () => {
      await trx
        .insertInto('idempotency_requests')
        .values({ idempotency_scope: r.idempotencyScope, idempotency_key: r.idempotencyKey, payload_hash: r.payloadHash, reservation_id: r.id, created_at: r.now })
        .execute();
      await trx
        .insertInto('reservations')
        .values({
          id: r.id,
          item_id: r.itemId,
          quantity: r.quantity,
          status: 'PENDING',
          idempotency_scope: r.idempotencyScope,
          idempotency_key: r.idempotencyKey,
          expires_at: r.expiresAt,
          created_at: r.now,
          updated_at: r.now,
        })
        .execute();
      await trx
        .insertInto('outbox')
        .values({ type: 'reservation.created', payload: r.eventPayload, created_at: r.now, available_at: r.now, attempts: 0, trace_context: r.traceContext })
        .execute();
      const decrement = await trx
        .updateTable('items')
        .set((eb) => ({
          available_quantity: eb('available_quantity', '-', r.quantity),
          held_quantity: eb('held_quantity', '+', r.quantity),
          updated_at: r.now,
        }))
        .where('id', '=', r.itemId)
        .where('available_quantity', '>=', r.quantity)
        .executeTakeFirst();
      if (Number(decrement.numUpdatedRows) !== 1) throw noStock;
      return { kind: 'reserved' } as const;
    });
  } catch (error) {
    if (error !== noStock) throw error;
    const item = await trx.selectFrom('items').select('available_quantity').where('id', '=', r.itemId).executeTakeFirst();
    return item ? { kind: 'insufficient', available: Number(item.available_quantity) } : { kind: 'missing' };
  }
}
