import { randomBytes } from 'node:crypto';
import { CompiledQuery, Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, inject } from 'vitest';
import { migrateToLatest, PGliteDialect } from '../../src/index.js';
import { schemaNames, TablePrefixPlugin } from '../../src/schema/tables.js';
import { acquireMigratedPGlite, newPGlite, releaseMigratedPGlite } from './pglite.js';

/**
 * Tests name the engine's tables as its queries do (`items`, `outbox`, …): the test databases'
 * Kysely instances carry the default table prefix, as the engine's own do.
 */
const withPrefix = (db: Kysely<any>): Kysely<any> => db.withPlugin(new TablePrefixPlugin(schemaNames()));

export type DialectName = 'mysql' | 'postgres' | 'pglite';
export interface DialectTarget {
  name: DialectName;
  url: string;
}

export interface ConnectOptions {
  /** How long a statement waits for a row lock before the database gives up (MySQL rounds up to seconds). */
  lockTimeoutMs?: number;
  /** The connections' default transaction isolation, as a host might set it. */
  isolation?: 'repeatable read' | 'serializable';
  /** MySQL only: the connections' sql_mode, as a host might set it. */
  sqlMode?: string;
}

/** The dialects this run tests, as decided by test/global-setup.ts. */
export const DIALECTS: DialectTarget[] = inject('dialects');

/** A new PGlite cluster in memory, as `new PGlite('memory://')` makes it (from a template: faster). */
export const freshPGlite = newPGlite;

/** A fresh, migrated database for one test file and dialect, emptied before each test. */
export class TestDatabase {
  #db: Kysely<any> | undefined;
  #drop: (() => Promise<void>) | undefined;
  #url: string | undefined;
  #connect: ((poolSize: number, options?: ConnectOptions) => Kysely<any>) | undefined;
  readonly #extra: Kysely<any>[] = [];

  constructor(readonly target: DialectTarget) {}

  get name(): DialectName {
    return this.target.name;
  }

