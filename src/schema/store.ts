import type { Kysely } from 'kysely';
import { dialectOf, type SqlDialect, verifiedSession } from '../dialects/index.js';
import { OutcomeUnknownError } from '../errors.js';
import type { Database, DatabaseKind } from '../types.js';
import { engineDb, schemaNames } from './tables.js';

/** @internal What a one-shot function runs on: the engine's view of the host's database, and its dialect. */
export interface Store {
  readonly db: Kysely<Database>;
  readonly dialect: SqlDialect;
}

/** @internal The store for the options every entry point that takes `db` accepts (validated already). */
export function openStore(options: { readonly db: Kysely<any>; readonly tablePrefix?: string; readonly dialect?: DatabaseKind }): Store {
  return { db: engineDb(options.db, schemaNames(options.tablePrefix)), dialect: dialectOf(options.db, options.dialect) };
}

/**
 * @internal
 * Runs `work` on the store for `options`, once the session passed the dialect's check; a failed
 * connection becomes an {@link OutcomeUnknownError} for `operation`.
 */
export async function withStore<T>(
  options: { readonly db: Kysely<any>; readonly tablePrefix?: string; readonly dialect?: DatabaseKind },
  operation: string,
  advice: string,
  work: (store: Store) => Promise<T>,
): Promise<T> {
  const store = openStore(options);
  try {
    await verifiedSession(options.db, store.dialect);
    return await work(store);
  } catch (error) {
    if (store.dialect.isConnectionError(error)) throw new OutcomeUnknownError(operation, advice, error);
    throw error;
  }
}
