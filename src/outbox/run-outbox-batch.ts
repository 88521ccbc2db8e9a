import type { Kysely } from 'kysely';
import { z } from 'zod';
import { type DatabaseKind, dialectOf, type SqlDialect, verifiedSession } from '../dialects/index.js';
import { engineDb, schemaNames } from '../schema/tables.js';
import { OutcomeUnknownError } from '../errors.js';
import type { Database, OutboxEvent } from '../types.js';
import { batchLimitSchema, dateSchema, functionSchema, integer, dbOptionsShape, parseOptions, telemetrySchema } from '../validation.js';
import { log, type Logger, loggerSchema } from '../observability/logger.js';
import { dbSystemName, NO_TELEMETRY, type Telemetry, type TelemetrySetting, telemetryFor } from '../observability/telemetry.js';
import type { ReservationEngineOptions } from '../engine/reservation-engine.js';
import { type ClaimedEvent, claimEvents } from './claim.js';
import { markFailed, markProcessed, releaseEvents } from './complete.js';
import { describeError } from './describe-error.js';

/** What a handler gets besides the event. */
export interface OutboxHandlerContext {
  /**
   * Aborted when the delivery runs past `handlerTimeoutMs`: stop the work (pass it to `fetch`,
   * your broker client…). The attempt then counts as failed and is retried later, whether or
   * not the handler stops.
   */
  readonly signal: AbortSignal;
}

/** Delivers one event; resolve to acknowledge it, throw or reject to have it retried. */
export type OutboxHandler = (event: OutboxEvent, context: OutboxHandlerContext) => unknown;

/**
 * What a batch handler reports for one event, in the shape `Promise.allSettled` reports a promise:
 * `{ status: 'fulfilled', value }` acknowledges it, `{ status: 'rejected', reason }` has it
 * retried (or dead-lettered) with `reason` recorded as its error.
 */
export type OutboxDeliveryResult = PromiseSettledResult<unknown>;

/**
 * Delivers a batch of events together (publish them all, then await the broker's confirms once)
 * and resolves to one {@link OutboxDeliveryResult} per event, in the order of `events`. Each
 * result is recorded on its own: a rejected event is retried with the outbox's backoff and
 * dead-lettered after `maxAttempts`, while its neighbours are acknowledged. Throwing, rejecting or
 * timing out fails every event of the batch.
 *
 * @example
 * ```ts
 * import { type OutboxBatchHandler, runOutboxBatch } from 'reservation-engine';
 *
 * const batchHandler: OutboxBatchHandler = (events, { signal }) =>
 *   Promise.allSettled(events.map((event) => broker.publish(event.type, event.payload, { messageId: event.id, signal })));
 * await runOutboxBatch({ db, batchHandler });
 * ```
 */
export type OutboxBatchHandler = (events: readonly OutboxEvent[], context: OutboxHandlerContext) => PromiseLike<readonly OutboxDeliveryResult[]> | readonly OutboxDeliveryResult[];

