/**
 * The fault scenarios' load and bookkeeping. Clients reserve (single items and carts, new keys
 * and replays), confirm, cancel, extend, restock and write off (keyed) at random; a call that ends in OUTCOME_UNKNOWN (or a lock conflict)
 * is repeated as the library says (the same key, or the same confirm/cancel) until it gets a
 * definite answer. The {@link Ledger} keeps what the clients were told, so that afterwards the
 * database can be held to it, and counts every error that was not one of the library's own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import { checkInvariants } from '../../support/invariants.js';
import { expireBatch, type OutboxEvent, ReservationEngine, ReservationError, runOutboxBatch } from '../../../src/index.js';

/** Codes after which the caller repeats the call: the first attempt may or may not have happened. */
const REPEAT_CODES = new Set(['OUTCOME_UNKNOWN', 'TRANSACTION_CONFLICT']);

/** How an error that is not the library's looks in the report: its class, code, errno and message. */
export function describeError(error: unknown): string {
  const e = error as { constructor?: { name?: string }; code?: unknown; errno?: unknown; message?: unknown };
  const parts = [e?.constructor?.name ?? typeof error];
  if (e?.code !== undefined) parts.push(`code=${String(e.code)}`);
  if (e?.errno !== undefined) parts.push(`errno=${String(e.errno)}`);
  parts.push(String(e?.message ?? error).split('\n')[0]!.slice(0, 200));
  return parts.join(' ');
}

type ReserveRequest = { readonly ttlSeconds: number } & (
  | { readonly itemId: number; readonly quantity: number }
  | { readonly lines: readonly { readonly itemId: number; readonly quantity: number }[] }
);

interface Acknowledged {
  readonly key: string;
  confirmed: boolean;
  cancelled: boolean;
}

type Answer<T> = { readonly value: T } | { readonly error: ReservationError } | { readonly unresolved: true };

export class Ledger {
  /** Engine calls, repeats included. */
  operations = 0;
  /** Calls that ended in OUTCOME_UNKNOWN (or a raw connection error) and were repeated. */
  uncertain = 0;
  /** Longest wait for one definite answer, in ms: the engine's own retries and the client's repeats included. */
  slowestAnswerMs = 0;
  /** Units each item received: initial stock plus acknowledged restocks. */
  readonly received = new Map<number, number>();
  /** Units each item had written off (acknowledged write-offs). */
  readonly writtenOff = new Map<number, number>();
  /** The reasons (unique per call) of acknowledged write-offs. */
  readonly writeOffReasons = new Set<string>();
  readonly reservations = new Map<string, Acknowledged>();
  readonly requests = new Map<string, { request: ReserveRequest; reservationId: string }>();
  /** Event ids handlers saw, with repeats. */
  readonly delivered: string[] = [];
  /** Reservations whose `reservation.created` event a handler saw. */
  readonly deliveredCreations = new Set<string>();
  readonly violations: string[] = [];
  readonly #rawErrors = new Map<string, number>();

  /** Counts an error that is not a `ReservationError`: a failure of the engine, whatever it was. */
  raw(operation: string, error: unknown): void {
    const key = `${operation}: ${describeError(error)}`;
    this.#rawErrors.set(key, (this.#rawErrors.get(key) ?? 0) + 1);
  }

