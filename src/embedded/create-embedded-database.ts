import { Kysely } from 'kysely';
import { ReservationError } from '../errors.js';
import { migrateToLatest } from '../migrations/index.js';
import { PGliteDialect, type PGliteLike } from './pglite-dialect.js';

/** Options of {@link createEmbeddedDatabase}. */
export interface EmbeddedDatabaseOptions {
  /**
   * Where PGlite keeps its files: a directory path to persist across runs.
   * @defaultValue in memory (`memory://`), gone when the process ends
   */
  readonly dataDir?: string;
  /**
   * The prefix of the engine's tables (see {@link ReservationEngineOptions.tablePrefix}).
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
}

/**
 * A ready, migrated database on PGlite (PostgreSQL compiled to WASM, in-process): no server to
 * install. For demos, development and your own unit tests. Needs the optional dependency
 * `@electric-sql/pglite`. Close it with `db.destroy()`.
 *
 * @example
 * ```ts
 * const db = await createEmbeddedDatabase();
 * const engine = new ReservationEngine({ db });
 * ```
 */
export async function createEmbeddedDatabase(options: EmbeddedDatabaseOptions = {}): Promise<Kysely<any>> {
  let PGlite: new (dataDir?: string) => PGliteLike;
  try {
    ({ PGlite } = (await import('@electric-sql/pglite')) as unknown as { PGlite: new (dataDir?: string) => PGliteLike });
  } catch (error) {
    throw new ReservationError(
      'createEmbeddedDatabase needs the optional dependency @electric-sql/pglite: npm install @electric-sql/pglite',
      'MISSING_DEPENDENCY',
      500,
      { cause: error },
    );
  }
  const pglite = new PGlite(options.dataDir ?? 'memory://');
  const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) });
  try {
    await migrateToLatest(db, { tablePrefix: options.tablePrefix });
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return db;
}
