/**
 * Opens the database named by a URL and brings its tables up to date: the one place where the
 * examples (HTTP server, cron jobs) turn `DATABASE_URL` into a Kysely instance.
 *
 *   mysql://user:pass@host:3306/shop      MySQL 8 / MariaDB ≥ 10.6 over mysql2 (also mariadb://)
 *   postgres://user:pass@host:5432/shop   PostgreSQL ≥ 13 over pg (also postgresql://)
 *   pglite:///var/lib/shop  pglite:./data  PGlite, persisted in that directory (one process only)
 *   (unset or empty)                       PGlite in memory: gone when the process ends
 *
 * `DATABASE_POOL_SIZE` sets the connection pool size of mysql/postgres (default 10).
 * Drivers are imported on demand, so a MySQL deployment does not need `pg` and vice versa.
 */
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import { createEmbeddedDatabase, migrateToLatest } from 'reservation-engine';

const DEFAULT_POOL_SIZE = 10;
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The database behind `url`, migrated to the latest schema (idempotent: safe at every start and
 * from several processes at once). The caller owns it: close it with `db.destroy()`.
 *
 * @example
 * ```ts
 * const db = await connectDatabase(); // DATABASE_URL, or PGlite in memory when unset
 * const engine = new ReservationEngine({ db });
 * ```
 */
export async function connectDatabase(url: string | undefined = process.env.DATABASE_URL): Promise<Kysely<any>> {
  const db = await open(url?.trim() ?? '');
  try {
    await migrateToLatest(db);
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return db;
}

/** A human-readable name for the database behind `url`, without credentials: for start-up logs. */
export function describeDatabase(url: string | undefined = process.env.DATABASE_URL): string {
  const value = url?.trim() ?? '';
  const kind = schemeOf(value);
  if (kind === 'memory') return 'embedded PGlite (in memory)';
  if (kind === 'pglite') return `embedded PGlite (${pgliteDir(value)})`;
  if (kind === undefined) return 'unsupported database URL';
  const name = kind === 'mysql' ? 'MySQL/MariaDB' : 'PostgreSQL';
  if (!URL.canParse(value)) return `${name} (unparsable URL)`;
  const { host, pathname } = new URL(value);
  return `${name} at ${host || 'localhost'}${pathname}`;
}

type Scheme = 'mysql' | 'postgres' | 'pglite' | 'memory';

function schemeOf(url: string): Scheme | undefined {
  if (url === '') return 'memory';
  if (/^pglite:/i.test(url)) return 'pglite';
  if (/^(mysql|mariadb):\/\//i.test(url)) return 'mysql';
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgres';
  return undefined;
}

async function open(url: string): Promise<Kysely<any>> {
  switch (schemeOf(url)) {
    case 'memory':
      return createEmbeddedDatabase();
    case 'pglite':
      return createEmbeddedDatabase({ dataDir: pgliteDir(url) });
    case 'mysql':
      return openMysql(url);
    case 'postgres':
      return openPostgres(url);
    default:
      throw new Error(
        `Unsupported DATABASE_URL scheme ${JSON.stringify(url.split(':')[0])}: use mysql://, mariadb://, postgres://, postgresql:// or pglite:<dir>, or leave it unset for an in-memory database`,
      );
  }
}

/** `pglite:///abs/dir` → `/abs/dir`; `pglite:./dir` → `./dir`. The rest is used as a path, verbatim. */
function pgliteDir(url: string): string {
  const rest = url.slice('pglite:'.length);
  const dir = rest.startsWith('//') ? rest.slice(2) : rest;
  if (dir === '') throw new Error('A pglite: DATABASE_URL needs a directory, e.g. pglite:./data or pglite:///var/lib/shop');
  return dir;
}

async function openMysql(url: string): Promise<Kysely<any>> {
  const mysql = await importDriver<typeof import('mysql2')>('mysql2', () => import('mysql2'));
  const pool = mysql.createPool({
    uri: url,
    connectionLimit: poolSize(),
    // The engine stores UTC: without this, mysql2 reads and writes DATETIMEs in local time.
    timezone: 'Z',
  });
  // mysql2 drops a failed connection from the pool through a one-time 'error' listener, so a
  // second error from the same dying connection would have no listener and end the process.
  // A listener for the connection's whole life rules that out, and logs the failure.
  pool.on('connection', (connection) => connection.on('error', logConnectionFailure));
  return new Kysely<any>({ dialect: new MysqlDialect({ pool }) });
}

async function openPostgres(url: string): Promise<Kysely<any>> {
  const { default: pg } = await importDriver<typeof import('pg')>('pg', () => import('pg'));
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize(),
    // An unreachable server fails the request instead of holding it for the system's TCP
    // connect timeout (minutes). Also bounds the wait for a free connection. As mysql2's default.
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  // A connection that dies (database restart, pg_terminate_backend, network cut) emits 'error' on
  // its Client, and an 'error' event nobody listens to ends the process. The pool listens only
  // while the client is idle in it, not while a query or transaction has it checked out: listen
  // on every client for its whole life. The query in flight still fails, and the pool discards
  // the client when it is released; the next query opens a new one.
  pool.on('connect', (client) => client.on('error', logConnectionFailure));
  // The pool passes an idle client's error on to here too, already logged by the listener above.
  pool.on('error', () => {});
  return new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
}

function logConnectionFailure(error: Error): void {
  console.error(`database: connection failed: ${error.message}`);
}

async function importDriver<T>(name: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (error) {
    throw new Error(`This DATABASE_URL needs the driver ${name}: npm install ${name}`, { cause: error });
  }
}

function poolSize(): number {
  const raw = process.env.DATABASE_POOL_SIZE?.trim();
  if (!raw) return DEFAULT_POOL_SIZE;
  const size = Number(raw);
  if (!Number.isInteger(size) || size < 1 || size > 1000) throw new Error(`DATABASE_POOL_SIZE must be an integer from 1 to 1000, got ${JSON.stringify(raw)}`);
  return size;
}
