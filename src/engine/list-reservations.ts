import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { Database, ReservationStatus } from '../types.js';
import type { ReservationPage } from './inputs.js';
import { withLines } from './lines.js';

/** @internal What a page of `listReservations` is filtered by. */
export interface PageFilters {
  readonly itemId: number | undefined;
  readonly status: ReservationStatus | undefined;
  readonly idempotencyScope: string | undefined;
  /** Reservations after this id (keyset pagination). */
  readonly after: string | undefined;
}

/** @internal One page of at most `limit` reservations in id order, with `next` when there are more. */
export async function reservationPage(db: Kysely<Database>, filters: PageFilters, limit: number): Promise<ReservationPage> {
  const rows = filters.itemId === undefined ? await pageOf(db, filters, limit + 1) : await pageOfItem(db, filters.itemId, filters, limit + 1);
  const reservations = await withLines(db, rows.slice(0, limit));
  return Object.freeze({ reservations: Object.freeze(reservations), next: rows.length > limit ? reservations.at(-1)?.id : undefined });
}

/** Up to `limit` reservations in id order, filtered. */
function pageOf(db: Kysely<Database>, filters: PageFilters, limit: number) {
  return filtered(db.selectFrom('reservations').selectAll(), filters).orderBy('id').limit(limit).execute();
}

/**
 * Up to `limit` reservations of one item in id order: its single-item reservations (the index on
 * item and id) and the carts with a line for it (the lines' index on item and reservation), each
 * read in order up to `limit` and merged — one OR over both would scan the whole table.
 */
async function pageOfItem(db: Kysely<Database>, itemId: number, filters: PageFilters, limit: number) {
  const own = filtered(db.selectFrom('reservations').select('id').where('item_id', '=', itemId), filters).orderBy('id').limit(limit);
  let inCarts = db
    .selectFrom('reservation_lines as l')
    .innerJoin('reservations as r', 'r.id', 'l.reservation_id')
    .select('l.reservation_id as id')
    .where('l.item_id', '=', itemId)
    .orderBy('l.reservation_id')
    .limit(limit);
  if (filters.status !== undefined) inCarts = inCarts.where('r.status', '=', filters.status);
  if (filters.idempotencyScope !== undefined) inCarts = inCarts.where('r.idempotency_scope', '=', filters.idempotencyScope);
  if (filters.after !== undefined) inCarts = inCarts.where('l.reservation_id', '>', filters.after);
  const ids = [...(await own.execute()), ...(await inCarts.execute())].map((row) => String(row.id).toLowerCase());
  // Lower-case UUIDs sort as the databases order them (bytes, ascii_bin).
  const page = [...new Set(ids)].sort().slice(0, limit);
  if (page.length === 0) return [];
  return db.selectFrom('reservations').selectAll().where('id', 'in', page).orderBy('id').execute();
}

function filtered<Q extends SelectQueryBuilder<Database, 'reservations', any>>(select: Q, { status, idempotencyScope, after }: PageFilters): Q {
  let query = select;
  if (status !== undefined) query = query.where('status', '=', status) as Q;
  if (idempotencyScope !== undefined) query = query.where('idempotency_scope', '=', idempotencyScope) as Q;
  if (after !== undefined) query = query.where('id', '>', after) as Q;
  return query;
}
