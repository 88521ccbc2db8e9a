/**
 * What the engine's calls take and return. Re-exported by `reservation-engine.ts` and the package
 * index; kept apart so that the engine reads as its operations.
 */
import type { Reservation, ReservationStatus } from '../types.js';
import type { ReservationEngine } from './reservation-engine.js';

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
   * is now; with another item or quantity it is an {@link IdempotencyConflictError}. 1–255
   * printable ASCII characters, a namespace of its own (separate from `reserve`'s keys).
   * @defaultValue none: every call adds its units
   */
  readonly idempotencyKey?: string;
  /**
   * Whose key it is (see {@link ReserveRequestBase.idempotencyScope}).
   * @defaultValue none: one shared scope
   */
  readonly idempotencyScope?: string;
}

/** One line of a reservation of several items: see {@link ReserveInput}. */
export interface ReserveLineInput {
  readonly itemId: number;
  /** Units to hold: a positive integer, at most 1,000,000 (summed over the item's lines). */
  readonly quantity: number;
}

/**
 * What {@link ReservationEngine.reserve} takes: one item (`itemId` and `quantity`), or several
 * held together, all or nothing (`lines`).
 */
export type ReserveInput = ReserveRequestBase &
  (
    | {
        readonly itemId: number;
        /** Units to hold: a positive integer, at most 1,000,000. */
        readonly quantity: number;
        readonly lines?: undefined;
      }
    | {
        /**
         * The items to hold, 1–100 lines, all or nothing: one reservation. Lines for the same item
         * are summed; the order does not matter (the same lines in another order are the same
         * request for the idempotency key). A single line is the same request as `itemId` and
         * `quantity`.
         */
        readonly lines: readonly ReserveLineInput[];
        readonly itemId?: undefined;
        readonly quantity?: undefined;
      }
  );

/** What every {@link ReserveInput} carries. */
export interface ReserveRequestBase {
  /**
   * The client's key for this request, 1–255 printable ASCII characters. Sending the same key
   * with the same request again returns the first result (`replayed: true`); with a different
   * request it is an {@link IdempotencyConflictError}.
   */
  readonly idempotencyKey: string;
  /**
   * Whose key it is: a tenant, customer or API-client id, 1–255 printable ASCII characters. The
   * same key in two scopes is two independent requests, and a replay never crosses scopes.
   * @defaultValue none: one shared scope
   */
  readonly idempotencyScope?: string;
  /**
   * How long to hold the stock, in seconds: a positive integer, at most 30 days.
   * @defaultValue the engine's `defaultTtlSeconds`
   */
  readonly ttlSeconds?: number;
}

/** What {@link ReservationEngine.writeOff} takes. */
export interface WriteOffInput {
  readonly itemId: number;
  /** Units to take out of the available stock: a positive integer, at most 1,000,000, and at most the units available. */
  readonly quantity: number;
  /** Why: `damaged`, `lost`, `stolen`, a stock-count reference… 1–255 characters, carried by the event. */
  readonly reason: string;
  /**
   * Makes the write-off safe to retry, as {@link RestockInput.idempotencyKey}: restocks and
   * write-offs share one namespace of keys (stock adjustments).
   * @defaultValue none: every call takes its units
   */
  readonly idempotencyKey?: string;
  /**
   * Whose key it is (see {@link ReserveRequestBase.idempotencyScope}).
   * @defaultValue none: one shared scope
   */
  readonly idempotencyScope?: string;
}

/** What {@link ReservationEngine.extend} takes. */
export interface ExtendInput {
  /**
   * Hold the reservation until this many seconds from now: a positive integer, at most 30 days;
   * `createdAt` + the engine's `maxHoldSeconds` at the latest.
   */
  readonly ttlSeconds: number;
}

/** What {@link ReservationEngine.audit} takes. */
export interface AuditInput {
  /**
   * Only these items, up to 10,000 ids.
   * @defaultValue every item
   */
  readonly itemIds?: readonly number[];
}

/** What {@link ReservationEngine.reserve} returns. */
export interface ReserveResult {
  readonly reservation: Reservation;
  /** `true` when the idempotency key had been used with this request before: nothing new was written. */
  readonly replayed: boolean;
}

/** What {@link ReservationEngine.listReservations} takes: filters, and where the page starts. */
export interface ListReservationsQuery {
  /** Only this item's reservations: its single-item ones and the carts with a line for it (each served by an index on item and id). */
  readonly itemId?: number;
  /** Only reservations in this status. */
  readonly status?: ReservationStatus;
  /** Only reservations made with this idempotency scope (served by an index on scope and id). */
  readonly idempotencyScope?: string;
  /**
   * Most reservations on the page, 1–1,000.
   * @defaultValue 100
   */
  readonly limit?: number;
  /**
   * The `next` of the previous page: reservations after this id (keyset pagination, no OFFSET).
   * @defaultValue the first page
   */
  readonly after?: string;
}

/** One page of {@link ReservationEngine.listReservations}, oldest first (ids are time-ordered). */
export interface ReservationPage {
  readonly reservations: readonly Reservation[];
  /** Pass as `after` for the next page; `undefined` on the last page. */
  readonly next: string | undefined;
}
