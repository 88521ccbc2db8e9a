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
/** The engines' `maxHoldSeconds`: short, so that the model's clock reaches the cap of `extend`. */
export const MAX_HOLD_SECONDS = 120;
/** The outbox options every batch in the model runs with: small, so that dead letters happen. */
export const OUTBOX = Object.freeze({ maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 4000 });

export interface ModelItem {
  readonly id: number;
  readonly sku: string;
  /** Initial stock plus every restock that added units. */
  received: number;
  /** Units taken out by write-offs. */
  writtenOff: number;
  available: number;
  held: number;
}

/** One line of a reservation, or of a request: `quantity` units of one item. */
export interface Line {
  readonly itemId: number;
  readonly quantity: number;
}

export interface ModelReservation {
  readonly id: string;
  /** The single item; null for a reservation of several items (a cart). */
  readonly itemId: number | null;
  /** Units in all. */
  readonly quantity: number;
  /** One per item, in ascending item id (one line for a single item). */
  readonly lines: readonly Line[];
  status: ReservationStatus;
  readonly scope: string | undefined;
  readonly key: string;
  expiresAt: number;
  readonly createdAt: number;
  updatedAt: number;
}

export interface ModelEvent {
  /** Creation order in the model (not the outbox id). */
  readonly index: number;
  readonly type: OutboxEventType;
  /** The reservation (lower case) or `item <id>` the event is about: with the type, it finds the outbox row. */
  readonly subject: string;
  /** The payload, as the outbox stores it. */
  readonly payload: Readonly<Record<string, unknown>>;
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
  /** (scope, key) of `restock` and `writeOff` (one namespace: stock adjustments) → the request it was used for. */
  stockKeys: Map<string, string>;
  events: ModelEvent[];
  /** SKUs made so far, for unique ones. */
  skus: number;
}

export function initialState(): ModelState {
  return { now: START, items: [], reservations: [], reserveKeys: new Map(), stockKeys: new Map(), events: [], skus: 0 };
}

/** Item ids no item has (ids come from a sequence that never gets this far in a test): `UNKNOWN_ITEM_IDS[0]` is the lower. */
export const UNKNOWN_ITEM_IDS = Object.freeze([2_000_000_000, 2_000_000_001]);
/** A well-formed reservation id no reservation has. */
export const UNKNOWN_RESERVATION_ID = '0190f2a0-0000-7000-8000-000000000000';

const keyOf = (scope: string | undefined, key: string) => `${scope ?? ''}\u0000${key}`;

/** A reserve as the client sends it: one item (`itemId`, `quantity`), or `lines` in any order. */
export type ReserveRequest = {
  readonly key: string;
  readonly scope?: string;
  readonly ttlSeconds?: number;
} & ({ readonly itemId: number; readonly quantity: number; readonly lines?: undefined } | { readonly lines: readonly Line[]; readonly itemId?: undefined; readonly quantity?: undefined });

/** The request's lines summed per item, in ascending item id: what the engine holds, whatever the form. */
export function normalLines(request: ReserveRequest): Line[] {
  const units = new Map<number, number>();
  for (const { itemId, quantity } of request.lines ?? [{ itemId: request.itemId!, quantity: request.quantity! }]) units.set(itemId, (units.get(itemId) ?? 0) + quantity);
  return [...units].sort(([a], [b]) => a - b).map(([itemId, quantity]) => ({ itemId, quantity }));
}

/** What the idempotency check compares: the normal lines, and ttlSeconds only if given. */
const reserveRequestText = (r: ReserveRequest) => JSON.stringify([normalLines(r).map((line) => [line.itemId, line.quantity]), r.ttlSeconds ?? null]);

/** A line that could not be held, as InsufficientStockError lists it. */
export interface ShortLine {
  readonly itemId: number;
  readonly requested: number;
  readonly available: number;
}

export type ErrorAnswer =
  | { readonly kind: 'error'; readonly code: 'RESERVATION_NOT_FOUND' | 'IDEMPOTENCY_CONFLICT' | 'DUPLICATE_SKU' | 'VALIDATION_ERROR' }
  | { readonly kind: 'error'; readonly code: 'ITEM_NOT_FOUND'; readonly id: number }
  | { readonly kind: 'error'; readonly code: 'INSUFFICIENT_STOCK'; readonly itemId: number; readonly available: number; readonly requested: number; readonly lines: readonly ShortLine[] }
  | { readonly kind: 'error'; readonly code: 'INVALID_STATE' | 'RESERVATION_EXPIRED'; readonly currentStatus: ReservationStatus }
  | { readonly kind: 'error'; readonly code: 'HOLD_LIMIT_EXCEEDED'; readonly reservationId: string; readonly maxExpiresAt: Date; readonly requestedExpiresAt: Date };

