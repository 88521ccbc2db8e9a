import type { CompiledQuery, Kysely, Selectable, UpdateQueryBuilder, UpdateResult } from 'kysely';
import { z } from 'zod';
import { type DatabaseKind, dialectOf, type SqlDialect, verifiedSession } from '../dialects/index.js';
import type { ReserveOutcome } from '../dialects/dialect.js';
import {
  ConfigurationError,
  DuplicateSkuError,
  IdempotencyConflictError,
  InsufficientStockError,
  InvalidStateError,
  NotFoundError,
  OutcomeUnknownError,
  ReservationError,
  TransactionConflictError,
  ValidationError,
} from '../errors.js';
import { payloadHash } from '../idempotency/payload-hash.js';
import { eventRow, itemEventRow } from '../outbox/event-row.js';
import { toItem, toReservation } from '../rows.js';
import { moveStock } from '../stock/move-stock.js';
import { readLines, withLines } from './lines.js';
import { reservationPage } from './list-reservations.js';
import { extendHold } from './extend-hold.js';
import { type AuditReport, auditStock } from '../audit/audit-stock.js';
import { engineDb, type SchemaNames, schemaNames } from '../schema/tables.js';
import { sleep, withRetries } from '../transaction.js';
import type { Database, Item, Reservation, ReservationEventType, ReservationLine, ReservationsTable } from '../types.js';
import { uuidv7 } from '../uuid.js';
import { dbSystemName, recordRetry, type Telemetry, type TelemetrySetting, telemetryFor } from '../observability/telemetry.js';
import { transact, underSavepoint, type WriteOptions, type WriteTarget, writeTarget } from './host-transaction.js';
import { reserveInHostTransaction } from './reserve-in-transaction.js';
import { ShortStockNotes, type StockAndKeyRow, stockAndKeyQuery } from './short-stock.js';
import {
  createItemSchema,
  auditSchema,
  describeClockValue,
  extendSchema,
  functionSchema,
  isStorableDate,
  dbOptionsShape,
  itemIdSchema,
  listReservationsSchema,
  MAX_AVAILABLE_QUANTITY,
  maxHoldSecondsSchema,
  parse,
  parseOptions,
  reservationIdOf,
  reserveSchema,
  restockSchema,
  telemetrySchema,
  ttlSecondsSchema,
  writeOffSchema,
} from '../validation.js';

export type {
  AuditInput,
  CreateItemInput,
  ExtendInput,
  ListReservationsQuery,
  ReservationPage,
  ReserveInput,
  ReserveLineInput,
  ReserveRequestBase,
  ReserveResult,
  RestockInput,
  WriteOffInput,
} from './inputs.js';
import type { AuditInput, CreateItemInput, ExtendInput, ListReservationsQuery, ReservationPage, ReserveInput, ReserveResult, RestockInput, WriteOffInput } from './inputs.js';

/** Options of {@link ReservationEngine}. */
export interface ReservationEngineOptions {
  /**
   * The host's Kysely instance: MySQL 8 / MariaDB ≥ 10.6 (`MysqlDialect` over mysql2; set
   * `timezone: 'Z'` on the pool so timestamps stay UTC), PostgreSQL ≥ 13 or PGlite. The engine
   * uses it as is and never closes it. Run {@link migrateToLatest} on it once first.
   */
  readonly db: Kysely<any>;
  /**
   * How long a reservation holds its stock when `reserve` is not given `ttlSeconds`.
   * A positive integer, at most 30 days.
   * @defaultValue 900 (15 minutes)
   */
  readonly defaultTtlSeconds?: number;
  /**
   * The longest a reservation may be held by {@link ReservationEngine.extend}, in seconds from its
   * creation: `extend` never moves `expiresAt` past `createdAt + maxHoldSeconds`. It does not
   * bound `reserve`'s own `ttlSeconds`. A positive integer, at most 30 days.
   * @defaultValue 3600 (1 hour)
   */
  readonly maxHoldSeconds?: number;
  /**
   * The engine's notion of now: timestamps, expiry times, and whether a reservation has expired
   * when it is confirmed. Inject a fake clock in tests.
   * @defaultValue () => new Date()
   */
  readonly clock?: () => Date;
  /**
   * The prefix of the engine's tables: the one given to {@link migrateToLatest}.
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
  /**
   * Which database `db` talks to, when the engine cannot tell from its adapter (a minified build,
   * a third-party dialect).
   * @defaultValue detected from the Kysely adapter
   */
  readonly dialect?: DatabaseKind;
  /**
   * OpenTelemetry: a span per call (`reservation-engine reserve`, …) and the engine's metrics, sent
   * to the providers registered with `@opentelemetry/api` (an optional peer dependency: without it
   * nothing is recorded and nothing is loaded), or to the ones given here; `false` turns it off.
   * See the README's Observability section for the names.
   * @defaultValue true
   */
  readonly telemetry?: TelemetrySetting;
}

