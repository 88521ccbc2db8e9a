import type { Kysely } from 'kysely';
import { dialectOf } from '../dialects/index.js';
import { type ExpireBatchResult, expireBatch } from '../expiry/expire-batch.js';
import { type OutboxBatchHandler, type OutboxBatchResult, type OutboxHandler, type RunOutboxBatchOptions, runOutboxBatch } from '../outbox/run-outbox-batch.js';
import { type PurgeBatchOptions, type PurgeBatchResult, purgeBatch, type RetentionPeriods } from '../retention/purge-batch.js';
import { schemaNames } from '../schema/tables.js';
import type { DatabaseKind } from '../types.js';
import { parseOptions } from '../validation.js';
import { PollLoop } from './poll-loop.js';
import { log, type Logger } from '../observability/logger.js';
import type { TelemetrySetting } from '../observability/telemetry.js';
import type { ReservationEngineOptions } from '../engine/reservation-engine.js';
import { workerOptionsSchema } from './worker-options.js';

/** Where the worker reports (see {@link Logger}): `console`, a pino or winston logger. */
export type WorkerLogger = Logger;

/** The options of {@link runOutboxBatch} the worker passes on to each batch. */
export type WorkerOutboxOptions = Pick<RunOutboxBatchOptions, 'limit' | 'maxAttempts' | 'baseDelayMs' | 'maxDelayMs' | 'leaseMs' | 'handlerTimeoutMs'>;

/** The options of {@link expireBatch} the worker passes on to each batch. */
export interface WorkerExpireOptions {
  /**
   * Most reservations expired per batch, 1–10,000.
   * @defaultValue 500
   */
  readonly limit?: number;
}

/**
 * The retention the worker runs (see {@link purgeBatch}): the periods, the batch size and the
 * PGlite maintenance, plus how often.
 */
export interface WorkerPurgeOptions extends RetentionPeriods {
  /**
   * Most rows of each kind deleted per batch, 1–10,000. A batch that deletes this many of some
   * kind is followed by the next at once.
   * @defaultValue 1000
   */
  readonly limit?: number;
  /**
   * The pause after a batch that left nothing past its retention, 1,000–86,400,000 ms.
   * @defaultValue 60000 (a minute)
   */
  readonly intervalMs?: number;
  /**
   * PGlite only: vacuum and checkpoint after each batch (see {@link PurgeBatchOptions.maintenance}).
   * @defaultValue true
   */
  readonly maintenance?: boolean;
}

/** Options of {@link startWorker}. */
export interface StartWorkerOptions {
  /** The host's Kysely instance (see {@link ReservationEngineOptions.db}). The worker never closes it. */
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
  /** Delivers one outbox event (see {@link RunOutboxBatchOptions.handler}). Pass `handler` or `batchHandler`. */
  readonly handler?: OutboxHandler;
  /** Delivers each batch of outbox events at once (see {@link RunOutboxBatchOptions.batchHandler}). Pass `handler` or `batchHandler`. */
  readonly batchHandler?: OutboxBatchHandler;
  /**
   * Stops the worker when aborted, as {@link RunningWorker.stop} does: no batch starts after
   * it, the batches in hand finish, then {@link RunningWorker.stopped} resolves.
   * @defaultValue none: stop it with {@link RunningWorker.stop}
   */
  readonly signal?: AbortSignal;
  /**
   * Passed on to every {@link runOutboxBatch}: batch size, attempts, retry backoff, lease and
   * handler timeout, with the same bounds.
   * @defaultValue runOutboxBatch's defaults
   */
  readonly outbox?: WorkerOutboxOptions;
  /**
   * Passed on to every {@link expireBatch}; `false` runs no expiry loop (another process
   * expires reservations, from cron say).
   * @defaultValue `{ limit: 500 }`
   */
  readonly expire?: WorkerExpireOptions | false;
  /**
   * Runs retention in a third loop: {@link purgeBatch} with these periods, every `intervalMs`
   * (at once again while a batch finds more to delete). `{}` keeps delivered events 7 days and
   * idempotency keys 24 hours, and reservations for good. Turn it on where nothing else purges;
   * on the embedded database (PGlite) it is what keeps memory bounded.
   * @defaultValue false: no retention (run `purgeBatch` or the `purge` command yourself)
   */
  readonly purge?: WorkerPurgeOptions | false;
  /**
   * Pause after a batch that found nothing to do. Each further empty batch in a row doubles it,
   * up to `maxIdleIntervalMs`; a batch that finds work resets it. A batch that finds work is
   * followed by the next at once. 1–86,400,000.
   * @defaultValue 1000
   */
  readonly idleIntervalMs?: number;
  /**
   * Longest pause while idle: how long, at most, an event or a due reservation waits for an
   * idle worker (call {@link RunningWorker.wake} to have it look at once). 1–86,400,000, not
   * less than `idleIntervalMs`.
   * @defaultValue 5000
   */
  readonly maxIdleIntervalMs?: number;
  /**
   * Pause after a batch that threw (the database is down or refuses the queries). Each further
   * failure in a row doubles it, up to `maxErrorIntervalMs`, times a random factor in [0.5, 1] so
   * that workers do not all come back at the same moment. 1–86,400,000.
   * @defaultValue 1000
   */
  readonly errorIntervalMs?: number;
  /**
   * Longest pause between failing batches: how long, at most, the worker takes to notice the
   * database is back. 1–86,400,000, not less than `errorIntervalMs`.
   * @defaultValue 30000 (30 seconds)
   */
  readonly maxErrorIntervalMs?: number;
  /**
   * Where the worker reports (see {@link WorkerLogger} for what goes to which level).
   * `console` works as it is; so does a pino logger.
   * @defaultValue none: the worker is silent
   */
  readonly logger?: WorkerLogger;
  /**
   * OpenTelemetry for the batches the worker runs (see {@link ReservationEngineOptions.telemetry}).
   * @defaultValue true
   */
  readonly telemetry?: TelemetrySetting;
}

