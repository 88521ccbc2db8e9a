import type { Kysely, Migration } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/**
 * The `reserve_or_replay` routine (MySQL: a stored procedure; PostgreSQL: a PL/pgSQL function):
 * a whole reserve — the idempotency lookup, the sold-out check and the writes — in one round trip.
 */
export function reserveOrReplayMigration(dialect: SqlDialect, names: SchemaNames): Migration {
  return {
    async up(db: Kysely<any>) {
      await dialect.createRoutines(db, names, { traceContext: false });
    },
    async down(db: Kysely<any>) {
      await dialect.dropRoutines(db, names);
    },
  };
}