const optionsSchema = z.strictObject({
  ...dbOptionsShape,
  telemetry: telemetrySchema.optional(),
  defaultTtlSeconds: ttlSecondsSchema.optional(),
  maxHoldSeconds: maxHoldSecondsSchema.optional(),
  clock: functionSchema<() => Date>('a function returning a Date').optional(),
});


type StatusUpdate = UpdateQueryBuilder<Database, 'reservations', 'reservations', UpdateResult>;

interface TransitionStep {
  readonly to: 'CONFIRMED' | 'CANCELLED';
  readonly event: ReservationEventType;
  /** Extra conditions for the UPDATE. */
  readonly guard?: (update: StatusUpdate, now: Date) => StatusUpdate;
  /** Where each line's held units go: back to `available` (cancelled), or out for good (confirmed). */
  readonly releaseTo: 'available' | 'sold';
  /** The error for a reservation in another state. */
  readonly refused: (reservation: Reservation, action: 'confirm' | 'cancel') => Error;
}

/** The outcome attribute of a call that returned. */
const OK = () => 'ok';
const RESERVE_OUTCOME = (result: ReserveResult) => (result.replayed ? 'replayed' : 'created');

/** Replays can lose a race with a transaction that rolls back; this many rounds settle it. */
const MAX_RESERVE_ROUNDS = 5;

const RETRY_WITH_KEY = 'Retry with the same idempotency key: it returns the first attempt\'s result if that committed.';
const NOTHING_WRITTEN = 'Nothing was written; try again.';
/** Pauses before repeating work that is safe to repeat after a failed connection. */
const CONNECTION_RETRY_PAUSES_MS = [10, 100];

/**
 * Holds stock for a limited time without ever overselling.
 *
 * @example
 * ```ts
 * const engine = new ReservationEngine({ db });
 * const item = await engine.createItem({ sku: 'TSHIRT-M', name: 'T-shirt M', availableQuantity: 10 });
 * const { reservation } = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: req.header('Idempotency-Key') });
 * await engine.confirm(reservation.id);
 * ```
 */
export class ReservationEngine {
  readonly #db: Kysely<Database>;
  readonly #hostDb: Kysely<any>;
  readonly #names: SchemaNames;
  readonly #dialect: SqlDialect;
  readonly #defaultTtlSeconds: number;
  readonly #maxHoldSeconds: number;
  readonly #clock: () => Date;
  readonly #shortStock = new ShortStockNotes();
  readonly #telemetry: Telemetry;
  #stockAndKey: CompiledQuery<StockAndKeyRow> | undefined;

  constructor(options: ReservationEngineOptions) {
    const parsed = parseOptions(optionsSchema, options);
    this.#names = schemaNames(parsed.tablePrefix);
    this.#hostDb = parsed.db;
    this.#db = engineDb(parsed.db, this.#names);
    this.#dialect = dialectOf(parsed.db, parsed.dialect);
    this.#defaultTtlSeconds = parsed.defaultTtlSeconds ?? 900;
    this.#maxHoldSeconds = parsed.maxHoldSeconds ?? 3600;
    this.#clock = parsed.clock ?? (() => new Date());
    this.#telemetry = telemetryFor(parsed.telemetry, dbSystemName(this.#dialect));
  }

