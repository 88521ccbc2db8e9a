import { type Kysely, sql } from 'kysely';
import { z } from 'zod';
import { isEmbeddedPostgres, maintainEmbedded } from '../embedded/maintenance.js';
import { withStore } from '../schema/store.js';
import { schemaNames } from '../schema/tables.js';
import { inTransaction } from '../transaction.js';
import type { Database, DatabaseKind } from '../types.js';
import { uuidv7LowerBound } from '../uuid.js';
import { readLines } from '../engine/lines.js';
import { dateSchema, dbOptionsShape, integer, MAX_BATCH_LIMIT, parseOptions, telemetrySchema } from '../validation.js';
import { dialectOf } from '../dialects/index.js';
import { dbSystemName, type TelemetrySetting, telemetryFor } from '../observability/telemetry.js';
import type { ReservationEngineOptions } from '../engine/reservation-engine.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** How long each kind of row is kept, in milliseconds. */
export interface RetentionPeriods {
  /**
   * Delivered outbox events, counted from their delivery. Dead-lettered and pending events are
   * never purged (see `retryDeadLetters`).
   * @defaultValue 604800000 (7 days)
   */
  readonly processedEventsMs?: number;
  /**
   * Idempotency keys of `reserve` and `restock`, counted from the request: 24 hours, as payment
   * APIs promise. A key whose reservation is still PENDING is kept until it is not. After its
   * key is purged, a request with the same key is a new request: it makes a new reservation.
   * @defaultValue 86400000 (24 hours)
   */
  readonly idempotencyKeysMs?: number;
  /**
   * Finished (CONFIRMED, CANCELLED, EXPIRED) reservations, counted from their creation; at least
   * `idempotencyKeysMs`. PENDING reservations are never purged.
   * @defaultValue never: reservations are business records, kept unless you say otherwise
   */
  readonly finishedReservationsMs?: number;
}

/** Options of {@link purgeBatch}. */
export interface PurgeBatchOptions extends RetentionPeriods {
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
   * Most rows of each kind deleted by this call, 1–10,000.
   * @defaultValue 1000
   */
  readonly limit?: number;
  /**
   * The time this call treats as current.
   * @defaultValue the current time
   */
  readonly now?: Date;
  /**
   * PGlite only: after purging, do what autovacuum and the checkpointer do on a PostgreSQL
   * server, which PGlite (one single-user backend) has neither of. Each call VACUUMs (plain, not
   * FULL) the engine's tables whose dead rows exceed 50 + 20% of their live rows (autovacuum's
   * default threshold), so that the space of purged and updated rows is reused, and runs a
   * CHECKPOINT once 32 MB of WAL have been written since the last one, so that the WAL is
   * recycled. Without both, PGlite's memory (`memory://`) or data directory grows with every
   * reservation, retention or not; with them it levels off once retention keeps the row counts
   * steady. `false` leaves both to you. Ignored on MySQL/MariaDB and PostgreSQL servers, whose
   * background processes do this.
   * @defaultValue true
   */
  readonly maintenance?: boolean;
  /**
   * OpenTelemetry: a span for the call (see {@link ReservationEngineOptions.telemetry}).
   * @defaultValue true
   */
  readonly telemetry?: TelemetrySetting;
}

/** What {@link purgeBatch} deleted, per kind. */
export interface PurgeBatchResult {
  readonly outboxEvents: number;
  readonly idempotencyKeys: number;
  readonly restockKeys: number;
  readonly reservations: number;
}

const period = (max: number) => integer(0, max).optional();

/** @internal The retention options, checked alike by `purgeBatch` and `startWorker`'s purge loop. */
export const retentionShape = {
  limit: integer(1, MAX_BATCH_LIMIT).default(1000),
  maintenance: z.boolean({ error: 'must be true or false' }).optional(),
  processedEventsMs: period(3650 * DAY_MS),
  idempotencyKeysMs: period(3650 * DAY_MS),
  finishedReservationsMs: period(3650 * DAY_MS),
};

