import type { Selectable } from 'kysely';
import type { Item, ItemsTable, Reservation, ReservationLine, ReservationsTable } from './types.js';

/** @internal A row of `items` → the public {@link Item}. */
export function toItem(row: Selectable<ItemsTable>): Item {
  return Object.freeze({
    id: Number(row.id),
    sku: row.sku,
    name: row.name,
    availableQuantity: Number(row.available_quantity),
    heldQuantity: Number(row.held_quantity),
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  });
}

/**
 * @internal
 * A row of `reservations` → the public {@link Reservation}. A reservation of several items
 * (`item_id` NULL) needs its `lines` (from `reservation_lines`); a single item's line is on the row.
 */
export function toReservation(row: Selectable<ReservationsTable>, lines?: readonly ReservationLine[]): Reservation {
  const itemId = row.item_id === null || row.item_id === undefined ? null : Number(row.item_id);
  if (itemId === null && (lines === undefined || lines.length === 0)) throw new Error(`reservation ${row.id} has no item and no lines`);
  return Object.freeze({
    id: row.id,
    itemId,
    quantity: Number(row.quantity),
    lines: Object.freeze(itemId === null ? lines!.map((line) => Object.freeze({ itemId: line.itemId, quantity: line.quantity })) : [Object.freeze({ itemId, quantity: Number(row.quantity) })]),
    status: row.status,
    idempotencyScope: row.idempotency_scope === '' ? null : row.idempotency_scope,
    idempotencyKey: row.idempotency_key,
    expiresAt: toDate(row.expires_at),
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  });
}

/** @internal Drivers return Date objects; a string only if the host configured `dateStrings`. */
export function toDate(value: Date | string): Date {
  return value instanceof Date ? value : new Date(value);
}
