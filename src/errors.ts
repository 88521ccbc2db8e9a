/**
 * Base class of every error the library throws on purpose.
 *
 * `code` is stable and meant for programs; `status` is the HTTP status a host should answer with.
 *
 * @example
 * ```ts
 * try {
 *   await engine.reserve({ itemId, quantity: 2, idempotencyKey });
 * } catch (error) {
 *   if (error instanceof ReservationError) res.status(error.status).json({ code: error.code, message: error.message });
 *   else throw error;
 * }
 * ```
 */
export class ReservationError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(message: string, code: string, status: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}

/** Invalid input: nothing was written. Code `VALIDATION_ERROR`, status 400. */
export class ValidationError extends ReservationError {
  /** One readable line per problem, e.g. `quantity: must be a positive integer`. */
  readonly issues: readonly string[];

  constructor(issues: readonly string[]) {
    super(`Invalid input: ${issues.join('; ')}`, 'VALIDATION_ERROR', 400);
    this.issues = Object.freeze([...issues]);
  }
}

/** The item or reservation does not exist (unknown or malformed id). Status 404. */
export class NotFoundError extends ReservationError {
  constructor(
    readonly entity: 'item' | 'reservation',
    readonly id: unknown,
  ) {
    super(`${entity === 'item' ? 'Item' : 'Reservation'} ${JSON.stringify(String(id))} was not found`, entity === 'item' ? 'ITEM_NOT_FOUND' : 'RESERVATION_NOT_FOUND', 404);
  }
}

/** The item has fewer units available than requested. Code `INSUFFICIENT_STOCK`, status 409. */
export class InsufficientStockError extends ReservationError {
  constructor(
    readonly itemId: number,
    readonly requested: number,
    readonly available: number,
  ) {
    super(`Item ${itemId} has ${available} available, ${requested} requested`, 'INSUFFICIENT_STOCK', 409);
  }
}

/** The idempotency key was already used with a different request. Code `IDEMPOTENCY_CONFLICT`, status 409. */
export class IdempotencyConflictError extends ReservationError {
  constructor(readonly idempotencyKey: string) {
    super(`Idempotency key ${JSON.stringify(idempotencyKey)} was already used with a different request`, 'IDEMPOTENCY_CONFLICT', 409);
  }
}

/**
 * The reservation is not in a state that allows the transition. Status 409.
 * Code `RESERVATION_EXPIRED` when a PENDING reservation is past its `expiresAt`, else `INVALID_STATE`.
 */
export class InvalidStateError extends ReservationError {
  constructor(
    readonly reservationId: string,
    readonly currentStatus: string,
    readonly attempted: 'confirm' | 'cancel',
    expired = false,
  ) {
    super(
      expired
        ? `Reservation ${reservationId} expired and can no longer be confirmed`
        : `Cannot ${attempted} reservation ${reservationId}: it is ${currentStatus}`,
      expired ? 'RESERVATION_EXPIRED' : 'INVALID_STATE',
      409,
    );
  }
}

/** An item with this SKU exists already. Code `DUPLICATE_SKU`, status 409. */
export class DuplicateSkuError extends ReservationError {
  constructor(readonly sku: string) {
    super(`An item with SKU ${JSON.stringify(sku)} already exists`, 'DUPLICATE_SKU', 409);
  }
}

/**
 * The database kept reporting deadlocks or lock-wait timeouts after the engine's retries.
 * Nothing was written; the caller may retry. Code `TRANSACTION_CONFLICT`, status 503.
 */
export class TransactionConflictError extends ReservationError {
  constructor(
    readonly attempts: number,
    cause: unknown,
  ) {
    super(`The database reported lock conflicts ${attempts} times in a row; try again`, 'TRANSACTION_CONFLICT', 503, { cause });
  }
}

/** The Kysely instance uses a database this library does not support. Code `UNSUPPORTED_DATABASE`, status 500. */
export class UnsupportedDatabaseError extends ReservationError {
  constructor(adapterName: string) {
    super(`Unsupported database adapter ${adapterName}: use MySQL/MariaDB, PostgreSQL or PGlite`, 'UNSUPPORTED_DATABASE', 500);
  }
}