export type ReserveAnswer = { readonly kind: 'reserved'; readonly reservation: ModelReservation } | { readonly kind: 'replayed'; readonly reservation: ModelReservation } | ErrorAnswer;

/** InsufficientStockError's fields for these short lines (at least one). */
function insufficient(lines: readonly ShortLine[]): ErrorAnswer {
  const [first] = lines as [ShortLine];
  return { kind: 'error', code: 'INSUFFICIENT_STOCK', itemId: first.itemId, available: first.available, requested: first.requested, lines };
}

/**
 * A reserve, of one item or several: a key seen before replays (same lines, in any order or
 * split, and same ttlSeconds) or conflicts (another request), whatever the stock; otherwise the
 * lowest unknown item, every short line, or a new PENDING reservation holding every line. A
 * refused reserve stores nothing, its key included. `newId` names the reservation the engine made.
 */
export function reserve(state: ModelState, request: ReserveRequest, newId: () => string): ReserveAnswer {
  const earlier = state.reserveKeys.get(keyOf(request.scope, request.key));
  if (earlier) {
    if (earlier.request !== reserveRequestText(request)) return { kind: 'error', code: 'IDEMPOTENCY_CONFLICT' };
    return { kind: 'replayed', reservation: reservationById(state, earlier.reservationId)! };
  }
  const lines = normalLines(request);
  const unknown = lines.find((line) => !itemById(state, line.itemId));
  if (unknown) return { kind: 'error', code: 'ITEM_NOT_FOUND', id: unknown.itemId };
  const short = lines
    .map((line) => ({ itemId: line.itemId, requested: line.quantity, available: itemById(state, line.itemId)!.available }))
    .filter((line) => line.available < line.requested);
  if (short.length > 0) return insufficient(short);
  const reservation: ModelReservation = {
    id: newId(),
    itemId: lines.length === 1 ? lines[0]!.itemId : null,
    quantity: lines.reduce((sum, line) => sum + line.quantity, 0),
    lines,
    status: 'PENDING',
    scope: request.scope,
    key: request.key,
    expiresAt: state.now + (request.ttlSeconds ?? DEFAULT_TTL_SECONDS) * 1000,
    createdAt: state.now,
    updatedAt: state.now,
  };
  state.reservations.push(reservation);
  state.reserveKeys.set(keyOf(request.scope, request.key), { request: reserveRequestText(request), sent: request, reservationId: reservation.id });
  for (const line of lines) {
    const item = itemById(state, line.itemId)!;
    item.available -= line.quantity;
    item.held += line.quantity;
  }
  addReservationEvent(state, reservation, 'reservation.created');
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
 * Extend: only a PENDING reservation before its `expiresAt` (else INVALID_STATE, or
 * RESERVATION_EXPIRED); now + ttlSeconds no later than it holds already → unchanged, no event;
 * past `createdAt` + {@link MAX_HOLD_SECONDS} → HOLD_LIMIT_EXCEEDED, unchanged; else `expiresAt`
 * moves there, with a `reservation.extended` event.
 */
export function extend(state: ModelState, reservationId: string, ttlSeconds: number): TransitionAnswer {
  const reservation = reservationById(state, reservationId);
  if (!reservation) return { kind: 'error', code: 'RESERVATION_NOT_FOUND' };
  if (reservation.status !== 'PENDING') return { kind: 'error', code: 'INVALID_STATE', currentStatus: reservation.status };
  if (state.now >= reservation.expiresAt) return { kind: 'error', code: 'RESERVATION_EXPIRED', currentStatus: 'PENDING' };
  const wanted = state.now + ttlSeconds * 1000;
  if (wanted <= reservation.expiresAt) return { kind: 'ok', reservation };
  const latest = reservation.createdAt + MAX_HOLD_SECONDS * 1000;
  if (wanted > latest) return { kind: 'error', code: 'HOLD_LIMIT_EXCEEDED', reservationId: reservation.id, maxExpiresAt: new Date(latest), requestedExpiresAt: new Date(wanted) };
  reservation.expiresAt = wanted;
  reservation.updatedAt = state.now;
  addReservationEvent(state, reservation, 'reservation.extended');
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

export interface WriteOffRequest extends RestockRequest {
  readonly reason: string;
}

export type StockAnswer = { readonly kind: 'ok'; readonly item: ModelItem } | ErrorAnswer;

/**
 * A key of a stock adjustment seen before: the item as it is now (same request) or
 * IDEMPOTENCY_CONFLICT (another, a write-off's key for a restock included); undefined for a new key.
 */
function replayedAdjustment(state: ModelState, key: string | undefined, text: string, itemId: number): StockAnswer | undefined {
  const earlier = key === undefined ? undefined : state.stockKeys.get(key);
  if (earlier === undefined) return undefined;
  if (earlier !== text) return { kind: 'error', code: 'IDEMPOTENCY_CONFLICT' };
  return { kind: 'ok', item: itemById(state, itemId)! };
}

/**
 * Restock: a key seen before adds nothing (see {@link replayedAdjustment}); an unknown item, or
 * available + held over the maximum, is refused and stores nothing, its key included.
 */
export function restock(state: ModelState, request: RestockRequest): StockAnswer {
  const text = JSON.stringify(['restock', request.itemId, request.quantity]);
  const key = request.key === undefined ? undefined : keyOf(request.scope, request.key);
  const replayed = replayedAdjustment(state, key, text, request.itemId);
  if (replayed) return replayed;
  const item = itemById(state, request.itemId);
  if (!item) return { kind: 'error', code: 'ITEM_NOT_FOUND', id: request.itemId };
  if (item.available + item.held + request.quantity > MAX_AVAILABLE_QUANTITY) return { kind: 'error', code: 'VALIDATION_ERROR' };
  if (key !== undefined) state.stockKeys.set(key, text);
  item.available += request.quantity;
  item.received += request.quantity;
  return { kind: 'ok', item };
}

/**
 * Write-off: a key seen before takes nothing (see {@link replayedAdjustment}); an unknown item,
 * or fewer units available than asked (held units never count), is refused and stores nothing,
 * its key included; otherwise the units leave, with an `item.written_off` event.
 */
export function writeOff(state: ModelState, request: WriteOffRequest): StockAnswer {
  const text = JSON.stringify(['writeOff', request.itemId, request.quantity, request.reason]);
  const key = request.key === undefined ? undefined : keyOf(request.scope, request.key);
  const replayed = replayedAdjustment(state, key, text, request.itemId);
  if (replayed) return replayed;
  const item = itemById(state, request.itemId);
  if (!item) return { kind: 'error', code: 'ITEM_NOT_FOUND', id: request.itemId };
  if (item.available < request.quantity) return insufficient([{ itemId: item.id, requested: request.quantity, available: item.available }]);
  if (key !== undefined) state.stockKeys.set(key, text);
  item.available -= request.quantity;
  item.writtenOff += request.quantity;
  addEvent(state, 'item.written_off', `item ${item.id}`, {
    itemId: item.id,
    quantity: request.quantity,
    reason: request.reason,
    availableQuantity: item.available,
    occurredAt: new Date(state.now).toISOString(),
  });
  return { kind: 'ok', item };
}

/** A new item, after the engine made it (the id is its). */
export function addItem(state: ModelState, item: { id: number; sku: string; stock: number }): ModelItem {
  const modelItem: ModelItem = { id: item.id, sku: item.sku, received: item.stock, writtenOff: 0, available: item.stock, held: 0 };
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

/** What an event is about, from its stored payload: as {@link ModelEvent.subject}. */
export function subjectOf(type: string, payload: { reservationId?: unknown; itemId?: unknown }): string {
  return type.startsWith('item.') ? `item ${Number(payload.itemId)}` : String(payload.reservationId).toLowerCase();
}

export function compareIds(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** A PENDING reservation reaches `status`: each line's held units go back to available, or (confirmed) for good. */
function finish(state: ModelState, reservation: ModelReservation, status: 'CONFIRMED' | 'CANCELLED' | 'EXPIRED'): void {
  for (const line of reservation.lines) {
    const item = itemById(state, line.itemId)!;
    item.held -= line.quantity;
    if (status !== 'CONFIRMED') item.available += line.quantity;
  }
  reservation.status = status;
  reservation.updatedAt = state.now;
  addReservationEvent(state, reservation, `reservation.${status.toLowerCase()}` as OutboxEventType);
}

function addReservationEvent(state: ModelState, reservation: ModelReservation, type: OutboxEventType): void {
  addEvent(state, type, reservation.id, {
    reservationId: reservation.id,
    itemId: reservation.itemId,
    quantity: reservation.quantity,
    lines: reservation.lines.map((line) => ({ itemId: line.itemId, quantity: line.quantity })),
    status: reservation.status,
    expiresAt: new Date(reservation.expiresAt).toISOString(),
    occurredAt: new Date(state.now).toISOString(),
  });
}

function addEvent(state: ModelState, type: OutboxEventType, subject: string, payload: Record<string, unknown>): void {
  state.events.push({
    index: state.events.length,
    type,
    subject,
    payload,
    occurredAt: state.now,
    availableAt: state.now,
    attempts: 0,
    processed: false,
    dead: false,
  });
}
