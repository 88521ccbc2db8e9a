/**
 * A small in-memory model of the engine, for the model-based tests (test/model.test.ts on PGlite,
 * test/faults/model-servers.test.ts on MariaDB and PostgreSQL): what each call must answer, and
 * what the tables must hold afterwards, written from the README's promises and nothing else.
 *
 * The state is plain data (structuredClone copies it: the concurrency check replays the same
 * calls in every order). The transitions are pure functions that return the expected answer and
 * update the state; the commands (./model-commands.ts) compare the engine's answer with it.
 *
 * What the model cannot know it learns from the engine and checks only for shape: reservation
 * and item ids, outbox row ids (they only break ties in the claim order), which of several
 * reservations with the same `expiresAt` a short expiry batch took, and the random backoff factor.
 */
import { MAX_AVAILABLE_QUANTITY } from '../../src/index.js';
import type { OutboxEventType, ReservationStatus } from '../../src/index.js';

export const START = Date.parse('2026-05-01T10:00:00.000Z');
/** The engines' `defaultTtlSeconds`. */
export const DEFAULT_TTL_SECONDS = 60;
/** The outbox options every batch in the model runs with: small, so that dead letters happen. */
export const OUTBOX = Object.freeze({ maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 4000 });

export interface ModelItem {
  readonly id: number;
  readonly sku: string;
  /** Initial stock plus every restock that added units. */
  received: number;
  available: number;
  held: number;
}

export interface ModelReservation {
  readonly id: string;
  readonly itemId: number;
  readonly quantity: number;
  status: ReservationStatus;
  readonly scope: string | undefined;
  readonly key: string;
  readonly expiresAt: number;
  readonly createdAt: number;
  updatedAt: number;
}

export interface ModelEvent {
  /** Creation order in the model (not the outbox id). */
  readonly index: number;
  readonly reservationId: string;
  readonly type: OutboxEventType;
  readonly itemId: number;
  readonly quantity: number;
  readonly status: ReservationStatus;
  readonly expiresAt: number;
  readonly occurredAt: number;
  /** When it may be claimed next; null once processed or dead-lettered. */
  availableAt: number | null;
  attempts: number;
  processed: boolean;
  dead: boolean;
  /** The outbox row id, learned from the table. */
  dbId?: string;
}

export interface ModelState {
  now: number;
  items: ModelItem[];
  reservations: ModelReservation[];
  /** (scope, key) of `reserve` → the request it was used for and its reservation. */
  reserveKeys: Map<string, { readonly request: string; readonly sent: ReserveRequest; readonly reservationId: string }>;
  /** (scope, key) of `restock` → the request it was used for. */
  restockKeys: Map<string, string>;
  events: ModelEvent[];
  /** SKUs made so far, for unique ones. */
  skus: number;
}

export function initialState(): ModelState {
  return { now: START, items: [], reservations: [], reserveKeys: new Map(), restockKeys: new Map(), events: [], skus: 0 };
}

/** An item id no item has (ids come from a sequence that never gets this far in a test). */
export const UNKNOWN_ITEM_ID = 2_000_000_000;
/** A well-formed reservation id no reservation has. */
export const UNKNOWN_RESERVATION_ID = '0190f2a0-0000-7000-8000-000000000000';

const keyOf = (scope: string | undefined, key: string) => `${scope ?? ''}\u0000${key}`;

export interface ReserveRequest {
  readonly itemId: number;
  readonly quantity: number;
  readonly key: string;
  readonly scope?: string;
  readonly ttlSeconds?: number;
}

/** What the client sent, as the idempotency check compares it (ttlSeconds only if given). */
const reserveRequestText = (r: ReserveRequest) => JSON.stringify([r.itemId, r.quantity, r.ttlSeconds ?? null]);

export type ErrorAnswer =
  | { readonly kind: 'error'; readonly code: 'ITEM_NOT_FOUND' | 'RESERVATION_NOT_FOUND' | 'IDEMPOTENCY_CONFLICT' | 'DUPLICATE_SKU' | 'VALIDATION_ERROR' }
  | { readonly kind: 'error'; readonly code: 'INSUFFICIENT_STOCK'; readonly available: number; readonly requested: number }
  | { readonly kind: 'error'; readonly code: 'INVALID_STATE' | 'RESERVATION_EXPIRED'; readonly currentStatus: ReservationStatus };

export type ReserveAnswer = { readonly kind: 'reserved'; readonly reservation: ModelReservation } | { readonly kind: 'replayed'; readonly reservation: ModelReservation } | ErrorAnswer;

