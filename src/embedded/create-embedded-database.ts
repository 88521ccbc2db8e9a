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

type PGliteConstructor = (new (dataDir: string, options: { startParams?: string[] }) => PGliteLike) & { readonly defaultStartParams?: readonly string[] };

/**
 * PGlite never checkpoints on its own (see `purgeBatch`'s `maintenance`), and a checkpoint keeps
 * the old WAL segments, renamed for reuse, up to a size estimated from past checkpoints, capped
 * by `max_wal_size` (1 GB by default), never below `min_wal_size` (80 MB). In memory every one
 * of them is 16 MB of RAM: these caps bring the WAL back to 32–64 MB at each checkpoint, even
 * after a long stretch without one. Command-line settings: nothing is written to the data directory.
 */
const WAL_SETTINGS = ['-c', 'min_wal_size=32MB', '-c', 'max_wal_size=64MB'];

const instances = new WeakMap<Kysely<any>, PGliteLike>();

/** @internal The PGlite instance behind a database made by {@link createEmbeddedDatabase} (the bench reads its memory). */
export function embeddedPGliteOf(db: Kysely<any>): PGliteLike | undefined {
  return instances.get(db);
}

/**
 * A ready, migrated database on PGlite (PostgreSQL compiled to WASM, in-process): no server to
 * install. For demos, development and your own unit tests. Needs the optional dependency
 * `@electric-sql/pglite`. Close it with `db.destroy()`.
 *
 * PGlite runs PostgreSQL as one single-user backend: no autovacuum, and no checkpoint until it
 * is closed. A long-running process should call {@link purgeBatch} every few minutes: on PGlite it
 * also vacuums and checkpoints (its `maintenance` option), which keeps memory (or the data
 * directory) bounded once retention keeps the rows steady. Without it, every reservation adds a
 * few kilobytes of dead rows and WAL for good. Started with `min_wal_size=32MB` and
 * `max_wal_size=64MB` (command-line settings, not written to `dataDir`), so that a checkpoint
 * keeps at most 64 MB of WAL.
 *
 * @example
 * ```ts
 * const db = await createEmbeddedDatabase();
 * const engine = new ReservationEngine({ db });
 * ```
 */
export async function createEmbeddedDatabase(options: EmbeddedDatabaseOptions = {}): Promise<Kysely<any>> {
  let PGlite: PGliteConstructor;
  try {
    ({ PGlite } = (await import('@electric-sql/pglite')) as unknown as { PGlite: PGliteConstructor });
  } catch (error) {
    throw new ReservationError(
      'createEmbeddedDatabase needs the optional dependency @electric-sql/pglite: npm install @electric-sql/pglite',
      'MISSING_DEPENDENCY',
      500,
      { cause: error },
    );
  }
  const defaults = PGlite.defaultStartParams;
  const pglite = new PGlite(options.dataDir ?? 'memory://', Array.isArray(defaults) ? { startParams: [...defaults, ...WAL_SETTINGS] } : {});
  const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) });
  instances.set(db, pglite);
  try {
    await migrateToLatest(db, { tablePrefix: options.tablePrefix });
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return db;
}