/** @internal A reservation must outlive its key: the refinement both schemas apply. */
export const reservationsOutliveKeys: [(o: { finishedReservationsMs?: number; idempotencyKeysMs?: number }) => boolean, { error: string; path: string[] }] = [
  (o) => o.finishedReservationsMs === undefined || o.finishedReservationsMs >= (o.idempotencyKeysMs ?? DAY_MS),
  { error: 'must be at least idempotencyKeysMs (a reservation outlives its key)', path: ['finishedReservationsMs'] },
];

const optionsSchema = z
  .strictObject({
    ...dbOptionsShape,
    ...retentionShape,
    now: dateSchema.optional(),
    telemetry: telemetrySchema.optional(),
  })
  .refine(...reservationsOutliveKeys);

const FINISHED = ['CONFIRMED', 'CANCELLED', 'EXPIRED'] as const;

/**
 * Retention: deletes, in bounded batches, delivered outbox events and idempotency keys older than
 * their retention period, and (only if `finishedReservationsMs` is given) finished reservations.
 * Call it until every count is below `limit` to drain; from cron, or every few minutes from a
 * worker. Safe to run from several processes at once. On PGlite it also vacuums and checkpoints
 * (see {@link PurgeBatchOptions.maintenance}): run it every few minutes there even with long
 * retention periods, so that memory stays bounded.
 *
 * @throws {OutcomeUnknownError} the connection failed; run it again
 *
 * @example
 * ```ts
 * const { outboxEvents, idempotencyKeys } = await purgeBatch({ db, processedEventsMs: 3 * 24 * 3_600_000 });
 * ```
 */
export async function purgeBatch(options: PurgeBatchOptions): Promise<PurgeBatchResult> {
  const o = parseOptions(optionsSchema, options);
  const now = (o.now ?? new Date()).getTime();
  const keysBefore = new Date(now - (o.idempotencyKeysMs ?? DAY_MS));
  const telemetry = telemetryFor(o.telemetry, dbSystemName(dialectOf(o.db, o.dialect)));
  return telemetry.call('purgeBatch', () => 'ok', () =>
    withStore(o, 'purgeBatch', 'Run it again: it deletes only what is past its retention.', async ({ db, dialect }) => {
      const result: PurgeBatchResult = {
        outboxEvents: await purgeEvents(db, new Date(now - (o.processedEventsMs ?? 7 * DAY_MS)), o.limit),
        idempotencyKeys: await purgeReserveKeys(db, keysBefore, o.limit),
        restockKeys: await purgeRestockKeys(db, keysBefore, o.limit),
        reservations:
          o.finishedReservationsMs === undefined
            ? 0
            : await inTransaction(db, dialect, (trx) => purgeReservations(trx, new Date(now - o.finishedReservationsMs!), o.limit)),
      };
      if (o.maintenance !== false && dialect.name === 'postgres' && (await isEmbeddedPostgres(o.db))) {
        await maintainEmbedded(o.db, schemaNames(o.tablePrefix));
      }
      return result;
    }),
  );
}

