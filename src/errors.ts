import type { ReservationStatus } from './types.js';

/**
 * Every error code the library throws, for programs that branch on `error.code`.
 * Each is listed, with its status, in the README's error table.
 */
export type ReservationErrorCode =
  | 'VALIDATION_ERROR'
  | 'ITEM_NOT_FOUND'
  | 'RESERVATION_NOT_FOUND'
  | 'INSUFFICIENT_STOCK'
  | 'IDEMPOTENCY_CONFLICT'
  | 'INVALID_STATE'
  | 'RESERVATION_EXPIRED'
  | 'HOLD_LIMIT_EXCEEDED'
  | 'DUPLICATE_SKU'
  | 'TRANSACTION_CONFLICT'
  | 'OUTCOME_UNKNOWN'
  | 'INVALID_CONFIGURATION'
  | 'UNSUPPORTED_DATABASE'
  | 'MIGRATION_FAILED'
  | 'MISSING_DEPENDENCY';

/**
 * Marks the library's errors, shared by every copy of the library in a process (the ESM and
 * the CommonJS build loaded side by side, or two installed versions): `instanceof` and
 * `toProblem` recognise an error from another copy by it.
 */
const BRAND = Symbol.for('reservation-engine.error');

/** @internal Whether `value` is an error thrown by this library, from any copy of it. */
export function isReservationError(value: unknown): value is ReservationError {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}

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
  /** Stable, for programs: one of {@link ReservationErrorCode} for the library's own errors. */
  readonly code: string;
  readonly status: number;

  constructor(message: string, code: string, status: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** The codes this class's instances carry; empty for the base class, which has them all. */
  static readonly codes: readonly string[] = [];

  /**
   * `instanceof` across copies of the library: an error from another copy (the ESM and the
   * CommonJS build loaded side by side) is an instance of the class here that has its code.
   * Codes, not class names, so that a host's minifier cannot break it.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    const ordinary = Function.prototype[Symbol.hasInstance];
    if (ordinary.call(this, value)) return true;
    if (!isReservationError(value) || ordinary.call(ReservationError, value)) return false;
    return this === ReservationError || (this.codes.length > 0 && this.codes.includes(value.code));
  }
}

/** One problem with an input or an option: where, and what is wrong. */
export interface ValidationIssue {
  /** The field, dotted for nested ones (`quantity`, `lines.2.itemId`); the argument's name for the whole value (`input`, `itemId`). */
  readonly path: string;
  /** What is wrong, e.g. `must be positive`. */
  readonly message: string;
}

/** Issues as given: objects, or `path: message` lines. */
type IssuesInput = readonly (ValidationIssue | string)[];

function structured(issues: IssuesInput): readonly ValidationIssue[] {
  return Object.freeze(
    issues.map((issue) => {
      if (typeof issue !== 'string') return Object.freeze({ path: issue.path, message: issue.message });
      const colon = issue.indexOf(': ');
      return Object.freeze(colon < 0 ? { path: '', message: issue } : { path: issue.slice(0, colon), message: issue.slice(colon + 2) });
    }),
  );
}

function listed(issues: readonly ValidationIssue[]): string {
  return issues.map((issue) => (issue.path ? `${issue.path}: ${issue.message}` : issue.message)).join('; ');
}

/** Invalid input: nothing was written. Code `VALIDATION_ERROR`, status 400. */
export class ValidationError extends ReservationError {
  static override readonly codes: readonly string[] = ['VALIDATION_ERROR'];
  declare readonly code: 'VALIDATION_ERROR';

  /** Every problem found, e.g. `{ path: 'quantity', message: 'must be positive' }`. */
  readonly issues: readonly ValidationIssue[];

  /** `issues`: objects, or lines of the form `path: message`. */
  constructor(issues: IssuesInput) {
    const list = structured(issues);
    super(`Invalid input: ${listed(list)}`, 'VALIDATION_ERROR', 400);
    this.issues = list;
  }
}

/**
 * The host set the library up wrongly (bad options, a clock that returns no valid Date): a bug
 * of the host's, not of its client, so status 500. Code `INVALID_CONFIGURATION`.
 */
export class ConfigurationError extends ReservationError {
  static override readonly codes: readonly string[] = ['INVALID_CONFIGURATION'];

  declare readonly code: 'INVALID_CONFIGURATION';

  /** Every problem found, e.g. `{ path: 'limit', message: 'must be an integer' }`. */
  readonly issues: readonly ValidationIssue[];

  /** `issues`: objects, or lines of the form `path: message`. */
  constructor(issues: IssuesInput) {
    const list = structured(issues);
    super(`Invalid configuration: ${listed(list)}`, 'INVALID_CONFIGURATION', 500);
    this.issues = list;
  }
}

/** No item or reservation has this id (a malformed id is a {@link ValidationError}). Status 404. */
export class NotFoundError extends ReservationError {
  static override readonly codes: readonly string[] = ['ITEM_NOT_FOUND', 'RESERVATION_NOT_FOUND'];
  declare readonly code: 'ITEM_NOT_FOUND' | 'RESERVATION_NOT_FOUND';

  constructor(
    readonly entity: 'item' | 'reservation',
    readonly id: unknown,
  ) {
    const shown = String(id);
    super(
      `${entity === 'item' ? 'Item' : 'Reservation'} ${JSON.stringify(shown.length > 64 ? `${shown.slice(0, 63)}…` : shown)} was not found`,
      entity === 'item' ? 'ITEM_NOT_FOUND' : 'RESERVATION_NOT_FOUND',
      404,
    );
  }
}

/** The item has fewer units available than requested. Code `INSUFFICIENT_STOCK`, status 409. */
export class InsufficientStockError extends ReservationError {
  static override readonly codes: readonly string[] = ['INSUFFICIENT_STOCK'];
  declare readonly code: 'INSUFFICIENT_STOCK';
  /** The first short line's item (the only one for a single-item reservation). */
  readonly itemId: number;
  /** Units that line asked for. */
  readonly requested: number;
  /** Units of that item available. */
  readonly available: number;
  /** Every line that could not be held, in ascending item id: all of them for a reservation of several items. */
  readonly lines: readonly ShortLine[];

  constructor(itemId: number, requested: number, available: number);
  constructor(lines: readonly ShortLine[]);
  constructor(...args: [number, number, number] | [readonly ShortLine[]]) {
    const lines: readonly ShortLine[] = Object.freeze(
      (typeof args[0] === 'number' ? [{ itemId: args[0], requested: args[1]!, available: args[2]! }] : args[0]).map((line) => Object.freeze({ ...line })),
    );
    const describeLine = (line: ShortLine) => `item ${line.itemId} has ${line.available} available, ${line.requested} requested`;
    super(
      lines.length === 1 ? `Item ${lines[0]!.itemId} has ${lines[0]!.available} available, ${lines[0]!.requested} requested` : `Not enough stock for ${lines.length} lines: ${lines.map(describeLine).join('; ')}`,
      'INSUFFICIENT_STOCK',
      409,
    );
    this.itemId = lines[0]!.itemId;
    this.requested = lines[0]!.requested;
    this.available = lines[0]!.available;
    this.lines = lines;
  }
}

/** A line of a reservation that could not be held: what it asked for and what the item had. */
export interface ShortLine {
  readonly itemId: number;
  readonly requested: number;
  readonly available: number;
}

/** The idempotency key was already used with a different request. Code `IDEMPOTENCY_CONFLICT`, status 409. */
export class IdempotencyConflictError extends ReservationError {
  static override readonly codes: readonly string[] = ['IDEMPOTENCY_CONFLICT'];
  declare readonly code: 'IDEMPOTENCY_CONFLICT';

  constructor(readonly idempotencyKey: string) {
    super(`Idempotency key ${JSON.stringify(idempotencyKey)} was already used with a different request`, 'IDEMPOTENCY_CONFLICT', 409);
  }
}

/**
 * The reservation is not in a state that allows the transition. Status 409.
 * Code `RESERVATION_EXPIRED` when a PENDING reservation is past its `expiresAt`, else `INVALID_STATE`.
 */
export class InvalidStateError extends ReservationError {
  static override readonly codes: readonly string[] = ['INVALID_STATE', 'RESERVATION_EXPIRED'];
  declare readonly code: 'INVALID_STATE' | 'RESERVATION_EXPIRED';

  constructor(
    readonly reservationId: string,
    readonly currentStatus: ReservationStatus,
    readonly attempted: 'confirm' | 'cancel' | 'extend',
    expired = false,
  ) {
    super(
      expired
        ? `Reservation ${reservationId} expired and can no longer be ${attempted === 'extend' ? 'extended' : 'confirmed'}`
        : `Cannot ${attempted} reservation ${reservationId}: it is ${currentStatus}`,
      expired ? 'RESERVATION_EXPIRED' : 'INVALID_STATE',
      409,
    );
  }
}

/**
 * `extend` asked to hold a reservation beyond its longest allowed hold (`createdAt` plus the
 * engine's `maxHoldSeconds`). Nothing changed. Code `HOLD_LIMIT_EXCEEDED`, status 409.
 */
export class HoldLimitExceededError extends ReservationError {
  static override readonly codes: readonly string[] = ['HOLD_LIMIT_EXCEEDED'];
  declare readonly code: 'HOLD_LIMIT_EXCEEDED';

  constructor(
    readonly reservationId: string,
    /** The latest `expiresAt` the reservation may have. */
    readonly maxExpiresAt: Date,
    /** The `expiresAt` the call asked for. */
    readonly requestedExpiresAt: Date,
  ) {
    super(
      `Reservation ${reservationId} may be held until ${maxExpiresAt.toISOString()} at the latest (maxHoldSeconds), ${requestedExpiresAt.toISOString()} requested`,
      'HOLD_LIMIT_EXCEEDED',
      409,
    );
  }
}

/** An item with this SKU exists already. Code `DUPLICATE_SKU`, status 409. */
export class DuplicateSkuError extends ReservationError {
  static override readonly codes: readonly string[] = ['DUPLICATE_SKU'];
  declare readonly code: 'DUPLICATE_SKU';

  constructor(readonly sku: string) {
    super(`An item with SKU ${JSON.stringify(sku)} already exists`, 'DUPLICATE_SKU', 409);
  }
}

/**
 * The database kept reporting deadlocks or lock-wait timeouts after the engine's retries.
 * Nothing was written; the caller may retry. Code `TRANSACTION_CONFLICT`, status 503.
 */
export class TransactionConflictError extends ReservationError {
  static override readonly codes: readonly string[] = ['TRANSACTION_CONFLICT'];
  declare readonly code: 'TRANSACTION_CONFLICT';

  constructor(
    readonly attempts: number,
    cause: unknown,
    options: { readonly hosted?: boolean } = {},
  ) {
    super(
      options.hosted
        ? 'The database reported a lock conflict inside your transaction (a deadlock, lock timeout or serialization failure); roll it back and retry the whole transaction'
        : `The database reported lock conflicts ${attempts} times in a row; try again`,
      'TRANSACTION_CONFLICT',
      503,
      { cause },
    );
  }
}

/**
 * The connection to the database failed (lost, reset, timed out, server shutting down) while
 * the call ran, so whether its writes were committed is unknown. Retryable: `reserve` and
 * `restock` with the same idempotency key, `confirm` and `cancel` as they are, return the
 * outcome of the first attempt if it committed, and do the work if it did not.
 * Code `OUTCOME_UNKNOWN`, status 503.
 */
export class OutcomeUnknownError extends ReservationError {
  static override readonly codes: readonly string[] = ['OUTCOME_UNKNOWN'];
  declare readonly code: 'OUTCOME_UNKNOWN';

  constructor(
    /** The call that failed: `reserve`, `confirm`, … */
    readonly operation: string,
    /** How to learn the outcome. */
    readonly advice: string,
    cause: unknown,
  ) {
    super(`The database connection failed during ${operation}; the outcome is unknown. ${advice}`, 'OUTCOME_UNKNOWN', 503, { cause });
  }
}

/** The Kysely instance uses a database this library does not support. Code `UNSUPPORTED_DATABASE`, status 500. */
export class UnsupportedDatabaseError extends ReservationError {
  static override readonly codes: readonly string[] = ['UNSUPPORTED_DATABASE'];
  declare readonly code: 'UNSUPPORTED_DATABASE';

  constructor(adapterName: string) {
    super(
      `Cannot tell the database from the Kysely adapter ${JSON.stringify(adapterName)}: if it is MySQL/MariaDB or PostgreSQL/PGlite ` +
        "(a minified build renames the adapter), pass dialect: 'mysql' or dialect: 'postgres' with db; other databases are not supported",
      'UNSUPPORTED_DATABASE',
      500,
    );
  }
}