  get rawErrorCount(): number {
    let n = 0;
    for (const count of this.#rawErrors.values()) n += count;
    return n;
  }

  /** The distinct raw errors, with how often each came. */
  rawErrors(): string[] {
    return [...this.#rawErrors].map(([text, count]) => `${count}× ${text}`);
  }

  /** The handler the outbox loops use: records what it was given. */
  readonly handler = (event: OutboxEvent): void => {
    this.delivered.push(event.id);
    if (event.type === 'reservation.created') this.deliveredCreations.add(event.payload.reservationId.toLowerCase());
  };

  /**
   * Runs `call` until it gives a definite answer: a value, or a `ReservationError` that is not
   * OUTCOME_UNKNOWN / TRANSACTION_CONFLICT. Raw errors are counted, then treated as uncertain.
   */
  async resolve<T>(operation: string, call: () => Promise<T>, deadlineMs = 120_000): Promise<Answer<T>> {
    const started = performance.now();
    let uncertain = false;
    for (let attempt = 0; ; attempt++) {
      this.operations++;
      try {
        const value = await call();
        this.#answered(started);
        return { value };
      } catch (error) {
        if (error instanceof ReservationError && !REPEAT_CODES.has(error.code)) {
          this.#answered(started);
          return { error };
        }
        if (!(error instanceof ReservationError)) this.raw(operation, error);
        if (!uncertain) this.uncertain++;
        uncertain = true;
        if (performance.now() - started > deadlineMs) {
          this.violations.push(`${operation}: no definite answer within ${deadlineMs / 1000} s; last error: ${describeError(error)}`);
          return { unresolved: true };
        }
        await sleep(Math.min(1000, 20 * 2 ** Math.min(attempt, 6)));
      }
    }
  }

  #answered(started: number): void {
    this.slowestAnswerMs = Math.max(this.slowestAnswerMs, performance.now() - started);
  }

  /** Records a reserve's answer for `key`: a key must always come back with the same reservation. */
  acknowledgeReserve(key: string, request: ReserveRequest, reservationId: string): void {
    const earlier = this.requests.get(key);
    if (earlier && earlier.reservationId !== reservationId) this.violations.push(`key ${key}: reservation ${earlier.reservationId}, then ${reservationId}`);
    if (!earlier) this.requests.set(key, { request, reservationId });
    if (!this.reservations.has(reservationId)) this.reservations.set(reservationId, { key, confirmed: false, cancelled: false });
  }
}

export interface WorkloadOptions {
  readonly engine: ReservationEngine;
  readonly ledger: Ledger;
  readonly itemIds: readonly number[];
  /** Client operations in all, shared by the clients. @defaultValue no limit */
  readonly operations?: number;
  /** How long the clients run, in ms. @defaultValue no limit */
  readonly durationMs?: number;
  readonly clients: number;
  /** Longest wait for a definite answer to one call. @defaultValue 120000 */
  readonly deadlineMs?: number;
  /** Share of reservations with a 1-second hold, for the expiry loop. @defaultValue 0.3 */
  readonly shortTtlShare?: number;
  /** Called after each operation (a scenario's pacing or fault trigger). */
  readonly afterEach?: (done: number) => Promise<void> | void;
}

let keyCounter = 0;
export const newKey = (prefix: string): string => `${prefix}-${process.pid}-${Date.now().toString(36)}-${(keyCounter++).toString(36)}`;
const pick = <T>(values: readonly T[]): T | undefined => values[Math.floor(Math.random() * values.length)];
const between = (low: number, high: number) => low + Math.floor(Math.random() * (high - low + 1));

/** Runs the clients until `operations` operations are done or `durationMs` has passed. */
export async function runClients(options: WorkloadOptions): Promise<void> {
  const { engine, ledger, itemIds } = options;
  const deadline = options.deadlineMs ?? 120_000;
  const shortTtl = options.shortTtlShare ?? 0.3;
  let done = 0;

  const reserve = async (key: string, request: ReserveRequest, replay: boolean) => {
    const answer = await ledger.resolve('reserve', () => engine.reserve({ ...request, idempotencyKey: key }), deadline);
    if ('value' in answer) {
      ledger.acknowledgeReserve(key, request, answer.value.reservation.id);
      if (replay && !answer.value.replayed) ledger.violations.push(`key ${key}: a replay was not reported as one`);
    } else if ('error' in answer && answer.error.code !== 'INSUFFICIENT_STOCK') {
      ledger.violations.push(`reserve ${key}: unexpected ${answer.error.code}: ${answer.error.message}`);
    }
  };

  const transition = async (action: 'confirm' | 'cancel') => {
    const open = [...ledger.reservations].filter(([, r]) => !r.confirmed && !r.cancelled);
    const chosen = pick(open);
    if (!chosen) return;
    const [id, acknowledged] = chosen;
    const answer = await ledger.resolve(action, () => engine[action](id), deadline);
    if ('value' in answer) {
      if (action === 'confirm') acknowledged.confirmed = true;
      else acknowledged.cancelled = true;
      if (acknowledged.confirmed && acknowledged.cancelled) ledger.violations.push(`reservation ${id}: both confirm and cancel acknowledged`);
      if (answer.value.status !== (action === 'confirm' ? 'CONFIRMED' : 'CANCELLED')) ledger.violations.push(`${action} ${id}: answered with status ${answer.value.status}`);
    } else if ('error' in answer && !['INVALID_STATE', 'RESERVATION_EXPIRED'].includes(answer.error.code)) {
      ledger.violations.push(`${action} ${id}: unexpected ${answer.error.code}: ${answer.error.message}`);
    }
  };

  const extend = async () => {
    const open = [...ledger.reservations].filter(([, r]) => !r.confirmed && !r.cancelled);
    const chosen = pick(open);
    if (!chosen) return;
    const [id] = chosen;
    const answer = await ledger.resolve('extend', () => engine.extend(id, { ttlSeconds: 600 }), deadline);
    if ('value' in answer && answer.value.status !== 'PENDING') ledger.violations.push(`extend ${id}: answered with status ${answer.value.status}`);
    else if ('error' in answer && !['INVALID_STATE', 'RESERVATION_EXPIRED'].includes(answer.error.code)) {
      ledger.violations.push(`extend ${id}: unexpected ${answer.error.code}: ${answer.error.message}`);
    }
  };

  const writeOff = async () => {
    const itemId = pick(itemIds)!;
    const quantity = between(1, 2);
    const key = newKey('write-off');
    // The reason is the key: the invariants find each acknowledged write-off's one event by it.
    const answer = await ledger.resolve('writeOff', () => engine.writeOff({ itemId, quantity, reason: key, idempotencyKey: key }), deadline);
    if ('value' in answer) {
      ledger.writtenOff.set(itemId, (ledger.writtenOff.get(itemId) ?? 0) + quantity);
      ledger.writeOffReasons.add(key);
    } else if ('error' in answer && answer.error.code !== 'INSUFFICIENT_STOCK') ledger.violations.push(`writeOff ${key}: unexpected ${answer.error.code}: ${answer.error.message}`);
  };

  /** 2–3 distinct items, listed in a random order. */
  const cartLines = () => {
    const chosen = [...new Set(Array.from({ length: between(2, 3) }, () => pick(itemIds)!))];
    return chosen.sort(() => Math.random() - 0.5).map((itemId) => ({ itemId, quantity: between(1, 2) }));
  };
  const shuffled = (request: ReserveRequest): ReserveRequest => ('lines' in request ? { ...request, lines: [...request.lines].reverse() } : request);

  const restock = async () => {
    const itemId = pick(itemIds)!;
    const quantity = between(1, 5);
    const key = newKey('restock');
    const answer = await ledger.resolve('restock', () => engine.restock({ itemId, quantity, idempotencyKey: key }), deadline);
    if ('value' in answer) ledger.received.set(itemId, (ledger.received.get(itemId) ?? 0) + quantity);
    else if ('error' in answer) ledger.violations.push(`restock ${key}: unexpected ${answer.error.code}: ${answer.error.message}`);
  };

  const step = async () => {
    const roll = Math.random();
    const ttlSeconds = Math.random() < shortTtl ? 1 : 600;
    if (roll < 0.35) await reserve(newKey('reserve'), { itemId: pick(itemIds)!, quantity: between(1, 3), ttlSeconds }, false);
    else if (roll < 0.45) await reserve(newKey('cart'), { lines: cartLines(), ttlSeconds }, false);
    else if (roll < 0.55) {
      // A replay; a cart's lines come in another order, which is still the same request.
      const known = pick([...ledger.requests]);
      if (known) await reserve(known[0], shuffled(known[1].request), true);
    } else if (roll < 0.7) await transition('confirm');
    else if (roll < 0.82) await transition('cancel');
    else if (roll < 0.87) await extend();
    else if (roll < 0.95) await restock();
    else await writeOff();
  };

  const endAt = performance.now() + (options.durationMs ?? Number.POSITIVE_INFINITY);
  const limit = options.operations ?? Number.POSITIVE_INFINITY;
  if (!Number.isFinite(endAt) && !Number.isFinite(limit)) throw new Error('runClients needs operations or durationMs');
  await Promise.all(
    Array.from({ length: options.clients }, async () => {
      while (done < limit && performance.now() < endAt) {
        done++;
        await step();
        await options.afterEach?.(done);
      }
    }),
  );
}

/** Creates `count` items without faults; their initial stock goes into the ledger. */
export async function createItems(engine: ReservationEngine, ledger: Ledger, count: number, stock = 300): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < count; i++) {
    const item = await engine.createItem({ sku: newKey('sku'), name: 'fault item', availableQuantity: stock });
    ledger.received.set(item.id, stock);
    ids.push(item.id);
  }
  return ids;
}