/** Options of {@link runOutboxBatch}. */
export interface RunOutboxBatchOptions {
  /**
   * Delivers one event (publish to a broker, call a webhook…). Resolve to acknowledge; throw or
   * reject to have it retried later. Called one event at a time, outside any transaction.
   * Delivery is at least once: use `event.id` to drop duplicates.
   * Pass `handler` or `batchHandler`, not both.
   */
  readonly handler?: OutboxHandler;
  /**
   * Delivers the claimed events together, in one call (see {@link OutboxBatchHandler}), outside
   * any transaction; `handlerTimeoutMs` bounds the whole call. For brokers whose confirms are
   * cheapest awaited together, such as RabbitMQ's (`reservation-engine/rabbitmq`).
   * Delivery is at least once: use `event.id` to drop duplicates.
   * Pass `handler` or `batchHandler`, not both.
   */
  readonly batchHandler?: OutboxBatchHandler;
  /** The host's Kysely instance (see {@link ReservationEngineOptions.db}). */
  readonly db: Kysely<any>;
  /**
   * The prefix of the engine's tables (see {@link ReservationEngineOptions.tablePrefix}).
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
  /**
   * Which database `db` talks to (see {@link ReservationEngineOptions.dialect}).
   * @defaultValue detected from the Kysely adapter
   */
  readonly dialect?: DatabaseKind;
  /**
   * Most events claimed by this call, 1–10,000.
   * @defaultValue 100
   */
  readonly limit?: number;
  /**
   * Attempts an event gets before it is dead-lettered (kept, never retried), 1–1,000. An attempt
   * counts when the event is claimed, so deliveries that crash the worker or hang count too.
   * @defaultValue 10
   */
  readonly maxAttempts?: number;
  /**
   * Pause before the second attempt; each further attempt doubles it, capped by `maxDelayMs`,
   * then multiplied by a random factor in [0.5, 1] so failing consumers are not hit in waves.
   * @defaultValue 1000
   */
  readonly baseDelayMs?: number;
  /**
   * Longest pause between attempts.
   * @defaultValue 300000 (5 minutes)
   */
  readonly maxDelayMs?: number;
  /**
   * How long claimed events stay reserved for this call. If the process dies, other callers
   * deliver them once the lease ends. Events whose delivery could not finish within the lease
   * (less than `handlerTimeoutMs` left) are handed back undelivered, so none is delivered twice
   * at once.
   * @defaultValue 30000 (30 seconds)
   */
  readonly leaseMs?: number;
  /**
   * How long one delivery may take: then the handler's `signal` is aborted and the attempt
   * counts as failed. At most half of `leaseMs`.
   * @defaultValue 10000, or a third of `leaseMs` if that is less
   */
  readonly handlerTimeoutMs?: number;
  /**
   * The time this call treats as current for due rows, leases and backoff.
   * @defaultValue the current time
   */
  readonly now?: Date;
  /**
   * Where failed deliveries (warn) and dead-lettered events (error) are reported, one line per
   * event with its id, type, attempt and error.
   * @defaultValue none: silent
   */
  readonly logger?: Logger;
  /**
   * OpenTelemetry: a span for the batch and one per delivery, linked to the span that wrote the
   * event, and the outbox metrics (see {@link ReservationEngineOptions.telemetry}).
   * @defaultValue true
   */
  readonly telemetry?: TelemetrySetting;
}

/** What {@link runOutboxBatch} did. Every claimed event is counted in exactly one field. */
export interface OutboxBatchResult {
  /** Delivered and marked processed. */
  readonly processed: number;
  /** The handler failed or timed out; scheduled for another attempt. */
  readonly failed: number;
  /**
   * Dead-lettered: the handler failed for the `maxAttempts`-th time, or earlier deliveries used up
   * the attempts without reporting back (the worker crashed, or hung past its lease).
   */
  readonly deadLettered: number;
  /** Claimed but handed back undelivered (the lease had too little time left); due again at once. */
  readonly released: number;
}

const DEFAULT_HANDLER_TIMEOUT_MS = 10_000;

const optionsSchema = z
  .strictObject({
    ...dbOptionsShape,
    handler: functionSchema<OutboxHandler>().optional(),
    batchHandler: functionSchema<OutboxBatchHandler>().optional(),
    limit: batchLimitSchema(100),
    maxAttempts: integer(1, 1000).default(10),
    baseDelayMs: integer(0, 86_400_000).default(1000),
    maxDelayMs: integer(0, 7 * 86_400_000).default(300_000),
    leaseMs: integer(1, 86_400_000).default(30_000),
    handlerTimeoutMs: integer(1, 86_400_000).optional(),
    now: dateSchema.optional(),
    logger: loggerSchema.optional(),
    telemetry: telemetrySchema.optional(),
  })
  .superRefine(oneHandler)
  .refine((o) => o.maxDelayMs >= o.baseDelayMs, { error: 'must not be less than baseDelayMs', path: ['maxDelayMs'] })
  // Room for at least one whole delivery in every lease, whatever the claim took.
  .refine((o) => o.handlerTimeoutMs === undefined || o.handlerTimeoutMs * 2 <= o.leaseMs, { error: 'must be at most half of leaseMs', path: ['handlerTimeoutMs'] });