/** Delivered events, oldest delivery first (index on processed_at). */
async function purgeEvents(db: Kysely<Database>, before: Date, limit: number): Promise<number> {
  const rows = await db.selectFrom('outbox').select('id').where('processed_at', '<', before).orderBy('processed_at').limit(limit).execute();
  if (rows.length === 0) return 0;
  const result = await db
    .deleteFrom('outbox')
    .where(
      'id',
      'in',
      rows.map((r) => r.id),
    )
    .where('processed_at', '<', before)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** Keys of reserve requests whose reservation is no longer PENDING (or gone). */
async function purgeReserveKeys(db: Kysely<Database>, before: Date, limit: number): Promise<number> {
  const keys = await db
    .selectFrom('idempotency_requests as i')
    .leftJoin('reservations as r', 'r.id', 'i.reservation_id')
    .select(['i.idempotency_scope', 'i.idempotency_key', 'i.reservation_id'])
    .where('i.created_at', '<', before)
    .where((eb) => eb.or([eb('r.id', 'is', null), eb('r.status', '!=', 'PENDING')]))
    .orderBy('i.created_at')
    .limit(limit)
    .execute();
  return deleteKeys(db, 'idempotency_requests', keys, before);
}

async function purgeRestockKeys(db: Kysely<Database>, before: Date, limit: number): Promise<number> {
  const keys = await db
    .selectFrom('restock_requests')
    .select(['idempotency_scope', 'idempotency_key'])
    .where('created_at', '<', before)
    .orderBy('created_at')
    .limit(limit)
    .execute();
  return deleteKeys(db, 'restock_requests', keys, before);
}

/** Keys per DELETE: a long OR list costs PostgreSQL more to plan than to run. */
const KEYS_PER_DELETE = 100;

/**
 * Deletes exactly the keys selected: each by its primary key, and only while it is still the one
 * selected (made before `before`, and for idempotency keys still pointing at the same
 * reservation), so that a key reused meanwhile — a new request under the same key — survives.
 */
async function deleteKeys(
  db: Kysely<Database>,
  table: 'idempotency_requests' | 'restock_requests',
  keys: ReadonlyArray<{ idempotency_scope: string; idempotency_key: string; reservation_id?: string }>,
  before?: Date,
): Promise<number> {
  let deleted = 0;
  for (let start = 0; start < keys.length; start += KEYS_PER_DELETE) {
    const chunk = keys.slice(start, start + KEYS_PER_DELETE);
    let statement = db.deleteFrom(table);
    if (before !== undefined) statement = statement.where('created_at', '<', before);
    const result = await statement
      .where((eb) =>
        eb.or(
          chunk.map((k) =>
            eb.and([
              eb('idempotency_scope', '=', k.idempotency_scope),
              eb('idempotency_key', '=', k.idempotency_key),
              ...(k.reservation_id === undefined ? [] : [sql<boolean>`${sql.ref('reservation_id')} = ${k.reservation_id}`]),
            ]),
          ),
        ),
      )
      .executeTakeFirst();
    deleted += Number(result.numDeletedRows);
  }
  return deleted;
}

/**
 * Finished reservations created before `before`, oldest first: ids are UUID v7, so "created
 * before" is a primary-key range. Their keys go with them (a replay must never find a key
 * without its reservation).
 */
async function purgeReservations(trx: Kysely<Database>, before: Date, limit: number): Promise<number> {
  const rows = await trx
    .selectFrom('reservations')
    .select(['id', 'idempotency_scope', 'idempotency_key', 'item_id', 'quantity', 'status'])
    .where('id', '<', uuidv7LowerBound(before.getTime()))
    .where('status', 'in', FINISHED)
    .orderBy('id')
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
  if (rows.length === 0) return 0;
  // Each key only while it still names this reservation: a key reused since belongs to another.
  await deleteKeys(
    trx,
    'idempotency_requests',
    rows.map((r) => ({ ...r, reservation_id: r.id })),
  );
  await countPurgedSales(trx, rows);
  const carts = rows.filter((r) => r.item_id === null).map((r) => r.id);
  if (carts.length > 0) await trx.deleteFrom('reservation_lines').where('reservation_id', 'in', carts).execute();
  const result = await trx
    .deleteFrom('reservations')
    .where(
      'id',
      'in',
      rows.map((r) => r.id),
    )
    .where('status', 'in', FINISHED)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/**
 * The units of CONFIRMED reservations about to be deleted go to their items' purged-sales
 * counter, so that the audit still finds them: sold units leave the item, and a sale's record
 * may go, but the count stays.
 */
async function countPurgedSales(trx: Kysely<Database>, rows: readonly { id: string; item_id: number | null; quantity: number; status: string }[]): Promise<void> {
  const confirmed = rows.filter((r) => r.status === 'CONFIRMED');
  const lines = await readLines(
    trx,
    confirmed.filter((r) => r.item_id === null).map((r) => r.id),
  );
  const sold = new Map<number, number>();
  for (const r of confirmed) {
    const itemLines = r.item_id === null ? (lines.get(String(r.id).toLowerCase()) ?? []) : [{ itemId: Number(r.item_id), quantity: Number(r.quantity) }];
    for (const line of itemLines) sold.set(line.itemId, (sold.get(line.itemId) ?? 0) + line.quantity);
  }
  // One UPDATE per item in ascending id: the lock order of every writer of items.
  for (const [itemId, units] of [...sold].sort(([a], [b]) => a - b)) {
    await trx
      .updateTable('items')
      .set((eb) => ({ purged_confirmed_quantity: eb('purged_confirmed_quantity', '+', units) }))
      .where('id', '=', itemId)
      .execute();
  }
}
