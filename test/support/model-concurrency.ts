/**
 * Concurrent calls under fast-check's scheduler: a few reserves of one item, carts of two items
 * listed in either order, confirms, cancels and extensions of earlier reservations (carts among
 * them), restocks, write-offs and an expiry batch start together, and every statement they send
 * waits for the scheduler's go (a Kysely driver that gates each query), so each run tries another
 * interleaving of the statements. What they answer, and the stock and holds they leave, must be
 * what the model gives for the same calls run one after another in SOME order (linearizability):
 * no oversell, one reservation per key, a same-key reserve replays the other.
 */
import fc from 'fast-check';
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  MysqlIntrospector,
  MysqlQueryCompiler,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryExecutor,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';
import { expect } from 'vitest';
import { type DatabaseKind, expireBatch, ReservationEngine, ReservationError } from '../../src/index.js';
import type { TestDatabase } from './db.js';
import { checkInvariants } from './invariants.js';
import * as model from './model.js';
import type { Line, ModelState, ReserveRequest } from './model.js';

/**
 * A Kysely instance on `inner`'s connections whose every statement (BEGIN and COMMIT included)
 * first awaits `gate`: the scheduler decides which waiting statement goes next.
 */
export function gatedDb(inner: Kysely<any>, kind: DatabaseKind, gate: (sql: string) => Promise<void>): Kysely<any> {
  const executor = inner.getExecutor();
  return new Kysely<any>({
    dialect: {
      createAdapter: () => executor.adapter,
      createDriver: () => new GatedDriver(executor, kind, gate),
      createQueryCompiler: () => (kind === 'mysql' ? new MysqlQueryCompiler() : new PostgresQueryCompiler()),
      createIntrospector: (db) => (kind === 'mysql' ? new MysqlIntrospector(db) : new PostgresIntrospector(db)),
    },
  });
}

class GatedConnection implements DatabaseConnection {
  constructor(
    readonly inner: DatabaseConnection,
    readonly gate: (sql: string) => Promise<void>,
    readonly release: () => void,
  ) {}
  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    await this.gate(query.sql);
    return this.inner.executeQuery<R>(query);
  }
  streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(query, chunkSize);
  }
}

class GatedDriver implements Driver {
  constructor(
    readonly executor: QueryExecutor,
    readonly kind: DatabaseKind,
    readonly gate: (sql: string) => Promise<void>,
  ) {}
  async init(): Promise<void> {}
  /** Borrows one of the inner pool's connections until released. */
  acquireConnection(): Promise<DatabaseConnection> {
    return new Promise((resolve, reject) => {
      let release!: () => void;
      const released = new Promise<void>((done) => (release = done));
      this.executor
        .provideConnection(async (connection) => {
          resolve(new GatedConnection(connection, this.gate, release));
          await released;
        })
        .catch(reject);
    });
  }
  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    const level = settings.isolationLevel;
    if (this.kind === 'mysql') {
      if (level) await connection.executeQuery(CompiledQuery.raw(`set transaction isolation level ${level}`));
      await connection.executeQuery(CompiledQuery.raw('begin'));
    } else {
      await connection.executeQuery(CompiledQuery.raw(`start transaction${level ? ` isolation level ${level}` : ''}`));
    }
  }
  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
  }
  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'));
  }
  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    (connection as GatedConnection).release();
  }
  async destroy(): Promise<void> {}
}

/** The scenario's two items: 0 and 1 (item A, item B). */
type ItemIndex = 0 | 1;

type Op =
  /** `asLine`: sent as `lines` of one line (the same request as `itemId` and `quantity`). */
  | { readonly kind: 'reserve'; readonly key: string; readonly item: ItemIndex; readonly quantity: number; readonly asLine?: boolean }
  | { readonly kind: 'cart'; readonly key: string; readonly order: 'AB' | 'BA'; readonly quantities: readonly [number, number] }
  | { readonly kind: 'confirm' | 'cancel'; readonly held: number }
  | { readonly kind: 'extend'; readonly held: number; readonly ttlSeconds: number }
  | { readonly kind: 'restock' | 'writeOff'; readonly item: ItemIndex; readonly quantity: number }
  | { readonly kind: 'expire' };

const itemIndex = fc.constantFrom<ItemIndex>(0, 1);
/** Keys shared by single-item reserves and carts: the same key for both is a conflict. `again`: see {@link resolveAgain}. */
const opArbitrary: fc.Arbitrary<Op | { readonly kind: 'again'; readonly of: number }> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('again' as const), of: fc.nat(3) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('reserve' as const), key: fc.constantFrom('a', 'b'), item: itemIndex, quantity: fc.integer({ min: 1, max: 3 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('cart' as const),
      key: fc.constantFrom('a', 'b', 'c'),
      order: fc.constantFrom('AB' as const, 'BA' as const),
      quantities: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('confirm' as const, 'cancel' as const), held: fc.nat(2) }) },
  // At START + 2 s: 30 s never moves a 60 s hold, 90 s does, 120 s passes createdAt + MAX_HOLD_SECONDS.
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), held: fc.nat(2), ttlSeconds: fc.constantFrom(30, 90, model.MAX_HOLD_SECONDS) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('restock' as const, 'writeOff' as const), item: itemIndex, quantity: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'expire' as const }) },
);

