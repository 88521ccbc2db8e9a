/**
 * fast-check commands over the model of ./model.ts: each runs one engine call, compares the
 * answer (result, error class and code, quantities, times) with the model's, and updates the
 * model. {@link modelProperty} runs sequences of them and then checks the tables themselves
 * ({@link checkDatabase}).
 */
import fc from 'fast-check';
import type { Kysely } from 'kysely';
import { expect } from 'vitest';
import {
  expireBatch,
  MAX_AVAILABLE_QUANTITY,
  type OutboxEvent,
  type Reservation,
  ReservationEngine,
  ReservationError,
  runOutboxBatch,
} from '../../src/index.js';
import type { TestDatabase } from './db.js';
import { checkInvariants } from './invariants.js';
import * as model from './model.js';
import type { ErrorAnswer, Line, ModelReservation, ModelState, ReserveRequest } from './model.js';

export interface Real {
  readonly db: Kysely<any>;
  readonly engine: ReservationEngine;
  readonly clock: { now: Date };
  /** Ids of the events the outbox handler was given, repeats included. */
  readonly delivered: string[];
  /** The handler always fails events whose model index is this modulo 5 (they end dead-lettered); none when undefined. */
  readonly poison: number | undefined;
}

type Command = fc.AsyncCommand<ModelState, Real>;

/** What a call answered: its result, or the error it threw. */
async function outcome<T>(call: () => Promise<T>): Promise<{ value: T; error?: undefined } | { value?: undefined; error: unknown }> {
  try {
    return { value: await call() };
  } catch (error) {
    return { error };
  }
}

/** The engine threw the error the model expects: its class (by code), code and context. */
function expectError(actual: { error?: unknown; value?: unknown }, expected: ErrorAnswer): void {
  if (!(actual.error instanceof ReservationError)) {
    throw new Error(`expected ${expected.code}, got ${actual.error === undefined ? `the answer ${JSON.stringify(actual.value)}` : String(actual.error)}`, { cause: actual.error });
  }
  const { kind: _kind, ...fields } = expected;
  expect(actual.error).toMatchObject(fields);
  expect((actual.error.constructor as typeof ReservationError).codes).toContain(expected.code);
}

function expectReservation(actual: Reservation, expected: ModelReservation): void {
  expect({ ...actual, expiresAt: actual.expiresAt.getTime(), createdAt: actual.createdAt.getTime(), updatedAt: actual.updatedAt.getTime() }).toEqual({
    id: expected.id,
    itemId: expected.itemId,
    quantity: expected.quantity,
    lines: expected.lines,
    status: expected.status,
    idempotencyScope: expected.scope ?? null,
    idempotencyKey: expected.key,
    expiresAt: expected.expiresAt,
    createdAt: expected.createdAt,
    updatedAt: expected.updatedAt,
  });
}

/** -1, -2 (or no items yet): ids no item has, -1 the lower; otherwise the n-th item, modulo their number. */
const itemIdOf = (state: Readonly<ModelState>, ref: number) =>
  ref < 0 || state.items.length === 0 ? model.UNKNOWN_ITEM_IDS[ref === -2 ? 1 : 0]! : state.items[ref % state.items.length]!.id;
/** -1 (or no reservations yet): an id no reservation has; otherwise the n-th latest reservation, modulo their number. */
const reservationIdOf = (state: Readonly<ModelState>, ref: number) =>
  ref < 0 || state.reservations.length === 0 ? model.UNKNOWN_RESERVATION_ID : state.reservations[state.reservations.length - 1 - (ref % state.reservations.length)]!.id;

