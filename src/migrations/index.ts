import type { Kysely } from 'kysely';
import { type Migration, type MigrationProvider, type MigrationResultSet, Migrator } from 'kysely';
import { ReservationError } from '../errors.js';
import { initialMigration } from './0001-initial.js';
import { reserveRoutineMigration } from './0002-reserve-routine.js';
import { heldStockAndRestockKeysMigration } from './0003-held-stock-and-restock-keys.js';

/**
 * The library's migrations, by name, for hosts that run their own Kysely `Migrator`: merge them
 * into your provider (the names sort after dates, so keep them in their own folder or prefix).
 */
export const reservationEngineMigrations: Readonly<Record<string, Migration>> = Object.freeze({
  reservation_engine_0001_initial: initialMigration,
  reservation_engine_0002_reserve_routine: reserveRoutineMigration,
  reservation_engine_0003_held_stock_and_restock_keys: heldStockAndRestockKeysMigration,
});

/** A Kysely `MigrationProvider` serving {@link reservationEngineMigrations}. */
export const reservationEngineMigrationProvider: MigrationProvider = {
  getMigrations: async () => ({ ...reservationEngineMigrations }),
};

/**
 * The migration bookkeeping tables, separate from Kysely's defaults so that a host's own
 * migrations are never mixed with ours.
 */
export const MIGRATION_TABLE = 'reservation_engine_migration';
export const MIGRATION_LOCK_TABLE = 'reservation_engine_migration_lock';

/**
 * Creates or updates the engine's tables. Safe to call at every start and from several
 * processes at once (Kysely's migration lock); a repeat call is a no-op.
 *
 * @example
 * ```ts
 * await migrateToLatest(db);
 * ```
 */
export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResultSet> {
  const migrator = new Migrator({
    db,
    provider: reservationEngineMigrationProvider,
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  });
  const result = await migrator.migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new ReservationError(`Migration ${failed} failed: ${String((result.error as Error)?.message ?? result.error)}`, 'MIGRATION_FAILED', 500, {
      cause: result.error,
    });
  }
  return result;
}
