/**
 * Concurrent calls under fast-check's scheduler: a few reserves, confirms, cancels, restocks and
 * an expiry batch on one item start together, and every statement they send waits for the
 * scheduler's go (a Kysely driver that gates each query), so each run tries another interleaving
 * of the statements. What they answer, and the stock they leave, must be what the model gives for
 * the same calls run one after another in SOME order (linearizability): no oversell, one
 * reservation per key, a same-key reserve replays the other.
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
import type { ModelState } from './model.js';

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

type Op =
  | { readonly kind: 'reserve'; readonly key: string; readonly quantity: number }
  | { readonly kind: 'confirm' | 'cancel'; readonly held: number }
  | { readonly kind: 'restock'; readonly quantity: number }
  | { readonly kind: 'expire' };

const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('reserve' as const), key: fc.constantFrom('a', 'b'), quantity: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('confirm' as const, 'cancel' as const), held: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restock' as const), quantity: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'expire' as const }) },
);

/** Reservations made before the concurrent calls: `short` ones are past `expiresAt` when they start. */
const scenarioArbitrary = fc.record({
  held: fc.array(fc.record({ quantity: fc.integer({ min: 1, max: 2 }), short: fc.boolean() }), { maxLength: 3 }),
  spare: fc.integer({ min: 0, max: 3 }),
  ops: fc.array(opArbitrary, { minLength: 2, maxLength: 4 }),
});

/** One call's answer, as compared with the model's: no ids, since the model cannot know them. */
function signature(op: Op, answer: { value?: unknown; error?: unknown }): string {
  if (answer.error !== undefined) {
    if (answer.error instanceof ReservationError) return answer.error.code;
    throw answer.error;
  }
  const value = answer.value as any;
  switch (op.kind) {
    case 'reserve':
      return `${value.replayed ? 'replayed' : 'reserved'} ${value.reservation.quantity} ${value.reservation.status}`;
    case 'confirm':
    case 'cancel':
      return `ok ${value.status}`;
    case 'restock':
      return 'ok';
    case 'expire':
      return `expired ${value.expired} failed ${value.failed}`;
  }
}

interface Scenario {
  readonly ops: readonly Op[];
  readonly itemId: number;
  readonly heldIds: readonly string[];
}

const targetOf = (scenario: Scenario, op: { held: number }) => scenario.heldIds[op.held % scenario.heldIds.length] ?? model.UNKNOWN_RESERVATION_ID;

/**
 * What the model may answer to call `i` in `state`, as {@link signature} writes it, each with the
 * state after it (a copy). One answer, except for an expiry batch: it skips the due reservations
 * that a concurrent call holds locked (SKIP LOCKED), so a due reservation may stay PENDING when
 * another call of the scenario confirms or cancels it, or another batch runs beside it.
 */
