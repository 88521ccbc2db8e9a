import { type Kysely, type Migration, sql } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/**
 * Reservations of several items, and the stock audit:
 * - `reservation_lines` holds the lines of a reservation of several items, whose own `item_id`
 *   is NULL (a single-item reservation keeps its item and quantity on its row, as before);
 * - `items` counts the units each item ever received, wrote off, and sold in reservations that
 *   retention has deleted since, so that `audit` can check received = available + PENDING +
 *   CONFIRMED + written off. Existing items start from what adds up now: received = available +
 *   their PENDING and CONFIRMED units;
 * - the `reserve_lines` routine.
 *
 * As with `reservations`, no foreign key to `items`: in InnoDB it would take a shared lock on
 * each item before the decrement's exclusive one, and concurrent carts would deadlock.
 */
export function linesAndAuditMigration(dialect: SqlDialect, names: SchemaNames): Migration {
  const t = dialect.schema;
  return {
    async up(db: Kysely<any>) {
      await t
        .table(
          db.schema
            .createTable('reservation_lines')
            .addColumn('reservation_id', t.uuid, (c) => c.notNull())
            .addColumn('item_id', 'integer', (c) => c.notNull())
            .addColumn('quantity', 'integer', (c) => c.notNull().check(sql`quantity > 0`))
            .addPrimaryKeyConstraint(names.object('reservation_lines_pk'), ['reservation_id', 'item_id']),
        )
        .execute();
      // listReservations by item and the audit's sums per item.
      await db.schema.createIndex(names.object('reservation_lines_item_id')).on('reservation_lines').columns(['item_id', 'reservation_id']).execute();
      await dialect.dropNotNull(db, 'reservations', 'item_id', 'integer');

      for (const column of ['received_quantity', 'written_off_quantity', 'purged_confirmed_quantity']) {
        await db.schema
          .alterTable('items')
          .addColumn(column, 'bigint', (c) => c.notNull().defaultTo(0))
          .execute();
      }
      await db
        .updateTable('items')
        .set((eb) => ({
          received_quantity: eb(
            'available_quantity',
            '+',
            eb.fn.coalesce(
              eb
                .selectFrom('reservations as r')
                .select((inner) => inner.fn.sum<number>('r.quantity').as('units'))
                .whereRef('r.item_id', '=', 'items.id')
                .where('r.status', 'in', ['PENDING', 'CONFIRMED']),
              sql.lit(0),
            ),
          ),
        }))
        .execute();

      await dialect.createLinesRoutine(db, names);
    },
    async down(db: Kysely<any>) {
      // Reservations of several items cannot be written back as one row each: refuse rather than lose them.
      const cart = await db.selectFrom('reservation_lines').select('reservation_id').limit(1).executeTakeFirst();
      if (cart) throw new Error('reservations of several items exist (reservation_lines is not empty): purge them before migrating down past 0006');
      await dialect.dropLinesRoutine(db, names);
      for (const column of ['received_quantity', 'written_off_quantity', 'purged_confirmed_quantity']) {
        await db.schema.alterTable('items').dropColumn(column).execute();
      }
      // reservations.item_id stays nullable: harmless, and every row has an item again.
      await db.schema.dropTable('reservation_lines').execute();
    },
  };
}