  /** The URL of this file's database (server dialects: PGlite in memory has none), for child processes. */
  get url(): string {
    if (!this.#url) throw new Error(`TestDatabase for ${this.name} has no URL`);
    return this.#url;
  }

  get db(): Kysely<any> {
    if (!this.#db) throw new Error('TestDatabase used before setup');
    return this.#db;
  }

  /** Another Kysely instance (its own pool) on the same database, with the table prefix; closed at teardown. */
  connect(poolSize = 10, options?: ConnectOptions): Kysely<any> {
    return withPrefix(this.connectRaw(poolSize, options));
  }

  /** Another Kysely instance as a host has it: its own pool, no plugins; closed at teardown. */
  connectRaw(poolSize = 10, options?: ConnectOptions): Kysely<any> {
    if (!this.#connect) throw new Error('TestDatabase used before setup');
    const db = this.#connect(poolSize, options);
    this.#extra.push(db);
    return db;
  }

  async setup(): Promise<void> {
    const dbName = `t_${randomBytes(6).toString('hex')}`;
    if (this.target.name === 'mysql') {
      const mysql = await import('mysql2');
      const admin = mysql.createPool({ uri: this.target.url, connectionLimit: 1 });
      await admin.promise().query(`CREATE DATABASE ${dbName}`);
      await admin.promise().end();
      const url = new URL(this.target.url);
      url.pathname = `/${dbName}`;
      this.#url = url.toString();
      this.#connect = (poolSize, options = {}) => {
        const session = [
          options.lockTimeoutMs && `SET SESSION innodb_lock_wait_timeout = ${Math.ceil(options.lockTimeoutMs / 1000)}`,
          options.isolation && `SET SESSION TRANSACTION ISOLATION LEVEL ${options.isolation.toUpperCase()}`,
          options.sqlMode !== undefined && `SET SESSION sql_mode = '${options.sqlMode}'`,
        ].filter((statement): statement is string => typeof statement === 'string');
        const pool = mysql.createPool({ uri: this.target.url, database: dbName, connectionLimit: poolSize, timezone: 'Z' });
        // As a host must: a connection that dies while idle or in use is reported, not a crash.
        pool.on('connection', (connection) => connection.on('error', () => {}));
        return new Kysely({
          dialect: new MysqlDialect({
            pool,
            onCreateConnection:
              session.length > 0
                ? async (connection) => {
                    for (const statement of session) await connection.executeQuery(CompiledQuery.raw(statement));
                  }
                : undefined,
          }),
        });
      };
      this.#drop = async () => {
        const pool = mysql.createPool({ uri: this.target.url, connectionLimit: 1 });
        await pool.promise().query(`DROP DATABASE IF EXISTS ${dbName}`);
        await pool.promise().end();
      };
    } else if (this.target.name === 'postgres') {
      const { default: pg } = await import('pg');
      const admin = new pg.Client({ connectionString: this.target.url });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${dbName}`);
      await admin.end();
      const url = new URL(this.target.url);
      url.pathname = `/${dbName}`;
      this.#url = url.toString();
      this.#connect = (poolSize, options = {}) => {
        const settings = [
          options.lockTimeoutMs && `-c lock_timeout=${options.lockTimeoutMs}`,
          options.isolation && `-c default_transaction_isolation=${options.isolation.replace(' ', '\\ ')}`,
        ].filter(Boolean);
        const pool = new pg.Pool({ connectionString: url.toString(), max: poolSize, ...(settings.length > 0 ? { options: settings.join(' ') } : {}) });
        // As a host must: a connection that dies while idle or checked out is reported, not a crash.
        pool.on('error', () => {});
        pool.on('connect', (client) => client.on('error', () => {}));
        return new Kysely({ dialect: new PostgresDialect({ pool }) });
      };
      this.#drop = async () => {
        const client = new pg.Client({ connectionString: this.target.url });
        await client.connect();
        await client.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        await client.end();
      };
    } else {
      // Migrated, as createEmbeddedDatabase() makes it; maybe the previous test file's, emptied.
      const pglite = await acquireMigratedPGlite();
      const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) });
      // One PGlite instance is one database: every "connection" shares it.
      this.#connect = () => db;
      this.#db = withPrefix(db);
      // Not db.destroy(): that closes the PGlite, which the next test file may reuse.
      this.#drop = () => releaseMigratedPGlite(pglite);
      return;
    }
    this.#db = withPrefix(this.#connect(50));
    await migrateToLatest(this.#db);
  }

  /** Empties every table. */
  async reset(): Promise<void> {
    for (const table of ['outbox', 'reservation_lines', 'idempotency_requests', 'restock_requests', 'reservations', 'items']) {
      await this.db.deleteFrom(table).execute();
    }
  }

  async teardown(): Promise<void> {
    if (this.target.name !== 'pglite') {
      for (const db of this.#extra) await db.destroy();
      await this.#db?.destroy();
    }
    await this.#drop?.();
  }

  /** Rows of a table, for assertions. */
  async count(table: string, where?: (qb: any) => any): Promise<number> {
    let q = this.db.selectFrom(table).select(sql<number>`count(*)`.as('n'));
    if (where) q = where(q);
    const row = await q.executeTakeFirstOrThrow();
    return Number(row.n);
  }
}

/**
 * Declares the suite once per dialect: `t.db` is a fresh migrated database for the file,
 * emptied before every test.
 */
export function describeEachDialect(
  name: string,
  body: (t: TestDatabase) => void,
  targets: DialectTarget[] = DIALECTS,
  options: { concurrent?: boolean } = {},
): void {
  for (const target of targets) {
    describe(`${name} [${target.name}]`, { concurrent: options.concurrent }, () => {
      const t = new TestDatabase(target);
      beforeAll(() => t.setup(), 120_000);
      afterAll(() => t.teardown(), 60_000);
      beforeEach(() => t.reset());
      body(t);
    });
  }
}

/**
 * Like {@link describeEachDialect}, the dialects' suites running at the same time as each other
 * and as the file's other concurrent tests: for tests that mostly wait for child processes.
 */
export function describeEachDialectConcurrently(name: string, body: (t: TestDatabase) => void): void {
  describeEachDialect(name, body, DIALECTS, { concurrent: true });
}

/** Like {@link describeEachDialect}, for behaviour that needs several real connections (not PGlite's one). */
export function describeEachServerDialect(name: string, body: (t: TestDatabase) => void): void {
  describeEachDialect(name, body, DIALECTS.filter((d) => d.name !== 'pglite'));
}

/** A unique key or SKU for one test. */
export function unique(prefix = 'k'): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** Runs `fn` and returns the error it throws (failing the test if it does not throw). */
export async function caught(fn: () => Promise<unknown>): Promise<any> {
  try {
    await fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error, but the call succeeded');
}
