import { CompiledQuery, type Kysely, sql } from 'kysely';
import type { LogicalTable, SchemaNames } from '../schema/tables.js';
import type { Database } from '../types.js';
import { inTransaction } from '../transaction.js';
import { readShortLines } from '../stock/short-lines.js';
import {
  CommitFailedError,
  endOwnSession,
  type NewReservation,
  type ReserveLinesRow,
  type RoutineVersion,
  type ReserveOutcome,
  type ReserveRow,
  reserveLinesOutcome,
  reserveOutcome,
  shortOutcome,
  type SqlDialect,
} from './dialect.js';

/** Whether `db` runs on PGlite (by its adapter's class name, as `dialectOf` tells databases apart). */
function isEmbedded(db: Kysely<any>): boolean {
  for (let proto = Object.getPrototypeOf(db.getExecutor().adapter); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    if (/^PGlite/i.test(proto.constructor?.name ?? '')) return true;
  }
  return false;
}

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
const CONNECTION_STATES = new Set([
  '57P01', // admin_shutdown (pg_terminate_backend, fast shutdown)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, in recovery)
  '57P05', // idle_session_timeout
  '57014', // query_canceled (statement_timeout)
  '25P03', // idle_in_transaction_session_timeout
  '25006', // read_only_sql_transaction: a standby (after a failover, the old primary as a replica)
  '53300', // too_many_connections
  '58P01', '58000', // system errors (an I/O failure on the server)
]);
const NODE_CONNECTION_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

function sqlState(error: unknown): string | undefined {
  const value = (error as { code?: unknown } | null)?.code;
  return typeof value === 'string' ? value : undefined;
}

function isConnectionError(error: unknown): boolean {
  if (!error || typeof error !== 'object') return false;
  if (error instanceof CommitFailedError) return true;
  const code = sqlState(error) ?? '';
  if (code.startsWith('08') || CONNECTION_STATES.has(code) || NODE_CONNECTION_CODES.has(code)) return true;
  // pg reports a dropped connection without a code.
  return /connection terminated|connection error and is not queryable|not queryable|timeout exceeded when trying to connect|connection timeout/i.test(
    String((error as { message?: unknown }).message ?? ''),
  );
}

/** The function {@link SqlDialect.reserve} calls. */
const RESERVE_ROUTINE = 'reserve_or_replay';
/** Raised by the function when its decrement lost the race for the last units (all rolled back). */
const LOST_RACE = 'RE001';

/**
 * A whole reserve, server-side (see {@link SqlDialect.reserve} for the steps), as a PL/pgSQL
 * function: its statements are planned once per session, and a call is one short statement.
 * The decrement runs last, so the item's row lock is held only until the COMMIT of the calling
 * statement. When it loses the race for the last units the function raises, which rolls back
 * its inserts with the statement. It writes only at READ COMMITTED (under a stricter default it
 * answers 'not read committed' and the client runs it again in a READ COMMITTED transaction), so
 * a host's default isolation never turns contention into serialization failures.
 */
function reserveFunction(names: SchemaNames, { traceContext }: RoutineVersion): string {
  const id = (name: string) => `"${name}"`;
  const table = (name: LogicalTable) => id(names.table(name));
  return `
create function ${id(names.object(RESERVE_ROUTINE))}(
  p_scope varchar, p_key varchar, p_hash varchar, p_id uuid, p_item_id int, p_quantity int,
  p_expires_at timestamptz, p_now timestamptz, p_payload jsonb${traceContext ? ', p_trace varchar' : ''})
returns table (outcome text, available int, payload_hash char(64), id uuid, item_id int, quantity int, status varchar,
  idempotency_scope varchar, idempotency_key varchar, expires_at timestamptz, created_at timestamptz, updated_at timestamptz)
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_available int;
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    return query select 'not read committed'::text, null::int, null::char(64), null::uuid, null::int, null::int, null::varchar,
      null::varchar, null::varchar, null::timestamptz, null::timestamptz, null::timestamptz;
    return;
  end if;
  -- Stock first, then the key: a same-key request that took the last units is a replay.
  select i.available_quantity into v_available from ${table('items')} i where i.id = p_item_id;
  return query select 'replay'::text, null::int, k.payload_hash, r.id, r.item_id, r.quantity, r.status,
      r.idempotency_scope, r.idempotency_key, r.expires_at, r.created_at, r.updated_at
    from ${table('idempotency_requests')} k join ${table('reservations')} r on r.id = k.reservation_id
    where k.idempotency_scope = p_scope and k.idempotency_key = p_key;
  if found then
    return;
  end if;
  if v_available is null or v_available < p_quantity then
    return query select case when v_available is null then 'missing' else 'insufficient' end, v_available, null::char(64), null::uuid,
      null::int, null::int, null::varchar, null::varchar, null::varchar, null::timestamptz, null::timestamptz, null::timestamptz;
    return;
  end if;
  insert into ${table('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
    values (p_scope, p_key, p_hash, p_id, p_now);
  insert into ${table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
    values (p_id, p_item_id, p_quantity, 'PENDING', p_scope, p_key, p_expires_at, p_now, p_now);
  insert into ${table('outbox')} (type, payload, created_at, available_at, attempts${traceContext ? ', trace_context' : ''})
    values ('reservation.created', p_payload, p_now, p_now, 0${traceContext ? ', p_trace' : ''});
  update ${table('items')} set available_quantity = available_quantity - p_quantity, held_quantity = held_quantity + p_quantity, updated_at = p_now
    where id = p_item_id and available_quantity >= p_quantity;
  if not found then
    raise exception using errcode = '${LOST_RACE}', message = 'reservation-engine: the stock went to a concurrent reserve';
  end if;
  return query select 'reserved'::text, null::int, null::char(64), null::uuid, null::int, null::int, null::varchar,
    null::varchar, null::varchar, null::timestamptz, null::timestamptz, null::timestamptz;
end
$fn$`;
}

