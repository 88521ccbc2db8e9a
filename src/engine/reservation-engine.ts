import type { CompiledQuery, Kysely, Selectable, Transaction, UpdateQueryBuilder, UpdateResult } from 'kysely';
import { z } from 'zod';
import { dialectOf, type SqlDialect } from '../dialects/index.js';
import {
  DuplicateSkuError,
  IdempotencyConflictError,
  InsufficientStockError,
  InvalidStateError,
  NotFoundError,
  TransactionConflictError,
  ValidationError,
} from '../errors.js';
import { payloadHash } from '../idempotency/payload-hash.js';
import { eventRow } from '../outbox/event-row.js';
import { toItem, toReservation } from '../rows.js';
import { inTransaction, withRetries } from '../transaction.js';
import type { Database, Item, OutboxEventType, Reservation, ReservationsTable } from '../types.js';
import { uuidv7 } from '../uuid.js';
import {
  createItemSchema,
  isUuid,
  itemIdSchema,
  MAX_AVAILABLE_QUANTITY,
  parse,
  reserveSchema,
  restockSchema,
  ttlSecondsSchema,
  kyselySchema,
} from '../validation.js';

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
   * The engine's notion of now: timestamps, expiry times, and whether a reservation has expired
   * when it is confirmed. Inject a fake clock in tests.
   * @defaultValue () => new Date()
   */
  readonly clock?: () => Date;
}

/** What {@link ReservationEngine.createItem} takes. */
export interface CreateItemInput {
  /** Unique stock-keeping unit, 1–255 characters, compared byte for byte. */
  readonly sku: string;
  /** 1–255 characters. */
  readonly name: string;
  /** Units on hand, 0 to 2,147,483,647. */
  readonly availableQuantity: number;
}

/** What {@link ReservationEngine.restock} takes. */
export interface RestockInput {
  readonly itemId: number;
  /** Units to add: a positive integer, at most 1,000,000. */
  readonly quantity: number;
}

/** What {@link ReservationEngine.reserve} takes. */
export interface ReserveInput {
  readonly itemId: number;
  /** Units to hold: a positive integer, at most 1,000,000. */
  readonly quantity: number;
  /**
   * The client's key for this request, 1–64 printable ASCII characters. Sending the same key
   * with the same request again returns the first result (`replayed: true`); with a different
   * request it is an {@link IdempotencyConflictError}.
   */
  readonly idempotencyKey: string;
  /**
   * How long to hold the stock, in seconds: a positive integer, at most 30 days.
   * @defaultValue the engine's `defaultTtlSeconds`
   */
  readonly ttlSeconds?: number;
}

/** What {@link ReservationEngine.reserve} returns. */
export interface ReserveResult {
  readonly reservation: Reservation;
  /** `true` when the idempotency key had been used with this request before: nothing new was written. */
  readonly replayed: boolean;
}

const optionsSchema = z.strictObject({
  db: kyselySchema,
  defaultTtlSeconds: ttlSecondsSchema.optional(),
  clock: z.custom<() => Date>((v) => typeof v === 'function', { error: 'must be a function returning a Date' }).optional(),
});

type LookupRow = Selectable<ReservationsTable> & { payload_hash: string };
type LookupQuery = CompiledQuery<LookupRow>;

type StatusUpdate = UpdateQueryBuilder<Database, 'reservations', 'reservations', UpdateResult>;

interface TransitionStep {
  readonly to: 'CONFIRMED' | 'CANCELLED';
  readonly event: OutboxEventType;
  /** Extra conditions for the UPDATE. */
  readonly guard?: (update: StatusUpdate, now: Date) => StatusUpdate;
  /** More writes in the same transaction after a successful transition. */
  readonly after?: (trx: Transaction<Database>, reservation: Reservation, now: Date) => Promise<unknown>;
  /** The error for a reservation in another state. */
  readonly refused: (reservation: Reservation, action: 'confirm' | 'cancel') => Error;
}

