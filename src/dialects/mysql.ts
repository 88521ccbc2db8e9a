import { sql } from 'kysely';
import type { SqlDialect } from './dialect.js';

const ER_DUP_ENTRY = 1062;
const ER_LOCK_WAIT_TIMEOUT = 1205;
const ER_LOCK_DEADLOCK = 1213;
/** MariaDB with innodb_snapshot_isolation: "Record has changed since last read". */
const ER_CHECKREAD = 1020;

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
