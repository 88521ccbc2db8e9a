import { type Kysely, type Migration, type MigrationResultSet, Migrator } from 'kysely';
import { z } from 'zod';
import { dialectOf, type SqlDialect } from '../dialects/index.js';
import { ReservationError } from '../errors.js';
import { DEFAULT_TABLE_PREFIX, schemaNames } from '../schema/tables.js';
import { inTransaction } from '../transaction.js';
import type { Database, DatabaseKind } from '../types.js';
import { dbOptionsShape, functionSchema, idempotencyKeySchema, parse, parseOptions } from '../validation.js';

/** Where the inbox lives: the consumer's own database. */
export interface InboxOptions {
  /**
   * The prefix of the inbox's tables: `<prefix>inbox`, and its migration bookkeeping
   * `<prefix>inbox_migration` and `<prefix>inbox_migration_lock`. 1–30 letters, digits and `_`.
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
  /**
   * Which database `db` talks to, when it cannot be told from the Kysely adapter.
   * @defaultValue detected from the Kysely adapter
   */
  readonly dialect?: DatabaseKind;
}

/** Options of {@link consumeOnce}. */
export interface ConsumeOnceOptions<DB, T> extends InboxOptions {
  /** The consumer's Kysely instance: its database holds the inbox table (see {@link migrateInbox}) and the effect's tables. */
  readonly db: Kysely<DB>;
  /** The message's id (`message.properties.messageId`; the outbox event id for the relay's messages): 1–255 printable ASCII characters. */
  readonly messageId: string;
  /**
   * Who consumes: consumers that share a database but each must see every message (two services,
   * two queues) name themselves apart. 1–255 printable ASCII characters.
   * @defaultValue none: one consumer per database
   */
  readonly consumer?: string;
  /**
   * The effect: runs inside the transaction that records the message as processed, on `trx`,
   * which is that transaction's connection (with `db`'s plugins). Write through `trx` only, and do
   * not commit or roll back yourself: both commit together, or neither does. On a deadlock or
   * serialization failure the transaction runs again, `handler` included.
   */
  readonly handler: (trx: Kysely<DB>) => T | PromiseLike<T>;
}

/** What {@link consumeOnce} did: ran the effect (`duplicate: false`, with what `handler` returned), or found the message processed already. */
export type ConsumeOnceResult<T> = { readonly duplicate: false; readonly result: T } | { readonly duplicate: true };

interface InboxTable {
  consumer: string;
  message_id: string;
  processed_at: Date;
}

const consumeOptionsSchema = z.strictObject({
  ...dbOptionsShape,
  messageId: z.unknown(),
  consumer: z.unknown().optional(),
  handler: functionSchema<(trx: Kysely<any>) => unknown>(),
});

const messageSchema = z.strictObject({ messageId: idempotencyKeySchema, consumer: idempotencyKeySchema.optional() });

/** Thrown inside the transaction when the message was processed: rolls it back, never leaves {@link consumeOnce}. */
const ALREADY_PROCESSED = Symbol('already processed');

/**
 * Runs a consumer's effect exactly once per message, however often the broker delivers it:
 * records `messageId` in the inbox table and runs `handler` in the same transaction of the
 * consumer's database. A redelivered message finds its id recorded and resolves
 * `{ duplicate: true }` without running `handler`; ack it either way. While the first delivery's
 * transaction is open, a concurrent duplicate waits for it, then is a duplicate if it committed
 * or runs the effect if it rolled back.
 *
 * When `handler` throws, or the database fails, nothing is recorded and the error is thrown: nack
 * (or do not ack) the message so that it comes again. If the connection drops during the COMMIT
 * the outcome is unknown; the redelivery finds out.
 *
 * @throws {ValidationError} `messageId` or `consumer` missing or malformed (code `VALIDATION_ERROR`)
 * @throws {ConfigurationError} bad options (code `INVALID_CONFIGURATION`)
 *
 * @example
 * ```ts
 * import { consumeOnce } from 'reservation-engine/rabbitmq';
 *
 * await channel.consume('billing', async (message) => {
 *   if (!message) return; // the consumer was cancelled
 *   const { duplicate } = await consumeOnce({
 *     db,
 *     messageId: message.properties.messageId,
 *     handler: (trx) => trx.insertInto('charges').values({ reservation_id: JSON.parse(message.content.toString()).reservationId }).execute(),
 *   });
 *   channel.ack(message); // a duplicate too: its effect happened already
 * });
 * ```
 */