/** Options of the scenarios' outbox deliveries: quick retries, no dead letters from faults alone. */
export const OUTBOX_OPTIONS = Object.freeze({ limit: 20, maxAttempts: 1000, leaseMs: 4_000, baseDelayMs: 10, maxDelayMs: 200 });

/**
 * Expiry and outbox delivery in loops, as a host's timers run them, until `stop()`; a failed batch
 * is logged in the ledger (raw errors) or ignored (the library's OUTCOME_UNKNOWN) and tried again.
 */
export function startBackgroundLoops(db: Kysely<any>, ledger: Ledger): { stop(): Promise<void> } {
  let stopping = false;
  const loop = async (operation: string, batch: () => Promise<number>) => {
    while (!stopping) {
      ledger.operations++;
      let worked = 0;
      try {
        worked = await batch();
      } catch (error) {
        if (!(error instanceof ReservationError)) ledger.raw(operation, error);
        else if (!REPEAT_CODES.has(error.code)) ledger.violations.push(`${operation}: unexpected ${error.code}: ${error.message}`);
      }
      if (worked === 0) await sleep(100);
    }
  };
  const loops = [
    loop('expireBatch', async () => (await expireBatch({ db, limit: 50 })).expired),
    loop('runOutboxBatch', async () => {
      const r = await runOutboxBatch({ db, handler: ledger.handler, ...OUTBOX_OPTIONS });
      return r.processed + r.failed + r.deadLettered + r.released;
    }),
  ];
  return {
    async stop() {
      stopping = true;
      await Promise.all(loops);
    },
  };
}