/**
 * Reservations made before the concurrent calls, of item A, item B or both (a cart): `short` ones
 * are past `expiresAt` when they start. Each item's stock is what they hold plus its `spare`.
 */
const scenarioArbitrary = fc.record({
  held: fc.array(fc.record({ items: fc.constantFrom('A' as const, 'B' as const, 'AB' as const), quantity: fc.integer({ min: 1, max: 2 }), short: fc.boolean() }), { maxLength: 3 }),
  spare: fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 4 })),
  ops: fc.array(opArbitrary, { minLength: 2, maxLength: 4 }).map((ops) => ops.map((op) => (op.kind === 'again' ? resolveAgain(ops, op.of) : op))),
});

/**
 * A repeat of the scenario's `of`-th reserve (modulo their number) in another form, so that two
 * calls race with one key and one request: a cart's lines in the other order, a single item as
 * one line. Without a reserve to repeat, a cart of key `a`.
 */
function resolveAgain(ops: readonly (Op | { readonly kind: 'again' })[], of: number): Op {
  const reserves = ops.filter((op): op is Extract<Op, { kind: 'reserve' | 'cart' }> => op.kind === 'reserve' || op.kind === 'cart');
  const original = reserves[of % Math.max(reserves.length, 1)];
  if (original === undefined) return { kind: 'cart', key: 'a', order: 'AB', quantities: [1, 1] };
  return original.kind === 'cart' ? { ...original, order: original.order === 'AB' ? 'BA' : 'AB' } : { ...original, asLine: !original.asLine };
}

/**
 * One call's answer, as compared with the model's: no ids, since the model cannot know them, and
 * for errors the code only (a cart's short lines are read after its transaction rolled back, and
 * may be another moment's).
 */
function signature(op: Op, answer: { value?: unknown; error?: unknown }): string {
  if (answer.error !== undefined) {
    if (answer.error instanceof ReservationError) return answer.error.code;
    throw answer.error;
  }
  const value = answer.value as any;
  switch (op.kind) {
    case 'reserve':
    case 'cart':
      return `${value.replayed ? 'replayed' : 'reserved'} ${value.reservation.quantity} ${value.reservation.status}`;
    case 'confirm':
    case 'cancel':
      return `ok ${value.status}`;
    case 'extend':
      return `ok until ${value.expiresAt.getTime() - model.START}`;
    case 'restock':
    case 'writeOff':
      // Read in the call's transaction right after its own UPDATE, with the item's row locked.
      return `ok ${value.availableQuantity}`;
    case 'expire':
      return `expired ${value.expired} failed ${value.failed}`;
  }
}

interface Scenario {
  readonly ops: readonly Op[];
  readonly itemIds: readonly [number, number];
  readonly heldIds: readonly string[];
}

const targetOf = (scenario: Scenario, op: { held: number }) => scenario.heldIds[op.held % scenario.heldIds.length] ?? model.UNKNOWN_RESERVATION_ID;

/** A cart's lines in the order the op sends them. */
function cartLines(scenario: Scenario, op: Extract<Op, { kind: 'cart' }>): Line[] {
  const [a, b] = scenario.itemIds;
  const lines = [
    { itemId: a, quantity: op.quantities[0] },
    { itemId: b, quantity: op.quantities[1] },
  ];
  return op.order === 'AB' ? lines : lines.reverse();
}

/** Whether call `op` holds the reservation `id`'s row lock at some point (an expiry batch skips it then). */
const locks = (scenario: Scenario, op: Op, id: string) =>
  op.kind === 'expire' || ((op.kind === 'confirm' || op.kind === 'cancel' || op.kind === 'extend') && targetOf(scenario, op) === id);

/**
 * What the model may answer to call `i` in `state`, as {@link signature} writes it, each with the
 * state after it (a copy). One answer, except for an expiry batch: it skips the due reservations
 * that a concurrent call holds locked (SKIP LOCKED), so a due reservation may stay PENDING when
 * another call of the scenario confirms, cancels or extends it, or another batch runs beside it.
 */