/** The function {@link SqlDialect.reserveLines} calls (migration 0006). */
const RESERVE_LINES_ROUTINE = 'reserve_lines';

/**
 * A reserve of several items, server-side (see {@link SqlDialect.reserveLines}): the lines come
 * as two arrays in ascending item id. One plain read answers every short line at once
 * (`item:requested:available`, -1 for no such item); the decrements run one per line in the
 * arrays' order, and a lost race raises, which rolls back the whole statement.
 */
function reserveLinesFunction(names: SchemaNames): string {
  const id = (name: string) => `"${name}"`;
  const table = (name: LogicalTable) => id(names.table(name));
  const nothing = 'null::char(64), null::text, null::uuid, null::int, null::int, null::varchar, null::varchar, null::varchar, null::timestamptz, null::timestamptz, null::timestamptz';
  return `
create function ${id(names.object(RESERVE_LINES_ROUTINE))}(
  p_scope varchar, p_key varchar, p_hash varchar, p_id uuid, p_items int[], p_quantities int[], p_quantity int,
  p_expires_at timestamptz, p_now timestamptz, p_payload jsonb, p_trace varchar)
returns table (outcome text, short_lines text, payload_hash char(64), lines text, id uuid, item_id int, quantity int, status varchar,
  idempotency_scope varchar, idempotency_key varchar, expires_at timestamptz, created_at timestamptz, updated_at timestamptz)
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_short text;
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    return query select 'not read committed'::text, null::text, ${nothing};
    return;
  end if;
  -- Stock first, then the key (as reserve_or_replay): plain reads, no locks.
  select string_agg(l.item_id || ':' || l.quantity || ':' || coalesce(i.available_quantity, -1), ',' order by l.item_id) into v_short
    from unnest(p_items, p_quantities) as l(item_id, quantity) left join ${table('items')} i on i.id = l.item_id
    where i.id is null or i.available_quantity < l.quantity;
  return query select 'replay'::text, null::text, k.payload_hash,
      (select string_agg(x.item_id || ':' || x.quantity, ',' order by x.item_id) from ${table('reservation_lines')} x where x.reservation_id = r.id),
      r.id, r.item_id, r.quantity, r.status, r.idempotency_scope, r.idempotency_key, r.expires_at, r.created_at, r.updated_at
    from ${table('idempotency_requests')} k join ${table('reservations')} r on r.id = k.reservation_id
    where k.idempotency_scope = p_scope and k.idempotency_key = p_key;
  if found then
    return;
  end if;
  if v_short is not null then
    return query select 'insufficient'::text, v_short, ${nothing};
    return;
  end if;
  insert into ${table('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
    values (p_scope, p_key, p_hash, p_id, p_now);
  insert into ${table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
    values (p_id, null, p_quantity, 'PENDING', p_scope, p_key, p_expires_at, p_now, p_now);
  insert into ${table('reservation_lines')} (reservation_id, item_id, quantity)
    select p_id, l.item_id, l.quantity from unnest(p_items, p_quantities) as l(item_id, quantity);
  insert into ${table('outbox')} (type, payload, created_at, available_at, attempts, trace_context)
    values ('reservation.created', p_payload, p_now, p_now, 0, p_trace);
  -- One item at a time in ascending id: every writer locks items in this order.
  for v_i in 1 .. array_length(p_items, 1) loop
    update ${table('items')} set available_quantity = available_quantity - p_quantities[v_i], held_quantity = held_quantity + p_quantities[v_i], updated_at = p_now
      where id = p_items[v_i] and available_quantity >= p_quantities[v_i];
    if not found then
      raise exception using errcode = '${LOST_RACE}', message = 'reservation-engine: the stock went to a concurrent reserve';
    end if;
  end loop;
  return query select 'reserved'::text, null::text, ${nothing};
end
$fn$`;
}

