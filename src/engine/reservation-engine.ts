import type { CompiledQuery, Kysely, Selectable, UpdateQueryBuilder, UpdateResult } from 'kysely';
import { z } from 'zod';
import { dialectOf, type SqlDialect, verifiedSession } from '../dialects/index.js';
import type { ReserveOutcome } from '../dialects/dialect.js';
import {
  ConfigurationError,
  DuplicateSkuError,
  IdempotencyConflictError,
  InsufficientStockError,
  InvalidStateError,
  NotFoundError,
  OutcomeUnknownError,
  TransactionConflictError,
  ValidationError,
} from '../errors.js';
import { payloadHash } from '../idempotency/payload-hash.js';
import { eventRow } from '../outbox/event-row.js';
import { toItem, toReservation } from '../rows.js';
import { inTransaction, sleep, withRetries } from '../transaction.js';
import type { Database, Item, OutboxEventType, Reservation, ReservationsTable } from '../types.js';
import { uuidv7 } from '../uuid.js';
import {
  createItemSchema,
  describeClockValue,
  functionSchema,
  isStorableDate,
  itemIdSchema,
  kyselySchema,
  MAX_AVAILABLE_QUANTITY,
  parse,
  parseOptions,
  reservationIdOf,
  reserveSchema,
  restockSchema,
  ttlSecondsSchema,
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
  /**
   * Units to add: a positive integer, at most 1,000,000. The item's available plus held units
   * may not exceed 2,147,483,647.
   */
  readonly quantity: number;
  /**
   * Makes the restock safe to retry (after a lost reply or an `OUTCOME_UNKNOWN` error): a key
   * already used with the same item and quantity adds nothing again and returns the item as it
   * is now; with another item or quantity it is an {@link IdempotencyConflictError}. 1–64
   * printable ASCII characters, a namespace of its own (separate from `reserve`'s keys).
   * @defaultValue none: every call adds its units
   */
  readonly idempotencyKey?: string;
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
  clock: functionSchema<() => Date>('a function returning a Date').optional(),
});

type LookupRow = Selectable<ReservationsTable> & { payload_hash: string };
type LookupQuery = CompiledQuery<LookupRow>;

type StatusUpdate = UpdateQueryBuilder<Database, 'reservations', 'reservations', UpdateResult>;

