import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import { inTransaction } from '../transaction.js';
import type { Database } from '../types.js';

/** One item whose stock does not add up, with the figures (units) the audit compared. */
export interface AuditDiscrepancy {
  readonly itemId: number;
  readonly sku: string;
  /** Units ever received: initial stock plus restocks. */
  readonly received: number;
  /** Units ever written off (shrinkage). */
  readonly writtenOff: number;
  /** The item's available units. */
  readonly available: number;
  /** The item's held-units counter. */
  readonly held: number;
  /** Units of its PENDING reservations (single-item ones and lines of several-item ones). */
  readonly pending: number;
  /** Units of its CONFIRMED reservations, counting those retention has deleted. */
  readonly confirmed: number;
  /** `received − writtenOff − (available + pending + confirmed)`: units missing (positive) or made up (negative). */
  readonly difference: number;
  /** What does not hold, in words: each a sentence. */
  readonly problems: readonly string[];
}

/** What {@link ReservationEngine.audit} found. */
export interface AuditReport {
  /** `true` when every checked item adds up. */
  readonly ok: boolean;
  /** Items checked. */
  readonly itemsChecked: number;
  /** Every item that does not add up, in ascending id. */
  readonly discrepancies: readonly AuditDiscrepancy[];
  /** Ids asked for (`itemIds`) that no item has. */
  readonly unknownItemIds: readonly number[];
}

/** Items read per query. */
const PAGE = 1000;

/**
 * @internal
 * Checks, per item and from one consistent snapshot, that
 * received − written off = available + PENDING + CONFIRMED units, that the held counter equals
 * the PENDING units, and that no counter is negative.
 */
export async function auditStock(db: Kysely<Database>, dialect: SqlDialect, itemIds: readonly number[] | undefined): Promise<AuditReport> {
  return inTransaction(
    db,
    dialect,
    async (trx) => {
      const discrepancies: AuditDiscrepancy[] = [];
      const seen = new Set<number>();
      const wanted = itemIds && [...new Set(itemIds)].sort((a, b) => a - b);
      for (let after = 0, offset = 0; ; ) {
        let query = trx
          .selectFrom('items')
          .select(['id', 'sku', 'received_quantity', 'written_off_quantity', 'purged_confirmed_quantity', 'available_quantity', 'held_quantity'])
          .orderBy('id')
          .limit(PAGE);
        if (wanted) {
          const page = wanted.slice(offset, offset + PAGE);
          if (page.length === 0) break;
          offset += PAGE;
          query = query.where('id', 'in', page);
        } else {
          query = query.where('id', '>', after);
        }
        const items = await query.execute();
        if (items.length === 0) {
          if (wanted) continue;
          break;
        }
        const ids = items.map((item) => Number(item.id));
        after = ids.at(-1)!;
        const units = await unitsByItem(trx, ids);
        for (const item of items) {
          const id = Number(item.id);
          seen.add(id);
          const found = check(item, units.get(id) ?? { pending: 0, confirmed: 0 });
          if (found) discrepancies.push(found);
        }
        if (!wanted && items.length < PAGE) break;
      }
      return Object.freeze({
        ok: discrepancies.length === 0,
        itemsChecked: seen.size,
        discrepancies: Object.freeze(discrepancies),
        unknownItemIds: Object.freeze((wanted ?? []).filter((id) => !seen.has(id))),
      });
    },
    { begin: dialect.beginSnapshot },
  );
}

/** PENDING and CONFIRMED units per item, from single-item reservations and from lines. */
async function unitsByItem(trx: Kysely<Database>, ids: readonly number[]): Promise<Map<number, { pending: number; confirmed: number }>> {
  const single = await trx
    .selectFrom('reservations')
    .select(['item_id', 'status', (eb) => eb.fn.sum<number | string>('quantity').as('units')])
    .where('item_id', 'in', ids)
    .where('status', 'in', ['PENDING', 'CONFIRMED'])
    .groupBy(['item_id', 'status'])
    .execute();
  const lines = await trx
    .selectFrom('reservation_lines as l')
    .innerJoin('reservations as r', 'r.id', 'l.reservation_id')
    .select(['l.item_id', 'r.status', (eb) => eb.fn.sum<number | string>('l.quantity').as('units')])
    .where('l.item_id', 'in', ids)
    .where('r.status', 'in', ['PENDING', 'CONFIRMED'])
    .groupBy(['l.item_id', 'r.status'])
    .execute();
  const units = new Map<number, { pending: number; confirmed: number }>();
  for (const row of [...single, ...lines]) {
    const id = Number(row.item_id);
    const sum = units.get(id) ?? { pending: 0, confirmed: 0 };
    if (row.status === 'PENDING') sum.pending += Number(row.units);
    else sum.confirmed += Number(row.units);
    units.set(id, sum);
  }
  return units;
}

interface ItemFigures {
  readonly id: number;
  readonly sku: string;
  readonly received_quantity: number | string;
  readonly written_off_quantity: number | string;
  readonly purged_confirmed_quantity: number | string;
  readonly available_quantity: number;
  readonly held_quantity: number;
}

/** The item's discrepancy, or `undefined` when it adds up. */
function check(item: ItemFigures, units: { pending: number; confirmed: number }): AuditDiscrepancy | undefined {
  const received = Number(item.received_quantity);
  const writtenOff = Number(item.written_off_quantity);
  const available = Number(item.available_quantity);
  const held = Number(item.held_quantity);
  const { pending } = units;
  const confirmed = units.confirmed + Number(item.purged_confirmed_quantity);
  const difference = received - writtenOff - (available + pending + confirmed);
  const problems: string[] = [];
  if (difference !== 0) {
    problems.push(
      `received ${received} − written off ${writtenOff} ≠ available ${available} + PENDING ${pending} + CONFIRMED ${confirmed}: ` +
        `${Math.abs(difference)} unit${Math.abs(difference) === 1 ? '' : 's'} ${difference > 0 ? 'missing' : 'too many'}`,
    );
  }
  if (held !== pending) problems.push(`held counter ${held} ≠ PENDING units ${pending}`);
  if (available < 0) problems.push(`available ${available} is negative`);
  if (problems.length === 0) return undefined;
  return Object.freeze({ itemId: Number(item.id), sku: item.sku, received, writtenOff, available, held, pending, confirmed, difference, problems: Object.freeze(problems) });
}