export async function consumeOnce<DB, T>(options: ConsumeOnceOptions<DB, T>): Promise<ConsumeOnceResult<T>> {
  const o = parseOptions(consumeOptionsSchema, options);
  const message = parse(messageSchema, { messageId: o.messageId, ...(o.consumer === undefined ? {} : { consumer: o.consumer }) });
  const table = inboxTable(o.tablePrefix);
  const dialect = dialectOf(o.db, o.dialect);
  try {
    const result = await inTransaction(o.db as Kysely<Database>, dialect, async (trx) => {
      await record(trx, dialect, table, message.consumer ?? '', message.messageId);
      return (await options.handler(trx as unknown as Kysely<DB>)) as T;
    });
    return { duplicate: false, result };
  } catch (error) {
    if (error === ALREADY_PROCESSED) return { duplicate: true };
    throw error;
  }
}

/** Inserts the message's row; a duplicate key means it was processed (by a committed transaction). */
async function record(trx: Kysely<Database>, dialect: SqlDialect, table: string, consumer: string, messageId: string): Promise<void> {
  try {
    await (trx.withoutPlugins() as unknown as Kysely<Record<string, InboxTable>>)
      .insertInto(table)
      .values({ consumer, message_id: messageId, processed_at: new Date() })
      .execute();
  } catch (error) {
    if (dialect.isDuplicateKey(error)) throw ALREADY_PROCESSED;
    throw error;
  }
}

function inboxTable(tablePrefix: string | undefined): string {
  return `${schemaNames(tablePrefix).prefix}inbox`;
}

/**
 * Creates or updates the inbox table `<tablePrefix>inbox` (consumer, message id, when processed)
 * in the consumer's database, with its own migration bookkeeping. Safe at every start and from
 * several processes at once; a repeat call is a no-op.
 *
 * The table grows by one row per message: delete rows older than any redelivery can come
 * (`DELETE FROM reservation_engine_inbox WHERE processed_at < ?`; there is an index on it).
 *
 * @throws {ReservationError} code `MIGRATION_FAILED` when the migration fails (the cause attached)
 *
 * @example
 * ```ts
 * import { migrateInbox } from 'reservation-engine/rabbitmq';
 *
 * await migrateInbox(db); // at start-up, beside your own migrations
 * ```
 */
export async function migrateInbox(db: Kysely<any>, options: InboxOptions = {}): Promise<MigrationResultSet> {
  const o = parseOptions(z.strictObject(dbOptionsShape), { ...options, db });
  const names = schemaNames(o.tablePrefix ?? DEFAULT_TABLE_PREFIX);
  const dialect = dialectOf(db, o.dialect);
  const migrations: Record<string, Migration> = { reservation_engine_inbox_0001: inboxMigration(dialect, names.prefix) };
  const migrator = new Migrator({
    db: db.withoutPlugins(),
    provider: { getMigrations: async () => migrations },
    migrationTableName: `${names.prefix}inbox_migration`,
    migrationLockTableName: `${names.prefix}inbox_migration_lock`,
  });
  const result = await migrator.migrateToLatest();
  if (result.error) {
    throw new ReservationError(`Migration of the inbox failed: ${String((result.error as Error)?.message ?? result.error)}`, 'MIGRATION_FAILED', 500, { cause: result.error });
  }
  return result;
}

function inboxMigration(dialect: SqlDialect, prefix: string): Migration {
  const t = dialect.schema;
  const table = `${prefix}inbox`;
  return {
    async up(db: Kysely<any>) {
      await t
        .table(
          db.schema
            .createTable(table)
            .addColumn('consumer', t.asciiKey, (c) => c.notNull())
            .addColumn('message_id', t.asciiKey, (c) => c.notNull())
            .addColumn('processed_at', t.timestamp, (c) => c.notNull())
            .addPrimaryKeyConstraint(`${prefix}inbox_pkey`, ['consumer', 'message_id']),
        )
        .execute();
      await db.schema.createIndex(`${prefix}inbox_processed_at`).on(table).column('processed_at').execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable(table).execute();
    },
  };
}
