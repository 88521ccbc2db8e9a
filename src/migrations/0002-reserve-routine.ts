import type { Kysely, Migration } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import type { SchemaNames } from '../schema/tables.js';

/** The server-side reserve routine, where the database needs one (MySQL: a stored procedure). */
export function reserveRoutineMigration(dialect: SqlDialect, names: SchemaNames): Migration {
  return {
    async up(db: Kysely<any>) {
      await dialect.createRoutines(db, names);
    },
    async down(db: Kysely<any>) {
      await dialect.dropRoutines(db, names);
    },
  };
}
