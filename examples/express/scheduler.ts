/**
 * Background work for a long-running server: expire reservations past their hold and deliver
 * outbox events, each in its own loop. Several server processes may run it at once: the batch
 * functions use SKIP LOCKED and leases, so no reservation expires twice and no event is handed
 * to two handlers while its lease holds.
 *
 * Prefer cron (examples/cron/) when the host has no long-running process.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import { MAX_BATCH_LIMIT, type OutboxEvent, type RunOutboxBatchOptions, expireBatch, runOutboxBatch } from 'reservation-engine';

/** Options of {@link startScheduler}. */
export interface SchedulerOptions {
  /** The engine's database. The scheduler never closes it. */
  readonly db: Kysely<any>;
  /** Delivers one outbox event; throw to have it retried later (see `runOutboxBatch`). */
  readonly handler: (event: OutboxEvent) => unknown;
  /**
   * Pause after an expiry batch that was not full, or that failed.
   * @defaultValue 1000
   */
  readonly expireIntervalMs?: number;
  /**
   * Pause after an outbox batch that was not full, or that failed.
   * @defaultValue 1000
   */
  readonly outboxIntervalMs?: number;
  /**
   * Most reservations expired per batch.
   * @defaultValue 500
   */
  readonly expireLimit?: number;
  /**
   * Most outbox events claimed per batch.
   * @defaultValue 100
   */
  readonly outboxLimit?: number;
  /** Further options for `runOutboxBatch`: retry backoff, attempts, lease. */
  readonly outbox?: Omit<RunOutboxBatchOptions, 'db' | 'handler' | 'limit' | 'now'>;
  /**
   * Where batch failures, dead letters and expiries are reported.
   * @defaultValue console
   */
  readonly logger?: Pick<Console, 'info' | 'error'>;
}

/** A running scheduler. */
export interface Scheduler {
  /** Stops both loops: no new batch starts; resolves once the running ones have finished. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts the expiry and outbox loops. A batch that comes back full runs again at once (there is
 * more to do); otherwise the loop pauses for its interval. A batch that throws (database down…)
 * is logged and tried again after the interval: the loops never stop on their own and never
 * crash the process. A failing handler is not an error here: `runOutboxBatch` schedules a retry.
 *
 * @example
 * ```ts
 * const scheduler = startScheduler({ db, handler: (event) => broker.publish(event) });
 * process.once('SIGTERM', () => scheduler.stop());
 * ```
 */
export function startScheduler(options: SchedulerOptions): Scheduler {
  const {
    db,
    handler,
    expireIntervalMs = 1000,
    outboxIntervalMs = 1000,
    expireLimit = 500,
    outboxLimit = 100,
    outbox = {},
    logger = console,
  } = options;
  checkInteger('expireIntervalMs', expireIntervalMs, 0, 86_400_000);
  checkInteger('outboxIntervalMs', outboxIntervalMs, 0, 86_400_000);
  checkInteger('expireLimit', expireLimit, 1, MAX_BATCH_LIMIT);
  checkInteger('outboxLimit', outboxLimit, 1, MAX_BATCH_LIMIT);

  const stopping = new AbortController();

  const expiring = loop('expire', expireIntervalMs, stopping.signal, logger, async () => {
    const { expired, failed } = await expireBatch({ db, limit: expireLimit });
    if (expired > 0) logger.info(`expire: ${expired} reservation${expired === 1 ? '' : 's'} expired`);
    if (failed > 0) logger.error(`expire: ${failed} reservation${failed === 1 ? "" : "s"} could not be expired; retried next batch`);
    return expired + failed === expireLimit;
  });

  const delivering = loop('outbox', outboxIntervalMs, stopping.signal, logger, async () => {
    const { processed, failed, deadLettered, released } = await runOutboxBatch({ ...outbox, db, handler, limit: outboxLimit });
    if (failed > 0) logger.info(`outbox: ${failed} event${failed === 1 ? '' : 's'} failed, will be retried`);
    if (deadLettered > 0) logger.error(`outbox: ${deadLettered} event${deadLettered === 1 ? '' : 's'} dead-lettered after their last attempt`);
    // A batch that claimed anything may have left more due (a suspect event is claimed alone):
    // go again at once; an empty one waits for the interval.
    return processed + failed + deadLettered + released > 0;
  });

  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        stopping.abort();
        await Promise.all([expiring, delivering]);
      })();
      return stopped;
    },
  };
}

/** Runs `batch` until `signal` aborts; `batch` resolves true when it was full. Never rejects. */
async function loop(name: string, intervalMs: number, signal: AbortSignal, logger: Pick<Console, 'error'>, batch: () => Promise<boolean>): Promise<void> {
  while (!signal.aborted) {
    let full = false;
    try {
      full = await batch();
    } catch (error) {
      logger.error(`${name}: batch failed, trying again in ${intervalMs} ms:`, error);
    }
    if (signal.aborted) return;
    // A full batch goes again at once, but through the event loop, so that I/O is never starved.
    await (full ? sleep(0, undefined, { signal }) : sleep(intervalMs, undefined, { signal })).catch(() => {});
  }
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`startScheduler: ${name} must be an integer from ${min} to ${max.toLocaleString('en-US')}, got ${String(value)}`);
  }
}
