import type { Kysely } from 'kysely';
import type { DatabaseKind } from '../types.js';
import { UnsupportedDatabaseError } from '../errors.js';
import type { SqlDialect } from './dialect.js';
import { mysqlDialect } from './mysql.js';
import { postgresDialect } from './postgres.js';

export type { SqlDialect } from './dialect.js';

export type { DatabaseKind } from '../types.js';

const BY_KIND: Readonly<Record<DatabaseKind, SqlDialect>> = Object.freeze({ mysql: mysqlDialect, postgres: postgresDialect });

/** Adapter class names (Kysely's and well-known third-party ones) → dialect. */
const BY_ADAPTER: ReadonlyArray<[RegExp, SqlDialect]> = [
  [/^Mysql/i, mysqlDialect],
  [/^(Postgres|PGlite|Pglite|Neon|Supabase)/i, postgresDialect],
];

const cache = new WeakMap<object, SqlDialect>();

/**
 * @internal
 * The dialect for a Kysely instance: the one the host named (`kind`), else chosen once from its
 * adapter by class name along the prototype chain, so a host's Kysely copy (or a dialect
 * extending Kysely's adapters) works without `instanceof` across package copies. A minified
 * build renames those classes: then the host must name the database.
 */
export function dialectOf(db: Kysely<any>, kind?: DatabaseKind): SqlDialect {
  if (kind !== undefined) return BY_KIND[kind];
  const adapter = db.getExecutor().adapter as object;
  const cached = cache.get(adapter);
  if (cached) return cached;
  for (let proto = Object.getPrototypeOf(adapter); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    const name: string = proto.constructor?.name ?? '';
    const match = BY_ADAPTER.find(([pattern]) => pattern.test(name));
    if (match) {
      cache.set(adapter, match[1]);
      return match[1];
    }
  }
  throw new UnsupportedDatabaseError(adapter.constructor?.name ?? 'unknown');
}

const verified = new WeakMap<object, Promise<void>>();

/**
 * @internal
 * Resolves once {@link SqlDialect.verifySession} passed for `db` (asked once per instance; a
 * failed check is asked again next time).
 */
export function verifiedSession(db: Kysely<any>, dialect: SqlDialect): Promise<void> {
  let check = verified.get(db);
  if (!check) {
    check = dialect.verifySession(db.withoutPlugins());
    verified.set(db, check);
    check.catch(() => verified.delete(db));
  }
  return check;
}
