import type { Kysely } from 'kysely';
import { z } from 'zod';
import { type DatabaseKind, dialectOf, type SqlDialect, verifiedSession } from '../dialects/index.js';
import { engineDb, schemaNames } from '../schema/tables.js';
import { OutcomeUnknownError } from '../errors.js';
import { eventRow } from '../outbox/event-row.js';
import { toDate } from '../rows.js';
import { inTransaction } from '../transaction.js';
import type { Database, ReservationLine } from '../types.js';
import { readLines } from '../engine/lines.js';
import { moveStock, sumMoves } from '../stock/move-stock.js';
import { batchLimitSchema, dateSchema, dbOptionsShape, parseOptions, telemetrySchema } from '../validation.js';
import { log, type Logger, loggerSchema } from '../observability/logger.js';
import { dbSystemName, type Telemetry, type TelemetrySetting, telemetryFor } from '../observability/telemetry.js';
import type { ReservationEngineOptions } from '../engine/reservation-engine.js';

/** Options of {@link expireBatch}. */
export interface ExpireBatchOptions {
  /** The host's Kysely instance (see {@link ReservationEngineOptions.db}). */
  readonly db: Kysely<any>;
  /**
   * The prefix of the engine's tables (see {@link ReservationEngineOptions.tablePrefix}).
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
  /**
   * Which database `db` talks to (see {@link ReservationEngineOptions.dialect}).
   * @defaultValue detected from the Kysely adapter
   */
  readonly dialect?: DatabaseKind;
  /**
   * Most reservations expired by this call, 1–10,000.
   * @defaultValue 500
   */
  readonly limit?: number;
  /**
   * The time this call treats as current: PENDING reservations with `expiresAt` ≤ `now` expire.
   * @defaultValue the current time
   */
  readonly now?: Date;
  /**
   * Where reservations that could not be expired are reported (error, with the database's error).
   * @defaultValue none: silent
   */
  readonly logger?: Logger;
  /**
   * OpenTelemetry: a span for the call (its events carry its trace context) and the
   * `reservation_engine.transitions` count of expired reservations (see
   * {@link ReservationEngineOptions.telemetry}).
   * @defaultValue true
   */
  readonly telemetry?: TelemetrySetting;
}

/** What {@link expireBatch} did. */
export interface ExpireBatchResult {
  /** Reservations expired, their stock returned and their `reservation.expired` events written. */
  readonly expired: number;
  /**
   * Due reservations that could not be expired because the database refused their writes (a row
   * damaged outside the engine, say). They stay PENDING and are tried again by the next call;
   * they never stop the others.
   */
  readonly failed: number;
}

const optionsSchema = z.strictObject({
  ...dbOptionsShape,
  limit: batchLimitSchema(500),
  now: dateSchema.optional(),
  logger: loggerSchema.optional(),
  telemetry: telemetrySchema.optional(),
});

interface DueReservation {
  readonly id: string;
  readonly itemId: number | null;
  readonly quantity: number;
  readonly lines: readonly ReservationLine[];
  readonly expiresAt: Date;
}

/**
 * Expires up to `limit` PENDING reservations past their `expiresAt`, returns their stock and
 * writes a `reservation.expired` event for each, in one transaction. Concurrent callers skip
 * each other's rows (SKIP LOCKED) and lock items in id order, so each reservation expires
 * exactly once and callers never deadlock. Call it until `expired + failed` is less than
 * `limit` to drain.
 *
 * If the batch fails on a row the database refuses, the due rows are expired one at a time
 * instead, so that one bad row never holds back the others (it is counted in `failed`).
 *
 * @throws {OutcomeUnknownError} the connection failed; run it again: nothing expires twice
 *
 * @example
 * ```ts
 * const { expired } = await expireBatch({ db, limit: 1000 });
 * ```
 */
export async function expireBatch(options: ExpireBatchOptions): Promise<ExpireBatchResult> {
  const { limit, ...o } = parseOptions(optionsSchema, options);
  const db = engineDb(o.db, schemaNames(o.tablePrefix));
  const dialect = dialectOf(o.db, o.dialect);
  const now = o.now ?? new Date();
  const telemetry = telemetryFor(o.telemetry, dbSystemName(dialect));
  return telemetry.call('expireBatch', () => 'ok', async () => {
    const sweep: Sweep = { db, dialect, now, telemetry, logger: o.logger };
    try {
      await verifiedSession(o.db, dialect);
      try {
        return { expired: await expireDue(sweep, { limit }), failed: 0 };
      } catch (error) {
        if (dialect.isConnectionError(error)) throw error;
        return await expireOneByOne(sweep, limit);
      }
    } catch (error) {
      if (dialect.isConnectionError(error)) throw new OutcomeUnknownError('expireBatch', 'Run it again: no reservation expires twice.', error);
      throw error;
    }
  });
}

