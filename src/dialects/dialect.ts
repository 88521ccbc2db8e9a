import type { ColumnDataType, ColumnDefinitionBuilder, CreateTableBuilder, Expression, Insertable, Kysely, Selectable } from 'kysely';
import type { SchemaNames } from '../schema/tables.js';
import type { Database, ItemsTable } from '../types.js';

/** @internal What {@link SqlDialect.reserve} writes. */
export interface NewReservation {
  readonly id: string;
  readonly itemId: number;
  readonly quantity: number;
  readonly idempotencyScope: string;
  readonly idempotencyKey: string;
  readonly payloadHash: string;
  readonly expiresAt: Date;
  readonly now: Date;
  /** The `reservation.created` event payload, serialized for the JSON column. */
  readonly eventPayload: unknown;
}

/** @internal */
export type ReserveOutcome = { readonly reserved: true } | { readonly reserved: false; readonly available: number | null };

/** A column type as Kysely's schema builder takes it. */
export type ColumnType = ColumnDataType | Expression<unknown>;

/**
 * @internal
 * Everything that differs between the databases the engine runs on. One implementation per
 * database lives beside this file; the engine, outbox and expiry code ask it and never branch.
 */
export interface SqlDialect {
  readonly name: 'mysql' | 'postgres';

  /** A unique constraint rejected the row (MySQL 1062, PostgreSQL 23505). */
  isDuplicateKey(error: unknown): boolean;
  /** A deadlock, lock-wait timeout or serialization failure: the whole transaction may be retried. */
  isRetryable(error: unknown): boolean;
  /** The connection failed (lost, reset, timed out, server shutting down): the outcome of what was in flight is unknown. */
  isConnectionError(error: unknown): boolean;

  /**
   * Throws a {@link ConfigurationError} when the host's session settings would make the engine's
   * SQL wrong (MySQL's NO_BACKSLASH_ESCAPES against mysql2's client-side escaping). Asked once
   * per Kysely instance.
   */
  verifySession(db: Kysely<any>): Promise<void>;

  /** Inserts an item and returns the row as stored (insert id and a read vs RETURNING). */
  insertItem(db: Kysely<Database>, values: Insertable<ItemsTable>): Promise<Selectable<ItemsTable>>;

  /**
   * Writes a new reservation in ONE round trip and one transaction: the idempotency record, the
   * PENDING reservation, its `reservation.created` event, and the guarded stock decrement
   * (`available_quantity >= quantity`), which takes the item's row lock. Because the whole
   * transaction runs inside the server, the hot row lock is never held across a client round
   * trip. On a duplicate idempotency key it throws the driver's duplicate-key error; when the
   * decrement finds no such item or too little stock it writes nothing and says so.
   */
  reserve(db: Kysely<Database>, names: SchemaNames, reservation: NewReservation): Promise<ReserveOutcome>;

  /** Creates the server-side routines {@link reserve} relies on (a migration calls it). */
  createRoutines(db: Kysely<any>, names: SchemaNames): Promise<void>;
  dropRoutines(db: Kysely<any>, names: SchemaNames): Promise<void>;

  /** A JSON value as the driver hands it over (a string or already parsed) → the value. */
  parseJson(value: unknown): unknown;
  /** A value → what the driver should bind for a JSON column. */
  serializeJson(value: unknown): unknown;

  /** Column types and options for the migrations. */
  readonly schema: {
    /** Millisecond-precision UTC timestamp. */
    readonly timestamp: ColumnType;
    /** A UUID stored compactly and compared byte for byte. */
    readonly uuid: ColumnType;
    /** ASCII key of up to 255 characters compared byte for byte (idempotency keys and scopes). */
    readonly asciiKey: ColumnType;
    /** Short Unicode text compared byte for byte (SKUs, names). */
    readonly shortText: ColumnType;
    readonly json: ColumnType;
    /** An integer primary key the database generates. */
    identity(column: ColumnDefinitionBuilder): ColumnDefinitionBuilder;
    /** Table options (storage engine, default character set). */
    table(builder: CreateTableBuilder<any, any>): CreateTableBuilder<any, any>;
  };
}
