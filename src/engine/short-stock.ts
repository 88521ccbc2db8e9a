import { type CompiledQuery, type Kysely, type Selectable, sql } from 'kysely';
import type { Database, ReservationsTable } from '../types.js';

/**
 * @internal
 * The items this engine recently found short of stock (a flash sale that sold out). It only
 * chooses HOW a reserve asks the database, never what it answers: for an item noted here a
 * reserve first sends one plain SELECT ({@link stockAndKeyQuery}) that reads the stock and the
 * idempotency key in one snapshot, and answers "sold out" or "replay" from it; only if that read
 * shows enough stock does it go on to the reserve routine, which checks everything again. So a
 * stale note costs one extra read, and can never refuse stock that is there or oversell.
 */
export class ShortStockNotes {
  readonly #notes = new Map<number, { available: number; until: number }>();

  constructor(
    /** How long a note lasts after the last time the item was found short. */
    private readonly ttlMs = 5_000,
    /** Notes kept at most (the oldest go first). */
    private readonly maxItems = 10_000,
  ) {}

  /** Whether a reserve of `quantity` units of `itemId` is likely refused. */
  likelyShort(itemId: number, quantity: number): boolean {
    const note = this.#notes.get(itemId);
    if (note === undefined) return false;
    if (note.until < performance.now()) {
      this.#notes.delete(itemId);
      return false;
    }
    return quantity > note.available;
  }

  /** The item had `available` units: too few for a reserve. */
  note(itemId: number, available: number): void {
    this.#notes.delete(itemId);
    this.#notes.set(itemId, { available, until: performance.now() + this.ttlMs });
    if (this.#notes.size > this.maxItems) this.#notes.delete(this.#notes.keys().next().value!);
  }

  /** The item had stock again. */
  forget(itemId: number): void {
    this.#notes.delete(itemId);
  }
}

/** @internal What {@link stockAndKeyQuery} returns: the stock, and the key's earlier request if any. */
export type StockAndKeyRow = Partial<Selectable<ReservationsTable>> & {
  readonly available: number | string | null;
  readonly payload_hash: string | null;
};

/**
 * @internal
 * One plain SELECT, so one snapshot and no lock: the item's stock and the request a (scope, key)
 * was used for (NULL columns: none). No row: no such item. Parameters: scope, key, item id.
 */
export function stockAndKeyQuery(db: Kysely<Database>): CompiledQuery<StockAndKeyRow> {
  return sql<StockAndKeyRow>`select i.available_quantity as available, k.payload_hash, r.*
    from ${sql.table('items')} i
    left join ${sql.table('idempotency_requests')} k on k.idempotency_scope = ${''} and k.idempotency_key = ${''}
    left join ${sql.table('reservations')} r on r.id = k.reservation_id
    where i.id = ${0}`.compile(db);
}
