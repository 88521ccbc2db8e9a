import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import { PGliteDialect, type PGliteLike } from '../embedded/pglite-dialect.js';
import type { DatabaseKind } from '../types.js';

/** What the CLI connects to: a Kysely instance, and which database it is. */
export interface CliDatabase {
  readonly db: Kysely<any>;
  readonly dialect: DatabaseKind;
}

/** A usage error of the CLI's: a bad command, option, URL or handler module. Exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * Opens the database named by a URL, with pools set up to survive a restart (a listener on
 * every connection):
 *   mysql://user:pass@host:3306/shop, mariadb://…   MySQL 8 / MariaDB ≥ 10.6 over mysql2
 *   postgres://user:pass@host:5432/shop, postgresql://…   PostgreSQL ≥ 13 over pg
 *   pglite:./data, pglite:///var/lib/shop   PGlite in that directory (one process at a time)
 */
export async function openDatabaseUrl(url: string): Promise<CliDatabase> {
  const scheme = /^([a-z]+):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'pglite') {
    const rest = url.slice('pglite:'.length);
    const dataDir = rest.startsWith('//') ? rest.slice(2) : rest;
    if (dataDir === '') throw new UsageError('a pglite: URL needs a directory, e.g. pglite:./data');
    // Not migrated here: only `migrate` creates tables, as on the servers.
    const { PGlite } = await driver<{ PGlite: new (dataDir: string) => PGliteLike }>('@electric-sql/pglite', () => import('@electric-sql/pglite') as never);
    return { db: new Kysely<any>({ dialect: new PGliteDialect(new PGlite(dataDir)) }), dialect: 'postgres' };
  }
  if (scheme !== 'mysql' && scheme !== 'mariadb' && scheme !== 'postgres' && scheme !== 'postgresql') {
    throw new UsageError(`unsupported database URL scheme ${JSON.stringify(scheme ?? url.slice(0, 20))}: use mysql://, mariadb://, postgres://, postgresql:// or pglite:<dir>`);
  }
  if (!URL.canParse(url)) throw new UsageError('the database URL cannot be parsed');
  const log = (error: Error) => console.error(`reservation-engine: database connection failed: ${error.message}`);
  if (scheme === 'mysql' || scheme === 'mariadb') {
    const mysql = await driver<typeof import('mysql2')>('mysql2', () => import('mysql2'));
    const pool = mysql.createPool({ uri: url.replace(/^mariadb:/i, 'mysql:'), connectionLimit: 4, timezone: 'Z', connectTimeout: 10_000 });
    pool.on('connection', (connection) => connection.on('error', log));
    return { db: new Kysely<any>({ dialect: new MysqlDialect({ pool }) }), dialect: 'mysql' };
  }
  const { default: pg } = await driver<typeof import('pg')>('pg', () => import('pg'));
  const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 10_000 });
  pool.on('connect', (client) => client.on('error', log));
  pool.on('error', () => {});
  return { db: new Kysely<any>({ dialect: new PostgresDialect({ pool }) }), dialect: 'postgres' };
}

async function driver<T>(name: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch {
    throw new UsageError(`this database URL needs the driver ${name}: npm install ${name}`);
  }
}
