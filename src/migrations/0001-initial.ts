import { type Kysely, sql } from 'kysely';
import type { Migration } from 'kysely';
import { dialectOf } from '../dialects/index.js';

/**
 * The four tables. There is deliberately no foreign key from `reservations.item_id` to `items`:
 * in InnoDB, inserting a child row takes a shared lock on the parent row, and concurrent
 * reservations that hold it and then decrement the stock (an exclusive lock on the same row)
 * deadlock each other. The relation stays correct because a reservation is only ever written in
 * the transaction whose guarded stock decrement found the item, and items are never deleted.
 */
export const initialMigration: Migration = {
  async up(db: Kysely<any>) {
    const t = dialectOf(db).schema;

    await t
      .table(
        db.schema
          .createTable('items')
          .addColumn('id', 'integer', (c) => t.identity(c))
          .addColumn('sku', t.shortText, (c) => c.notNull())
          .addColumn('name', t.shortText, (c) => c.notNull())
          .addColumn('available_quantity', 'integer', (c) => c.notNull().check(sql`available_quantity >= 0`))
          .addColumn('created_at', t.timestamp, (c) => c.notNull())
          .addColumn('updated_at', t.timestamp, (c) => c.notNull())
          .addUniqueConstraint('items_sku_unique', ['sku']),
      )
      .execute();

    await t
      .table(
        db.schema
          .createTable('reservations')
          .addColumn('id', t.uuid, (c) => c.primaryKey())
          .addColumn('item_id', 'integer', (c) => c.notNull())
          .addColumn('quantity', 'integer', (c) => c.notNull().check(sql`quantity > 0`))
          .addColumn('status', 'varchar(16)', (c) => c.notNull())
          .addColumn('idempotency_key', t.asciiKey, (c) => c.notNull())
          .addColumn('expires_at', t.timestamp, (c) => c.notNull())
          .addColumn('created_at', t.timestamp, (c) => c.notNull())
          .addColumn('updated_at', t.timestamp, (c) => c.notNull())
          .addUniqueConstraint('reservations_idempotency_key_unique', ['idempotency_key']),
      )
      .execute();
    // The expiry sweep: WHERE status = 'PENDING' AND expires_at <= ? ORDER BY expires_at.
    await db.schema.createIndex('reservations_status_expires_at').on('reservations').columns(['status', 'expires_at']).execute();

    await t
      .table(
        db.schema
          .createTable('idempotency_requests')
          .addColumn('idempotency_key', t.asciiKey, (c) => c.primaryKey())
          .addColumn('payload_hash', 'char(64)', (c) => c.notNull())
          .addColumn('reservation_id', t.uuid, (c) => c.notNull())
          .addColumn('created_at', t.timestamp, (c) => c.notNull()),
      )
      .execute();

    await t
      .table(
        db.schema
          .createTable('outbox')
          .addColumn('id', 'bigint', (c) => t.identity(c))
          .addColumn('type', 'varchar(64)', (c) => c.notNull())
          .addColumn('payload', t.json, (c) => c.notNull())
          .addColumn('created_at', t.timestamp, (c) => c.notNull())
          .addColumn('available_at', t.timestamp)
          .addColumn('locked_until', t.timestamp)
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_error', 'text')
          .addColumn('processed_at', t.timestamp)
          .addColumn('dead_lettered_at', t.timestamp),
      )
      .execute();
    // The claim: WHERE available_at <= ? ORDER BY available_at, id. Processed and dead-lettered
    // rows have available_at NULL, so the range scan never visits them.
    await db.schema.createIndex('outbox_available_at').on('outbox').columns(['available_at', 'id']).execute();
  },

  async down(db: Kysely<any>) {
    for (const table of ['outbox', 'idempotency_requests', 'reservations', 'items']) {
      await db.schema.dropTable(table).ifExists().execute();
    }
  },
};