/** What one of the worker's loops did and how it fares. */
export interface WorkerLoopSummary {
  /** Batches that ran to the end. */
  readonly batches: number;
  /** Batches that threw (the database was down…) and were retried. */
  readonly failedBatches: number;
  /** When the current run of failing batches began; `null` while the loop succeeds. For health checks. */
  readonly failingSince: Date | null;
}

/** What the outbox loop did: the sums of its batches' {@link OutboxBatchResult}s. */
export interface WorkerOutboxSummary extends WorkerLoopSummary, OutboxBatchResult {}

/** What the expiry loop did: the sums of its batches' {@link ExpireBatchResult}s. */
export interface WorkerExpireSummary extends WorkerLoopSummary, ExpireBatchResult {}

/** What a worker has done since it started. */
export interface WorkerSummary {
  readonly outbox: WorkerOutboxSummary;
  /** All zero when the worker runs no expiry loop (`expire: false`). */
  readonly expire: WorkerExpireSummary;
  /** All zero when the worker runs no purge loop (`purge: false`, the default). */
  readonly purge: WorkerPurgeSummary;
}

/** What the purge loop did: the sums of its batches' {@link PurgeBatchResult}s. */
export interface WorkerPurgeSummary extends WorkerLoopSummary, PurgeBatchResult {}

/** A worker started by {@link startWorker}. */
export interface RunningWorker {
  /**
   * Resolves with the totals once the worker has stopped (by {@link stop} or `signal`), after
   * the batches in hand have finished. Never rejects: database failures are logged and retried.
   */
  readonly stopped: Promise<WorkerSummary>;
  /**
   * Starts no further batch, ends any pause, and resolves as {@link stopped} does. An outbox
   * batch in hand delivers the events it claimed first; those it has no time for within its
   * lease are handed back, so this takes at most about `outbox.leaseMs`. Idempotent.
   */
  stop(): Promise<WorkerSummary>;
  /** Ends the loops' current pauses: call it after writing events or holds you want handled at once. */
  wake(): void;
  /** The totals so far, for metrics and health checks. */
  summary(): WorkerSummary;
}

/**
 * Runs {@link runOutboxBatch} and {@link expireBatch} continuously, in two independent loops (a
 * slow handler never holds back expiry), and with `purge` {@link purgeBatch} in a third, until `signal` aborts or {@link RunningWorker.stop}
 * is called: the long-running counterpart of the one-shot batch functions, for a server or a
 * dedicated worker process. A batch that finds work is followed by the next at once; while
 * idle, the loops back off (`idleIntervalMs` doubling up to `maxIdleIntervalMs`).
 *
 * It keeps going through database outages: a loop whose batch throws logs one error, retries with
 * backoff (`errorIntervalMs` up to `maxErrorIntervalMs`), and logs once more when it succeeds
 * again. Many workers, in many processes, may run at once: batches skip each other's rows and
 * events are leased, so no reservation expires twice and no event goes to two handlers at once.
 * The worker keeps the process alive until it stops.
 *
 * @throws {ConfigurationError} an option is invalid (thrown by the call itself: nothing started)
 * @throws {UnsupportedDatabaseError} the database cannot be told from `db` (pass `dialect`)
 *
 * @example
 * ```ts
 * import { startWorker } from 'reservation-engine';
 *
 * const shutdown = new AbortController();
 * process.once('SIGTERM', () => shutdown.abort());
 *
 * const worker = startWorker({
 *   db,
 *   handler: (event, { signal }) => broker.publish(event.type, event.payload, { messageId: event.id, signal }),
 *   signal: shutdown.signal,
 *   logger: console,
 * });
 * // Resolves after SIGTERM, once the batches in hand have finished.
 * const { outbox, expire } = await worker.stopped;
 * console.log(`delivered ${outbox.processed} events, expired ${expire.expired} reservations`);
 * ```
 */