/**
 * @internal
 * Exactly one of `handler` and `batchHandler` (a refinement for `runOutboxBatch`'s and
 * `startWorker`'s schemas): without either, the message names `handler`, as it did before
 * `batchHandler` existed.
 */
export function oneHandler(options: { readonly handler?: unknown; readonly batchHandler?: unknown }, context: z.RefinementCtx): void {
  if (options.handler === undefined && options.batchHandler === undefined) {
    context.addIssue({ code: 'custom', path: ['handler'], message: 'must be a function (or pass batchHandler)' });
  } else if (options.handler !== undefined && options.batchHandler !== undefined) {
    context.addIssue({ code: 'custom', path: ['batchHandler'], message: 'pass handler or batchHandler, not both' });
  }
}

type Options = z.output<typeof optionsSchema> & { readonly handlerTimeoutMs: number };

/**
 * Delivers one batch of due outbox events to `handler`: the one-shot entry point for cron jobs,
 * schedulers and HTTP-triggered workers. Safe to run from many processes at once: while their
 * leases hold, no event is delivered twice.
 *
 * Each event's outcome is recorded as soon as its handler settles, independently of its
 * neighbours: a handler that throws, hangs (see `handlerTimeoutMs`) or crashes the process
 * costs its own event an attempt, and never re-delivers or holds back the others.
 *
 * @throws {OutcomeUnknownError} the connection failed; run it again: unacknowledged events are redelivered
 *
 * @example
 * ```ts
 * const { processed, failed, deadLettered } = await runOutboxBatch({
 *   db,
 *   handler: async (event, { signal }) => broker.publish(event.type, event.payload, { messageId: event.id, signal }),
 * });
 * ```
 */
export async function runOutboxBatch(options: RunOutboxBatchOptions): Promise<OutboxBatchResult> {
  const parsed = parseOptions(optionsSchema, options);
  const o: Options = { ...parsed, handlerTimeoutMs: parsed.handlerTimeoutMs ?? Math.min(DEFAULT_HANDLER_TIMEOUT_MS, Math.max(1, Math.floor(parsed.leaseMs / 3))) };
  const db = engineDb(o.db, schemaNames(o.tablePrefix));
  const dialect = dialectOf(o.db, o.dialect);
  const telemetry = telemetryFor(o.telemetry, dbSystemName(dialect));
  return telemetry.call('runOutboxBatch', () => 'ok', async () => {
    try {
      await verifiedSession(o.db, dialect);
      return await deliverBatch(db, dialect, o, telemetry);
    } catch (error) {
      if (dialect.isConnectionError(error)) throw new OutcomeUnknownError('runOutboxBatch', 'Run it again: events not acknowledged are delivered again.', error);
      throw error;
    }
  });
}

