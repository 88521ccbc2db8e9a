import type { Kysely, Migration } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/**
 * The first server-side reserve routine (MySQL: a stored procedure; PostgreSQL: none). Superseded
 * by migration 0004; kept as it was so that engines from before 0004 keep working while a rolling
 * deploy replaces them.
 */
export function reserveRoutineMigration(dialect: SqlDialect, names: SchemaNames): Migration {
  return {
    async up(db: Kysely<any>) {
      await dialect.createLegacyRoutines(db, names);
    },
    async down(db: Kysely<any>) {
      await dialect.dropLegacyRoutines(db, names);
    },
  };
}
