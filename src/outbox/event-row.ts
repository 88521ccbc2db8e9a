import type { Insertable } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { ItemWrittenOffPayload, OutboxTable, Reservation, ReservationEventPayload, ReservationEventType } from '../types.js';

/** @internal The outbox row announcing that `reservation` reached its current status at `now`, written under the span `traceContext` (a W3C traceparent). */
export function eventRow(
  dialect: SqlDialect,
  type: ReservationEventType,
  reservation: Pick<Reservation, 'id' | 'itemId' | 'quantity' | 'lines' | 'status' | 'expiresAt'>,
  now: Date,
  traceContext: string | null,
): Insertable<OutboxTable> {
  const payload: ReservationEventPayload = {
    reservationId: reservation.id,
    itemId: reservation.itemId,
    quantity: reservation.quantity,
    lines: reservation.lines.map((line) => ({ itemId: line.itemId, quantity: line.quantity })),
    status: reservation.status,
    expiresAt: reservation.expiresAt.toISOString(),
    occurredAt: now.toISOString(),
  };
  return { type, payload: dialect.serializeJson(payload), created_at: now, available_at: now, attempts: 0, trace_context: traceContext };
}

/** @internal The outbox row announcing that units of an item were written off. */
export function itemEventRow(dialect: SqlDialect, type: 'item.written_off', payload: ItemWrittenOffPayload, now: Date, traceContext: string | null): Insertable<OutboxTable> {
  return { type, payload: dialect.serializeJson(payload), created_at: now, available_at: now, attempts: 0, trace_context: traceContext };
}
