import { CompiledQuery, type Kysely, sql } from 'kysely';
import { ConfigurationError } from '../errors.js';
import type { LogicalTable, SchemaNames } from '../schema/tables.js';
import { onConnection } from '../transaction.js';
import type { Database } from '../types.js';
import { CommitFailedError, endOwnSession, type NewReservation, type ReserveLinesRow, type ReserveRow, type RoutineVersion, reserveLinesOutcome, reserveOutcome, type SqlDialect } from './dialect.js';

const ER_DUP_ENTRY = 1062;
const ER_LOCK_WAIT_TIMEOUT = 1205;
const ER_LOCK_DEADLOCK = 1213;
/** MariaDB with innodb_snapshot_isolation: "Record has changed since last read". */
const ER_CHECKREAD = 1020;

/**
 * The connection died, the server went away or cannot do work now: whatever was in flight may or
 * may not have committed, and the connection's transaction state is unknown.
 */
const CONNECTION_ERRNOS = new Set([
  2006, // CR_SERVER_GONE_ERROR
  2013, // CR_SERVER_LOST
  1053, // ER_SERVER_SHUTDOWN
  1927, // ER_CONNECTION_KILLED
  1317, // ER_QUERY_INTERRUPTED (KILL QUERY)
  1969, // ER_STATEMENT_TIMEOUT (max_statement_time)
  3024, // ER_QUERY_TIMEOUT (MySQL's max_execution_time)
  4031, // ER_CLIENT_INTERACTION_TIMEOUT (MariaDB: idle session closed by the server)
  1152, // ER_ABORTING_CONNECTION
  1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, // ER_NET_*: read/write errors, packets out of order
  1040, // ER_CON_COUNT_ERROR: too many connections
  1203, // ER_TOO_MANY_USER_CONNECTIONS
  1047, // ER_UNKNOWN_COM_ERROR: Galera node outside the primary component ("WSREP has not yet prepared node")
  1180, // ER_ERROR_DURING_COMMIT: the COMMIT failed, its outcome unknown
  1568, // ER_CANT_CHANGE_TX_CHARACTERISTICS: a transaction is open that should not be (a host's leaked one)
  1290, // ER_OPTION_PREVENTS_STATEMENT: a read-only server (a replica after a failover)
  1792, // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
]);
/** Node's and mysql2's names for a broken socket. */
const CONNECTION_CODES = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * Every routine is created under this sql_mode, whatever the migrating session's: MySQL runs a
 * routine with the sql_mode it was created with, so a host's lax mode would otherwise turn an
 * overflow into silent truncation inside it.
 */
const ROUTINE_SQL_MODE = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION';

/** The routine {@link SqlDialect.reserve} calls, and the one migration 0002 created before it. */
const RESERVE_ROUTINE = 'reserve_or_replay';
const LEGACY_RESERVE_ROUTINE = 'reserve';
/** The routine {@link SqlDialect.reserveLines} calls (migration 0006). */
const RESERVE_LINES_ROUTINE = 'reserve_lines';

/** The reservation columns a replay returns, in the shape of a `reservations` row. */
const REPLAY_COLUMNS = 'r.id, r.item_id, r.quantity, r.status, r.idempotency_scope, r.idempotency_key, r.expires_at, r.created_at, r.updated_at';

/**
 * A whole reserve, server-side (see {@link SqlDialect.reserve} for the steps). The stock and key
 * reads run before any transaction, as plain consistent reads; the write transaction takes the
 * item's row lock with its last statement and releases it with the COMMIT right after, without
 * a client round trip in between. Any error (duplicate key, deadlock) rolls back and reaches the
 * client unchanged.
 */
