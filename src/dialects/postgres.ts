import { type Kysely, sql } from 'kysely';
import type { Database } from '../types.js';
import type { NewReservation, ReserveOutcome, SqlDialect } from './dialect.js';

const UNIQUE_VIOLATION = '23505';
const RETRYABLE = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (lock_timeout)
]);

/**
 * The connection died, the server is shutting down or a timeout cancelled the work: whatever was
 * in flight may or may not have committed. SQLSTATE class 08 (connection exception),
 * 57P01–57P03 (admin/crash shutdown, cannot connect now), 57014 (query_canceled: statement
 * timeout), 25P03 (idle-in-transaction timeout).
 */
const CONNECTION_STATES = new Set(['57P01', '57P02', '57P03', '57014', '25P03']);
const NODE_CONNECTION_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

function sqlState(error: unknown): string | undefined {
  const value = (error as { code?: unknown } | null)?.code;
  return typeof value === 'string' ? value : undefined;
}

function isConnectionError(error: unknown): boolean {
  if (!error || typeof error !== 'object') return false;
  const code = sqlState(error) ?? '';
  if (code.startsWith('08') || CONNECTION_STATES.has(code) || NODE_CONNECTION_CODES.has(code)) return true;
  // pg reports a dropped connection without a code.
  return /connection terminated|connection error and is not queryable|not queryable|timeout exceeded when trying to connect|connection timeout/i.test(
    String((error as { message?: unknown }).message ?? ''),
  );
}

/**
 * One statement, so one implicit transaction: the decrement takes the item's row lock and the
 * inserts run only if it found stock; the lock is released when the statement commits, without
 * a client round trip in between. It runs only at READ COMMITTED (under a stricter default it
 * changes nothing and says so), so a host's default isolation never turns contention into
 * serialization failures.
 */
async function reserveStatement(db: Kysely<Database>, r: NewReservation): Promise<ReserveOutcome | 'not read committed'> {
  const { rows } = await sql<{ reserved: number; available: number | null; read_committed: boolean }>`
    with decrement as (
      update ${sql.table('items')} set available_quantity = available_quantity - ${r.quantity}::int, held_quantity = held_quantity + ${r.quantity}::int,
        updated_at = ${r.now}::timestamptz
      where id = ${r.itemId}::int and available_quantity >= ${r.quantity}::int
        and current_setting('transaction_isolation') = 'read committed'
      returning id
    ), idempotency as (
      insert into ${sql.table('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
      select ${r.idempotencyScope}, ${r.idempotencyKey}, ${r.payloadHash}, ${r.id}::uuid, ${r.now}::timestamptz from decrement
    ), reservation as (
      insert into ${sql.table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
      select ${r.id}::uuid, ${r.itemId}::int, ${r.quantity}::int, 'PENDING', ${r.idempotencyScope}, ${r.idempotencyKey}, ${r.expiresAt}::timestamptz, ${r.now}::timestamptz, ${r.now}::timestamptz
      from decrement
    ), event as (
      insert into ${sql.table('outbox')} (type, payload, created_at, available_at, attempts)
      select 'reservation.created', ${r.eventPayload}::jsonb, ${r.now}::timestamptz, ${r.now}::timestamptz, 0 from decrement
    )
    select (select count(*) from decrement)::int as reserved,
           (select available_quantity from ${sql.table('items')} where id = ${r.itemId}::int) as available,
           current_setting('transaction_isolation') = 'read committed' as read_committed`.execute(db);
  const row = rows[0];
  if (!row) throw new Error('reserve statement returned no row');
  if (!row.read_committed) return 'not read committed';
  return Number(row.reserved) === 1 ? { reserved: true } : { reserved: false, available: row.available === null ? null : Number(row.available) };
}

/** @internal PostgreSQL ≥ 13 through Kysely's PostgresDialect (pg) or PGliteDialect. */
export const postgresDialect: SqlDialect = Object.freeze({
  name: 'postgres',

  isDuplicateKey: (error: unknown) => sqlState(error) === UNIQUE_VIOLATION,
  isRetryable: (error: unknown) => RETRYABLE.has(sqlState(error) ?? ''),
  isConnectionError,

  async insertItem(db, values) {
    return db.insertInto('items').values(values).returningAll().executeTakeFirstOrThrow();
  },

  // Values travel apart from the SQL text: no session setting can change how they are read.
  verifySession: async () => {},

  async reserve(db, _names, r) {
    const outcome = await reserveStatement(db, r);
    if (outcome !== 'not read committed') return outcome;
    // The session's default isolation is stricter (a host's REPEATABLE READ or SERIALIZABLE):
    // the statement changed nothing; run it again in a transaction at the level it was designed for.
    return db
      .transaction()
      .setIsolationLevel('read committed')
      .execute(async (trx) => (await reserveStatement(trx, r)) as ReserveOutcome);
  },

  createRoutines: async () => {},
  dropRoutines: async () => {},

  parseJson: (value: unknown) => (typeof value === 'string' ? JSON.parse(value) : value),
  serializeJson: (value: unknown) => JSON.stringify(value),

  schema: Object.freeze({
    timestamp: sql`timestamptz(3)`,
    uuid: 'uuid',
    asciiKey: 'varchar(255)',
    shortText: 'varchar(255)',
    json: 'jsonb',
    identity: (column) => column.generatedByDefaultAsIdentity().primaryKey(),
    table: (builder) => builder,
  }),
} satisfies SqlDialect);
