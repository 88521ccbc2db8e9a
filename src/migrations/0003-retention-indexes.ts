import type { Kysely, Migration } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/**
 * Indexes for retention and operations: processed events by age (purge) and dead letters
 * (`processed_at` NULL, `dead_lettered_at` set) in one index; idempotency and restock keys by age.
 */
export function retentionIndexesMigration(_dialect: SqlDialect, names: SchemaNames): Migration {
  const name = names.object;
  return {
    async up(db: Kysely<any>) {
      await db.schema.createIndex(name('outbox_processed_dead')).on('outbox').columns(['processed_at', 'dead_lettered_at']).execute();
      await db.schema.createIndex(name('idempotency_requests_created_at')).on('idempotency_requests').column('created_at').execute();
      await db.schema.createIndex(name('restock_requests_created_at')).on('restock_requests').column('created_at').execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropIndex(name('restock_requests_created_at')).on('restock_requests').execute();
      await db.schema.dropIndex(name('idempotency_requests_created_at')).on('idempotency_requests').execute();
      await db.schema.dropIndex(name('outbox_processed_dead')).on('outbox').execute();
    },
  };
}