class CreateItem implements Command {
  constructor(readonly stock: number, readonly duplicateOf: number | null) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    const duplicate = this.duplicateOf !== null && state.items.length > 0 ? state.items[this.duplicateOf % state.items.length]! : undefined;
    const sku = duplicate?.sku ?? `sku-${++state.skus}`;
    const actual = await outcome(() => real.engine.createItem({ sku, name: 'model item', availableQuantity: this.stock }));
    if (duplicate) return expectError(actual, { kind: 'error', code: 'DUPLICATE_SKU' });
    if (actual.error) throw actual.error;
    const item = actual.value!;
    expect(item).toEqual({ id: item.id, sku, name: 'model item', availableQuantity: this.stock, heldQuantity: 0, createdAt: real.clock.now, updatedAt: real.clock.now });
    model.addItem(state, { id: item.id, sku, stock: this.stock });
  }
  toString = () => `createItem(${this.stock}${this.duplicateOf === null ? '' : `, duplicate of #${this.duplicateOf}`})`;
}

/** Reserve options besides what is held. */
type ReserveOptions = Pick<ReserveRequest, 'key' | 'scope' | 'ttlSeconds'>;

class Reserve implements Command {
  constructor(readonly item: number, readonly quantity: number, readonly options: ReserveOptions) {}
  check = () => true;
  run(state: ModelState, real: Real) {
    return reserveAndCompare(state, real, { ...this.options, itemId: itemIdOf(state, this.item), quantity: this.quantity });
  }
  toString = () => `reserve(item #${this.item}, ${this.quantity}, ${JSON.stringify(this.options)})`;
}

/** A reserve of several lines, in the order given (item refs may repeat, and be unknown items). */
class ReserveCart implements Command {
  constructor(readonly lines: readonly { item: number; quantity: number }[], readonly options: ReserveOptions) {}
  check = () => true;
  run(state: ModelState, real: Real) {
    return reserveAndCompare(state, real, { ...this.options, lines: this.lines.map((line) => ({ itemId: itemIdOf(state, line.item), quantity: line.quantity })) });
  }
  toString = () => `reserveCart([${this.lines.map((line) => `#${line.item}×${line.quantity}`).join(', ')}], ${JSON.stringify(this.options)})`;
}

/**
 * The request of an earlier successful reserve again: a replay. `form` 0 sends it as it was sent;
 * any other sends it as `lines` (a single item as one line), rotated by `form`, reversed when
 * `form` is odd, and from 2 on with the first line of 2 or more units split in two.
 */
class ReplayReserve implements Command {
  constructor(readonly which: number, readonly form: number) {}
  check = (state: Readonly<ModelState>) => state.reserveKeys.size > 0;
  run(state: ModelState, real: Real) {
    const entries = [...state.reserveKeys.values()];
    return reserveAndCompare(state, real, reshaped(entries[this.which % entries.length]!.sent, this.form));
  }
  toString = () => `replayReserve(#${this.which}, form ${this.form})`;
}

/** The same request in another form (see {@link ReplayReserve}). */
function reshaped(request: ReserveRequest, form: number): ReserveRequest {
  const { key, scope, ttlSeconds } = request;
  const options = { key, ...(scope === undefined ? {} : { scope }), ...(ttlSeconds === undefined ? {} : { ttlSeconds }) };
  if (form === 0) return request;
  let lines: Line[] = [...(request.lines ?? [{ itemId: request.itemId!, quantity: request.quantity! }])];
  const rotate = form % lines.length;
  lines = [...lines.slice(rotate), ...lines.slice(0, rotate)];
  if (form % 2 === 1) lines.reverse();
  const splittable = lines.findIndex((line) => line.quantity >= 2);
  if (form >= 2 && splittable >= 0) {
    const { itemId, quantity } = lines[splittable]!;
    lines.splice(splittable, 1, { itemId, quantity: 1 }, { itemId, quantity: quantity - 1 });
  }
  return { ...options, lines };
}