async function deliverBatch(db: Kysely<Database>, dialect: SqlDialect, o: Options, telemetry: Telemetry): Promise<OutboxBatchResult> {
  const now = o.now ?? new Date();
  const leaseUntil = new Date(now.getTime() + o.leaseMs);
  const started = performance.now();
  const claim = await claimEvents(db, dialect, { now, leaseUntil, limit: o.limit, maxAttempts: o.maxAttempts });
  const acks = new AckQueue((rowIds) => markProcessed(db, dialect, rowIds, leaseUntil, now));
  const counts = { processed: 0, failed: 0, deadLettered: claim.deadLettered.length, released: 0 };
  for (const dead of claim.deadLettered) {
    telemetry.outboxEvents('dead_lettered', dead.type);
    log(o.logger, 'error', `outbox: event ${dead.rowId} (${dead.type}) dead-lettered: ${dead.error}`, { eventId: String(dead.rowId), type: dead.type });
  }

  /** Records one event's outcome: acknowledged (group-committed), or failed and scheduled again or dead-lettered. */
  const record = async (claimed: ClaimedEvent, error: unknown): Promise<void> => {
    const { event } = claimed;
    if (error === undefined) {
      acks.push(claimed.rowId);
      counts.processed++;
      telemetry.outboxEvents('delivered', event.type);
      return;
    }
    const final = event.attempts >= o.maxAttempts;
    const retryAt = final ? null : new Date(now.getTime() + retryDelayMs(event.attempts, o.baseDelayMs, o.maxDelayMs));
    const described = describeError(error);
    await markFailed(db, dialect, claimed.rowId, leaseUntil, now, described, retryAt);
    const details = { eventId: event.id, type: event.type, attempt: event.attempts };
    if (final) {
      counts.deadLettered++;
      telemetry.outboxEvents('dead_lettered', event.type);
      log(o.logger, 'error', `outbox: event ${event.id} (${event.type}) dead-lettered after attempt ${event.attempts}: ${described}`, details);
    } else {
      counts.failed++;
      telemetry.outboxEvents('failed', event.type);
      log(o.logger, 'warn', `outbox: event ${event.id} (${event.type}) failed (attempt ${event.attempts}), retried at ${retryAt!.toISOString()}: ${described}`, details);
    }
  };

  /** Too little lease left for one more full delivery: hand the rest back rather than risk another worker claiming an event while this one still delivers it. */
  const handBack = async (rest: readonly ClaimedEvent[]): Promise<boolean> => {
    const leaseLeft = o.leaseMs - (performance.now() - started);
    if (leaseLeft > o.handlerTimeoutMs && !acks.failed) return false;
    if (!acks.failed) await releaseEvents(db, dialect, rest.map((c) => c.rowId), leaseUntil, now);
    counts.released = rest.length;
    return true;
  };

  if (o.batchHandler) {
    if (claim.events.length > 0 && !(await handBack(claim.events))) {
      const errors = await deliverTogether(o.batchHandler, claim.events, o.handlerTimeoutMs, telemetry);
      for (const [index, claimed] of claim.events.entries()) await record(claimed, errors[index]);
    }
  } else {
    for (const [index, claimed] of claim.events.entries()) {
      if (await handBack(claim.events.slice(index))) break;
      const run = () => deliver(o.handler!, claimed, o.handlerTimeoutMs);
      await record(claimed, telemetry === NO_TELEMETRY ? await run() : await telemetry.deliver(claimed.event, run));
    }
  }
  try {
    await acks.drain();
  } catch (error) {
    log(o.logger, 'error', `outbox: could not mark delivered events processed; they are delivered again once their lease ends`, { error });
    throw error;
  }
  return { ...counts };
}

/**
 * Acknowledgements, written while the next handlers run, group-committed: a write starts at the
 * next turn of the event loop (handlers that settle without I/O are acknowledged together) and
 * takes every success that came in while the previous write was in flight. An event is
 * acknowledged within about one round trip of its handler settling, whatever its neighbours do,
 * at a cost of one statement per round trip rather than per event. After a failed write it stops
 * writing (those events are delivered again once the lease ends) and `drain` throws its error.
 */
class AckQueue {
  #waiting: Array<string | number> = [];
  #inFlight: Promise<void> | undefined;
  #error: { readonly cause: unknown } | undefined;

  constructor(private readonly write: (rowIds: ReadonlyArray<string | number>) => Promise<void>) {}

  get failed(): boolean {
    return this.#error !== undefined;
  }