function modelAnswers(state: ModelState, scenario: Scenario, i: number): Array<{ answer: string; state: ModelState }> {
  const op = scenario.ops[i]!;
  const next = structuredClone(state);
  const [a, b] = scenario.itemIds;
  const itemOf = (index: ItemIndex) => (index === 0 ? a : b);
  switch (op.kind) {
    case 'reserve':
    case 'cart': {
      const request: ReserveRequest =
        op.kind === 'cart'
          ? { lines: cartLines(scenario, op), key: op.key }
          : op.asLine
            ? { lines: [{ itemId: itemOf(op.item), quantity: op.quantity }], key: op.key }
            : { itemId: itemOf(op.item), quantity: op.quantity, key: op.key };
      const answer = model.reserve(next, request, () => `new-${i}`);
      return [{ answer: answer.kind === 'error' ? answer.code : `${answer.kind} ${answer.reservation.quantity} ${answer.reservation.status}`, state: next }];
    }
    case 'confirm':
    case 'cancel': {
      const answer = model[op.kind](next, targetOf(scenario, op));
      return [{ answer: answer.kind === 'error' ? answer.code : `ok ${answer.reservation.status}`, state: next }];
    }
    case 'extend': {
      const answer = model.extend(next, targetOf(scenario, op), op.ttlSeconds);
      return [{ answer: answer.kind === 'error' ? answer.code : `ok until ${answer.reservation.expiresAt - model.START}`, state: next }];
    }
    case 'restock':
    case 'writeOff': {
      const request = { itemId: itemOf(op.item), quantity: op.quantity, reason: `concurrent ${i}` };
      const answer = op.kind === 'restock' ? model.restock(next, request) : model.writeOff(next, request);
      return [{ answer: answer.kind === 'error' ? answer.code : `ok ${answer.item.available}`, state: next }];
    }
    case 'expire': {
      const { sure: due } = model.dueForExpiry(state, 100);
      const skippable = due.filter((r) => scenario.ops.some((other, j) => j !== i && locks(scenario, other, r.id)));
      const answers: Array<{ answer: string; state: ModelState }> = [];
      for (let mask = 0; mask < 2 ** skippable.length; mask++) {
        const skipped = new Set(skippable.filter((_, bit) => (mask >> bit) & 1).map((r) => r.id));
        const copy = structuredClone(state);
        const expired = due.filter((r) => !skipped.has(r.id)).map((r) => model.reservationById(copy, r.id)!);
        model.expire(copy, expired);
        answers.push({ answer: `expired ${expired.length} failed 0`, state: copy });
      }
      return answers;
    }
  }
}

interface Outcome {
  readonly answers: readonly string[];
  /** Per item: available and held units. */
  readonly stock: readonly (readonly [number, number])[];
  /** Per reservation made before: its status and expiresAt. */
  readonly held: readonly string[];
}

/**
 * A state the model reaches by running the calls one at a time in some order, answering each as
 * the engine did and ending as the engine's tables did; undefined when there is none.
 */
function explain(state: ModelState, scenario: Scenario, actual: Outcome, done: readonly number[] = []): ModelState | undefined {
  if (done.length === scenario.ops.length) {
    const stock = scenario.itemIds.map((id) => [model.itemById(state, id)!.available, model.itemById(state, id)!.held]);
    const held = scenario.heldIds.map((id) => heldSummary(model.reservationById(state, id)!.status, model.reservationById(state, id)!.expiresAt));
    return JSON.stringify(stock) === JSON.stringify(actual.stock) && JSON.stringify(held) === JSON.stringify(actual.held) ? state : undefined;
  }
  for (let i = 0; i < scenario.ops.length; i++) {
    if (done.includes(i)) continue;
    for (const next of modelAnswers(state, scenario, i)) {
      if (next.answer !== actual.answers[i]) continue;
      const found = explain(next.state, scenario, actual, [...done, i]);
      if (found) return found;
    }
  }
  return undefined;
}

const heldSummary = (status: string | undefined, expiresAt: number | undefined) => `${status} until ${expiresAt === undefined ? '?' : expiresAt - model.START}`;