function reserveProcedure(names: SchemaNames, { traceContext }: RoutineVersion): string {
  const id = (name: string) => `\`${name}\``;
  const table = (name: LogicalTable) => id(names.table(name));
  return `
create procedure ${id(names.object(RESERVE_ROUTINE))}(
  in p_scope varchar(255) character set ascii,
  in p_key varchar(255) character set ascii,
  in p_hash char(64) character set ascii,
  in p_id char(36) character set ascii,
  in p_item_id int,
  in p_quantity int,
  in p_expires_at datetime(3),
  in p_now datetime(3),
  in p_payload text character set utf8mb4${traceContext ? ',\n  in p_trace varchar(55) character set ascii' : ''}
)
modifies sql data
reserve_or_replay: begin
  declare v_available int default null;
  declare v_hash char(64) character set ascii default null;
  declare v_reservation char(36) character set ascii default null;
  declare exit handler for sqlexception
  begin
    rollback;
    resignal;
  end;
  -- A read that finds no row leaves its variables NULL.
  declare continue handler for not found begin end;
  -- Stock first, then the key: a same-key request that took the last units is a replay. Both are
  -- SELECT … INTO, a consistent read that takes no lock (SET v = (SELECT …) and IF EXISTS would
  -- take shared locks and wait for the hot row).
  select available_quantity into v_available from ${table('items')} where id = p_item_id;
  select payload_hash, reservation_id into v_hash, v_reservation from ${table('idempotency_requests')}
    where idempotency_scope = p_scope and idempotency_key = p_key;
  if v_reservation is not null then
    select 'replay' as outcome, null as available, v_hash as payload_hash, ${REPLAY_COLUMNS}
      from ${table('reservations')} r where r.id = v_reservation;
    leave reserve_or_replay;
  end if;
  if v_available is null then
    select 'missing' as outcome, null as available;
    leave reserve_or_replay;
  end if;
  if v_available < p_quantity then
    select 'insufficient' as outcome, v_available as available;
    leave reserve_or_replay;
  end if;
  -- The isolation the routine was designed for, whatever the session's default.
  set transaction isolation level read committed;
  start transaction;
  insert into ${table('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
    values (p_scope, p_key, p_hash, p_id, p_now);
  insert into ${table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
    values (p_id, p_item_id, p_quantity, 'PENDING', p_scope, p_key, p_expires_at, p_now, p_now);
  insert into ${table('outbox')} (type, payload, created_at, available_at, attempts${traceContext ? ', trace_context' : ''})
    values ('reservation.created', p_payload, p_now, p_now, 0${traceContext ? ', p_trace' : ''});
  update ${table('items')} set available_quantity = available_quantity - p_quantity, held_quantity = held_quantity + p_quantity, updated_at = p_now
    where id = p_item_id and available_quantity >= p_quantity;
  if row_count() = 1 then
    commit;
    select 'reserved' as outcome, null as available;
  else
    rollback;
    -- Lost the race for the last units. On a Galera cluster a request with the same key can have
    -- committed on another node meanwhile (the unique index serialises only one node's
    -- requests): then this request is its replay, not a refusal.
    select payload_hash, reservation_id into v_hash, v_reservation from ${table('idempotency_requests')}
      where idempotency_scope = p_scope and idempotency_key = p_key;
    if v_reservation is not null then
      select 'replay' as outcome, null as available, v_hash as payload_hash, ${REPLAY_COLUMNS}
        from ${table('reservations')} r where r.id = v_reservation;
    else
      select 'insufficient' as outcome, (select available_quantity from ${table('items')} where id = p_item_id) as available;
    end if;
  end if;
end`;
}

/**
 * A reserve of several items, server-side (see {@link SqlDialect.reserveLines}). `p_lines` is a
 * JSON array of `[itemId, quantity]` pairs in ascending item id, one per item. The stock check
 * is one plain read over all lines (JSON_TABLE joined to the items: no lock), answering every
 * short line at once as `item:requested:available` (-1 for no such item); the decrements run
 * one per line in the array's order, the last statements before the COMMIT.
 */