async function reserveAndCompare(state: ModelState, real: Real, request: ReserveRequest): Promise<void> {
  const options = {
    idempotencyKey: request.key,
    ...(request.scope === undefined ? {} : { idempotencyScope: request.scope }),
    ...(request.ttlSeconds === undefined ? {} : { ttlSeconds: request.ttlSeconds }),
  };
  const actual = await outcome(() =>
    real.engine.reserve(request.lines === undefined ? { itemId: request.itemId, quantity: request.quantity, ...options } : { lines: request.lines, ...options }),
  );
  const expected = model.reserve(state, request, () => actual.value?.reservation.id ?? '(none)');
  if (expected.kind === 'error') return expectError(actual, expected);
  if (actual.error) throw actual.error;
  expect(actual.value!.replayed).toBe(expected.kind === 'replayed');
  expectReservation(actual.value!.reservation, expected.reservation);
}

class Transition implements Command {
  constructor(readonly action: 'confirm' | 'cancel', readonly reservation: number, readonly upperCase: boolean) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    const id = reservationIdOf(state, this.reservation);
    const actual = await outcome(() => real.engine[this.action](this.upperCase ? id.toUpperCase() : id));
    const expected = model[this.action](state, id);
    if (expected.kind === 'error') return expectError(actual, expected);
    if (actual.error) throw actual.error;
    expectReservation(actual.value!, expected.reservation);
  }
  toString = () => `${this.action}(reservation #${this.reservation}${this.upperCase ? ', upper case' : ''})`;
}

class Extend implements Command {
  constructor(readonly reservation: number, readonly ttlSeconds: number, readonly upperCase: boolean) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    const id = reservationIdOf(state, this.reservation);
    const actual = await outcome(() => real.engine.extend(this.upperCase ? id.toUpperCase() : id, { ttlSeconds: this.ttlSeconds }));
    const expected = model.extend(state, id, this.ttlSeconds);
    if (expected.kind === 'error') return expectError(actual, expected);
    if (actual.error) throw actual.error;
    expectReservation(actual.value!, expected.reservation);
  }
  toString = () => `extend(reservation #${this.reservation}, ${this.ttlSeconds} s${this.upperCase ? ', upper case' : ''})`;
}

/** A restock, or a write-off (with `reason`): their idempotency keys share one namespace. */
class AdjustStock implements Command {
  constructor(
    readonly action: 'restock' | 'writeOff',
    readonly item: number,
    readonly quantity: number,
    readonly reason: string,
    readonly key: string | undefined,
    readonly scope: string | undefined,
  ) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    const request = { itemId: itemIdOf(state, this.item), quantity: this.quantity, reason: this.reason, key: this.key, scope: this.scope };
    const input = {
      itemId: request.itemId,
      quantity: request.quantity,
      ...(request.key === undefined ? {} : { idempotencyKey: request.key }),
      ...(request.scope === undefined ? {} : { idempotencyScope: request.scope }),
    };
    const actual = await outcome(() => (this.action === 'restock' ? real.engine.restock(input) : real.engine.writeOff({ ...input, reason: request.reason })));
    const expected = this.action === 'restock' ? model.restock(state, request) : model.writeOff(state, request);
    if (expected.kind === 'error') return expectError(actual, expected);
    if (actual.error) throw actual.error;
    expect(actual.value).toMatchObject({ id: expected.item.id, sku: expected.item.sku, availableQuantity: expected.item.available, heldQuantity: expected.item.held });
  }
  toString = () => `${this.action}(item #${this.item}, ${this.quantity}${this.action === 'writeOff' ? `, ${this.reason}` : ''}, key ${this.key}, scope ${this.scope})`;
}

/** The engine's audit of some items (unknown ones among them), or of all: everything adds up. */
class Audit implements Command {
  constructor(readonly items: readonly number[] | undefined) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    const itemIds = this.items?.map((ref) => itemIdOf(state, ref));
    const asked = itemIds === undefined ? state.items.map((item) => item.id) : [...new Set(itemIds)].sort((a, b) => a - b);
    const known = asked.filter((id) => model.itemById(state, id));
    expect(await real.engine.audit(itemIds === undefined ? undefined : { itemIds })).toEqual({
      ok: true,
      itemsChecked: known.length,
      discrepancies: [],
      unknownItemIds: asked.filter((id) => !model.itemById(state, id)),
    });
  }
  toString = () => `audit(${this.items === undefined ? 'every item' : `items ${this.items.map((ref) => `#${ref}`).join(', ')}`})`;
}