  /**
   * Adds an item and returns it as stored. A SKU that exists already is a {@link DuplicateSkuError}.
   *
   * @throws {ValidationError} bad input: see {@link CreateItemInput}
   * @throws {DuplicateSkuError} an item with this SKU exists (also the answer to a retry of a create that committed)
   */
  async createItem(input: CreateItemInput): Promise<Item> {
    return this.#telemetry.call('createItem', OK, async () => {
      const { sku, name, availableQuantity } = parse(createItemSchema, input);
      const now = this.#now();
      return this.#unknownOutcome('createItem', `Look for an item with SKU ${JSON.stringify(sku)} before creating it again.`, { retry: false }, async () => {
        try {
          return toItem(await this.#dialect.insertItem(this.#db, { sku, name, available_quantity: availableQuantity, received_quantity: availableQuantity, created_at: now, updated_at: now }));
        } catch (error) {
          if (this.#dialect.isDuplicateKey(error)) throw new DuplicateSkuError(sku);
          throw error;
        }
      });
    });
  }

  /** The item, or `undefined` when no item has this id. An id that is not a positive integer is a {@link ValidationError}. */
  async getItem(itemId: number): Promise<Item | undefined> {
    return this.#telemetry.call('getItem', OK, async () => {
      const id = parse(itemIdSchema, itemId, 'itemId');
      return this.#unknownOutcome('getItem', NOTHING_WRITTEN, { retry: true }, async () => {
        const row = await this.#db.selectFrom('items').selectAll().where('id', '=', id).executeTakeFirst();
        return row && toItem(row);
      });
    });
  }

  /**
   * Adds `quantity` units to the item's stock and returns the item. With an `idempotencyKey` it
   * is safe to retry: the units are added once.
   *
   * @throws {ValidationError} bad input, or available plus held units would exceed 2,147,483,647
   * @throws {NotFoundError} no item with this id
   * @throws {IdempotencyConflictError} the key was used with another item or quantity
   */
  async restock(input: RestockInput, options?: WriteOptions): Promise<Item> {
    return this.#telemetry.call('restock', OK, async () => {
      const { itemId, quantity, idempotencyKey, idempotencyScope = '' } = parse(restockSchema, input);
      const key = idempotencyKey === undefined ? undefined : { scope: idempotencyScope, key: idempotencyKey, hash: payloadHash({ itemId, quantity }) };
      const item = await this.#adjustStock('restock', options, itemId, key, async (db, now) => {
        const result = await db
          .updateTable('items')
          .set((eb) => ({ available_quantity: eb('available_quantity', '+', quantity), received_quantity: eb('received_quantity', '+', quantity), updated_at: now }))
          .where('id', '=', itemId)
          // available + held ≤ MAX − quantity, written so that no side can overflow a 32-bit integer.
          .where((eb) => eb('available_quantity', '<=', eb(eb.val(MAX_AVAILABLE_QUANTITY - quantity), '-', eb.ref('held_quantity'))))
          .executeTakeFirst();
        const item = await this.#requireItem(db, itemId);
        if (Number(result.numUpdatedRows) === 0) {
          throw new ValidationError([
            `quantity: restocking ${quantity.toLocaleString('en-US')} would take item ${itemId} over ${MAX_AVAILABLE_QUANTITY.toLocaleString('en-US')} units ` +
              `(${item.availableQuantity.toLocaleString('en-US')} available, ${item.heldQuantity.toLocaleString('en-US')} held)`,
          ]);
        }
        return item;
      });
      this.#shortStock.forget(itemId);
      return item;
    });
  }

  /**
   * Takes `quantity` units out of an item's available stock for good — damaged, lost, stolen
   * (shrinkage) — and writes an `item.written_off` event with the reason, in one transaction.
   * It never takes available stock below zero: units held by PENDING reservations cannot be
   * written off (cancel those first). The audit counts written-off units apart from sales. With
   * an `idempotencyKey` it is safe to retry: the units are taken once.
   *
   * @throws {ValidationError} bad input
   * @throws {NotFoundError} no item with this id
   * @throws {InsufficientStockError} fewer units available than `quantity`: nothing written off
   * @throws {IdempotencyConflictError} the key was used with another stock adjustment
   *
   * @example
   * ```ts
   * await engine.writeOff({ itemId: 1, quantity: 2, reason: 'damaged', idempotencyKey: 'count-2026-11-28-1' });
   * ```
   */
  async writeOff(input: WriteOffInput, options?: WriteOptions): Promise<Item> {
    return this.#telemetry.call('writeOff', OK, async () => {
      const { itemId, quantity, reason, idempotencyKey, idempotencyScope = '' } = parse(writeOffSchema, input);
      const key = idempotencyKey === undefined ? undefined : { scope: idempotencyScope, key: idempotencyKey, hash: payloadHash({ writeOff: { itemId, quantity, reason } }) };
      return this.#adjustStock('writeOff', options, itemId, key, async (db, now) => {
        const result = await db
          .updateTable('items')
          .set((eb) => ({ available_quantity: eb('available_quantity', '-', quantity), written_off_quantity: eb('written_off_quantity', '+', quantity), updated_at: now }))
          .where('id', '=', itemId)
          .where('available_quantity', '>=', quantity)
          .executeTakeFirst();
        const item = await this.#requireItem(db, itemId);
        if (Number(result.numUpdatedRows) === 0) throw new InsufficientStockError(itemId, quantity, item.availableQuantity);
        await db
          .insertInto('outbox')
          .values(itemEventRow(this.#dialect, 'item.written_off', { itemId, quantity, reason, availableQuantity: item.availableQuantity, occurredAt: now.toISOString() }, now, this.#telemetry.traceparent()))
          .execute();
        return item;
      });
    });
  }

  /**
   * A stock adjustment (restock, write-off) in one transaction: records the key (if any), then
   * runs `writes`. A key already taken — maybe by a concurrent retry that committed first — is
   * replayed (the item as it is now) or refused (another adjustment).
   */
  async #adjustStock(
    operation: 'restock' | 'writeOff',
    options: WriteOptions | undefined,
    itemId: number,
    key: { scope: string; key: string; hash: string } | undefined,
    writes: (db: Kysely<Database>, now: Date) => Promise<Item>,
  ): Promise<Item> {
    const target = writeTarget(this.#db, this.#names, options);
    const advice = key === undefined ? `Check the item's stock before calling ${operation} again, or pass an idempotencyKey.` : RETRY_WITH_KEY;
    const run = async (db: Kysely<Database>) => {
      const now = this.#now();
      if (key !== undefined) {
        await db
          .insertInto('restock_requests')
          .values({ idempotency_scope: key.scope, idempotency_key: key.key, payload_hash: key.hash, item_id: itemId, created_at: now })
          .execute();
      }
      return writes(db, now);
    };
    return this.#unknownOutcome(operation, advice, { retry: key !== undefined && !target.hosted }, async () => {
      for (let round = 1; ; round++) {
        try {
          // In a host's transaction the writes run under a savepoint: a refused adjustment leaves
          // its transaction as it was, and usable.
          return await transact(target, this.#dialect, (db) => (target.hosted ? underSavepoint(db, () => run(db)) : run(db)));
        } catch (error) {
          if (key === undefined || !this.#dialect.isDuplicateKey(error)) throw error;
          // In a host's transaction a locking read sees the latest committed row, not its snapshot.
          let lookup = target.db
            .selectFrom('restock_requests')
            .select('payload_hash')
            .where('idempotency_scope', '=', key.scope)
            .where('idempotency_key', '=', key.key);
          if (target.hosted) lookup = lookup.forUpdate();
          const earlier = await lookup.executeTakeFirst();
          if (earlier && earlier.payload_hash !== key.hash) throw new IdempotencyConflictError(key.key);
          if (earlier) return this.#requireItem(target.db, itemId);
          // Invisible to the host's snapshot (REPEATABLE READ): only a new transaction can see it.
          if (target.hosted || round >= MAX_RESERVE_ROUNDS) throw new TransactionConflictError(round, error, { hosted: target.hosted });
        }
      }
    });
  }

  /**
   * Holds `quantity` units of an item until `ttlSeconds` from now, or returns the earlier result
   * for a repeated idempotency key (within its `idempotencyScope`).
   *
   * One transaction writes the idempotency record, the PENDING reservation and its
   * `reservation.created` outbox event, and decrements the stock with a guarded UPDATE
   * (`available_quantity >= quantity`). It runs as a single round trip inside the database
   * (see {@link SqlDialect.reserve}), so the item's row lock is never held while the database
   * waits for this process. When it fails (unknown item, not enough stock) nothing is stored
   * and the key may be reused. Concurrent calls with one key yield one reservation: every one
   * of them returns it (or an {@link IdempotencyConflictError} for a different request).
   *
   * With `{ trx }` the same writes join the host's transaction instead (plain statements under a
   * savepoint, the stock decrement last): they commit or roll back with it.
   *
   * @throws {ValidationError} bad input
   * @throws {NotFoundError} no item with this id
   * @throws {InsufficientStockError} fewer units available than requested
   * @throws {IdempotencyConflictError} the key was used with a different request
   * @throws {OutcomeUnknownError} the connection failed: retry with the same key to learn the outcome
   *
   * @example
   * ```ts
   * const { reservation, replayed } = await engine.reserve({ itemId: 1, quantity: 2, idempotencyKey: 'order-1001' });
   * ```
   */
  async reserve(input: ReserveInput, options?: WriteOptions): Promise<ReserveResult> {
    return this.#telemetry.call('reserve', RESERVE_OUTCOME, async () => {
      const request = parse(reserveSchema, input);
      const target = writeTarget(this.#db, this.#names, options);
      const { lines } = request;
      // One line is a single-item reservation, stored and hashed as one whatever form it came in.
      const single = lines.length === 1 ? lines[0]! : undefined;
      // The hash covers what the client sent, not this engine's defaults: a retry served by an
      // engine with another defaultTtlSeconds (a rolling deploy) is still the same request. Lines
      // are summed and sorted already: their order does not change it.
      const requestHash = () =>
        single
          ? payloadHash({ itemId: single.itemId, quantity: single.quantity, ttlSeconds: request.ttlSeconds })
          : payloadHash({ lines: lines.map((line) => [line.itemId, line.quantity]), ttlSeconds: request.ttlSeconds });
      const ttlSeconds = request.ttlSeconds ?? this.#defaultTtlSeconds;
      const scope = request.idempotencyScope ?? '';
      const { idempotencyKey } = request;

      return this.#unknownOutcome('reserve', RETRY_WITH_KEY, { retry: !target.hosted }, async () => {
        if (single && !target.hosted && this.#shortStock.likelyShort(single.itemId, single.quantity)) {
          // A sold-out item: one plain read answers most requests (see ShortStockNotes).
          const answer = await this.#answerFromStockRead(single.itemId, single.quantity, scope, idempotencyKey, requestHash);
          if (answer) return answer;
        }
        const hash = requestHash();
        for (let round = 1, afterDuplicate = false; ; round++) {
          if (target.hosted) {
            // The engine's own reserve looks the key up inside its one round trip. In a host's
            // transaction the first look is a plain read: a locking read of a key that is not there
            // would take a gap lock on MySQL/MariaDB, and two hosts inserting nearby keys would
            // deadlock. After a duplicate key the row exists, and a locking read sees it.
            const earlier = await this.#findByIdempotencyKey(target, scope, idempotencyKey, { lock: afterDuplicate });
            if (earlier) return replay(earlier, hash, idempotencyKey);
            if (afterDuplicate) throw new TransactionConflictError(round, undefined, { hosted: true });
          }
          let written: { reservation: Reservation; outcome: ReserveOutcome };
          try {
            written = await this.#insertReservation(target, { lines, idempotencyKey, scope, ttlSeconds, hash });
          } catch (error) {
            // A concurrent request with the same key committed first (our INSERT waited for it):
            // the next round finds and replays its result, outside the failed transaction.
            if (!this.#dialect.isDuplicateKey(error)) throw error;
            if (round >= MAX_RESERVE_ROUNDS) throw new TransactionConflictError(round, error, { hosted: target.hosted });
            afterDuplicate = true;
            continue;
          }
          const { reservation, outcome } = written;
          switch (outcome.kind) {
            case 'reserved':
              return { reservation, replayed: false };
            case 'replay':
              return replay({ hash: outcome.payloadHash, reservation: () => toReservation(outcome.reservation, outcome.lines) }, hash, idempotencyKey);
            case 'missing':
              throw new NotFoundError('item', outcome.itemId ?? lines[0]!.itemId);
            case 'insufficient':
              if (single) {
                if (!target.hosted) this.#shortStock.note(single.itemId, outcome.available);
                throw new InsufficientStockError(single.itemId, single.quantity, outcome.available);
              }
              if (outcome.short && outcome.short.length > 0) throw new InsufficientStockError(outcome.short);
              // A decrement lost a race for units that are back already: try again.
              if (round >= MAX_RESERVE_ROUNDS) throw new TransactionConflictError(round, undefined, { hosted: target.hosted });
              if (target.hosted) throw new TransactionConflictError(round, undefined, { hosted: true });
              continue;
          }
        }
      });
    });
  }

  /**
   * Confirms a PENDING reservation that has not expired (engine clock). Confirming a CONFIRMED
   * reservation returns it unchanged, so retries are safe.
   *
   * @throws {ValidationError} an id that is not a UUID
   * @throws {NotFoundError} no reservation has this id
   * @throws {InvalidStateError} CANCELLED or EXPIRED, or PENDING past `expiresAt` (code `RESERVATION_EXPIRED`)
   * @throws {OutcomeUnknownError} the connection failed: confirm again to learn the outcome
   */
  async confirm(reservationId: string, options?: WriteOptions): Promise<Reservation> {
    return this.#telemetry.call('confirm', OK, async () => {
      return this.#transition(reservationId, 'confirm', options, {
        to: 'CONFIRMED',
        event: 'reservation.confirmed',
        // Not past expiresAt by the engine clock, even if no sweep has expired it yet.
        guard: (update, now) => update.where('expires_at', '>', now),
        // The held units are sold: they leave the item for good.
        releaseTo: 'sold',
        // A PENDING reservation the guard refused is one that expired.
        refused: (r) => new InvalidStateError(r.id, r.status, 'confirm', r.status === 'PENDING'),
      });
    });
  }

  /**
   * Cancels a PENDING reservation and returns its stock. Cancelling a CANCELLED reservation
   * returns it unchanged. A PENDING reservation past its `expiresAt` that the expiry sweep has
   * not reached yet may still be cancelled: the stock comes back either way.
   *
   * @throws {ValidationError} an id that is not a UUID
   * @throws {NotFoundError} no reservation has this id
   * @throws {InvalidStateError} CONFIRMED or EXPIRED
   * @throws {OutcomeUnknownError} the connection failed: cancel again to learn the outcome
   */
  async cancel(reservationId: string, options?: WriteOptions): Promise<Reservation> {
    return this.#telemetry.call('cancel', OK, async () => {
      return this.#transition(reservationId, 'cancel', options, {
        to: 'CANCELLED',
        event: 'reservation.cancelled',
        releaseTo: 'available',
        refused: (r) => new InvalidStateError(r.id, r.status, 'cancel'),
      });
    });
  }

  /**
   * Moves a PENDING reservation to `to` with a conditional UPDATE, writes its event and releases
   * its held units, in one transaction. When the UPDATE changes nothing, a locking read says
   * why: unknown id, already in `to` (returned unchanged: retries are safe), or `refused`.
   */
  async #transition(reservationId: string, action: 'confirm' | 'cancel', options: WriteOptions | undefined, step: TransitionStep): Promise<Reservation> {
    const id = reservationIdOf(reservationId);
    const target = writeTarget(this.#db, this.#names, options);
    const advice = `${action === 'confirm' ? 'Confirm' : 'Cancel'} it again: a repeat returns the reservation unchanged if the first attempt committed.`;
    const { reservation, changed } = await this.#unknownOutcome(action, advice, { retry: !target.hosted }, () =>
      transact(target, this.#dialect, (db) => {
        const writes = () => this.#transitionWrites(db, id, reservationId, action, step);
        // In a host's transaction under a savepoint: a refused or failed transition leaves none of
        // its writes behind, and the host's transaction usable.
        return target.hosted ? underSavepoint(db, writes) : writes();
      }),
    );
    if (changed) this.#telemetry.transitions(step.to === 'CONFIRMED' ? 'confirmed' : 'cancelled', 1);
    return reservation;
  }

  /** The transition's statements: the conditional UPDATE, then its event and the stock release, or why not. */
  async #transitionWrites(
    db: Kysely<Database>,
    id: string,
    reservationId: string,
    action: 'confirm' | 'cancel',
    step: TransitionStep,
  ): Promise<{ reservation: Reservation; changed: boolean }> {
    const now = this.#now();
    let update = db.updateTable('reservations').set({ status: step.to, updated_at: now }).where('id', '=', id).where('status', '=', 'PENDING');
    if (step.guard) update = step.guard(update, now);
    const result = await update.executeTakeFirst();
    const row = await db.selectFrom('reservations').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
    if (!row) throw new NotFoundError('reservation', reservationId);
    const [reservation] = (await withLines(db, [row])) as [Reservation];
    if (Number(result.numUpdatedRows) === 1) {
      await db.insertInto('outbox').values(eventRow(this.#dialect, step.event, reservation, now, this.#telemetry.traceparent())).execute();
      // Lock order reservation → items in ascending id, as everywhere: no deadlock cycles.
      const back = step.releaseTo === 'available';
      await moveStock(
        db,
        reservation.lines.map((line) => ({ itemId: line.itemId, available: back ? line.quantity : 0, held: -line.quantity })),
        now,
      );
      // Stock comes back (a cancel): this engine's next reserve of the item need not read first.
      if (back) for (const line of reservation.lines) this.#shortStock.forget(line.itemId);
      return { reservation, changed: true };
    }
    if (reservation.status === step.to) return { reservation, changed: false };
    throw step.refused(reservation, action);
  }

  /**
   * Holds a PENDING reservation longer: its `expiresAt` becomes `ttlSeconds` from now (engine
   * clock), with a `reservation.extended` event, in one transaction. It never moves `expiresAt`
   * earlier: when the reservation is held that long already, it is returned unchanged and no
   * event is written, so a repeat (a retry after a lost reply) is safe. It never moves it past
   * `createdAt` + the engine's `maxHoldSeconds`: such a request is refused whole, and the error
   * says the latest time allowed. A reservation of several items is extended as a whole.
   *
   * @throws {ValidationError} an id that is not a UUID, or a bad `ttlSeconds`
   * @throws {NotFoundError} no reservation has this id
   * @throws {InvalidStateError} not PENDING, or PENDING past `expiresAt` (code `RESERVATION_EXPIRED`)
   * @throws {HoldLimitExceededError} now + `ttlSeconds` is past `createdAt` + `maxHoldSeconds`
   * @throws {OutcomeUnknownError} the connection failed: extend again to learn the outcome
   *
   * @example
   * ```ts
   * const { reservation } = await engine.reserve({ lines: [{ itemId: 1, quantity: 2 }, { itemId: 7, quantity: 1 }], idempotencyKey: 'cart-42' });
   * // The payment provider needs more time: hold the cart 10 more minutes from now.
   * const extended = await engine.extend(reservation.id, { ttlSeconds: 600 });
   * ```
   */
  async extend(reservationId: string, input: ExtendInput, options?: WriteOptions): Promise<Reservation> {
    return this.#telemetry.call('extend', OK, async () => {
      const id = reservationIdOf(reservationId);
      const { ttlSeconds } = parse(extendSchema, input);
      const target = writeTarget(this.#db, this.#names, options);
      const advice = 'Extend it again: a repeat moves expiresAt no further than the request asks.';
      return this.#unknownOutcome('extend', advice, { retry: !target.hosted }, () =>
        transact(target, this.#dialect, (db) => {
          const writes = () => extendHold(db, this.#dialect, { id, reservationId, ttlSeconds, now: this.#now(), maxHoldSeconds: this.#maxHoldSeconds, traceContext: this.#telemetry.traceparent() });
          return target.hosted ? underSavepoint(db, writes) : writes();
        }),
      );
    });
  }

  /**
   * Checks that the stock adds up, per item, from one consistent snapshot of the database:
   * units received (initial stock plus restocks) minus units written off equal available units
   * plus the units of PENDING and CONFIRMED reservations (cancelled and expired ones returned
   * theirs), the held counter equals the PENDING units, and nothing is negative. Returns every
   * item where it does not hold, with the figures. Reads only; on a large database it reads every
   * reservation of the items checked, so run it off-peak or for some `itemIds`.
   *
   * @throws {ValidationError} bad `itemIds`
   *
   * @example
   * ```ts
   * const report = await engine.audit();
   * if (!report.ok) for (const d of report.discrepancies) console.error(d.itemId, d.problems.join('; '));
   * ```
   */
  async audit(input: AuditInput = {}): Promise<AuditReport> {
    return this.#telemetry.call('audit', OK, async () => {
      const { itemIds } = parse(auditSchema, input);
      return this.#unknownOutcome('audit', NOTHING_WRITTEN, { retry: true }, () => auditStock(this.#db, this.#dialect, itemIds));
    });
  }

  /**
   * The reservation, or `undefined` when no reservation has this id. Ids match in any letter
   * case; an id that is not a UUID is a {@link ValidationError}, as a malformed item id is.
   */
  async getReservation(reservationId: string): Promise<Reservation | undefined> {
    return this.#telemetry.call('getReservation', OK, async () => {
      const id = reservationIdOf(reservationId);
      return this.#unknownOutcome('getReservation', NOTHING_WRITTEN, { retry: true }, async () => {
        const row = await this.#db.selectFrom('reservations').selectAll().where('id', '=', id).executeTakeFirst();
        return row && (await withLines(this.#db, [row]))[0];
      });
    });
  }

  /**
   * One page of reservations, oldest first, filtered by item, status and idempotency scope: for
   * admin pages and reconciliation. Keyset pagination: pass the page's `next` as `after`.
   *
   * @example
   * ```ts
   * let after: string | undefined;
   * do {
   *   const page = await engine.listReservations({ itemId: 1, status: 'PENDING', after });
   *   for (const reservation of page.reservations) console.log(reservation.id);
   *   after = page.next;
   * } while (after);
   * ```
   */
  async listReservations(query: ListReservationsQuery = {}): Promise<ReservationPage> {
    return this.#telemetry.call('listReservations', OK, async () => {
      const { itemId, status, idempotencyScope, limit, after } = parse(listReservationsSchema, query);
      return this.#unknownOutcome('listReservations', NOTHING_WRITTEN, { retry: true }, async () => {
        return reservationPage(this.#db, { itemId, status, idempotencyScope, after }, limit);
      });
    });
  }

  /**
   * For an item recently short of stock: one plain read of the stock and the key (one snapshot,
   * no lock) answers a replay, an unknown item or too little stock; `undefined` when there is
   * stock after all and the reserve routine should run.
   */
  async #answerFromStockRead(itemId: number, quantity: number, scope: string, idempotencyKey: string, hash: () => string): Promise<ReserveResult | undefined> {
    const query = (this.#stockAndKey ??= stockAndKeyQuery(this.#db));
    const row = (await this.#db.executeQuery<StockAndKeyRow>({ ...query, parameters: [scope, idempotencyKey, itemId] })).rows[0];
    // No such item (never deleted by the engine): the reserve routine gives the full answer.
    if (!row) return undefined;
    if (row.payload_hash != null) {
      const earlier = row as Selectable<ReservationsTable>;
      // Another request's key (a cart's, say) is a conflict before its lines matter.
      const lines = earlier.item_id === null && row.payload_hash === hash() ? (await readLines(this.#db, [earlier.id])).get(String(earlier.id).toLowerCase()) : undefined;
      return replay({ hash: row.payload_hash, reservation: () => toReservation(earlier, lines) }, hash(), idempotencyKey);
    }
    const available = Number(row.available);
    if (available >= quantity) {
      this.#shortStock.forget(itemId);
      return undefined;
    }
    this.#shortStock.note(itemId, available);
    throw new InsufficientStockError(itemId, quantity, available);
  }

  /** The request a key was used for, read in the host's transaction (a locking read sees the latest committed row, not the snapshot of the host's first read). */
  async #findByIdempotencyKey(target: WriteTarget, scope: string, idempotencyKey: string, { lock }: { lock: boolean }): Promise<EarlierRequest | undefined> {
    const query = lookupQuery(target.db, scope, idempotencyKey);
    const row = await (lock ? query.forUpdate() : query).executeTakeFirst();
    if (!row) return undefined;
    const [reservation] = await withLines(target.db, [row]);
    return { hash: row.payload_hash, reservation: () => reservation! };
  }

  async #insertReservation(target: WriteTarget, request: { lines: readonly ReservationLine[]; idempotencyKey: string; scope: string; ttlSeconds: number; hash: string }) {
    const now = this.#now();
    const single = request.lines.length === 1;
    const reservation: Reservation = Object.freeze({
      id: uuidv7(now.getTime()),
      itemId: single ? request.lines[0]!.itemId : null,
      quantity: request.lines.reduce((sum, line) => sum + line.quantity, 0),
      lines: Object.freeze(request.lines.map((line) => Object.freeze({ itemId: line.itemId, quantity: line.quantity }))),
      status: 'PENDING',
      idempotencyScope: request.scope === '' ? null : request.scope,
      idempotencyKey: request.idempotencyKey,
      expiresAt: new Date(now.getTime() + request.ttlSeconds * 1000),
      createdAt: now,
      updatedAt: now,
    });
    const row = {
      id: reservation.id,
      itemId: reservation.itemId,
      quantity: reservation.quantity,
      lines: reservation.lines,
      idempotencyScope: request.scope,
      idempotencyKey: reservation.idempotencyKey,
      payloadHash: request.hash,
      expiresAt: reservation.expiresAt,
      now,
      eventPayload: eventRow(this.#dialect, 'reservation.created', reservation, now, null).payload,
      traceContext: this.#telemetry.traceparent(),
    };
    const outcome = target.hosted
      ? await transact(target, this.#dialect, (db) => reserveInHostTransaction(db, this.#dialect, row))
      : await withRetries(this.#dialect, () => (single ? this.#dialect.reserve(this.#db, this.#names, row) : this.#dialect.reserveLines(this.#db, this.#names, row)));
    return { reservation, outcome };
  }

  async #requireItem(db: Kysely<Database>, itemId: number): Promise<Item> {
    const row = await db.selectFrom('items').selectAll().where('id', '=', itemId).executeTakeFirst();
    if (!row) throw new NotFoundError('item', itemId);
    return toItem(row);
  }

  /**
   * Runs `work`; a failed connection becomes an {@link OutcomeUnknownError} that says how to find
   * out. Work that is safe to repeat (`retry`) runs up to {@link CONNECTION_RETRY_PAUSES_MS}
   * more times first: a pool may hand out a connection the server already closed (after a
   * restart or a killed session), and a repeat resolves the outcome of the earlier attempt
   * exactly as a client's retry would.
   */
  async #unknownOutcome<T>(operation: string, advice: string, { retry }: { retry: boolean }, work: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        await verifiedSession(this.#hostDb, this.#dialect);
        return await work();
      } catch (error) {
        // The engine's own answers (sold out, not found, …) pass straight through.
        if (error instanceof ReservationError || !this.#dialect.isConnectionError(error)) throw error;
        const pause = retry ? CONNECTION_RETRY_PAUSES_MS[attempt] : undefined;
        if (pause === undefined) throw new OutcomeUnknownError(operation, advice, error);
        recordRetry('connection');
        await sleep(pause);
      }
    }
  }

  #now(): Date {
    const now = this.#clock();
    if (!isStorableDate(now)) throw new ConfigurationError([`clock: must return a valid Date in the years 1000–9999, got ${describeClockValue(now)}`]);
    return now;
  }
}

/** The reservation a (scope, key) was used for, with the hash of the request that used it. */
function lookupQuery(db: Kysely<Database>, scope: string, idempotencyKey: string) {
  return db
    .selectFrom('idempotency_requests as i')
    .innerJoin('reservations as r', 'r.id', 'i.reservation_id')
    .selectAll('r')
    .select('i.payload_hash')
    .where('i.idempotency_scope', '=', scope)
    .where('i.idempotency_key', '=', idempotencyKey);
}

interface EarlierRequest {
  readonly hash: string;
  /** The reservation, built only for a replay (a conflict need not read a cart's lines). */
  readonly reservation: () => Reservation;
}

/** The answer to a key seen before: its reservation for the same request, a conflict for another. */
function replay(earlier: EarlierRequest, hash: string, idempotencyKey: string): ReserveResult {
  if (earlier.hash !== hash) throw new IdempotencyConflictError(idempotencyKey);
  return { reservation: earlier.reservation(), replayed: true };
}