/**
 * A reserve: a key seen before replays (same request) or conflicts (another), whatever the stock;
 * otherwise an unknown item, too little stock, or a new PENDING reservation. A refused reserve
 * stores nothing, its key included. `newId` names the reservation the engine made.
 */
export function reserve(state: ModelState, request: ReserveRequest, newId: () => string): ReserveAnswer {
  const earlier = state.reserveKeys.get(keyOf(request.scope, request.key));
  if (earlier) {
    if (earlier.request !== reserveRequestText(request)) return { kind: 'error', code: 'IDEMPOTENCY_CONFLICT' };
    return { kind: 'replayed', reservation: reservationById(state, earlier.reservationId)! };
  }
  const item = itemById(state, request.itemId);
  if (!item) return { kind: 'error', code: 'ITEM_NOT_FOUND' };
  if (item.available < request.quantity) return { kind: 'error', code: 'INSUFFICIENT_STOCK', available: item.available, requested: request.quantity };
  const reservation: ModelReservation = {
    id: newId(),
    itemId: item.id,
    quantity: request.quantity,
    status: 'PENDING',
    scope: request.scope,
    key: request.key,
    expiresAt: state.now + (request.ttlSeconds ?? DEFAULT_TTL_SECONDS) * 1000,
    createdAt: state.now,
    updatedAt: state.now,
  };
  state.reservations.push(reservation);
  state.reserveKeys.set(keyOf(request.scope, request.key), { request: reserveRequestText(request), sent: request, reservationId: reservation.id });
  item.available -= request.quantity;
  item.held += request.quantity;
  addEvent(state, reservation, 'reservation.created');
  return { kind: 'reserved', reservation };
}

export type TransitionAnswer = { readonly kind: 'ok'; readonly reservation: ModelReservation } | ErrorAnswer;

/**
 * Confirm: PENDING before `expiresAt` → CONFIRMED (its units leave for good); PENDING at or
 * past it → RESERVATION_EXPIRED; CONFIRMED → unchanged; CANCELLED or EXPIRED → INVALID_STATE.
 */
export function confirm(state: ModelState, reservationId: string): TransitionAnswer {
  const reservation = reservationById(state, reservationId);
  if (!reservation) return { kind: 'error', code: 'RESERVATION_NOT_FOUND' };
  if (reservation.status === 'CONFIRMED') return { kind: 'ok', reservation };
  if (reservation.status !== 'PENDING') return { kind: 'error', code: 'INVALID_STATE', currentStatus: reservation.status };
  if (state.now >= reservation.expiresAt) return { kind: 'error', code: 'RESERVATION_EXPIRED', currentStatus: 'PENDING' };
  finish(state, reservation, 'CONFIRMED');
  return { kind: 'ok', reservation };
}

/** Cancel: PENDING (even past `expiresAt`) → CANCELLED, stock back; CANCELLED → unchanged; else INVALID_STATE. */
export function cancel(state: ModelState, reservationId: string): TransitionAnswer {
  const reservation = reservationById(state, reservationId);
  if (!reservation) return { kind: 'error', code: 'RESERVATION_NOT_FOUND' };
  if (reservation.status === 'CANCELLED') return { kind: 'ok', reservation };
  if (reservation.status !== 'PENDING') return { kind: 'error', code: 'INVALID_STATE', currentStatus: reservation.status };
  finish(state, reservation, 'CANCELLED');
  return { kind: 'ok', reservation };
}

/**
 * The reservations an expiry batch with `limit` at `now` expires: PENDING ones due at `now`,
 * earliest `expiresAt` first. `sure` expire for certain; when the limit cuts through reservations
 * with the same `expiresAt`, `pick` more of `tied` expire too (which ones is the database's choice).
 */
export function dueForExpiry(state: ModelState, limit: number): { sure: ModelReservation[]; tied: ModelReservation[]; pick: number } {
  const due = state.reservations.filter((r) => r.status === 'PENDING' && r.expiresAt <= state.now).sort((a, b) => a.expiresAt - b.expiresAt);
  if (due.length <= limit) return { sure: due, tied: [], pick: 0 };
  const boundary = due[limit - 1]!.expiresAt;
  const sure = due.filter((r) => r.expiresAt < boundary);
  return { sure, tied: due.filter((r) => r.expiresAt === boundary), pick: limit - sure.length };
}

