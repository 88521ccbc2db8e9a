import { type Kysely, sql } from 'kysely';
import type { Database } from '../types.js';

/** @internal Units moved on one item: added to `available` and to `held` (negative to take away). */
export interface StockMove {
  readonly itemId: number;
  readonly available: number;
  readonly held: number;
}

/**
 * @internal
 * Applies `moves` (at most one per item) in one UPDATE. With several items, their rows are
 * locked first in ascending id — the order every writer takes item locks in (reserve's
 * decrements, expiry, confirm and cancel), so that two of them never wait on each other in a
 * cycle.
 */
export async function moveStock(trx: Kysely<Database>, moves: readonly StockMove[], now: Date): Promise<void> {
  if (moves.length === 0) return;
  if (moves.length === 1) {
    const [{ itemId, available, held }] = moves as [StockMove];
    await trx
      .updateTable('items')
      .set((eb) => ({ available_quantity: eb('available_quantity', '+', available), held_quantity: eb('held_quantity', '+', held), updated_at: now }))
      .where('id', '=', itemId)
      .execute();
    return;
  }
  const sorted = [...moves].sort((a, b) => a.itemId - b.itemId);
  const itemIds = sorted.map((move) => move.itemId);
  await trx.selectFrom('items').select('id').where('id', 'in', itemIds).orderBy('id').forUpdate().execute();
  const units = (key: 'available' | 'held') => sql<number>`case id ${sql.join(sorted.map((move) => sql`when ${sql.lit(move.itemId)} then ${sql.lit(move[key])}`), sql` `)} else 0 end`;
  await trx
    .updateTable('items')
    .set((eb) => ({ available_quantity: eb('available_quantity', '+', units('available')), held_quantity: eb('held_quantity', '+', units('held')), updated_at: now }))
    .where('id', 'in', itemIds)
    .execute();
}

/** @internal Sums moves per item. */
export function sumMoves(moves: Iterable<StockMove>): StockMove[] {
  const byItem = new Map<number, { available: number; held: number }>();
  for (const move of moves) {
    const sum = byItem.get(move.itemId) ?? { available: 0, held: 0 };
    sum.available += move.available;
    sum.held += move.held;
    byItem.set(move.itemId, sum);
  }
  return [...byItem].map(([itemId, sum]) => ({ itemId, ...sum }));
}
