import type { Kysely } from 'kysely';
import { type NewReservation, type ReserveOutcome, shortOutcome, type SqlDialect } from '../dialects/dialect.js';
import { readShortLines } from '../stock/short-lines.js';
import type { Database } from '../types.js';
import { underSavepoint } from './host-transaction.js';

/**
 * @internal
 * The reserve writes inside a host's transaction, as plain statements: the database's own
 * reserve routine would start (MySQL: and so commit) a transaction of its own. The same order as
 * the routines — idempotency record, reservation (and its lines), event, then the guarded
 * decrements in ascending item id, which take the items' row locks last — under a savepoint, so
 * that a failure (no stock, a duplicate key) undoes exactly these writes and leaves the host's
 * transaction usable.
 */
export async function reserveInHostTransaction(trx: Kysely<Database>, _dialect: SqlDialect, r: NewReservation): Promise<ReserveOutcome> {
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
      if (r.itemId === null) {
        await trx
          .insertInto('reservation_lines')
          .values(r.lines.map((line) => ({ reservation_id: r.id, item_id: line.itemId, quantity: line.quantity })))
          .execute();
      }
      await trx
        .insertInto('outbox')
        .values({ type: 'reservation.created', payload: r.eventPayload, created_at: r.now, available_at: r.now, attempts: 0, trace_context: r.traceContext })
        .execute();
      for (const line of r.lines) {
        const decrement = await trx
          .updateTable('items')
          .set((eb) => ({
            available_quantity: eb('available_quantity', '-', line.quantity),
            held_quantity: eb('held_quantity', '+', line.quantity),
            updated_at: r.now,
          }))
          .where('id', '=', line.itemId)
          .where('available_quantity', '>=', line.quantity)
          .executeTakeFirst();
        if (Number(decrement.numUpdatedRows) !== 1) throw noStock;
      }
      return { kind: 'reserved' } as const;
    });
  } catch (error) {
    if (error !== noStock) throw error;
    const short = await readShortLines(trx, r.lines);
    if (r.itemId !== null) {
      const available = short[0]?.available ?? 0;
      return available < 0 ? { kind: 'missing' } : { kind: 'insufficient', available };
    }
    return shortOutcome(short);
  }
}