class AdvanceClock implements Command {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    state.now += this.ms;
    real.clock.now = new Date(state.now);
  }
  toString = () => `advanceClock(${this.ms} ms)`;
}

class Expire implements Command {
  constructor(readonly limit: number) {}
  check = () => true;
  async run(state: ModelState, real: Real) {
    const { sure, tied, pick } = model.dueForExpiry(state, this.limit);
    expect(await expireBatch({ db: real.db, now: real.clock.now, limit: this.limit })).toEqual({ expired: sure.length + pick, failed: 0 });
    let picked: ModelReservation[] = [];
    if (pick > 0) {
      // Reservations with the same expiresAt: which ones the batch took is the database's choice.
      const rows = await real.db.selectFrom('reservations').select(['id', 'status']).where('id', 'in', tied.map((r) => r.id)).execute();
      const expired = new Set(rows.filter((row) => row.status === 'EXPIRED').map((row) => String(row.id).toLowerCase()));
      picked = tied.filter((r) => expired.has(r.id));
      expect(picked.length, 'reservations expired among those due at the same time').toBe(pick);
    }
    model.expire(state, [...sure, ...picked]);
  }
  toString = () => `expireBatch(limit ${this.limit})`;
}

/**
 * One outbox batch; the handler fails for the events whose model index hits a bit of `failMask`,
 * and for the run's poison events.
 */
class RunOutbox implements Command {
  constructor(readonly limit: number, readonly failMask: number) {}
  check = () => true;
  run(state: ModelState, real: Real) {
    return runOutboxAndCompare(state, real, this.limit, this.failMask);
  }
  toString = () => `runOutboxBatch(limit ${this.limit}, failMask ${this.failMask.toString(2)})`;
}

const fails = (real: Real, failMask: number, index: number) => ((failMask >> (index % 8)) & 1) === 1 || index % 5 === real.poison;

async function runOutboxAndCompare(state: ModelState, real: Real, limit: number, failMask: number): Promise<void> {
  await learnOutboxIds(state, real.db);
  const expected = model.claimable(state, limit);
  const byDbId = new Map(state.events.map((e) => [e.dbId!, e]));
  const calls: OutboxEvent[] = [];
  const result = await runOutboxBatch({
    db: real.db,
    now: real.clock.now,
    limit,
    ...model.OUTBOX,
    handler: (event) => {
      calls.push(event);
      real.delivered.push(event.id);
      if (fails(real, failMask, byDbId.get(event.id)?.index ?? 0)) throw new Error(`model handler refuses event ${event.id}`);
    },
  });
  expect(calls.map((c) => c.id), 'events delivered, in order').toEqual(expected.map((e) => e.dbId));
  for (const [i, e] of expected.entries()) {
    expect({ ...calls[i]!, createdAt: calls[i]!.createdAt.getTime() }).toEqual({ id: e.dbId, type: e.type, payload: e.payload, attempts: e.attempts + 1, createdAt: e.occurredAt });
  }
  const failed = new Set<model.ModelEvent>();
  let deadLettered = 0;
  for (const e of expected) {
    e.attempts++;
    if (!fails(real, failMask, e.index)) {
      e.processed = true;
      e.availableAt = null;
    } else if (e.attempts >= model.OUTBOX.maxAttempts) {
      e.dead = true;
      e.availableAt = null;
      deadLettered++;
    } else {
      failed.add(e);
    }
  }
  expect(result).toEqual({ processed: expected.length - failed.size - deadLettered, failed: failed.size, deadLettered, released: 0 });

  // Every row as the model has it; a failed event's next attempt within the backoff's bounds.
  const rows = await real.db.selectFrom('outbox').select(['id', 'available_at', 'locked_until', 'attempts', 'processed_at', 'dead_lettered_at']).execute();
  for (const row of rows) {
    const e = byDbId.get(String(row.id))!;
    const availableAt = row.available_at === null ? null : new Date(row.available_at).getTime();
    if (failed.has(e)) {
      const { min, max } = model.retryDelayRange(e.attempts);
      expect(availableAt, `event ${e.dbId}'s next attempt after failed attempt ${e.attempts}`).toBeGreaterThanOrEqual(state.now + min);
      expect(availableAt).toBeLessThanOrEqual(state.now + max);
      e.availableAt = availableAt;
    }
    expect({ availableAt, locked: row.locked_until !== null, attempts: Number(row.attempts), processed: row.processed_at !== null, dead: row.dead_lettered_at !== null }, `event ${e.dbId} (${e.type})`).toEqual({
      availableAt: e.availableAt,
      locked: false,
      attempts: e.attempts,
      processed: e.processed,
      dead: e.dead,
    });
  }
}