/** What one call works with. */
interface Sweep {
  readonly db: Kysely<Database>;
  readonly dialect: SqlDialect;
  readonly now: Date;
  readonly telemetry: Telemetry;
  readonly logger: Logger | undefined;
}

/** The fallback after a failed batch: each due reservation in its own transaction. */
async function expireOneByOne(sweep: Sweep, limit: number): Promise<ExpireBatchResult> {
  const { db, dialect, now } = sweep;
  const due = await dueReservations(db, now, limit, { lock: false });
  let expired = 0;
  let failed = 0;
  let lastError: unknown;
  for (const { id } of due) {
    try {
      expired += await expireDue(sweep, { limit: 1, id });
    } catch (error) {
      if (dialect.isConnectionError(error)) throw error;
      failed++;
      lastError = error;
      log(sweep.logger, 'error', `expire: reservation ${id} could not be expired (the database refused its writes); tried again by the next call`, { reservationId: id, error });
    }
  }
  // Every row failing is no bad row but a broken sweep (a privilege, the schema): say so.
  if (failed > 0 && expired === 0 && failed === due.length && due.length > 1) throw lastError;
  return { expired, failed };
}

/** One sweep transaction: select the due rows, mark them expired, return their stock, write their events. */
async function expireDue({ db, dialect, now, telemetry }: Sweep, which: { limit: number; id?: string }): Promise<number> {
  const expired = await inTransaction(db, dialect, async (trx) => {
    const due = await dueReservations(trx, now, which.limit, { lock: true, id: which.id });
    if (due.length === 0) return 0;
    await markExpired(trx, due, now);
    await returnStock(trx, due, now);
    await writeEvents(trx, dialect, due, now, telemetry.traceparent());
    return due.length;
  });
  telemetry.transitions('expired', expired);
  return expired;
}

/** PENDING reservations past `now`, oldest first; locked with SKIP LOCKED so concurrent sweeps take different rows. */
async function dueReservations(db: Kysely<Database>, now: Date, limit: number, options: { lock: boolean; id?: string }): Promise<DueReservation[]> {
  let query = db
    .selectFrom('reservations')
    .select(['id', 'item_id', 'quantity', 'expires_at'])
    .where('status', '=', 'PENDING')
    .where('expires_at', '<=', now)
    .orderBy('expires_at')
    .limit(limit);
  if (options.id !== undefined) query = query.where('id', '=', options.id);
  if (options.lock) query = query.forUpdate().skipLocked();
  const rows = await query.execute();
  // Reservations of several items: their lines, one query for all.
  const lines = await readLines(
    db,
    rows.filter((row) => row.item_id === null).map((row) => row.id),
  );
  return rows.map((row) => {
    const itemId = row.item_id === null ? null : Number(row.item_id);
    const quantity = Number(row.quantity);
    return { id: row.id, itemId, quantity, lines: itemId === null ? (lines.get(String(row.id).toLowerCase()) ?? []) : [{ itemId, quantity }], expiresAt: toDate(row.expires_at) };
  });
}

async function markExpired(trx: Kysely<Database>, due: readonly DueReservation[], now: Date): Promise<void> {
  await trx
    .updateTable('reservations')
    .set({ status: 'EXPIRED', updated_at: now })
    .where(
      'id',
      'in',
      due.map((r) => r.id),
    )
    .where('status', '=', 'PENDING')
    .execute();
}

/** Moves the held units back to available, one statement for all items, locking the items in id order first. */
async function returnStock(trx: Kysely<Database>, due: readonly DueReservation[], now: Date): Promise<void> {
  const moves = due.flatMap((r) => r.lines.map((line) => ({ itemId: line.itemId, available: line.quantity, held: -line.quantity })));
  // Several items go through moveStock's ordered locks even when only one is due, so that two
  // sweeps over overlapping items never deadlock.
  await moveStock(trx, sumMoves(moves), now);
}

async function writeEvents(trx: Kysely<Database>, dialect: SqlDialect, due: readonly DueReservation[], now: Date, traceContext: string | null): Promise<void> {
  await trx
    .insertInto('outbox')
    .values(due.map((r) => eventRow(dialect, 'reservation.expired', { ...r, status: 'EXPIRED' }, now, traceContext)))
    .execute();
}