  push(rowId: string | number): void {
    if (this.#error) return;
    this.#waiting.push(rowId);
    if (!this.#inFlight) this.#inFlight = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.#write());
  }

  #flush(): void {
    this.#inFlight = this.#write();
  }

  #write(): Promise<void> {
    const rowIds = this.#waiting;
    this.#waiting = [];
    return this.write(rowIds).then(
      () => {
        this.#inFlight = undefined;
        if (this.#waiting.length > 0) this.#flush();
      },
      (cause: unknown) => {
        this.#error ??= { cause };
        this.#inFlight = undefined;
      },
    );
  }

  async drain(): Promise<void> {
    while (this.#inFlight) await this.#inFlight;
    if (this.#error) throw this.#error.cause;
  }
}

/** Runs the handler for one event within `timeoutMs`; resolves to what it threw, or `undefined` on success. */
async function deliver(handler: OutboxHandler, { event }: ClaimedEvent, timeoutMs: number): Promise<unknown> {
  const settled = await settleWithin((context) => handler(event, context), timeoutMs);
  return settled.ok ? undefined : settled.error;
}

/**
 * Runs the batch handler once for all `claimed` events within `timeoutMs`; resolves to each
 * event's failure, or `undefined` for a delivered one, in order. A handler that throws, times
 * out or answers with something other than one result per event fails them all.
 *
 * With OpenTelemetry each event still gets its delivery span (linked to the span that wrote it,
 * failed or not by its own result), all timed by the one call; the handler itself runs in the
 * batch's span, since one publish cannot be the child of every event's span.
 */
async function deliverTogether(handler: OutboxBatchHandler, claimed: readonly ClaimedEvent[], timeoutMs: number, telemetry: Telemetry): Promise<unknown[]> {
  const events = claimed.map((c) => c.event);
  const together = settleWithin((context) => handler(events, context), timeoutMs).then((settled) => eachFailure(settled, events.length));
  if (telemetry === NO_TELEMETRY) return together;
  return Promise.all(events.map((event, index) => telemetry.deliver(event, () => together.then((errors) => errors[index]))));
}

/** What a batch handler's answer means for each of `count` events: its failure, or `undefined`. */
function eachFailure(settled: Settled<unknown>, count: number): unknown[] {
  if (!settled.ok) return Array.from({ length: count }, () => settled.error);
  const results = settled.value;
  if (!Array.isArray(results) || results.length !== count) {
    const error = new TypeError(`The batchHandler must resolve to one result per event (${count}), got ${Array.isArray(results) ? `${results.length} results` : String(results === null ? null : typeof results)}`);
    return Array.from({ length: count }, () => error);
  }
  return results.map((result: unknown) => {
    const { status, reason } = (result ?? {}) as { status?: unknown; reason?: unknown };
    if (status === 'fulfilled') return undefined;
    if (status === 'rejected') return reason ?? new Error(`The batchHandler rejected the event with ${String(reason)}`);
    return new TypeError("The batchHandler's result for the event is neither { status: 'fulfilled' } nor { status: 'rejected', reason }");
  });
}

type Settled<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** Runs `work` with a context whose signal aborts after `timeoutMs`; resolves to its value or to what it threw (or the timeout). */
async function settleWithin<T>(work: (context: OutboxHandlerContext) => T | PromiseLike<T>, timeoutMs: number): Promise<Settled<T>> {
  // The AbortController and the timer cost only handlers that use the signal or return a promise.
  let controller: AbortController | undefined;
  let timedOut: Error | undefined;
  const context: OutboxHandlerContext = {
    get signal() {
      controller ??= new AbortController();
      // A signal first asked for after the timeout is aborted already.
      if (timedOut && !controller.signal.aborted) controller.abort(timedOut);
      return controller.signal;
    },
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = work(context);
    if (!isThenable(result)) return { ok: true, value: result };
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = new Error(`The handler did not settle within handlerTimeoutMs (${timeoutMs} ms)`);
        timedOut.name = 'HandlerTimeoutError';
        controller?.abort(timedOut);
        reject(timedOut);
      }, timeoutMs);
    });
    return { ok: true, value: await Promise.race([result, timeout]) };
  } catch (error) {
    return { ok: false, error: error ?? new Error(`The handler threw ${String(error)}`) };
  } finally {
    clearTimeout(timer);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as PromiseLike<unknown>).then === 'function';
}

/**
 * The pause after failed attempt number `attempt` (1-based):
 * min(maxDelayMs, baseDelayMs · 2^(attempt−1)) × a random factor in [0.5, 1].
 */
export function retryDelayMs(attempt: number, baseDelayMs: number, maxDelayMs: number, random: () => number = Math.random): number {
  const capped = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  return Math.round(capped * (0.5 + random() * 0.5));
}