/**
 * Learns the outbox ids of the model's events; the table must hold exactly the model's events.
 * An event is found by its type and subject (reservation or item); events of one subject and type
 * (extensions, write-offs) were written by calls one after another, so in outbox id order.
 */
async function learnOutboxIds(state: ModelState, db: Kysely<any>): Promise<void> {
  const rows = await db.selectFrom('outbox').select(['id', 'type', 'payload']).execute();
  const found = rows
    .map((row) => {
      const payload = typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload;
      return { id: String(row.id), key: `${model.subjectOf(row.type, payload)} ${row.type}` };
    })
    .sort((a, b) => model.compareIds(a.id, b.id));
  expect(found.map((f) => f.key).sort(), 'outbox events').toEqual(state.events.map((e) => `${e.subject} ${e.type}`).sort());
  const ids = new Map<string, string[]>();
  for (const f of found) ids.set(f.key, [...(ids.get(f.key) ?? []), f.id]);
  for (const e of state.events) e.dbId = ids.get(`${e.subject} ${e.type}`)!.shift();
}

const itemRef = fc.oneof({ weight: 9, arbitrary: fc.nat(20) }, { weight: 1, arbitrary: fc.constant(-1) });
/** A cart's item: now and then one of two unknown items. */
const lineItemRef = fc.oneof({ weight: 19, arbitrary: fc.nat(20) }, { weight: 1, arbitrary: fc.constantFrom(-1, -2) });
const reservationRef = fc.oneof({ weight: 9, arbitrary: fc.nat(30) }, { weight: 1, arbitrary: fc.constant(-1) });
const scope = fc.constantFrom(undefined, 'tenant-a');
/** One key space for single-item reserves and carts: a cart's key reused for one item is a conflict. */
const reserveOptions = fc.record(
  { key: fc.constantFrom('k1', 'k2', 'k3', 'k4', 'k5'), scope, ttlSeconds: fc.constantFrom(undefined, 1, 2, 5, 30, 2 * model.MAX_HOLD_SECONDS) },
  { requiredKeys: ['key'] },
);
/** Keys of restocks and write-offs: one namespace. */
const stockKey = fc.oneof({ weight: 2, arbitrary: fc.constant('r1') }, fc.constantFrom(undefined, 'r2'));

const stock = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 0, max: 8 }) }, { weight: 1, arbitrary: fc.constant(MAX_AVAILABLE_QUANTITY - 2) });