/** Expires these reservations (PENDING → EXPIRED, stock back), as one expiry batch does. */
export function expire(state: ModelState, reservations: readonly ModelReservation[]): void {
  for (const reservation of reservations) finish(state, reservation, 'EXPIRED');
}

export interface RestockRequest {
  readonly itemId: number;
  readonly quantity: number;
  readonly key?: string;
  readonly scope?: string;
}

export type RestockAnswer = { readonly kind: 'ok'; readonly item: ModelItem } | ErrorAnswer;

/**
 * Restock: a key seen before adds nothing (same request: the item as it is now; another:
 * IDEMPOTENCY_CONFLICT); an unknown item, or available + held over the maximum, is refused and
 * stores nothing, its key included.
 */
export function restock(state: ModelState, request: RestockRequest): RestockAnswer {
  const text = JSON.stringify([request.itemId, request.quantity]);
  const key = request.key === undefined ? undefined : keyOf(request.scope, request.key);
  const earlier = key === undefined ? undefined : state.restockKeys.get(key);
  if (earlier !== undefined) {
    if (earlier !== text) return { kind: 'error', code: 'IDEMPOTENCY_CONFLICT' };
    return { kind: 'ok', item: itemById(state, request.itemId)! };
  }
  const item = itemById(state, request.itemId);
  if (!item) return { kind: 'error', code: 'ITEM_NOT_FOUND' };
  if (item.available + item.held + request.quantity > MAX_AVAILABLE_QUANTITY) return { kind: 'error', code: 'VALIDATION_ERROR' };
  if (key !== undefined) state.restockKeys.set(key, text);
  item.available += request.quantity;
  item.received += request.quantity;
  return { kind: 'ok', item };
}

/** A new item, after the engine made it (the id is its). */
export function addItem(state: ModelState, item: { id: number; sku: string; stock: number }): ModelItem {
  const modelItem: ModelItem = { id: item.id, sku: item.sku, received: item.stock, available: item.stock, held: 0 };
  state.items.push(modelItem);
  return modelItem;
}

/**
 * The events an outbox batch with `limit` claims at `now`, in delivery order: due ones (not
 * processed or dead-lettered, `availableAt` ≤ now) by `availableAt`, then outbox id. Every event
 * must have its `dbId` learned first.
 */
export function claimable(state: ModelState, limit: number): ModelEvent[] {
  return state.events
    .filter((e) => e.availableAt !== null && e.availableAt <= state.now)
    .sort((a, b) => a.availableAt! - b.availableAt! || compareIds(a.dbId!, b.dbId!))
    .slice(0, limit);
}

/** The pause after failed attempt `attempt`: min(max, base · 2^(attempt−1)) × a factor in [0.5, 1], rounded. */
export function retryDelayRange(attempt: number): { min: number; max: number } {
  const capped = Math.min(OUTBOX.maxDelayMs, OUTBOX.baseDelayMs * 2 ** (attempt - 1));
  return { min: Math.round(capped * 0.5), max: capped };
}

export const itemById = (state: ModelState, id: number) => state.items.find((item) => item.id === id);
export const reservationById = (state: ModelState, id: string) => state.reservations.find((r) => r.id === id.toLowerCase());

/** The payload an event of `type` carries, as the outbox stores it. */
export function eventPayload(e: ModelEvent) {
  return {
    reservationId: e.reservationId,
    itemId: e.itemId,
    quantity: e.quantity,
    status: e.status,
    expiresAt: new Date(e.expiresAt).toISOString(),
    occurredAt: new Date(e.occurredAt).toISOString(),
  };
}

function compareIds(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** A PENDING reservation reaches `status`: its held units go back to available, or (confirmed) for good. */
function finish(state: ModelState, reservation: ModelReservation, status: 'CONFIRMED' | 'CANCELLED' | 'EXPIRED'): void {
  const item = itemById(state, reservation.itemId)!;
  item.held -= reservation.quantity;
  if (status !== 'CONFIRMED') item.available += reservation.quantity;
  reservation.status = status;
  reservation.updatedAt = state.now;
  addEvent(state, reservation, `reservation.${status.toLowerCase()}` as OutboxEventType);
}

function addEvent(state: ModelState, reservation: ModelReservation, type: OutboxEventType): void {
  state.events.push({
    index: state.events.length,
    reservationId: reservation.id,
    type,
    itemId: reservation.itemId,
    quantity: reservation.quantity,
    status: reservation.status,
    expiresAt: reservation.expiresAt,
    occurredAt: state.now,
    availableAt: state.now,
    attempts: 0,
    processed: false,
    dead: false,
  });
}