async function callReserveLines(db: Kysely<Database>, names: SchemaNames, r: NewReservation): Promise<ReserveOutcome | 'not read committed'> {
  const query = CompiledQuery.raw(`select * from "${names.object(RESERVE_LINES_ROUTINE)}"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, [
    r.idempotencyScope,
    r.idempotencyKey,
    r.payloadHash,
    r.id,
    r.lines.map((line) => line.itemId),
    r.lines.map((line) => line.quantity),
    r.quantity,
    r.expiresAt,
    r.now,
    r.eventPayload,
    r.traceContext,
  ]);
  const row = (await db.executeQuery<ReserveLinesRow | { outcome: 'not read committed' }>(query)).rows[0];
  if (!row) throw new Error(`${names.object(RESERVE_LINES_ROUTINE)} returned no row`);
  return row.outcome === 'not read committed' ? row.outcome : reserveLinesOutcome(row);
}

async function callReserve(db: Kysely<Database>, names: SchemaNames, r: NewReservation): Promise<ReserveOutcome | 'not read committed'> {
  const query = CompiledQuery.raw(`select * from "${names.object(RESERVE_ROUTINE)}"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [
    r.idempotencyScope,
    r.idempotencyKey,
    r.payloadHash,
    r.id,
    r.itemId,
    r.quantity,
    r.expiresAt,
    r.now,
    r.eventPayload,
    r.traceContext,
  ]);
  const row = (await db.executeQuery<ReserveRow | { outcome: 'not read committed' }>(query)).rows[0];
  if (!row) throw new Error(`${names.object(RESERVE_ROUTINE)} returned no row`);
  return row.outcome === 'not read committed' ? row.outcome : reserveOutcome(row);
}

/** @internal PostgreSQL ≥ 13 through Kysely's PostgresDialect (pg) or PGliteDialect. */
export const postgresDialect: SqlDialect = Object.freeze({
  name: 'postgres',

  isDuplicateKey: (error: unknown) => sqlState(error) === UNIQUE_VIOLATION,
  isRetryable: (error: unknown) => RETRYABLE.has(sqlState(error) ?? ''),
  isConnectionError,

  beginReadCommitted: Object.freeze(['begin isolation level read committed']),
  // Ends the session, which rolls back its transaction. Not PGlite's one session, which is the
  // database itself (and whose ROLLBACK cannot fail for want of a network).
  endTransaction: (connection) => (isEmbedded(connection) ? Promise.resolve(false) : endOwnSession(connection, 'select pg_terminate_backend(pg_backend_pid())')),

  async insertItem(db, values) {
    return db.insertInto('items').values(values).returningAll().executeTakeFirstOrThrow();
  },

  // Values travel apart from the SQL text: no session setting can change how they are read.
  verifySession: async () => {},

  async reserve(db, names, r) {
    try {
      const outcome = await callReserve(db, names, r);
      if (outcome !== 'not read committed') return outcome;
      // The session's default isolation is stricter (a host's REPEATABLE READ or SERIALIZABLE):
      // the function changed nothing; call it again in a transaction at the level it was designed for.
      return await inTransaction(db, postgresDialect, async (trx) => (await callReserve(trx, names, r)) as ReserveOutcome);
    } catch (error) {
      if (sqlState(error) !== LOST_RACE) throw error;
      // The decrement lost the race for the last units; everything it wrote was rolled back.
      const item = await db.selectFrom('items').select('available_quantity').where('id', '=', r.itemId).executeTakeFirst();
      return item ? { kind: 'insufficient', available: Number(item.available_quantity) } : { kind: 'missing' };
    }
  },

  async reserveLines(db, names, r) {
    try {
      const outcome = await callReserveLines(db, names, r);
      if (outcome !== 'not read committed') return outcome;
      return await inTransaction(db, postgresDialect, async (trx) => (await callReserveLines(trx, names, r)) as ReserveOutcome);
    } catch (error) {
      if (sqlState(error) !== LOST_RACE) throw error;
      // A decrement lost the race for some units; everything was rolled back. Which lines are short now?
      return shortOutcome(await readShortLines(db, r.lines));
    }
  },

  async createLinesRoutine(db, names) {
    await sql.raw(reserveLinesFunction(names)).execute(db);
  },

  async dropLinesRoutine(db, names) {
    await sql`drop function if exists ${sql.id(names.object(RESERVE_LINES_ROUTINE))}`.execute(db);
  },

  async dropNotNull(db, table, column) {
    await db.schema.alterTable(table).alterColumn(column, (c) => c.dropNotNull()).execute();
  },

  beginSnapshot: Object.freeze(['begin isolation level repeatable read read only']),

  async createRoutines(db, names, version) {
    await sql.raw(reserveFunction(names, version)).execute(db);
  },

  async dropRoutines(db, names) {
    await sql`drop function if exists ${sql.id(names.object(RESERVE_ROUTINE))}`.execute(db);
  },

  // Before migration 0004 PostgreSQL needed no routine.
  createLegacyRoutines: async () => {},
  dropLegacyRoutines: async () => {},

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