function reserveLinesProcedure(names: SchemaNames): string {
  const id = (name: string) => `\`${name}\``;
  const table = (name: LogicalTable) => id(names.table(name));
  const lines = `json_table(p_lines, '$[*]' columns (item_id int path '$[0]', quantity int path '$[1]')) as l`;
  const shortLines = `select group_concat(concat(l.item_id, ':', l.quantity, ':', coalesce(i.available_quantity, -1)) order by l.item_id) into v_short
    from ${lines} left join ${table('items')} i on i.id = l.item_id
    where i.id is null or i.available_quantity < l.quantity;`;
  const findKey = `select payload_hash, reservation_id into v_hash, v_reservation from ${table('idempotency_requests')}
    where idempotency_scope = p_scope and idempotency_key = p_key;`;
  const replay = `select 'replay' as outcome, null as short_lines, v_hash as payload_hash,
      (select group_concat(concat(x.item_id, ':', x.quantity) order by x.item_id) from ${table('reservation_lines')} x where x.reservation_id = v_reservation) as \`lines\`,
      ${REPLAY_COLUMNS}
      from ${table('reservations')} r where r.id = v_reservation;`;
  return `
create procedure ${id(names.object(RESERVE_LINES_ROUTINE))}(
  in p_scope varchar(255) character set ascii,
  in p_key varchar(255) character set ascii,
  in p_hash char(64) character set ascii,
  in p_id char(36) character set ascii,
  in p_lines text character set ascii,
  in p_quantity int,
  in p_expires_at datetime(3),
  in p_now datetime(3),
  in p_payload text character set utf8mb4,
  in p_trace varchar(55) character set ascii
)
modifies sql data
reserve_lines: begin
  declare v_short text character set ascii default null;
  declare v_hash char(64) character set ascii default null;
  declare v_reservation char(36) character set ascii default null;
  declare v_count int default json_length(p_lines);
  declare v_i int default 0;
  declare v_item int;
  declare v_quantity int;
  declare exit handler for sqlexception
  begin
    rollback;
    resignal;
  end;
  declare continue handler for not found begin end;
  -- Stock first, then the key (as reserve_or_replay): plain consistent reads, no locks.
  ${shortLines}
  ${findKey}
  if v_reservation is not null then
    ${replay}
    leave reserve_lines;
  end if;
  if v_short is not null then
    select 'insufficient' as outcome, v_short as short_lines;
    leave reserve_lines;
  end if;
  set transaction isolation level read committed;
  start transaction;
  insert into ${table('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
    values (p_scope, p_key, p_hash, p_id, p_now);
  insert into ${table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
    values (p_id, null, p_quantity, 'PENDING', p_scope, p_key, p_expires_at, p_now, p_now);
  insert into ${table('reservation_lines')} (reservation_id, item_id, quantity)
    select p_id, l.item_id, l.quantity from ${lines};
  insert into ${table('outbox')} (type, payload, created_at, available_at, attempts, trace_context)
    values ('reservation.created', p_payload, p_now, p_now, 0, p_trace);
  -- One item at a time in ascending id: every writer locks items in this order.
  while v_i < v_count do
    set v_item = json_value(p_lines, concat('$[', v_i, '][0]'));
    set v_quantity = json_value(p_lines, concat('$[', v_i, '][1]'));
    update ${table('items')} set available_quantity = available_quantity - v_quantity, held_quantity = held_quantity + v_quantity, updated_at = p_now
      where id = v_item and available_quantity >= v_quantity;
    if row_count() <> 1 then
      rollback;
      -- Lost a race for some units. A same-key request may have committed on another Galera node.
      ${findKey}
      if v_reservation is not null then
        ${replay}
      else
        ${shortLines}
        select 'insufficient' as outcome, v_short as short_lines;
      end if;
      leave reserve_lines;
    end if;
    set v_i = v_i + 1;
  end while;
  commit;
  select 'reserved' as outcome, null as short_lines;
end`;
}

/**
 * The routine migration 0002 created, kept byte for byte so that the migration still creates what
 * it always did: engines from before migration 0004 call it. Nothing calls it now.
 */
