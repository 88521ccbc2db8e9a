import { type Kysely, type Migration, sql } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/**
 * The five tables, each `<prefix><name>`; the migration runs on a Kysely instance with the prefix
 * plugin, so it names them `items`, `reservations`, … Index and constraint names carry the prefix
 * explicitly (PostgreSQL's are per schema).
 *
 * There is deliberately no foreign key from `reservations.item_id` to `items`: in InnoDB,
 * inserting a child row takes a shared lock on the parent row, and concurrent reservations that
 * hold it and then decrement the stock (an exclusive lock on the same row) deadlock each other.
 * The relation stays correct because a reservation is only ever written in the transaction whose
 * guarded stock decrement found the item, and items are never deleted.
 */
export function initialMigration(dialect: SqlDialect, names: SchemaNames): Migration {
  const t = dialect.schema;
  const name = names.object;
  return {
    async up(db: Kysely<any>) {
      await t
        .table(
          db.schema
            .createTable('items')
            .addColumn('id', 'integer', (c) => t.identity(c))
            .addColumn('sku', t.shortText, (c) => c.notNull())
            .addColumn('name', t.shortText, (c) => c.notNull())
            .addColumn('available_quantity', 'integer', (c) => c.notNull().check(sql`available_quantity >= 0`))
            // Units held by PENDING reservations: restock bounds available + held, so returning
            // held units can never overflow the column.
            .addColumn('held_quantity', 'integer', (c) => c.notNull().defaultTo(0).check(sql`held_quantity >= 0`))
            .addColumn('created_at', t.timestamp, (c) => c.notNull())
            .addColumn('updated_at', t.timestamp, (c) => c.notNull())
            .addUniqueConstraint(name('items_sku_unique'), ['sku']),
        )
        .execute();

      // One reservation per (scope, key) is guaranteed by the primary key of idempotency_requests,
      // written in the same transaction: the key is indexed once.
      await t
        .table(
          db.schema
            .createTable('reservations')
            .addColumn('id', t.uuid, (c) => c.primaryKey())
            .addColumn('item_id', 'integer', (c) => c.notNull())
            .addColumn('quantity', 'integer', (c) => c.notNull().check(sql`quantity > 0`))
            .addColumn('status', 'varchar(16)', (c) => c.notNull())
            .addColumn('idempotency_scope', t.asciiKey, (c) => c.notNull().defaultTo(''))
            .addColumn('idempotency_key', t.asciiKey, (c) => c.notNull())
            .addColumn('expires_at', t.timestamp, (c) => c.notNull())
            .addColumn('created_at', t.timestamp, (c) => c.notNull())
            .addColumn('updated_at', t.timestamp, (c) => c.notNull()),
        )
        .execute();
      // The expiry sweep: WHERE status = 'PENDING' AND expires_at <= ? ORDER BY expires_at.
      await db.schema.createIndex(name('reservations_status_expires_at')).on('reservations').columns(['status', 'expires_at']).execute();
      // listReservations by item or by scope, in id order (keyset pagination).
      await db.schema.createIndex(name('reservations_item_id')).on('reservations').columns(['item_id', 'id']).execute();
      await db.schema.createIndex(name('reservations_scope')).on('reservations').columns(['idempotency_scope', 'id']).execute();

      await t
        .table(
          db.schema
            .createTable('idempotency_requests')
            .addColumn('idempotency_scope', t.asciiKey, (c) => c.notNull().defaultTo(''))
            .addColumn('idempotency_key', t.asciiKey, (c) => c.notNull())
            .addColumn('payload_hash', 'char(64)', (c) => c.notNull())
            .addColumn('reservation_id', t.uuid, (c) => c.notNull())
            .addColumn('created_at', t.timestamp, (c) => c.notNull())
            .addPrimaryKeyConstraint(name('idempotency_requests_pk'), ['idempotency_scope', 'idempotency_key']),
        )
        .execute();

      // Keys of restocks, so that a restock retried after a lost reply adds its units once.
      await t
        .table(
          db.schema
            .createTable('restock_requests')
            .addColumn('idempotency_scope', t.asciiKey, (c) => c.notNull().defaultTo(''))
            .addColumn('idempotency_key', t.asciiKey, (c) => c.notNull())
            .addColumn('payload_hash', 'char(64)', (c) => c.notNull())
            .addColumn('item_id', 'integer', (c) => c.notNull())
            .addColumn('created_at', t.timestamp, (c) => c.notNull())
            .addPrimaryKeyConstraint(name('restock_requests_pk'), ['idempotency_scope', 'idempotency_key']),
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
      await db.schema.createIndex(name('outbox_available_at')).on('outbox').columns(['available_at', 'id']).execute();
    },

    async down(db: Kysely<any>) {
      for (const table of ['outbox', 'restock_requests', 'idempotency_requests', 'reservations', 'items']) {
        await db.schema.dropTable(table).ifExists().execute();
      }
    },
  };
}