function modelAnswers(state: ModelState, scenario: Scenario, i: number): Array<{ answer: string; state: ModelState }> {
  const op = scenario.ops[i]!;
  const next = structuredClone(state);
  switch (op.kind) {
    case 'reserve': {
      const answer = model.reserve(next, { itemId: scenario.itemId, quantity: op.quantity, key: op.key }, () => `new-${i}`);
      return [{ answer: answer.kind === 'error' ? answer.code : `${answer.kind} ${answer.reservation.quantity} ${answer.reservation.status}`, state: next }];
    }
    case 'confirm':
    case 'cancel': {
      const answer = model[op.kind](next, targetOf(scenario, op));
      return [{ answer: answer.kind === 'error' ? answer.code : `ok ${answer.reservation.status}`, state: next }];
    }
    case 'restock': {
      const answer = model.restock(next, { itemId: scenario.itemId, quantity: op.quantity });
      return [{ answer: answer.kind === 'error' ? answer.code : 'ok', state: next }];
    }
    case 'expire': {
      const { sure: due } = model.dueForExpiry(state, 100);
      const lockedElsewhere = (id: string) =>
        scenario.ops.some((other, j) => j !== i && (other.kind === 'expire' || ((other.kind === 'confirm' || other.kind === 'cancel') && targetOf(scenario, other) === id)));
      const skippable = due.filter((r) => lockedElsewhere(r.id));
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
  readonly available: number;
  readonly held: number;
  readonly statuses: readonly (string | undefined)[];
}

/**
 * A state the model reaches by running the calls one at a time in some order, answering each as
 * the engine did and ending as the engine's tables did; undefined when there is none.
 */
function explain(state: ModelState, scenario: Scenario, actual: Outcome, done: readonly number[] = []): ModelState | undefined {
  if (done.length === scenario.ops.length) {
    const item = state.items[0]!;
    const statuses = scenario.heldIds.map((id) => model.reservationById(state, id)!.status);
    return item.available === actual.available && item.held === actual.held && JSON.stringify(statuses) === JSON.stringify(actual.statuses) ? state : undefined;
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

/** Runs of {@link scenarioArbitrary} on `t`'s database (emptied first), under fast-check's scheduler. */
export function concurrencyProperty(t: TestDatabase) {
  const kind: DatabaseKind = t.name === 'mysql' ? 'mysql' : 'postgres';
  return fc.asyncProperty(fc.scheduler(), scenarioArbitrary, async (scheduler, { held, spare, ops }) => {
    await t.reset();
    const clock = { now: new Date(model.START) };
    const options = { clock: () => clock.now, defaultTtlSeconds: model.DEFAULT_TTL_SECONDS, dialect: kind };
    const plain = new ReservationEngine({ db: t.db, ...options });

    // Before: one item, some reservations on it, made one at a time; the model follows.
    const state = model.initialState();
    const stock = held.reduce((sum, h) => sum + h.quantity, 0) + spare;
    const item = await plain.createItem({ sku: 'concurrent', name: 'concurrent', availableQuantity: stock });
    model.addItem(state, { id: item.id, sku: 'concurrent', stock });
    const heldIds: string[] = [];
    for (const [i, h] of held.entries()) {
      const { reservation } = await plain.reserve({ itemId: item.id, quantity: h.quantity, idempotencyKey: `held-${i}`, ttlSeconds: h.short ? 1 : 60 });
      model.reserve(state, { itemId: item.id, quantity: h.quantity, key: `held-${i}`, ttlSeconds: h.short ? 1 : 60 }, () => reservation.id);
      heldIds.push(reservation.id);
    }
    clock.now = new Date(model.START + 2000);
    state.now = clock.now.getTime();

    // The calls, all at once; each statement waits for the scheduler.
    // Once every call has answered, statements still to come (a ROLLBACK sent after the caller
    // got its error) go at once.
    let gating = true;
    const db = gatedDb(t.db, kind, (sql) => (gating ? scheduler.schedule(Promise.resolve(), sql.slice(0, 60)) : Promise.resolve()));
    const engine = new ReservationEngine({ db, ...options });
    const perform = (op: Op): Promise<unknown> => {
      switch (op.kind) {
        case 'reserve':
          return engine.reserve({ itemId: item.id, quantity: op.quantity, idempotencyKey: op.key });
        case 'confirm':
        case 'cancel':
          return engine[op.kind](heldIds[op.held % heldIds.length] ?? model.UNKNOWN_RESERVATION_ID);
        case 'restock':
          return engine.restock({ itemId: item.id, quantity: op.quantity });
        case 'expire':
          return expireBatch({ db, dialect: kind, now: clock.now, limit: 100 });
      }
    };
    const answers = await scheduler.waitFor(
      Promise.all(
        ops.map((op, i) =>
          scheduler.schedule(Promise.resolve(), `start ${i}: ${op.kind}`).then(() =>
            perform(op).then(
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
    for (const key of ['a', 'b']) {
      const ids = new Set(ops.flatMap((op, i) => (op.kind === 'reserve' && op.key === key && answers[i]!.value ? [(answers[i]!.value as any).reservation.id] : [])));
      expect(ids.size, `reservations for key ${key}`).toBeLessThanOrEqual(1);
    }
    const row = await t.db.selectFrom('items').select(['available_quantity', 'held_quantity']).where('id', '=', item.id).executeTakeFirstOrThrow();
    const statuses = await t.db.selectFrom('reservations').select(['id', 'status']).where('id', 'in', heldIds.length > 0 ? heldIds : ['00000000-0000-7000-8000-000000000000']).execute();
    const actual: Outcome = {
      answers: observed,
      available: Number(row.available_quantity),
      held: Number(row.held_quantity),
      statuses: heldIds.map((id) => statuses.find((s) => String(s.id).toLowerCase() === id)?.status),
    };

    // Some order of the same calls, one at a time, gives exactly this.
    const explained = explain(state, { ops, itemId: item.id, heldIds }, actual);
    if (!explained) {
      throw new Error(`no order of the calls explains what the engine did:\n  calls ${JSON.stringify(ops)}\n  engine ${JSON.stringify(actual)}`);
    }
    const report = await checkInvariants(t.db, { received: new Map([[item.id, explained.items[0]!.received]]) });
    expect(report.violations).toEqual([]);
  });
}