function legacyReserveProcedure(names: SchemaNames): string {
  const id = (name: string) => `\`${name}\``;
  const table = (name: LogicalTable) => id(names.table(name));
  return `
create procedure ${id(names.object(LEGACY_RESERVE_ROUTINE))}(
  in p_scope varchar(255) character set ascii,
  in p_key varchar(255) character set ascii,
  in p_hash char(64) character set ascii,
  in p_id char(36) character set ascii,
  in p_item_id int,
  in p_quantity int,
  in p_expires_at datetime(3),
  in p_now datetime(3),
  in p_payload text character set utf8mb4
)
modifies sql data
begin
  declare exit handler for sqlexception
  begin
    rollback;
    resignal;
  end;
  -- The isolation the routine was designed for, whatever the session's default.
  set transaction isolation level read committed;
  start transaction;
  insert into ${table('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
    values (p_scope, p_key, p_hash, p_id, p_now);
  insert into ${table('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
    values (p_id, p_item_id, p_quantity, 'PENDING', p_scope, p_key, p_expires_at, p_now, p_now);
  insert into ${table('outbox')} (type, payload, created_at, available_at, attempts)
    values ('reservation.created', p_payload, p_now, p_now, 0);
  update ${table('items')} set available_quantity = available_quantity - p_quantity, held_quantity = held_quantity + p_quantity, updated_at = p_now
    where id = p_item_id and available_quantity >= p_quantity;
  if row_count() = 1 then
    commit;
    select 1 as reserved, null as available;
  else
    rollback;
    select 0 as reserved, (select available_quantity from ${table('items')} where id = p_item_id) as available;
  end if;
end`;
}

function errno(error: unknown): number | undefined {
  const value = (error as { errno?: unknown } | null)?.errno;
  return typeof value === 'number' ? value : undefined;
}

function isConnectionError(error: unknown): boolean {
  const e = error as { errno?: unknown; code?: unknown; fatal?: unknown; message?: unknown } | null;
  if (!e || typeof e !== 'object') return false;
  if (e instanceof CommitFailedError) return true;
  if (CONNECTION_ERRNOS.has(errno(e) ?? 0) || CONNECTION_CODES.has(String(e.code))) return true;
  // mysql2 marks errors that broke the connection `fatal`; a closed connection says so in words;
  // "Should not reach here" is mysql2 failing to parse a reply: the connection is out of step.
  return e.fatal === true || /connection is in closed state|connection lost|pool is closed|Should not reach here/i.test(String(e.message ?? ''));
}

/**
 * After a failed ROLLBACK. A MariaDB Galera node outside the primary component refuses ROLLBACK,
 * KILL and every statement on a table (1047) but a ROLLBACK with dirty reads allowed; elsewhere
 * (or if that fails) the session is ended, which rolls its transaction back on the server.
 */
async function endTransaction(connection: Kysely<any>): Promise<boolean> {
  try {
    await sql`set session wsrep_dirty_reads = on`.execute(connection);
    await sql`rollback`.execute(connection);
    await sql`set session wsrep_dirty_reads = default`.execute(connection);
    return true;
  } catch {
    // MySQL has no such variable; or the connection is out of step: end the session.
  }
  return endOwnSession(connection, 'kill connection connection_id()');
}

/**
 * CALLs one of the reserve routines, which take the same parameters but the fifth (`what`: the
 * item, or the lines), and returns its one row. On its own connection: when the CALL fails, a
 * transaction it began may still be open (its ROLLBACK refused), and must never be handed to the
 * next user of the pool.
 */
