/**
 * The raw drivers behind the baselines, under one small interface: mysql2
 * (`pool.getConnection()`, `conn.query(sql, params)` — the callback API and text protocol
 * Kysely's MysqlDialect uses), pg (`pool.connect()`, `client.query`), and PGlite (its one connection,
 * handed to one caller at a time so that transactions do not interleave).
 */
import mysql from 'mysql2';
import pg from 'pg';
import { DEFAULT_TABLE_PREFIX, type PGliteLike } from '../../src/index.js';

/**
 * The engine keeps its tables under a prefix (`reservation_engine_items`, …); the baselines'
 * SQL names them as the engine's queries do (`items`, …), and this puts the prefix in.
 */
export function prefixTables(sql: string): string {
  return sql.replace(/\b(items|reservations|reservation_lines|idempotency_requests|restock_requests|outbox)\b/g, `${DEFAULT_TABLE_PREFIX}$1`);
}

export interface RawResult {
  rows: any[];
  /** Rows changed by INSERT/UPDATE/DELETE (mysql2 `affectedRows`, pg `rowCount`). */
  affectedRows: number;
}

export interface RawConnection {
  query(sql: string, params?: unknown[]): Promise<RawResult>;
}

export interface RawPool {
  /** Runs `fn` on one connection taken from the pool, and gives it back. */
  withConnection<T>(fn: (connection: RawConnection) => Promise<T>): Promise<T>;
  /** One statement on any free connection (autocommit). */
  query(sql: string, params?: unknown[]): Promise<RawResult>;
  end(): Promise<void>;
}

export async function mysqlRawPool(url: string, connections: number): Promise<RawPool> {
  // The callback API, promisified per call exactly as Kysely's MysqlDialect does: mysql2/promise
  // would add a stack capture per query (captureStackHolder) that Kysely does not pay.
  const pool = mysql.createPool({ uri: url, connectionLimit: connections, timezone: 'Z' });
  pool.on('connection', (connection) => connection.on('error', () => {}));
  const wrap = (conn: mysql.PoolConnection | mysql.Pool): RawConnection => ({
    query: (sql, params) =>
      new Promise((resolve, reject) => {
        conn.query(prefixTables(sql), params, (error, result) => {
          if (error) reject(error);
          else if (Array.isArray(result)) resolve({ rows: result, affectedRows: 0 });
          else resolve({ rows: [], affectedRows: (result as mysql.ResultSetHeader).affectedRows });
        });
      }),
  });
  const poolConnection = wrap(pool);
  return {
    withConnection: (fn) =>
      new Promise<mysql.PoolConnection>((resolve, reject) => pool.getConnection((error, conn) => (error ? reject(error) : resolve(conn)))).then(async (conn) => {
        try {
          return await fn(wrap(conn));
        } finally {
          conn.release();
        }
      }),
    query: (sql, params) => poolConnection.query(sql, params),
    end: () => new Promise<void>((resolve, reject) => pool.end((error) => (error ? reject(error) : resolve()))),
  };
}

export async function postgresRawPool(url: string, connections: number): Promise<RawPool> {
  const pool = new pg.Pool({ connectionString: url, max: connections });
  // An idle client the server terminates (the throwaway server stopping, 57P01) is not a crash.
  pool.on('error', () => {});
  const wrap = (client: pg.PoolClient | pg.Pool): RawConnection => ({
    async query(sql, params) {
      const result = await client.query(prefixTables(sql), params as unknown[] | undefined);
      return { rows: result.rows, affectedRows: result.rowCount ?? 0 };
    },
  });
  const poolConnection = wrap(pool);
  return {
    async withConnection(fn) {
      const client = await pool.connect();
      try {
        return await fn(wrap(client));
      } finally {
        client.release();
      }
    },
    query: (sql, params) => poolConnection.query(sql, params),
    end: () => pool.end(),
  };
}

/** PGlite's single connection behind a FIFO mutex: one transaction at a time, as PGliteDialect does. */
export function pgliteRawPool(pglite: PGliteLike): RawPool {
  let queue: Promise<void> = Promise.resolve();
  const connection: RawConnection = {
    async query(sql, params) {
      const result = await pglite.query<any>(prefixTables(sql), params, { rowMode: 'object' });
      return { rows: result.rows, affectedRows: result.affectedRows ?? 0 };
    },
  };
  const withConnection = async <T>(fn: (c: RawConnection) => Promise<T>): Promise<T> => {
    const previous = queue;
    let release!: () => void;
    queue = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await fn(connection);
    } finally {
      release();
    }
  };
  return {
    withConnection,
    query: (sql, params) => withConnection((c) => c.query(sql, params)),
    // The PGlite instance belongs to BenchDatabase, which closes it.
    end: async () => {},
  };
}