/** Every command, weighted (by repeats) towards reserves (carts most), extensions, the clock and the outbox. */
export function commandArbitraries(): fc.Arbitrary<Command>[] {
  const reserve = fc.tuple(itemRef, fc.integer({ min: 1, max: 4 }), reserveOptions).map(([item, quantity, options]) => new Reserve(item, quantity, options));
  // Mostly 1–2 units a line, so that carts of 2–4 lines fit the small stocks now and then.
  const lineQuantity = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 2 }) }, { weight: 2, arbitrary: fc.integer({ min: 3, max: 4 }) }, { weight: 1, arbitrary: fc.constant(50) });
  const cartLine = fc.record({ item: lineItemRef, quantity: lineQuantity });
  const cart = fc.tuple(fc.array(cartLine, { minLength: 2, maxLength: 4 }), reserveOptions).map(([lines, options]) => new ReserveCart(lines, options));
  const extend = fc
    .tuple(reservationRef, fc.constantFrom(1, 30, 60, 90, model.MAX_HOLD_SECONDS), fc.boolean())
    .map(([ref, ttlSeconds, upper]) => new Extend(ref, ttlSeconds, upper));
  const advanceClock = fc.constantFrom(1, 999, 1000, 2000, 4000, 5000, 30_000, 61_000).map((ms) => new AdvanceClock(ms));
  const runOutbox = fc
    .tuple(fc.constantFrom(1, 2, 4, 100), fc.oneof(fc.constant(0), fc.nat(255), fc.constant(255)))
    .map(([limit, failMask]) => new RunOutbox(limit, failMask));
  return [
    fc.tuple(stock, fc.option(fc.nat(20), { freq: 4 })).map(([units, duplicateOf]) => new CreateItem(units, duplicateOf)),
    reserve,
    reserve,
    cart,
    cart,
    cart,
    fc.tuple(fc.nat(30), fc.nat(5)).map(([which, form]) => new ReplayReserve(which, form)),
    ...(['confirm', 'cancel'] as const).map((action) => fc.tuple(reservationRef, fc.boolean()).map(([ref, upper]) => new Transition(action, ref, upper))),
    extend,
    extend,
    ...(['restock', 'writeOff'] as const).map((action) =>
      fc
        .tuple(itemRef, fc.integer({ min: 1, max: 5 }), fc.constantFrom('damaged', 'lost'), stockKey, scope)
        .map(([item, quantity, reason, key, keyScope]) => new AdjustStock(action, item, quantity, reason, key, keyScope)),
    ),
    advanceClock,
    advanceClock,
    fc.constantFrom(1, 2, 3, 100).map((limit) => new Expire(limit)),
    runOutbox,
    runOutbox,
    fc.option(fc.array(itemRef, { maxLength: 3 }), { nil: undefined }).map((items) => new Audit(items)),
  ];
}

/**
 * The tables against the model: the invariants of ./invariants.ts and the engine's own audit, then
 * each item's figures, each reservation and each cart's lines exactly. With `drain`, first
 * delivers every event (the clock moves on past any backoff; poison events until they are
 * dead-lettered) and checks that none is left pending.
 */
