import { type ColumnDataType, type ColumnDefinitionBuilder, type CreateTableBuilder, type Expression, type Insertable, type Kysely, type Selectable, sql } from 'kysely';
import type { ShortLine } from '../errors.js';
import type { SchemaNames } from '../schema/tables.js';
import { parseLines, parseShortLines } from '../stock/short-lines.js';
import type { Database, ItemsTable, ReservationLine, ReservationsTable } from '../types.js';

/** @internal What {@link SqlDialect.reserve} and {@link SqlDialect.reserveLines} write. */
export interface NewReservation {
  readonly id: string;
  /** The single item (`reserve`), or NULL for several (`reserveLines`). */
  readonly itemId: number | null;
  /** Units in all. */
  readonly quantity: number;
  /** One line per item, in ascending item id. */
  readonly lines: readonly ReservationLine[];
  readonly idempotencyScope: string;
  readonly idempotencyKey: string;
  readonly payloadHash: string;
  readonly expiresAt: Date;
  readonly now: Date;
  /** The `reservation.created` event payload, serialized for the JSON column. */
  readonly eventPayload: unknown;
  /** The W3C traceparent stored with the event (null without a span). */
  readonly traceContext: string | null;
}

/**
 * @internal
 * What a reserve found: it wrote the reservation; or the key had been used (`replay`: the earlier
 * request's hash and reservation row, nothing written); or there was no such item, or too little
 * stock (nothing written).
 */
export type ReserveOutcome =
  | { readonly kind: 'reserved' }
  | {
      readonly kind: 'replay';
      readonly payloadHash: string;
      readonly reservation: Selectable<ReservationsTable>;
      /** The lines of a reservation of several items (`undefined` for one item, whose line is on the row). */
      readonly lines?: readonly ReservationLine[];
    }
  | { readonly kind: 'missing'; readonly itemId?: number }
  /** `short`: every line that could not be held (several items); empty when a race was lost to stock that came back since. */
  | { readonly kind: 'insufficient'; readonly available: number; readonly short?: readonly ShortLine[] };

/** @internal Which version of the reserve routine to create: migration 0004's, or 0005's with the trace context. */
export interface RoutineVersion {
  readonly traceContext: boolean;
}

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
  /**
   * The connection failed (lost, reset, timed out, server shutting down) or the server cannot do
   * work now (a Galera node outside the primary component, a read-only server): the outcome of
   * what was in flight is unknown, and a repeat may land elsewhere or later.
   */
  isConnectionError(error: unknown): boolean;

  /** The statements that begin a READ COMMITTED transaction, whatever the session's default. */
  readonly beginReadCommitted: readonly string[];
  /**
   * Ends the transaction left open on `connection` when a plain ROLLBACK failed, by whatever the
   * database allows: `true` once no transaction is open or the connection is dead (its pool will
   * not hand it out again), `false` when the session lives on with its transaction.
   */
  endTransaction(connection: Kysely<any>): Promise<boolean>;

  /**
   * Throws a {@link ConfigurationError} when the host's session settings would make the engine's
   * SQL wrong (MySQL's NO_BACKSLASH_ESCAPES against mysql2's client-side escaping). Asked once
   * per Kysely instance.
   */
  verifySession(db: Kysely<any>): Promise<void>;

  /** Inserts an item and returns the row as stored (insert id and a read vs RETURNING). */
  insertItem(db: Kysely<Database>, values: Insertable<ItemsTable>): Promise<Selectable<ItemsTable>>;

  /**
   * A whole reserve in ONE round trip, inside the server (the `reserve_or_replay` routine):
   * 1. reads the item's stock (a plain read: no lock), then the idempotency key — in that order,
   *    so a request with this key that took the last units is seen as a replay, never as
   *    "sold out";
   * 2. a key used before → `replay`, nothing written;
   * 3. no such item or too little stock → `missing` / `insufficient`, nothing written and no
   *    lock taken: a sold-out item costs two index reads;
   * 4. otherwise one READ COMMITTED transaction writes the idempotency record, the PENDING
   *    reservation and its `reservation.created` event, and LAST the guarded stock decrement
   *    (`available_quantity >= quantity`), so the item's row lock is held only from that
   *    statement to the COMMIT right after it, never across a client round trip. When the
   *    decrement loses a race for the last units, everything rolls back → `insufficient`.
   *
   * A concurrent request with the same key that committed first makes the insert throw the
   * driver's duplicate-key error: the caller runs it again, and step 2 answers.
   */
  reserve(db: Kysely<Database>, names: SchemaNames, reservation: NewReservation): Promise<ReserveOutcome>;

  /**
   * {@link reserve} for several items (the `reserve_lines` routine, migration 0006), in ONE round
   * trip: the stock of every line and the key are read first without locks; then one transaction
   * writes the key, the reservation (item NULL), its lines and its event, and LAST decrements
   * each item with a guarded UPDATE in ascending item id — the one lock order every writer uses,
   * so concurrent carts over the same items queue instead of deadlocking. Any short line rolls
   * everything back → `insufficient` with every short line (`missing` for an unknown item).
   */
  reserveLines(db: Kysely<Database>, names: SchemaNames, reservation: NewReservation): Promise<ReserveOutcome>;
  /** Creates (migration 0006) and drops the routine {@link reserveLines} calls. */
  createLinesRoutine(db: Kysely<any>, names: SchemaNames): Promise<void>;
  dropLinesRoutine(db: Kysely<any>, names: SchemaNames): Promise<void>;
  /** Makes a NOT NULL column nullable (MySQL re-states the column; PostgreSQL drops the constraint). */
  dropNotNull(db: Kysely<any>, table: 'reservations', column: string, type: ColumnType): Promise<void>;

  /**
   * The statements that begin a read-only transaction reading one consistent snapshot of the
   * whole database (REPEATABLE READ): the audit compares counters across tables with it.
   */
  readonly beginSnapshot: readonly string[];

  /**
   * Creates the server-side routine {@link reserve} calls: as migration 0004 made it, or with the
   * trace context it stores with the event (`traceContext`, migration 0005 on).
   */
  createRoutines(db: Kysely<any>, names: SchemaNames, version: RoutineVersion): Promise<void>;
  dropRoutines(db: Kysely<any>, names: SchemaNames): Promise<void>;
  /**
   * The routines migration 0002 created (MySQL: the first reserve procedure), unchanged, for
   * engines that predate migration 0004. Nothing calls them now.
   */
  createLegacyRoutines(db: Kysely<any>, names: SchemaNames): Promise<void>;
  dropLegacyRoutines(db: Kysely<any>, names: SchemaNames): Promise<void>;

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