/** Runs of {@link scenarioArbitrary} on `t`'s database (emptied first), under fast-check's scheduler. */
export function concurrencyProperty(t: TestDatabase) {
  const kind: DatabaseKind = t.name === 'mysql' ? 'mysql' : 'postgres';
  return fc.asyncProperty(fc.scheduler(), scenarioArbitrary, async (scheduler, { held, spare, ops }) => {
    await t.reset();
    const clock = { now: new Date(model.START) };
    const options = { clock: () => clock.now, defaultTtlSeconds: model.DEFAULT_TTL_SECONDS, maxHoldSeconds: model.MAX_HOLD_SECONDS, dialect: kind };
    const plain = new ReservationEngine({ db: t.db, ...options });

    // Before: two items, some reservations of one or both, made one at a time; the model follows.
    const state = model.initialState();
    const itemIds: [number, number] = [0, 0];
    for (const index of [0, 1] as const) {
      const sku = `concurrent-${'AB'[index]}`;
      const stock = held.reduce((sum, h) => sum + (h.items.includes('AB'[index]!) ? h.quantity : 0), 0) + spare[index];
      const item = await plain.createItem({ sku, name: 'concurrent', availableQuantity: stock });
      model.addItem(state, { id: item.id, sku, stock });
      itemIds[index] = item.id;
    }
    const heldIds: string[] = [];
    for (const [i, h] of held.entries()) {
      const lines = [...h.items].map((letter) => ({ itemId: itemIds['AB'.indexOf(letter)]!, quantity: h.quantity }));
      const request = { lines, key: `held-${i}`, ttlSeconds: h.short ? 1 : 60 };
      const { reservation } = await plain.reserve({ lines, idempotencyKey: request.key, ttlSeconds: request.ttlSeconds });
      model.reserve(state, request, () => reservation.id);
      heldIds.push(reservation.id);
    }
    clock.now = new Date(model.START + 2000);
    state.now = clock.now.getTime();
    const scenario: Scenario = { ops, itemIds, heldIds };

    // The calls, all at once; each statement waits for the scheduler.
    // Once every call has answered, statements still to come (a ROLLBACK sent after the caller
    // got its error) go at once.
    let gating = true;
    const db = gatedDb(t.db, kind, (sql) => (gating ? scheduler.schedule(Promise.resolve(), sql.slice(0, 60)) : Promise.resolve()));
    const engine = new ReservationEngine({ db, ...options });
    const perform = (op: Op, i: number): Promise<unknown> => {
      switch (op.kind) {
        case 'reserve':
          return engine.reserve(
            op.asLine ? { lines: [{ itemId: itemIds[op.item], quantity: op.quantity }], idempotencyKey: op.key } : { itemId: itemIds[op.item], quantity: op.quantity, idempotencyKey: op.key },
          );
        case 'cart':
          return engine.reserve({ lines: cartLines(scenario, op), idempotencyKey: op.key });
        case 'confirm':
        case 'cancel':
          return engine[op.kind](targetOf(scenario, op));
        case 'extend':
          return engine.extend(targetOf(scenario, op), { ttlSeconds: op.ttlSeconds });
        case 'restock':
          return engine.restock({ itemId: itemIds[op.item], quantity: op.quantity });
        case 'writeOff':
          return engine.writeOff({ itemId: itemIds[op.item], quantity: op.quantity, reason: `concurrent ${i}` });
        case 'expire':
          return expireBatch({ db, dialect: kind, now: clock.now, limit: 100 });
      }
    };
    const answers = await scheduler.waitFor(
      Promise.all(
        ops.map((op, i) =>
          scheduler.schedule(Promise.resolve(), `start ${i}: ${op.kind}`).then(() =>
            perform(op, i).then(
              (value): { value?: unknown; error?: unknown } => ({ value }),
              (error: unknown): { value?: unknown; error?: unknown } => ({ error }),
            ),
          ),
        ),
      ),
    );
    gating = false;
    await scheduler.waitIdle();
    const observed = ops.map((op, i) => signature(op, answers[i]!));

    // One reservation per key: every successful reserve with a key got the same one.
    for (const key of ['a', 'b', 'c']) {
      const ids = new Set(ops.flatMap((op, i) => ((op.kind === 'reserve' || op.kind === 'cart') && op.key === key && answers[i]!.value ? [(answers[i]!.value as any).reservation.id] : [])));
      expect(ids.size, `reservations for key ${key}`).toBeLessThanOrEqual(1);
    }
    const items = await t.db.selectFrom('items').select(['id', 'available_quantity', 'held_quantity']).where('id', 'in', itemIds).execute();
    const rows = await t.db.selectFrom('reservations').select(['id', 'status', 'expires_at']).where('id', 'in', heldIds.length > 0 ? heldIds : ['00000000-0000-7000-8000-000000000000']).execute();
    const actual: Outcome = {
      answers: observed,
      stock: itemIds.map((id) => {
        const row = items.find((r) => Number(r.id) === id)!;
        return [Number(row.available_quantity), Number(row.held_quantity)] as const;
      }),
      held: heldIds.map((id) => {
        const row = rows.find((r) => String(r.id).toLowerCase() === id);
        return heldSummary(row?.status, row && new Date(row.expires_at).getTime());
      }),
    };

    // Some order of the same calls, one at a time, gives exactly this.
    const explained = explain(state, scenario, actual);
    if (!explained) {
      throw new Error(`no order of the calls explains what the engine did:\n  calls ${JSON.stringify(ops)}\n  engine ${JSON.stringify(actual)}`);
    }
    const report = await checkInvariants(t.db, {
      received: new Map(explained.items.map((item) => [item.id, item.received])),
      writtenOff: new Map(explained.items.map((item) => [item.id, item.writtenOff])),
    });
    expect(report.violations).toEqual([]);
  });
}