export async function checkDatabase(state: ModelState, real: Real, { drain = true } = {}): Promise<void> {
  if (drain) {
    for (let round = 0; state.events.some((e) => e.availableAt !== null); round++) {
      if (round > 10) throw new Error('the outbox did not drain');
      state.now += model.OUTBOX.maxDelayMs;
      real.clock.now = new Date(state.now);
      await runOutboxAndCompare(state, real, 100, 0);
    }
  }
  const report = await checkInvariants(real.db, {
    received: new Map(state.items.map((item) => [item.id, item.received])),
    writtenOff: new Map(state.items.map((item) => [item.id, item.writtenOff])),
    delivered: real.delivered,
    outboxMayBePending: !drain,
  });
  expect(report.violations).toEqual([]);
  expect(report.events).toBe(state.events.length);
  expect(await real.engine.audit()).toEqual({ ok: true, itemsChecked: state.items.length, discrepancies: [], unknownItemIds: [] });

  const items = await real.db
    .selectFrom('items')
    .select(['id', 'available_quantity', 'held_quantity', 'received_quantity', 'written_off_quantity', 'purged_confirmed_quantity'])
    .orderBy('id')
    .execute();
  expect(
    items.map((row) => ({
      id: Number(row.id),
      available: Number(row.available_quantity),
      held: Number(row.held_quantity),
      received: Number(row.received_quantity),
      writtenOff: Number(row.written_off_quantity),
      purgedConfirmed: Number(row.purged_confirmed_quantity),
    })),
  ).toEqual(state.items.map((item) => ({ id: item.id, available: item.available, held: item.held, received: item.received, writtenOff: item.writtenOff, purgedConfirmed: 0 })));
  const reservations = await real.db.selectFrom('reservations').select(['id', 'item_id', 'quantity', 'status', 'expires_at', 'created_at', 'updated_at']).execute();
  const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : 1);
  expect(
    reservations
      .map((row) => ({
        id: String(row.id).toLowerCase(),
        itemId: row.item_id === null ? null : Number(row.item_id),
        quantity: Number(row.quantity),
        status: row.status,
        expiresAt: new Date(row.expires_at).getTime(),
        createdAt: new Date(row.created_at).getTime(),
        updatedAt: new Date(row.updated_at).getTime(),
      }))
      .sort(byId),
  ).toEqual(
    state.reservations
      .map((r) => ({ id: r.id, itemId: r.itemId, quantity: r.quantity, status: r.status, expiresAt: r.expiresAt, createdAt: r.createdAt, updatedAt: r.updatedAt }))
      .sort(byId),
  );
  // Lines are stored for reservations of several items only: a single item's is on its row.
  const lines = await real.db.selectFrom('reservation_lines').select(['reservation_id', 'item_id', 'quantity']).execute();
  const byLine = (a: { reservationId: string; itemId: number }, b: { reservationId: string; itemId: number }) =>
    a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : a.itemId - b.itemId;
  expect(lines.map((row) => ({ reservationId: String(row.reservation_id).toLowerCase(), itemId: Number(row.item_id), quantity: Number(row.quantity) })).sort(byLine)).toEqual(
    state.reservations
      .filter((r) => r.itemId === null)
      .flatMap((r) => r.lines.map((line) => ({ reservationId: r.id, ...line })))
      .sort(byLine),
  );
}

/** A fresh engine with its own fake clock on `t.db` (emptied), and a fresh model. */
export async function freshRun(t: TestDatabase, poison?: number): Promise<{ model: ModelState; real: Real }> {
  await t.reset();
  const clock = { now: new Date(model.START) };
  const engine = new ReservationEngine({ db: t.db, clock: () => clock.now, defaultTtlSeconds: model.DEFAULT_TTL_SECONDS, maxHoldSeconds: model.MAX_HOLD_SECONDS });
  return { model: model.initialState(), real: { db: t.db, engine, clock, delivered: [], poison } };
}

/**
 * Two or three items (and maybe poison events), then sequences of up to `maxCommands` commands, each run on an emptied
 * database, then {@link checkDatabase}.
 */
export function modelProperty(t: TestDatabase, { maxCommands }: { maxCommands: number }) {
  // Some stock to start with, so that carts fit now and then.
  const items = fc.array(fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 10 }) }, { weight: 1, arbitrary: stock }), { minLength: 2, maxLength: 3 });
  const poison = fc.option(fc.nat(4), { freq: 2 });
  return fc.asyncProperty(items, poison, fc.commands(commandArbitraries(), { maxCommands, size: 'max' }), async (initialStock, poisonIndex, commands) => {
    const setup = await freshRun(t, poisonIndex ?? undefined);
    for (const units of initialStock) await new CreateItem(units, null).run(setup.model, setup.real);
    await fc.asyncModelRun(() => setup, commands);
    await checkDatabase(setup.model, setup.real);
  });
}

/** fc.assert parameters that replay a reported failure: MODEL_SEED and MODEL_PATH from its report. */
export function replayParameters(): { seed?: number; path?: string } {
  const { MODEL_SEED: seed, MODEL_PATH: path } = process.env;
  return { ...(seed ? { seed: Number(seed) } : {}), ...(path ? { path } : {}) };
}
