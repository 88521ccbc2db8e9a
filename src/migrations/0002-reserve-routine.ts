import type { Kysely, Migration } from 'kysely';
import { dialectOf } from '../dialects/index.js';

/** The server-side reserve routine, where the database needs one (MySQL: a stored procedure). */
export const reserveRoutineMigration: Migration = {
  async up(db: Kysely<any>) {
    await dialectOf(db).createRoutines(db);
  },
  async down(db: Kysely<any>) {
    await dialectOf(db).dropRoutines(db);
  },
};
