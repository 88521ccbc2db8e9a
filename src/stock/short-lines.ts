import type { Kysely } from 'kysely';
import type { ShortLine } from '../errors.js';
import type { Database, ReservationLine } from '../types.js';

/**
 * @internal
 * What a reserve of `lines` could not hold, read now: the lines whose item has fewer units
 * available than they ask for, with `available` -1 for an item that does not exist. Empty when
 * every line could be held after all (the stock came back meanwhile).
 */
export async function readShortLines(db: Kysely<Database>, lines: readonly ReservationLine[]): Promise<ShortLine[]> {
  const rows = await db
    .selectFrom('items')
    .select(['id', 'available_quantity'])
    .where(
      'id',
      'in',
      lines.map((line) => line.itemId),
    )
    .execute();
  const available = new Map(rows.map((row) => [Number(row.id), Number(row.available_quantity)]));
  return shortOf(lines, (itemId) => available.get(itemId) ?? -1);
}

/** The lines that `available` (-1: no such item) cannot cover, in the lines' order. */
export function shortOf(lines: readonly ReservationLine[], available: (itemId: number) => number): ShortLine[] {
  return lines.map((line) => ({ itemId: line.itemId, requested: line.quantity, available: available(line.itemId) })).filter((line) => line.available < line.requested);
}

/** @internal `item:requested:available,…` (the routines' answer) → short lines; empty for NULL. */
export function parseShortLines(text: string | null | undefined): ShortLine[] {
  if (!text) return [];
  return text.split(',').map((part) => {
    const [itemId, requested, available] = part.split(':').map(Number);
    return { itemId: itemId!, requested: requested!, available: available! };
  });
}

/** @internal `item:quantity,…` (a routine's replay) → lines. */
export function parseLines(text: string | null | undefined): ReservationLine[] {
  if (!text) return [];
  return text.split(',').map((part) => {
    const [itemId, quantity] = part.split(':').map(Number);
    return Object.freeze({ itemId: itemId!, quantity: quantity! });
  });
}
