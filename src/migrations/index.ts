import type { Kysely } from 'kysely';
import { type Migration, type MigrationProvider, type MigrationResultSet, Migrator } from 'kysely';
import { z } from 'zod';
import { type DatabaseKind, dialectOf } from '../dialects/index.js';
import { ReservationError } from '../errors.js';
import { engineDb, schemaNames } from '../schema/tables.js';
import { databaseKindSchema, kyselySchema, parseOptions } from '../validation.js';
import { initialMigration } from './0001-initial.js';
import { reserveRoutineMigration } from './0002-reserve-routine.js';
import { retentionIndexesMigration } from './0003-retention-indexes.js';
import { reserveOrReplayMigration } from './0004-reserve-or-replay.js';
import { outboxTraceContextMigration } from './0005-outbox-trace-context.js';
import { linesAndAuditMigration } from './0006-lines-and-audit.js';

/** Options of {@link migrateToLatest} and {@link reservationEngineMigrations}. */
export interface MigrationOptions {
  /**
   * The prefix of every table, index and routine the library creates: `<prefix>items`,
   * `<prefix>reservations`, … Use the same value in the engine and the batch functions.
   * 1–30 letters, digits and underscores, starting with a letter.
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
  /**
   * Which database `db` talks to, when the engine cannot tell from its adapter (a minified build,
   * a third-party dialect).
   * @defaultValue detected from the Kysely adapter
   */
  readonly dialect?: DatabaseKind;
}

const migrationOptionsSchema = z.strictObject({
  tablePrefix: z.string().optional(),
  dialect: databaseKindSchema.optional(),
});

/**
 * The library's migrations, by name, for hosts that run their own Kysely `Migrator`: merge them
 * into your provider (the names sort after dates, so keep them in their own folder or prefix).
 * They create the tables under `tablePrefix` on whatever Kysely instance the migrator gives them.
 */
export function reservationEngineMigrations(options: MigrationOptions = {}): Readonly<Record<string, Migration>> {
  const { tablePrefix, dialect: kind } = parseOptions(migrationOptionsSchema, options);
  const names = schemaNames(tablePrefix);
  // Each step resolves the database from the instance the migrator hands it, and runs on it
  // without the host's plugins and with the table prefix.
  const step = (make: typeof initialMigration): Migration => ({
    up: (db: Kysely<any>) => make(dialectOf(db, kind), names).up(engineDb(db, names)),
    down: (db: Kysely<any>) => make(dialectOf(db, kind), names).down!(engineDb(db, names)),
  });
  return Object.freeze({
    reservation_engine_0001_initial: step(initialMigration),
    reservation_engine_0002_reserve_routine: step(reserveRoutineMigration),
    reservation_engine_0003_retention_indexes: step(retentionIndexesMigration),
    reservation_engine_0004_reserve_or_replay: step(reserveOrReplayMigration),
    reservation_engine_0005_outbox_trace_context: step(outboxTraceContextMigration),
    reservation_engine_0006_lines_and_audit: step(linesAndAuditMigration),
  });
}

/** A Kysely `MigrationProvider` serving {@link reservationEngineMigrations}. */
export function reservationEngineMigrationProvider(options: MigrationOptions = {}): MigrationProvider {
  const migrations = reservationEngineMigrations(options);
  return { getMigrations: async () => ({ ...migrations }) };
}

/**
 * Creates or updates the engine's tables (`<tablePrefix>items`, `<tablePrefix>reservations`,
 * `<tablePrefix>reservation_lines`, `<tablePrefix>idempotency_requests`,
 * `<tablePrefix>restock_requests`, `<tablePrefix>outbox`) and routines
 * (`<tablePrefix>reserve_or_replay` and `<tablePrefix>reserve_lines`: stored procedures on MySQL,
 * PL/pgSQL functions on PostgreSQL), with their own bookkeeping tables
 * (`<tablePrefix>migration`, `<tablePrefix>migration_lock`), so that a host's migrations are never
 * mixed with the library's. Safe to call at every start and from several processes at once
 * (Kysely's migration lock); a repeat call is a no-op.
 *
 * @throws {ReservationError} code `MIGRATION_FAILED` when a migration fails (the cause attached)
 *
 * @example
 * ```ts
 * await migrateToLatest(db); // or migrateToLatest(db, { tablePrefix: 'shop_stock_' })
 * ```
 */
export async function migrateToLatest(db: Kysely<any>, options: MigrationOptions = {}): Promise<MigrationResultSet> {
  parseOptions(z.strictObject({ db: kyselySchema }), { db });
  const names = schemaNames(options.tablePrefix);
  const migrator = new Migrator({
    db: db.withoutPlugins(),
    provider: reservationEngineMigrationProvider(options),
    migrationTableName: names.migrationTable,
    migrationLockTableName: names.migrationLockTable,
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