async function callReserveRoutine<Row>(db: Kysely<Database>, routine: string, r: NewReservation, what: unknown): Promise<Row> {
  const query = CompiledQuery.raw(`call \`${routine}\`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    r.idempotencyScope,
    r.idempotencyKey,
    r.payloadHash,
    r.id,
    what,
    r.quantity,
    r.expiresAt,
    r.now,
    r.eventPayload,
    r.traceContext,
  ]);
  // mysql2 answers a CALL with [result set, OK packet].
  const { rows } = await onConnection(db, mysqlDialect, (connection) => connection.executeQuery<unknown>(query));
  const row = (rows[0] as unknown as Row[] | undefined)?.[0];
  if (!row) throw new Error(`${routine} returned no result`);
  return row;
}

/** Creates a routine under {@link ROUTINE_SQL_MODE}, leaving the session's own mode as it was. */
async function createProcedure(db: Kysely<any>, text: string): Promise<void> {
  await db.connection().execute(async (connection) => {
    const { rows } = await sql<{ mode: string }>`select @@session.sql_mode as mode`.execute(connection);
    await sql`set session sql_mode = ${ROUTINE_SQL_MODE}`.execute(connection);
    try {
      await sql.raw(text).execute(connection);
    } finally {
      await sql`set session sql_mode = ${rows[0]?.mode ?? ''}`.execute(connection);
    }
  });
}

async function dropProcedure(db: Kysely<any>, name: string): Promise<void> {
  await sql`drop procedure if exists ${sql.id(name)}`.execute(db);
}

/** @internal MySQL 8 and MariaDB ≥ 10.6 through Kysely's MysqlDialect (mysql2). */
export const mysqlDialect: SqlDialect = Object.freeze({
  name: 'mysql',

  isDuplicateKey: (error: unknown) => errno(error) === ER_DUP_ENTRY,
  isConnectionError,

  beginReadCommitted: Object.freeze(['set transaction isolation level read committed', 'begin']),
  endTransaction,

  isRetryable(error: unknown) {
    const code = errno(error);
    return code === ER_LOCK_DEADLOCK || code === ER_LOCK_WAIT_TIMEOUT || code === ER_CHECKREAD;
  },

  async verifySession(db) {
    const { rows } = await sql<{ mode: string }>`select @@session.sql_mode as mode`.execute(db);
    if (/NO_BACKSLASH_ESCAPES/i.test(rows[0]?.mode ?? '')) {
      throw new ConfigurationError([
        "db: the MySQL session's sql_mode has NO_BACKSLASH_ESCAPES, which mysql2's client-side escaping of values does not support " +
          '(a quote in a value would end the string): remove it from the sessions of the pool you give the engine',
      ]);
    }
  },

  async insertItem(db, values) {
    const result = await db.insertInto('items').values(values).executeTakeFirstOrThrow();
    return db.selectFrom('items').selectAll().where('id', '=', Number(result.insertId)).executeTakeFirstOrThrow();
  },

  async reserve(db, names, r) {
    return reserveOutcome(await callReserveRoutine<ReserveRow>(db, names.object(RESERVE_ROUTINE), r, r.itemId));
  },

  async reserveLines(db, names, r) {
    // The lines as a JSON array of [itemId, quantity] pairs, which the routine reads with JSON_TABLE.
    const lines = JSON.stringify(r.lines.map((line) => [line.itemId, line.quantity]));
    return reserveLinesOutcome(await callReserveRoutine<ReserveLinesRow>(db, names.object(RESERVE_LINES_ROUTINE), r, lines));
  },

  createLinesRoutine: (db, names) => createProcedure(db, reserveLinesProcedure(names)),
  dropLinesRoutine: (db, names) => dropProcedure(db, names.object(RESERVE_LINES_ROUTINE)),

  async dropNotNull(db, table, column, type) {
    await db.schema.alterTable(table).modifyColumn(column, type).execute();
  },

  beginSnapshot: Object.freeze(['set transaction isolation level repeatable read, read only', 'start transaction with consistent snapshot']),

  createRoutines: (db, names, version) => createProcedure(db, reserveProcedure(names, version)),
  dropRoutines: (db, names) => dropProcedure(db, names.object(RESERVE_ROUTINE)),
  createLegacyRoutines: (db, names) => createProcedure(db, legacyReserveProcedure(names)),
  dropLegacyRoutines: (db, names) => dropProcedure(db, names.object(LEGACY_RESERVE_ROUTINE)),

  // MariaDB's JSON is LONGTEXT, so mysql2 returns a string; MySQL 8 returns parsed JSON.
  parseJson: (value: unknown) => (typeof value === 'string' ? JSON.parse(value) : value),
  serializeJson: (value: unknown) => JSON.stringify(value),

  schema: Object.freeze({
    timestamp: sql`datetime(3)`,
    uuid: sql`char(36) character set ascii collate ascii_bin`,
    asciiKey: sql`varchar(255) character set ascii collate ascii_bin`,
    shortText: sql`varchar(255) character set utf8mb4 collate utf8mb4_bin`,
    json: 'json',
    identity: (column) => column.autoIncrement().primaryKey(),
    table: (builder) => builder.modifyEnd(sql`engine = InnoDB default charset = utf8mb4`),
  }),
} satisfies SqlDialect);