/** @internal The row a reserve routine answers with (the reservation's columns only for a replay). */
export interface ReserveRow extends Partial<Selectable<ReservationsTable>> {
  readonly outcome: 'reserved' | 'replay' | 'missing' | 'insufficient';
  readonly available: number | string | null;
  readonly payload_hash?: string;
}

/** @internal The row the `reserve_lines` routine answers with: short lines as `item:requested:available,…`, a replay's lines as `item:quantity,…`. */
export interface ReserveLinesRow extends Partial<Selectable<ReservationsTable>> {
  readonly outcome: 'reserved' | 'replay' | 'insufficient';
  readonly short_lines: string | null;
  readonly payload_hash?: string;
  readonly lines?: string | null;
}

/** @internal The `reserve_lines` routine's row → {@link ReserveOutcome}. */
export function reserveLinesOutcome(row: ReserveLinesRow): ReserveOutcome {
  switch (row.outcome) {
    case 'reserved':
      return RESERVED;
    case 'replay':
      return { kind: 'replay', payloadHash: String(row.payload_hash), reservation: row as Selectable<ReservationsTable>, lines: row.lines ? parseLines(row.lines) : undefined };
    case 'insufficient':
      return shortOutcome(parseShortLines(row.short_lines));
    default:
      throw new Error(`the reserve_lines routine answered an unknown outcome: ${String(row.outcome)}`);
  }
}

/** @internal Short lines (available -1: no such item) → `missing` for the first unknown item, else `insufficient`. */
export function shortOutcome(short: readonly ShortLine[]): ReserveOutcome {
  const missing = short.find((line) => line.available < 0);
  if (missing) return { kind: 'missing', itemId: missing.itemId };
  return { kind: 'insufficient', available: short[0]?.available ?? 0, short };
}

/** @internal The routine's row → {@link ReserveOutcome}. */
export function reserveOutcome(row: ReserveRow): ReserveOutcome {
  switch (row.outcome) {
    case 'reserved':
      return RESERVED;
    case 'replay':
      return { kind: 'replay', payloadHash: String(row.payload_hash), reservation: row as Selectable<ReservationsTable> };
    case 'missing':
      return MISSING;
    case 'insufficient':
      return { kind: 'insufficient', available: Number(row.available) };
    default:
      throw new Error(`the reserve routine answered an unknown outcome: ${String(row.outcome)}`);
  }
}

const RESERVED: ReserveOutcome = Object.freeze({ kind: 'reserved' });
const MISSING: ReserveOutcome = Object.freeze({ kind: 'missing' });

/**
 * @internal
 * The driver gave up on the connection, so its pool will not hand it out again: mysql2 drops a
 * connection after a fatal error, pg-pool destroys a client that is not queryable.
 */
export function isDeadConnection(error: unknown): boolean {
  const e = error as { fatal?: unknown; message?: unknown } | null;
  return e?.fatal === true || /closed state|not queryable|Connection terminated/i.test(String(e?.message ?? ''));
}

/**
 * @internal
 * Runs `statement` (which ends the connection's own session) and checks that the connection is
 * dead: the server closes it right after answering, so the next statement must fail.
 */
export async function endOwnSession(connection: Kysely<any>, statement: string): Promise<boolean> {
  try {
    await sql.raw(statement).execute(connection);
  } catch (error) {
    if (isDeadConnection(error)) return true;
  }
  for (let probe = 0; probe < 5; probe++) {
    try {
      await sql`select 1`.execute(connection);
    } catch (error) {
      if (isDeadConnection(error)) return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 10 * 2 ** probe));
  }
  return false;
}

/**
 * @internal
 * A COMMIT failed with an error that does not say the transaction rolled back (a deadlock or
 * certification failure does): whether it committed is unknown. Both dialects count it as a
 * connection error, so callers answer {@link OutcomeUnknownError} (or repeat work that is safe
 * to repeat).
 */
export class CommitFailedError extends Error {
  constructor(cause: unknown) {
    super(`COMMIT failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'CommitFailedError';
  }
}