/** Replays can lose a race with a transaction that rolls back; this many rounds settle it. */
const MAX_RESERVE_ROUNDS = 5;

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
  readonly #dialect: SqlDialect;
  readonly #defaultTtlSeconds: number;
  readonly #clock: () => Date;
  #lookupQuery: LookupQuery | undefined;

  constructor(options: ReservationEngineOptions) {
    const parsed = parse(optionsSchema, options, 'options');
    this.#db = parsed.db as Kysely<Database>;
    this.#dialect = dialectOf(parsed.db);
    this.#defaultTtlSeconds = parsed.defaultTtlSeconds ?? 900;
    this.#clock = parsed.clock ?? (() => new Date());
  }

  /** Adds an item. A SKU that exists already is a {@link DuplicateSkuError}. */
  async createItem(input: CreateItemInput): Promise<Item> {
    const { sku, name, availableQuantity } = parse(createItemSchema, input);
    const now = this.#now();
    try {
      const id = await this.#dialect.insertItem(this.#db, { sku, name, available_quantity: availableQuantity, created_at: now, updated_at: now });
      return toItem({ id, sku, name, available_quantity: availableQuantity, created_at: now, updated_at: now });
    } catch (error) {
      if (this.#dialect.isDuplicateKey(error)) throw new DuplicateSkuError(sku);
      throw error;
    }
  }

  /** The item, or `undefined` when no item has this id. An id that is not a positive integer is a {@link ValidationError}. */
  async getItem(itemId: number): Promise<Item | undefined> {
    const id = parse(itemIdSchema, itemId, 'itemId');
    const row = await this.#db.selectFrom('items').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toItem(row);
  }

  /** Adds `quantity` units to the item's stock and returns the item. */
  async restock(input: RestockInput): Promise<Item> {
    const { itemId, quantity } = parse(restockSchema, input);
    return inTransaction(this.#db, this.#dialect, async (trx) => {
      const result = await trx
        .updateTable('items')
        .set((eb) => ({ available_quantity: eb('available_quantity', '+', quantity), updated_at: this.#now() }))
        .where('id', '=', itemId)
        .where('available_quantity', '<=', MAX_AVAILABLE_QUANTITY - quantity)
        .executeTakeFirst();
      const row = await trx.selectFrom('items').selectAll().where('id', '=', itemId).executeTakeFirst();
      if (!row) throw new NotFoundError('item', itemId);
      if (Number(result.numUpdatedRows) === 0) {
        throw new ValidationError([`quantity: restocking ${quantity} would take item ${itemId} over ${MAX_AVAILABLE_QUANTITY.toLocaleString('en-US')} units`]);
      }
      return toItem(row);
    });
  }

  /**
   * Holds `quantity` units of an item until `ttlSeconds` from now, or returns the earlier result
   * for a repeated idempotency key.
   *
   * One transaction writes the idempotency record, the PENDING reservation and its
   * `reservation.created` outbox event, and decrements the stock with a guarded UPDATE
   * (`available_quantity >= quantity`). It runs as a single round trip inside the database
   * (see {@link SqlDialect.reserve}), so the item's row lock is never held while the database
   * waits for this process. When it fails (unknown item, not enough stock) nothing is stored
   * and the key may be reused.
   *
   * @throws {ValidationError} bad input
   * @throws {NotFoundError} no item with this id
   * @throws {InsufficientStockError} fewer units available than requested
   * @throws {IdempotencyConflictError} the key was used with a different request
   */
  async reserve(input: ReserveInput): Promise<ReserveResult> {
    const { itemId, quantity, idempotencyKey, ttlSeconds = this.#defaultTtlSeconds } = parse(reserveSchema, input);
    const hash = payloadHash({ itemId, quantity, ttlSeconds });

    for (let round = 1; ; round++) {
      const earlier = await this.#findByIdempotencyKey(idempotencyKey);
      if (earlier) {
        if (earlier.hash !== hash) throw new IdempotencyConflictError(idempotencyKey);
        return { reservation: earlier.reservation, replayed: true };
      }
      try {
        const reservation = await this.#insertReservation({ itemId, quantity, idempotencyKey, ttlSeconds, hash });
        return { reservation, replayed: false };
      } catch (error) {
        // A concurrent request with the same key committed first (our INSERT waited for it):
        // the next round reads and replays its result, outside the failed transaction's snapshot.
        if (!this.#dialect.isDuplicateKey(error)) throw error;
        if (round >= MAX_RESERVE_ROUNDS) throw new TransactionConflictError(round, error);
      }
    }
  }

  /**
   * Confirms a PENDING reservation that has not expired (engine clock). Confirming a CONFIRMED
   * reservation returns it unchanged, so retries are safe.
   *
   * @throws {NotFoundError} unknown or malformed id
   * @throws {InvalidStateError} CANCELLED or EXPIRED, or PENDING past `expiresAt` (code `RESERVATION_EXPIRED`)
   */
  async confirm(reservationId: string): Promise<Reservation> {
    return this.#transition(reservationId, 'confirm', {
      to: 'CONFIRMED',
      event: 'reservation.confirmed',
      // Not past expiresAt by the engine clock, even if no sweep has expired it yet.
      guard: (update, now) => update.where('expires_at', '>', now),
      // A PENDING reservation the guard refused is one that expired.
      refused: (r) => new InvalidStateError(r.id, r.status, 'confirm', r.status === 'PENDING'),
    });
  }

  /**
   * Cancels a PENDING reservation and returns its stock. Cancelling a CANCELLED reservation
   * returns it unchanged. A PENDING reservation past its `expiresAt` that the expiry sweep has
   * not reached yet may still be cancelled: the stock comes back either way.
   *
   * @throws {NotFoundError} unknown or malformed id
   * @throws {InvalidStateError} CONFIRMED or EXPIRED
   */
  async cancel(reservationId: string): Promise<Reservation> {
    return this.#transition(reservationId, 'cancel', {
      to: 'CANCELLED',
      event: 'reservation.cancelled',
      // Lock order reservation → item, as everywhere: no deadlock cycles.
      after: (trx, r, now) =>
        trx
          .updateTable('items')
          .set((eb) => ({ available_quantity: eb('available_quantity', '+', r.quantity), updated_at: now }))
          .where('id', '=', r.itemId)
          .execute(),
      refused: (r) => new InvalidStateError(r.id, r.status, 'cancel'),
    });
  }

  /**
   * Moves a PENDING reservation to `to` with a conditional UPDATE and writes its event, in one
   * transaction. When the UPDATE changes nothing, a locking read says why: unknown id, already
   * in `to` (returned unchanged: retries are safe), or `refused`.
   */
  async #transition(reservationId: string, action: 'confirm' | 'cancel', step: TransitionStep): Promise<Reservation> {
    if (!isUuid(reservationId)) throw new NotFoundError('reservation', reservationId);
    return inTransaction(this.#db, this.#dialect, async (trx) => {
      const now = this.#now();
      let update = trx
        .updateTable('reservations')
        .set({ status: step.to, updated_at: now })
        .where('id', '=', reservationId)
        .where('status', '=', 'PENDING');
      if (step.guard) update = step.guard(update, now);
      const result = await update.executeTakeFirst();
      const row = await trx.selectFrom('reservations').selectAll().where('id', '=', reservationId).forUpdate().executeTakeFirst();
      if (!row) throw new NotFoundError('reservation', reservationId);
      const reservation = toReservation(row);
      if (Number(result.numUpdatedRows) === 1) {
        await trx.insertInto('outbox').values(eventRow(this.#dialect, step.event, reservation, now)).execute();
        await step.after?.(trx, reservation, now);
        return reservation;
      }
      if (reservation.status === step.to) return reservation;
      throw step.refused(reservation, action);
    });
  }

  /** The reservation, or `undefined` for an unknown or malformed id. */
  async getReservation(reservationId: string): Promise<Reservation | undefined> {
    if (!isUuid(reservationId)) return undefined;
    const row = await this.#db.selectFrom('reservations').selectAll().where('id', '=', reservationId).executeTakeFirst();
    return row && toReservation(row);
  }

  async #findByIdempotencyKey(idempotencyKey: string) {
    // Compiled once per engine: this runs before every reserve and is all a replay costs.
    const query: LookupQuery = (this.#lookupQuery ??= this.#db
      .selectFrom('idempotency_requests as i')
      .innerJoin('reservations as r', 'r.id', 'i.reservation_id')
      .selectAll('r')
      .select('i.payload_hash')
      .where('i.idempotency_key', '=', '')
      .compile());
    const { rows } = await this.#db.executeQuery<LookupRow>({ ...query, parameters: [idempotencyKey] });
    const row = rows[0];
    return row && { hash: row.payload_hash, reservation: toReservation(row) };
  }

  async #insertReservation(request: { itemId: number; quantity: number; idempotencyKey: string; ttlSeconds: number; hash: string }): Promise<Reservation> {
    const now = this.#now();
    const reservation: Reservation = Object.freeze({
      id: uuidv7(now.getTime()),
      itemId: request.itemId,
      quantity: request.quantity,
      status: 'PENDING',
      idempotencyKey: request.idempotencyKey,
      expiresAt: new Date(now.getTime() + request.ttlSeconds * 1000),
      createdAt: now,
      updatedAt: now,
    });
    const outcome = await withRetries(this.#dialect, () =>
      this.#dialect.reserve(this.#db, {
        id: reservation.id,
        itemId: reservation.itemId,
        quantity: reservation.quantity,
        idempotencyKey: reservation.idempotencyKey,
        payloadHash: request.hash,
        expiresAt: reservation.expiresAt,
        now,
        eventPayload: eventRow(this.#dialect, 'reservation.created', reservation, now).payload,
      }),
    );
    if (outcome.reserved) return reservation;
    if (outcome.available === null) throw new NotFoundError('item', request.itemId);
    throw new InsufficientStockError(request.itemId, request.quantity, outcome.available);
  }

  #now(): Date {
    const now = this.#clock();
    if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw new ValidationError([`clock: must return a valid Date, got ${String(now)}`]);
    return now;
  }
}
