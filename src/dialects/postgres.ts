import { sql } from 'kysely';
import type { SqlDialect } from './dialect.js';

const UNIQUE_VIOLATION = '23505';
const RETRYABLE = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (lock_timeout)
]);

function sqlState(error: unknown): string | undefined {
  const value = (error as { code?: unknown } | null)?.code;
  return typeof value === 'string' ? value : undefined;
}

/** @internal PostgreSQL ≥ 13 through Kysely's PostgresDialect (pg) or PGliteDialect. */
export const postgresDialect: SqlDialect = Object.freeze({
  name: 'postgres',

  isDuplicateKey: (error: unknown) => sqlState(error) === UNIQUE_VIOLATION,
  isRetryable: (error: unknown) => RETRYABLE.has(sqlState(error) ?? ''),

  async insertItem(db, values) {
    const row = await db.insertInto('items').values(values).returning('id').executeTakeFirstOrThrow();
    return Number(row.id);
  },

  parseJson: (value: unknown) => (typeof value === 'string' ? JSON.parse(value) : value),
  serializeJson: (value: unknown) => JSON.stringify(value),

  schema: Object.freeze({
    timestamp: sql`timestamptz(3)`,
    uuid: 'uuid',
    asciiKey: 'varchar(64)',
    shortText: 'varchar(255)',
    json: 'jsonb',
    identity: (column) => column.generatedByDefaultAsIdentity().primaryKey(),
    table: (builder) => builder,
  }),
} satisfies SqlDialect);
