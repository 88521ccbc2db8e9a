import { type Kysely, sql } from 'kysely';
import type { Migration } from 'kysely';
import { dialectOf } from '../dialects/index.js';

/**
 * - `items.held_quantity`: the units PENDING reservations hold, kept by the same statements that
 *   move stock. Restock bounds `available_quantity + held_quantity`, so returning held units can
 *   never overflow the column, whatever the host's `sql_mode`.
 * - `restock_requests`: idempotency keys of restocks, so a restock retried after a lost reply
 *   adds its units once.
 * - The MySQL reserve routine is re-created to keep `held_quantity` (and with a fixed sql_mode
 *   and isolation level).
 */
export const heldStockAndRestockKeysMigration: Migration = {
  async up(db: Kysely<any>) {
    const dialect = dialectOf(db);
    const t = dialect.schema;
    await db.schema
      .alterTable('items')
      .addColumn('held_quantity', 'integer', (c) => c.notNull().defaultTo(0).check(sql`held_quantity >= 0`))
      .execute();
    await sql`update items set held_quantity = coalesce((select sum(r.quantity) from reservations r where r.item_id = items.id and r.status = 'PENDING'), 0)`.execute(db);

    await t
      .table(
        db.schema
          .createTable('restock_requests')
          .addColumn('idempotency_key', t.asciiKey, (c) => c.primaryKey())
          .addColumn('payload_hash', 'char(64)', (c) => c.notNull())
          .addColumn('item_id', 'integer', (c) => c.notNull())
          .addColumn('created_at', t.timestamp, (c) => c.notNull()),
      )
      .execute();

    await dialect.dropRoutines(db);
    await dialect.createRoutines(db);
  },

  async down(db: Kysely<any>) {
    await db.schema.dropTable('restock_requests').ifExists().execute();
    await db.schema.alterTable('items').dropColumn('held_quantity').execute();
  },
};
