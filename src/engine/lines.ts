import type { Kysely, Selectable } from 'kysely';
import { toReservation } from '../rows.js';
import type { Database, Reservation, ReservationLine, ReservationsTable } from '../types.js';

/** @internal The lines of the reservations of several items among `reservationIds`, by reservation, each in ascending item id. */
export async function readLines(db: Kysely<Database>, reservationIds: readonly string[]): Promise<Map<string, ReservationLine[]>> {
  const byReservation = new Map<string, ReservationLine[]>();
  if (reservationIds.length === 0) return byReservation;
  const rows = await db
    .selectFrom('reservation_lines')
    .select(['reservation_id', 'item_id', 'quantity'])
    .where('reservation_id', 'in', reservationIds)
    .orderBy('reservation_id')
    .orderBy('item_id')
    .execute();
  for (const row of rows) {
    const id = String(row.reservation_id).toLowerCase();
    const lines = byReservation.get(id) ?? [];
    lines.push(Object.freeze({ itemId: Number(row.item_id), quantity: Number(row.quantity) }));
    byReservation.set(id, lines);
  }
  return byReservation;
}

/** @internal Rows of `reservations` → reservations, reading the lines of those of several items (one query for all). */
export async function withLines(db: Kysely<Database>, rows: readonly Selectable<ReservationsTable>[]): Promise<Reservation[]> {
  const carts = rows.filter((row) => row.item_id === null).map((row) => row.id);
  const lines = await readLines(db, carts);
  return rows.map((row) => toReservation(row, lines.get(String(row.id).toLowerCase())));
}