interface TransitionStep {
  readonly to: 'CONFIRMED' | 'CANCELLED';
  readonly event: OutboxEventType;
  /** Extra conditions for the UPDATE. */
  readonly guard?: (update: StatusUpdate, now: Date) => StatusUpdate;
  /** The item's stock after the transition: the held units are released, to `available` or (confirmed) for good. */
  readonly release: (reservation: Reservation) => { readonly available: number; readonly held: number };
  /** The error for a reservation in another state. */
  readonly refused: (reservation: Reservation, action: 'confirm' | 'cancel') => Error;
}

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
  readonly #dialect: SqlDialect;
  readonly #defaultTtlSeconds: number;
  readonly #clock: () => Date;
  #lookupQuery: LookupQuery | undefined;

  constructor(options: ReservationEngineOptions) {
    const parsed = parseOptions(optionsSchema, options);
    this.#db = parsed.db as Kysely<Database>;
    this.#dialect = dialectOf(parsed.db);
    this.#defaultTtlSeconds = parsed.defaultTtlSeconds ?? 900;
    this.#clock = parsed.clock ?? (() => new Date());
  }

  /**
   * Adds an item and returns it as stored. A SKU that exists already is a {@link DuplicateSkuError}.
   *
   * @throws {ValidationError} bad input: see {@link CreateItemInput}
   * @throws {DuplicateSkuError} an item with this SKU exists (also the answer to a retry of a create that committed)
   */
  async createItem(input: CreateItemInput): Promise<Item> {
    const { sku, name, availableQuantity } = parse(createItemSchema, input);
    const now = this.#now();
    return this.#unknownOutcome('createItem', `Look for an item with SKU ${JSON.stringify(sku)} before creating it again.`, { retry: false }, async () => {
      try {
        return toItem(await this.#dialect.insertItem(this.#db, { sku, name, available_quantity: availableQuantity, created_at: now, updated_at: now }));
      } catch (error) {
        if (this.#dialect.isDuplicateKey(error)) throw new DuplicateSkuError(sku);
        throw error;
      }
    });
  }

  /** The item, or `undefined` when no item has this id. An id that is not a positive integer is a {@link ValidationError}. */
  async getItem(itemId: number): Promise<Item | undefined> {
    const id = parse(itemIdSchema, itemId, 'itemId');
    return this.#unknownOutcome('getItem', NOTHING_WRITTEN, { retry: true }, async () => {
      const row = await this.#db.selectFrom('items').selectAll().where('id', '=', id).executeTakeFirst();
      return row && toItem(row);
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
  async restock(input: RestockInput): Promise<Item> {
    const { itemId, quantity, idempotencyKey } = parse(restockSchema, input);
    const hash = idempotencyKey === undefined ? undefined : payloadHash({ itemId, quantity });
    const advice = idempotencyKey === undefined ? 'Check the item\'s stock before restocking again, or pass an idempotencyKey.' : RETRY_WITH_KEY;
    return this.#unknownOutcome('restock', advice, { retry: idempotencyKey !== undefined }, async () => {
      for (let round = 1; ; round++) {
        try {
          return await this.#addStock(itemId, quantity, idempotencyKey, hash);
        } catch (error) {
          if (idempotencyKey === undefined || !this.#dialect.isDuplicateKey(error)) throw error;
          // The key is taken (maybe by a concurrent retry that committed first): replay or refuse.
          const earlier = await this.#db.selectFrom('restock_requests').select('payload_hash').where('idempotency_key', '=', idempotencyKey).executeTakeFirst();
          if (earlier && earlier.payload_hash !== hash) throw new IdempotencyConflictError(idempotencyKey);
          if (earlier) return this.#requireItem(itemId);
          if (round >= MAX_RESERVE_ROUNDS) throw new TransactionConflictError(round, error);
        }
      }
    });
  }

  /**
   * One restock transaction: records the key (if any), then adds the units under the bound
   * available + held + quantity ≤ MAX_AVAILABLE_QUANTITY, so that held units can always come back.
   */
  async #addStock(itemId: number, quantity: number, idempotencyKey: string | undefined, hash: string | undefined): Promise<Item> {
    return inTransaction(this.#db, this.#dialect, async (trx) => {
      const now = this.#now();
      if (idempotencyKey !== undefined && hash !== undefined) {
        await trx.insertInto('restock_requests').values({ idempotency_key: idempotencyKey, payload_hash: hash, item_id: itemId, created_at: now }).execute();
      }
      const result = await trx
        .updateTable('items')
        .set((eb) => ({ available_quantity: eb('available_quantity', '+', quantity), updated_at: now }))
        .where('id', '=', itemId)
        // available + held ≤ MAX − quantity, written so that no side can overflow a 32-bit integer.
        .where((eb) => eb('available_quantity', '<=', eb(eb.val(MAX_AVAILABLE_QUANTITY - quantity), '-', eb.ref('held_quantity'))))
        .executeTakeFirst();
      const row = await trx.selectFrom('items').selectAll().where('id', '=', itemId).executeTakeFirst();
      if (!row) throw new NotFoundError('item', itemId);
      if (Number(result.numUpdatedRows) === 0) {
        const item = toItem(row);
        throw new ValidationError([
          `quantity: restocking ${quantity.toLocaleString('en-US')} would take item ${itemId} over ${MAX_AVAILABLE_QUANTITY.toLocaleString('en-US')} units ` +
            `(${item.availableQuantity.toLocaleString('en-US')} available, ${item.heldQuantity.toLocaleString('en-US')} held)`,
        ]);
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
   * and the key may be reused. Concurrent calls with one key yield one reservation: every one
   * of them returns it (or an {@link IdempotencyConflictError} for a different request).
   *
   * @throws {ValidationError} bad input
   * @throws {NotFoundError} no item with this id
   * @throws {InsufficientStockError} fewer units available than requested
   * @throws {IdempotencyConflictError} the key was used with a different request
   * @throws {OutcomeUnknownError} the connection failed: retry with the same key to learn the outcome
   */
  async reserve(input: ReserveInput): Promise<ReserveResult> {
    const request = parse(reserveSchema, input);
    // The hash covers what the client sent, not this engine's defaults: a retry served by an
    // engine with another defaultTtlSeconds (a rolling deploy) is still the same request.
    const hash = payloadHash({ itemId: request.itemId, quantity: request.quantity, ttlSeconds: request.ttlSeconds });
    const ttlSeconds = request.ttlSeconds ?? this.#defaultTtlSeconds;
    const { idempotencyKey } = request;

    return this.#unknownOutcome('reserve', RETRY_WITH_KEY, { retry: true }, async () => {
      for (let round = 1; ; round++) {
        const earlier = await this.#findByIdempotencyKey(idempotencyKey);
        if (earlier) return replay(earlier, hash, idempotencyKey);
        let written: { reservation: Reservation; outcome: ReserveOutcome };
        try {
          written = await this.#insertReservation({ ...request, ttlSeconds, hash });
        } catch (error) {
          // A concurrent request with the same key committed first (our INSERT waited for it):
          // the next round reads and replays its result, outside the failed transaction's snapshot.
          if (!this.#dialect.isDuplicateKey(error)) throw error;
          if (round >= MAX_RESERVE_ROUNDS) throw new TransactionConflictError(round, error);
          continue;
        }
        const { reservation, outcome } = written;
        if (outcome.reserved) return { reservation, replayed: false };
        // The stock may be gone because a concurrent request with this key took it (PostgreSQL
        // decrements first, so it never reached the key's unique index): answer as its replay.
        const winner = await this.#findByIdempotencyKey(idempotencyKey);
        if (winner) return replay(winner, hash, idempotencyKey);
        if (outcome.available === null) throw new NotFoundError('item', request.itemId);
        throw new InsufficientStockError(request.itemId, request.quantity, outcome.available);
      }
    });
  }

  /**
   * Confirms a PENDING reservation that has not expired (engine clock). Confirming a CONFIRMED
   * reservation returns it unchanged, so retries are safe.
   *
   * @throws {NotFoundError} unknown or malformed id
   * @throws {InvalidStateError} CANCELLED or EXPIRED, or PENDING past `expiresAt` (code `RESERVATION_EXPIRED`)
   * @throws {OutcomeUnknownError} the connection failed: confirm again to learn the outcome
   */
  async confirm(reservationId: string): Promise<Reservation> {
    return this.#transition(reservationId, 'confirm', {
      to: 'CONFIRMED',
      event: 'reservation.confirmed',
      // Not past expiresAt by the engine clock, even if no sweep has expired it yet.
      guard: (update, now) => update.where('expires_at', '>', now),
      // The held units are sold: they leave the item for good.
      release: (r) => ({ available: 0, held: -r.quantity }),
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
   * @throws {OutcomeUnknownError} the connection failed: cancel again to learn the outcome
   */
  async cancel(reservationId: string): Promise<Reservation> {
    return this.#transition(reservationId, 'cancel', {
      to: 'CANCELLED',
      event: 'reservation.cancelled',
      release: (r) => ({ available: r.quantity, held: -r.quantity }),
      refused: (r) => new InvalidStateError(r.id, r.status, 'cancel'),
    });
  }

  /**
   * Moves a PENDING reservation to `to` with a conditional UPDATE, writes its event and releases
   * its held units, in one transaction. When the UPDATE changes nothing, a locking read says
   * why: unknown id, already in `to` (returned unchanged: retries are safe), or `refused`.
   */
  async #transition(reservationId: string, action: 'confirm' | 'cancel', step: TransitionStep): Promise<Reservation> {
    const id = reservationIdOf(reservationId);
    if (id === undefined) throw new NotFoundError('reservation', reservationId);
    const advice = `${action === 'confirm' ? 'Confirm' : 'Cancel'} it again: a repeat returns the reservation unchanged if the first attempt committed.`;
    return this.#unknownOutcome(action, advice, { retry: true }, () =>
      inTransaction(this.#db, this.#dialect, async (trx) => {
        const now = this.#now();
        let update = trx.updateTable('reservations').set({ status: step.to, updated_at: now }).where('id', '=', id).where('status', '=', 'PENDING');
        if (step.guard) update = step.guard(update, now);
        const result = await update.executeTakeFirst();
        const row = await trx.selectFrom('reservations').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
        if (!row) throw new NotFoundError('reservation', reservationId);
        const reservation = toReservation(row);
        if (Number(result.numUpdatedRows) === 1) {
          await trx.insertInto('outbox').values(eventRow(this.#dialect, step.event, reservation, now)).execute();
          // Lock order reservation → item, as everywhere: no deadlock cycles.
          const { available, held } = step.release(reservation);
          await trx
            .updateTable('items')
            .set((eb) => ({
              available_quantity: eb('available_quantity', '+', available),
              held_quantity: eb('held_quantity', '+', held),
              updated_at: now,
            }))
            .where('id', '=', reservation.itemId)
            .execute();
          return reservation;
        }
        if (reservation.status === step.to) return reservation;
        throw step.refused(reservation, action);
      }),
    );
  }

  /** The reservation, or `undefined` for an unknown or malformed id. Ids match in any letter case. */
  async getReservation(reservationId: string): Promise<Reservation | undefined> {
    const id = reservationIdOf(reservationId);
    if (id === undefined) return undefined;
    return this.#unknownOutcome('getReservation', NOTHING_WRITTEN, { retry: true }, async () => {
      const row = await this.#db.selectFrom('reservations').selectAll().where('id', '=', id).executeTakeFirst();
      return row && toReservation(row);
    });
  }

  async #findByIdempotencyKey(idempotencyKey: string): Promise<EarlierRequest | undefined> {
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

  async #insertReservation(request: { itemId: number; quantity: number; idempotencyKey: string; ttlSeconds: number; hash: string }) {
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
    return { reservation, outcome };
  }

  async #requireItem(itemId: number): Promise<Item> {
    const row = await this.#db.selectFrom('items').selectAll().where('id', '=', itemId).executeTakeFirst();
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
        await verifiedSession(this.#db, this.#dialect);
        return await work();
      } catch (error) {
        if (!this.#dialect.isConnectionError(error)) throw error;
        const pause = retry ? CONNECTION_RETRY_PAUSES_MS[attempt] : undefined;
        if (pause === undefined) throw new OutcomeUnknownError(operation, advice, error);
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

interface EarlierRequest {
  readonly hash: string;
  readonly reservation: Reservation;
}

/** The answer to a key seen before: its reservation for the same request, a conflict for another. */
function replay(earlier: EarlierRequest, hash: string, idempotencyKey: string): ReserveResult {
  if (earlier.hash !== hash) throw new IdempotencyConflictError(idempotencyKey);
  return { reservation: earlier.reservation, replayed: true };
}
