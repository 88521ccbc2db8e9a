/**
 * The benchmark's database: a throwaway server started as the tests do (or MYSQL_URL /
 * POSTGRES_URL), one fresh database created for the run and migrated with `migrateToLatest`,
 * and factories for what the variants need — a Kysely instance over a pool of N connections
 * (what the engine gets) and a raw driver pool of N connections (what the baselines use).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Kysely, type LogEvent, MysqlDialect, PostgresDialect } from 'kysely';
import mysqlCallback from 'mysql2';
import pg from 'pg';
import { migrateToLatest, PGliteDialect, type PGliteLike } from '../../src/index.js';
import { startMariaDb, startPostgres, type ThrowawayServer } from '../../test/support/servers.js';
import { type RawPool, mysqlRawPool, pgliteRawPool, postgresRawPool } from './raw.js';

export type DialectName = 'mysql' | 'postgres' | 'pglite';

export const TABLES = ['outbox', 'idempotency_requests', 'restock_requests', 'reservation_lines', 'reservations', 'items'] as const;

export class BenchDatabase {
  private constructor(
    readonly dialect: DialectName,
    /** Where the server came from, e.g. "throwaway MariaDB 10.11" or "MYSQL_URL". */
    readonly source: string,
    /** SELECT version() of the server. */
    public version: string,
    private readonly url: string,
    private readonly dbName: string,
    private readonly server: ThrowawayServer | undefined,
    private readonly pglite: PGliteLike | undefined,
    private readonly pgliteDb: Kysely<any> | undefined,
    /** A one-connection raw pool for setup, seeding, checks and counters. */
    readonly admin: RawPool,
  ) {}

  static async open(dialect: DialectName): Promise<BenchDatabase> {
    const dbName = `bench_${randomBytes(5).toString('hex')}`;
    if (dialect === 'pglite') {
      const { PGlite } = (await import('@electric-sql/pglite')) as unknown as { PGlite: new (dataDir?: string) => PGliteLike };
      const pglite = new PGlite('memory://');
      const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) });
      await migrateToLatest(db);
      const admin = pgliteRawPool(pglite);
      const version = String((await admin.query('select version() as v')).rows[0].v);
      return new BenchDatabase('pglite', 'in-process PGlite (memory://)', version, '', dbName, undefined, pglite, db, admin);
    }

    const envVar = dialect === 'mysql' ? 'MYSQL_URL' : 'POSTGRES_URL';
    let url = process.env[envVar]?.trim() ?? '';
    let server: ThrowawayServer | undefined;
    let source = envVar;
    if (!url) {
      const startedAt = performance.now();
      server = dialect === 'mysql' ? await startMariaDb() : await startPostgres();
      url = server.url;
      source = `throwaway ${server.label} (started in ${((performance.now() - startedAt) / 1000).toFixed(1)} s)`;
    }
    try {
      const dbUrl = databaseUrl(dialect, url, dbName);
      const root = dialect === 'mysql' ? await mysqlRawPool(url, 1) : await postgresRawPool(url, 1);
      try {
        await root.query(`CREATE DATABASE ${dbName}`);
      } finally {
        await root.end();
      }
      const admin = dialect === 'mysql' ? await mysqlRawPool(dbUrl, 1) : await postgresRawPool(dbUrl, 1);
      const bench = new BenchDatabase(dialect, source, '', url, dbName, server, undefined, undefined, admin);
      const db = bench.kysely(1);
      try {
        await migrateToLatest(db);
      } finally {
        await db.destroy();
      }
      bench.version = String((await admin.query('SELECT version() AS v')).rows[0]?.v);
      return bench;
    } catch (error) {
      await server?.stop();
      throw error;
    }
  }

  /** PGlite is one connection in-process: every "pool" is that connection, whatever its size. */
  get singleConnection(): boolean {
    return this.dialect === 'pglite';
  }

  /**
   * A Kysely instance over a pool of `connections` (mysql2 `connectionLimit`, pg `max`), as a
   * host would configure it for the engine (`timezone: 'Z'` on mysql2). Close it with
   * {@link closeKysely}. On PGlite every call returns the same instance.
   */
  kysely(connections: number, options: { log?: (event: LogEvent) => void } = {}): Kysely<any> {
    const log = options.log ? { log: options.log } : {};
    if (this.pglite) return options.log ? new Kysely<any>({ dialect: new PGliteDialect(this.pglite), ...log }) : this.pgliteDb!;
    const url = databaseUrl(this.dialect, this.url, this.dbName);
    if (this.dialect === 'mysql') {
      return new Kysely<any>({ dialect: new MysqlDialect({ pool: mysqlCallbackPool(url, connections) }), ...log });
    }
    return new Kysely<any>({ dialect: new PostgresDialect({ pool: postgresPool(url, connections) }), ...log });
  }

  async closeKysely(db: Kysely<any>): Promise<void> {
    // A PGlite Kysely instance would close the shared PGlite: only the run's end does that.
    if (!this.pglite) await db.destroy();
  }

  /**
   * A raw driver pool of `connections` connections (mysql2, pg). On PGlite, always the same
   * one connection behind one mutex, so that callers' transactions never interleave.
   */
  async raw(connections: number): Promise<RawPool> {
    if (this.pglite) return this.admin;
    const url = databaseUrl(this.dialect, this.url, this.dbName);
    return this.dialect === 'mysql' ? mysqlRawPool(url, connections) : postgresRawPool(url, connections);
  }

  /** Empties every table and restarts the identity counters. */
  async reset(): Promise<void> {
    if (this.dialect === 'mysql') {
      for (const table of TABLES) await this.admin.query(`TRUNCATE TABLE ${table}`);
    } else {
      await this.admin.query(`TRUNCATE TABLE ${TABLES.join(', ')} RESTART IDENTITY`);
    }
  }

  async count(sqlText: string, params: unknown[] = []): Promise<number> {
    const { rows } = await this.admin.query(sqlText, params);
    const row = rows[0] as Record<string, unknown> | undefined;
    return Number(row ? Object.values(row)[0] : 0);
  }

  /** `?` placeholders → `$1, $2…` on PostgreSQL. */
  sql(text: string): string {
    return placeholders(this.dialect, text);
  }

  /** Server settings worth writing next to the numbers. */
  async settings(): Promise<Record<string, string>> {
    if (this.dialect !== 'mysql') {
      if (this.dialect === 'pglite') return {};
      const names = ['fsync', 'synchronous_commit', 'shared_buffers', 'max_connections'];
      const out: Record<string, string> = {};
      for (const name of names) out[name] = String((await this.admin.query(`SHOW ${name}`)).rows[0]?.[name]);
      return out;
    }
    const { rows } = await this.admin.query(
      `SHOW GLOBAL VARIABLES WHERE Variable_name IN ('innodb_buffer_pool_size', 'innodb_flush_log_at_trx_commit', 'log_bin', 'transaction_isolation', 'tx_isolation', 'innodb_lock_wait_timeout', 'sync_binlog')`,
    );
    return Object.fromEntries(rows.map((r: any) => [r.Variable_name, String(r.Value)]));
  }

  /**
   * Server-side counters for one variant (MySQL/MariaDB only): statements received, InnoDB
   * row-lock waits and time, and the server process's CPU time when it runs on this machine.
   */
  async counters(): Promise<ServerCounters | undefined> {
    if (this.dialect !== 'mysql') return undefined;
    const { rows } = await this.admin.query(
      `SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Innodb_row_lock_waits', 'Innodb_row_lock_time', 'Com_commit', 'Com_begin')`,
    );
    const status = Object.fromEntries(rows.map((r: any) => [r.Variable_name, Number(r.Value)]));
    return {
      statements: status.Questions ?? 0,
      rowLockWaits: status.Innodb_row_lock_waits ?? 0,
      rowLockTimeMs: status.Innodb_row_lock_time ?? 0,
      commits: status.Com_commit ?? 0,
      serverCpuMs: await this.serverCpuMs(),
    };
  }

  #serverPid: number | null | undefined;
  private async serverCpuMs(): Promise<number | undefined> {
    if (this.#serverPid === undefined) {
      this.#serverPid = null;
      try {
        const file = String((await this.admin.query('SELECT @@pid_file AS f')).rows[0]?.f ?? '');
        const pid = Number(readFileSync(file, 'utf8').trim());
        const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        if (/mysqld|mariadbd/.test(comm)) this.#serverPid = pid;
      } catch {
        // Remote server or no /proc: no server CPU numbers.
      }
    }
    if (!this.#serverPid || !existsSync(`/proc/${this.#serverPid}/stat`)) return undefined;
    const stat = readFileSync(`/proc/${this.#serverPid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat (1-based), in clock ticks (100 Hz).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  }

  async close(): Promise<void> {
    if (this.pgliteDb) {
      await this.pgliteDb.destroy();
      return;
    }
    await this.admin.end();
    try {
      const root = this.dialect === 'mysql' ? await mysqlRawPool(this.url, 1) : await postgresRawPool(this.url, 1);
      try {
        await root.query(this.dialect === 'mysql' ? `DROP DATABASE IF EXISTS ${this.dbName}` : `DROP DATABASE IF EXISTS ${this.dbName} WITH (FORCE)`);
      } finally {
        await root.end();
      }
    } finally {
      await this.server?.stop();
    }
  }
}

export interface ServerCounters {
  statements: number;
  rowLockWaits: number;
  rowLockTimeMs: number;
  commits: number;
  serverCpuMs: number | undefined;
}

export function placeholders(dialect: DialectName, text: string): string {
  if (dialect === 'mysql') return text;
  let n = 0;
  return text.replace(/\?/g, () => `$${++n}`);
}

function databaseUrl(dialect: DialectName, url: string, dbName: string): string {
  const u = new URL(url);
  u.pathname = `/${dbName}`;
  return u.toString();
}

function mysqlCallbackPool(url: string, connections: number) {
  const pool = mysqlCallback.createPool({ uri: url, connectionLimit: connections, timezone: 'Z' });
  // A connection the server closes (the throwaway server stopping) is reported, not a crash.
  pool.on('connection', (connection) => connection.on('error', () => {}));
  return pool;
}

function postgresPool(url: string, connections: number) {
  const pool = new pg.Pool({ connectionString: url, max: connections });
  // An idle client the server terminates (the throwaway server stopping, 57P01) is not a crash.
  pool.on('error', () => {});
  return pool;
}
