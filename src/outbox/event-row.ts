import type { Insertable } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { OutboxEventType, OutboxTable, Reservation, ReservationEventPayload } from '../types.js';

/** @internal The outbox row announcing that `reservation` reached its current status at `now`, written under the span `traceContext` (a W3C traceparent). */
export function eventRow(
  dialect: SqlDialect,
  type: OutboxEventType,
  reservation: Pick<Reservation, 'id' | 'itemId' | 'quantity' | 'status' | 'expiresAt'>,
  now: Date,
  traceContext: string | null,
): Insertable<OutboxTable> {
  const payload: ReservationEventPayload = {
    reservationId: reservation.id,
    itemId: reservation.itemId,
    quantity: reservation.quantity,
    status: reservation.status,
    expiresAt: reservation.expiresAt.toISOString(),
    occurredAt: now.toISOString(),
  };
  return { type, payload: dialect.serializeJson(payload), created_at: now, available_at: now, attempts: 0, trace_context: traceContext };
}
