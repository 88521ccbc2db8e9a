import type { Kysely, Migration } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/**
 * The outbox keeps the W3C traceparent of the transaction that wrote each event
 * (`trace_context`, NULL without a span), so that its delivery can link to it; the reserve
 * routine takes it as a parameter.
 */
export function outboxTraceContextMigration(dialect: SqlDialect, names: SchemaNames): Migration {
  return {
    async up(db: Kysely<any>) {
      await db.schema.alterTable('outbox').addColumn('trace_context', 'varchar(55)').execute();
      await dialect.dropRoutines(db, names);
      await dialect.createRoutines(db, names, { traceContext: true });
    },
    async down(db: Kysely<any>) {
      await dialect.dropRoutines(db, names);
      await dialect.createRoutines(db, names, { traceContext: false });
      await db.schema.alterTable('outbox').dropColumn('trace_context').execute();
    },
  };
}
