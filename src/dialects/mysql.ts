import { sql } from 'kysely';
import type { SqlDialect } from './dialect.js';

const ER_DUP_ENTRY = 1062;
const ER_LOCK_WAIT_TIMEOUT = 1205;
const ER_LOCK_DEADLOCK = 1213;
/** MariaDB with innodb_snapshot_isolation: "Record has changed since last read". */
const ER_CHECKREAD = 1020;

/**
 * The whole reserve transaction, server-side: the item's row lock is taken by the last statement
 * and released by the COMMIT right after it, without a client round trip in between. Any error
 * (duplicate key, deadlock) rolls back and reaches the client unchanged.
 */
const RESERVE_PROCEDURE = `
create procedure reservation_engine_reserve(
  in p_key varchar(64) character set ascii,
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
  start transaction;
  insert into idempotency_requests (idempotency_key, payload_hash, reservation_id, created_at)
    values (p_key, p_hash, p_id, p_now);
  insert into reservations (id, item_id, quantity, status, idempotency_key, expires_at, created_at, updated_at)
    values (p_id, p_item_id, p_quantity, 'PENDING', p_key, p_expires_at, p_now, p_now);
  insert into outbox (type, payload, created_at, available_at, attempts)
    values ('reservation.created', p_payload, p_now, p_now, 0);
  update items set available_quantity = available_quantity - p_quantity, updated_at = p_now
    where id = p_item_id and available_quantity >= p_quantity;
  if row_count() = 1 then
    commit;
    select 1 as reserved, null as available;
  else
    rollback;
    select 0 as reserved, (select available_quantity from items where id = p_item_id) as available;
  end if;
end`;

function errno(error: unknown): number | undefined {
  const value = (error as { errno?: unknown } | null)?.errno;
  return typeof value === 'number' ? value : undefined;
}

/** @internal MySQL 8 and MariaDB ≥ 10.6 through Kysely's MysqlDialect (mysql2). */
export const mysqlDialect: SqlDialect = Object.freeze({
  name: 'mysql',

  isDuplicateKey: (error: unknown) => errno(error) === ER_DUP_ENTRY,

  isRetryable(error: unknown) {
    const code = errno(error);
    return code === ER_LOCK_DEADLOCK || code === ER_LOCK_WAIT_TIMEOUT || code === ER_CHECKREAD;
  },

  async insertItem(db, values) {
    const result = await db.insertInto('items').values(values).executeTakeFirstOrThrow();
    return Number(result.insertId);
  },

  async reserve(db, r) {
    const { rows } = await sql<unknown>`call reservation_engine_reserve(${r.idempotencyKey}, ${r.payloadHash}, ${r.id}, ${r.itemId}, ${r.quantity}, ${r.expiresAt}, ${r.now}, ${r.eventPayload})`.execute(db);
    // mysql2 answers a CALL with [result set, OK packet].
    const row = (rows[0] as unknown as Array<{ reserved: number; available: number | null }>)[0];
    if (!row) throw new Error('reservation_engine_reserve returned no result');
    return Number(row.reserved) === 1 ? { reserved: true } : { reserved: false, available: row.available === null ? null : Number(row.available) };
  },

  async createRoutines(db) {
    await sql.raw(RESERVE_PROCEDURE).execute(db);
  },

  async dropRoutines(db) {
    await sql`drop procedure if exists reservation_engine_reserve`.execute(db);
  },

  // MariaDB's JSON is LONGTEXT, so mysql2 returns a string; MySQL 8 returns parsed JSON.
  parseJson: (value: unknown) => (typeof value === 'string' ? JSON.parse(value) : value),
  serializeJson: (value: unknown) => JSON.stringify(value),

  schema: Object.freeze({
    timestamp: sql`datetime(3)`,
    uuid: sql`char(36) character set ascii collate ascii_bin`,
    asciiKey: sql`varchar(64) character set ascii collate ascii_bin`,
    shortText: sql`varchar(255) character set utf8mb4 collate utf8mb4_bin`,
    json: 'json',
    identity: (column) => column.autoIncrement().primaryKey(),
    table: (builder) => builder.modifyEnd(sql`engine = InnoDB default charset = utf8mb4`),
  }),
} satisfies SqlDialect);
