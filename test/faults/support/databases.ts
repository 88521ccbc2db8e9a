/**
 * The fault scenarios' databases, as a host has them: a raw Kysely over a real pool (mysql2 or
 * pg, no table-prefix plugin), a database of its own per scenario and dialect, and an admin
 * session that ends the engine's connections as an operator (or a failover) would.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import mysqlPromise from 'mysql2/promise';
import pg from 'pg';
import { inject } from 'vitest';
import { migrateToLatest } from '../../../src/index.js';

export type ServerDialect = 'mysql' | 'postgres';

export interface ServerTarget {
  readonly name: ServerDialect;
  /** The server's URL (no database for MySQL, the `postgres` database for PostgreSQL). */
  readonly url: string;
}

/** The servers of this run (../global-setup.ts), MariaDB and PostgreSQL. */
export const SERVERS: readonly ServerTarget[] = inject('dialects').filter((d): d is ServerTarget => d.name === 'mysql' || d.name === 'postgres');

/** `url` with its port replaced: to go through a proxy. */
export function viaPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

/** Creates a database of its own on the server and migrates it; resolves with its URL. */
export async function createDatabase(target: ServerTarget): Promise<string> {
  const name = `faults_${randomBytes(5).toString('hex')}`;
  const url = new URL(target.url);
  if (target.name === 'mysql') {
    const admin = await mysqlPromise.createConnection({ uri: target.url });
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
  } else {
    const admin = new pg.Client({ connectionString: target.url });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
  }
  url.pathname = `/${name}`;
  const db = connect(target.name, url.toString(), 2);
  try {
    await migrateToLatest(db);
  } finally {
    await db.destroy();
  }
  return url.toString();
}

/** A host's Kysely on `url`: a pool of `poolSize`, whose dying connections are reported, not a crash. */
export function connect(dialect: ServerDialect, url: string, poolSize: number): Kysely<any> {
  if (dialect === 'mysql') {
    const pool = mysql.createPool({ uri: url, connectionLimit: poolSize, timezone: 'Z', connectTimeout: 5_000 });
    pool.on('connection', (connection) => connection.on('error', () => {}));
    return new Kysely({ dialect: new MysqlDialect({ pool }) });
  }
  const pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return new Kysely({ dialect: new PostgresDialect({ pool }) });
}

/** A session of our own that ends other sessions on the same database. */
export interface AdminSession {
  /** Ends one random other session on the database; resolves with whether there was one to end. */
  killRandomSession(): Promise<boolean>;
  /**
   * Cancels the statement one random other session is running (MariaDB `KILL QUERY`, PostgreSQL
   * `pg_cancel_backend`): the session lives on. Resolves with whether one was running.
   */
  cancelRandomStatement(): Promise<boolean>;
  close(): Promise<void>;
}

export async function openAdmin(dialect: ServerDialect, url: string): Promise<AdminSession> {
  if (dialect === 'mysql') {
    const connection = await mysqlPromise.createConnection({ uri: url });
    connection.on('error', () => {});
    return {
      async killRandomSession() {
        const [rows] = await connection.query<mysqlPromise.RowDataPacket[]>('SELECT id FROM information_schema.processlist WHERE db = database() AND id <> connection_id()');
        if (rows.length === 0) return false;
        const { id } = rows[Math.floor(Math.random() * rows.length)]!;
        // It may have ended on its own meanwhile: "Unknown thread id".
        return connection.query(`KILL CONNECTION ${Number(id)}`).then(
          () => true,
          () => false,
        );
      },
      async cancelRandomStatement() {
        const [rows] = await connection.query<mysqlPromise.RowDataPacket[]>(
          `SELECT id FROM information_schema.processlist WHERE db = database() AND id <> connection_id() AND command = 'Query'`,
        );
        if (rows.length === 0) return false;
        const { id } = rows[Math.floor(Math.random() * rows.length)]!;
        return connection.query(`KILL QUERY ${Number(id)}`).then(
          () => true,
          () => false,
        );
      },
      close: () => connection.end().catch(() => {}),
    };
  }
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  return {
    async killRandomSession() {
      const { rows } = await client.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
      );
      if (rows.length === 0) return false;
      const { pid } = rows[Math.floor(Math.random() * rows.length)];
      const result = await client.query('SELECT pg_terminate_backend($1) AS ended', [pid]);
      return result.rows[0]?.ended === true;
    },
    async cancelRandomStatement() {
      const { rows } = await client.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state = 'active'`,
      );
      if (rows.length === 0) return false;
      const { pid } = rows[Math.floor(Math.random() * rows.length)];
      const result = await client.query('SELECT pg_cancel_backend($1) AS cancelled', [pid]);
      return result.rows[0]?.cancelled === true;
    },
    close: () => client.end().catch(() => {}),
  };
}