/**
 * Delivers every event still pending, on a connection without faults, at a time past every lease
 * and backoff of the chaos phase. `handler` defaults to the ledger's.
 */
export async function drainOutbox(db: Kysely<any>, ledger: Ledger, deadlineMs = 120_000): Promise<void> {
  const deadline = performance.now() + deadlineMs;
  for (let idle = 0; idle < 2; ) {
    if (performance.now() > deadline) throw new Error(`the outbox did not drain within ${deadlineMs / 1000} s`);
    const r = await runOutboxBatch({ db, handler: ledger.handler, ...OUTBOX_OPTIONS, limit: 500, now: new Date(Date.now() + 3_600_000) });
    idle = r.processed + r.failed + r.deadLettered + r.released === 0 ? idle + 1 : 0;
  }
}

/**
 * Holds the database to what the clients were told (every acknowledged reservation there, in the
 * state acknowledged) and to the engine's invariants (test/support/invariants.ts); returns every
 * violation, the ledger's own included.
 */
export async function verify(db: Kysely<any>, ledger: Ledger, options: { outboxMayBePending?: boolean } = {}): Promise<{ violations: string[]; duplicatesDelivered: number; deadLettered: number }> {
  const report = await checkInvariants(db, {
    received: ledger.received,
    writtenOff: ledger.writtenOff,
    writeOffReasons: ledger.writeOffReasons,
    delivered: ledger.delivered,
    outboxMayBePending: options.outboxMayBePending,
  });
  const violations = [...ledger.violations, ...report.violations];
  const rows = await db.selectFrom('reservation_engine_reservations').select(['id', 'status']).execute();
  const statusOf = new Map(rows.map((row) => [String(row.id).toLowerCase(), String(row.status)]));
  for (const [id, acknowledged] of ledger.reservations) {
    const status = statusOf.get(id.toLowerCase());
    if (status === undefined) violations.push(`acknowledged reservation ${id} (key ${acknowledged.key}) is not in the database`);
    else if (acknowledged.confirmed && status !== 'CONFIRMED') violations.push(`reservation ${id}: confirm acknowledged, status ${status}`);
    else if (acknowledged.cancelled && status !== 'CANCELLED') violations.push(`reservation ${id}: cancel acknowledged, status ${status}`);
  }
  return { violations, duplicatesDelivered: report.duplicatesDelivered, deadLettered: report.deadLettered };
}
