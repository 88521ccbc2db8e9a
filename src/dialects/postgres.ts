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

  async reserve(db, r) {
    // One statement, so one implicit transaction: the decrement takes the item's row lock and the
    // inserts run only if it found stock; the lock is released when the statement commits,
    // without a client round trip in between.
    const { rows } = await sql<{ reserved: number; available: number | null }>`
      with decrement as (
        update items set available_quantity = available_quantity - ${r.quantity}::int, updated_at = ${r.now}::timestamptz
        where id = ${r.itemId}::int and available_quantity >= ${r.quantity}::int
        returning id
      ), idempotency as (
        insert into idempotency_requests (idempotency_key, payload_hash, reservation_id, created_at)
        select ${r.idempotencyKey}, ${r.payloadHash}, ${r.id}::uuid, ${r.now}::timestamptz from decrement
      ), reservation as (
        insert into reservations (id, item_id, quantity, status, idempotency_key, expires_at, created_at, updated_at)
        select ${r.id}::uuid, ${r.itemId}::int, ${r.quantity}::int, 'PENDING', ${r.idempotencyKey}, ${r.expiresAt}::timestamptz, ${r.now}::timestamptz, ${r.now}::timestamptz
        from decrement
      ), event as (
        insert into outbox (type, payload, created_at, available_at, attempts)
        select 'reservation.created', ${r.eventPayload}::jsonb, ${r.now}::timestamptz, ${r.now}::timestamptz, 0 from decrement
      )
      select (select count(*) from decrement)::int as reserved,
             (select available_quantity from items where id = ${r.itemId}::int) as available`.execute(db);
    const row = rows[0];
    if (!row) throw new Error('reserve statement returned no row');
    return Number(row.reserved) === 1 ? { reserved: true } : { reserved: false, available: row.available === null ? null : Number(row.available) };
  },

  createRoutines: async () => {},
  dropRoutines: async () => {},

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