export function startWorker(options: StartWorkerOptions): RunningWorker {
  const o = parseOptions(workerOptionsSchema, options);
  // Fail now, not in every batch.
  schemaNames(o.tablePrefix);
  dialectOf(o.db, o.dialect);
  const logger: WorkerLogger = o.logger ?? {};
  // The batch functions report their own events (dead letters, failed rows) to the same logger.
  const store = { db: o.db, tablePrefix: o.tablePrefix, dialect: o.dialect, telemetry: o.telemetry };
  const target = { ...store, logger: o.logger };
  const pauses = o;

  const outbox = { batches: 0, processed: 0, failed: 0, deadLettered: 0, released: 0 };
  const outboxLoop = new PollLoop('outbox', async () => {
    const result = await runOutboxBatch({ ...o.outbox, ...target, handler: o.handler, batchHandler: o.batchHandler });
    outbox.batches++;
    outbox.processed += result.processed;
    outbox.failed += result.failed;
    outbox.deadLettered += result.deadLettered;
    outbox.released += result.released;
    reportOutboxBatch(logger, result);
    // Not "full": a suspect event is claimed alone, so a short batch may leave more due.
    return result.processed + result.failed + result.deadLettered + result.released > 0;
  }, pauses, logger);

  const expire = { batches: 0, expired: 0, failed: 0 };
  const expireOptions = o.expire;
  const expireLoop =
    expireOptions === false
      ? undefined
      : new PollLoop('expire', async () => {
          const result = await expireBatch({ ...target, limit: expireOptions.limit });
          expire.batches++;
          expire.expired += result.expired;
          expire.failed += result.failed;
          reportExpireBatch(logger, result);
          // Rows that keep failing are not work found: without an expiry they would spin the loop.
          return result.expired > 0 && result.expired + result.failed === expireOptions.limit;
        }, pauses, logger);

  const purged = { batches: 0, outboxEvents: 0, idempotencyKeys: 0, restockKeys: 0, reservations: 0 };
  const purgeOptions = o.purge;
  const purgeLoop =
    purgeOptions === undefined
      ? undefined
      : new PollLoop(
          'purge',
          async () => {
            const { intervalMs: _, ...retention } = purgeOptions;
            const result = await purgeBatch({ ...store, ...retention });
            purged.batches++;
            const counts = [result.outboxEvents, result.idempotencyKeys, result.restockKeys, result.reservations];
            purged.outboxEvents += result.outboxEvents;
            purged.idempotencyKeys += result.idempotencyKeys;
            purged.restockKeys += result.restockKeys;
            purged.reservations += result.reservations;
            if (counts.some((n) => n > 0)) log(logger, 'debug', `purge: batch ${purgeTotals(result)}`);
            // A full batch of some kind: more is past its retention.
            return counts.some((n) => n === purgeOptions.limit);
          },
          { ...pauses, idleIntervalMs: purgeOptions.intervalMs, maxIdleIntervalMs: purgeOptions.intervalMs },
          logger,
        );

  const idle = { failedBatches: 0, failingSince: null };
  const summary = (): WorkerSummary =>
    Object.freeze({
      outbox: Object.freeze({ ...outbox, ...outboxLoop.health }),
      expire: Object.freeze({ ...expire, ...(expireLoop?.health ?? idle) }),
      purge: Object.freeze({ ...purged, ...(purgeLoop?.health ?? idle) }),
    });

  const stopping = new AbortController();
  const stop = () => stopping.abort();
  o.signal?.addEventListener('abort', stop, { once: true });
  if (o.signal?.aborted) stop();
  const stopped = Promise.all([outboxLoop.run(stopping.signal), expireLoop?.run(stopping.signal), purgeLoop?.run(stopping.signal)]).then(() => {
    o.signal?.removeEventListener('abort', stop);
    const totals = summary();
    const purge = purgeLoop ? `; purge: ${purgeTotals(totals.purge)}` : '';
    log(logger, 'info', `worker: stopped; outbox: ${outboxTotals(totals.outbox)}; expire: ${expireTotals(totals.expire)}${purge}`);
    return totals;
  });

  return Object.freeze({
    stopped,
    stop() {
      stop();
      return stopped;
    },
    wake() {
      outboxLoop.wake();
      expireLoop?.wake();
    },
    summary,
  });
}

function reportOutboxBatch(logger: WorkerLogger, result: OutboxBatchResult): void {
  const { processed, failed, deadLettered, released } = result;
  if (processed + failed + deadLettered + released > 0) log(logger, 'debug', `outbox: batch ${outboxTotals(result)}`);
}

function reportExpireBatch(logger: WorkerLogger, result: ExpireBatchResult): void {
  if (result.expired + result.failed > 0) log(logger, 'debug', `expire: batch ${expireTotals(result)}`);
}

function outboxTotals({ processed, failed, deadLettered, released }: OutboxBatchResult): string {
  return `processed=${processed} failed=${failed} dead-lettered=${deadLettered} released=${released}`;
}

function expireTotals({ expired, failed }: ExpireBatchResult): string {
  return `expired=${expired} failed=${failed}`;
}

function purgeTotals({ outboxEvents, idempotencyKeys, restockKeys, reservations }: PurgeBatchResult): string {
  return `events=${outboxEvents} keys=${idempotencyKeys} restock-keys=${restockKeys} reservations=${reservations}`;
}
