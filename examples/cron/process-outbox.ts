/**
 * Delivers due outbox events, then exits: the cron equivalent of the server's outbox loop.
 *
 *   DATABASE_URL=mysql://user:pass@db/shop npx tsx examples/cron/process-outbox.ts [--budget=50] [--limit=100]
 *   → process-outbox: processed=120 failed=2 dead-lettered=0 batches=3 in 0.41s
 *
 * Crontab (every minute):
 *   * * * * *  cd /srv/shop && DATABASE_URL=mysql://… npx tsx examples/cron/process-outbox.ts >> /var/log/shop/outbox.log 2>&1
 *
 * Safe to start while another copy (or the server's scheduler) is still running: events are
 * claimed with SKIP LOCKED under a lease, so no event goes to two handlers while its lease holds.
 * Delivery is at least once: the handler drops duplicates by `event.id`. Exit code 0, or 1 with
 * the error on stderr.
 */
import type { Kysely } from 'kysely';
import { type OutboxBatchResult, type OutboxEvent, type RunOutboxBatchOptions, runOutboxBatch } from 'reservation-engine';
import { DEFAULT_BUDGET_MS, isMain, runCron, seconds } from './run-cron.js';

/** Options of {@link drainOutbox}. */
export interface DrainOutboxOptions {
  readonly db: Kysely<any>;
  /** Delivers one event; throw to have it retried later. */
  readonly handler: (event: OutboxEvent) => unknown;
  /**
   * Start no batch after this many milliseconds; the running one finishes. At least one batch runs.
   * @defaultValue 50000
   */
  readonly budgetMs?: number;
  /**
   * Events per batch.
   * @defaultValue 100
   */
  readonly limit?: number;
  /** Further options for `runOutboxBatch`: retry backoff, attempts, lease, now. */
  readonly outbox?: Omit<RunOutboxBatchOptions, 'db' | 'handler' | 'limit'>;
}

/** What {@link drainOutbox} did, summed over its batches. */
export interface DrainOutboxResult extends OutboxBatchResult {
  readonly batches: number;
  readonly elapsedMs: number;
  /** `false` when the budget ran out while batches were still coming back full. */
  readonly drained: boolean;
}

/**
 * Runs `runOutboxBatch` until a batch comes back less than full, or the time budget is spent.
 *
 * @example
 * ```ts
 * const { processed, failed } = await drainOutbox({ db, handler: publish, budgetMs: 50_000 });
 * ```
 */
export async function drainOutbox(options: DrainOutboxOptions): Promise<DrainOutboxResult> {
  const { db, handler, budgetMs = DEFAULT_BUDGET_MS, limit = 100, outbox = {} } = options;
  const started = performance.now();
  let processed = 0;
  let failed = 0;
  let deadLettered = 0;
  let released = 0;
  let batches = 0;
  for (;;) {
    const batch = await runOutboxBatch({ ...outbox, db, handler, limit });
    batches++;
    processed += batch.processed;
    failed += batch.failed;
    deadLettered += batch.deadLettered;
    released += batch.released;
    // A batch can be short and still leave events due (a suspect event is claimed alone): stop
    // on an empty one.
    const claimed = batch.processed + batch.failed + batch.deadLettered + batch.released;
    const elapsedMs = performance.now() - started;
    if (claimed === 0 || elapsedMs >= budgetMs) return { processed, failed, deadLettered, released, batches, elapsedMs, drained: claimed === 0 };
  }
}

/** The summary line, e.g. `process-outbox: processed=120 failed=2 dead-lettered=0 batches=3 in 0.41s`. */
export function outboxSummary(result: DrainOutboxResult): string {
  const line = `process-outbox: processed=${result.processed} failed=${result.failed} dead-lettered=${result.deadLettered} released=${result.released} batches=${result.batches} in ${seconds(result.elapsedMs)}`;
  return result.drained ? line : `${line} (time budget used up; more events are due)`;
}

/** The sample handler: one line per event. Replace it with your broker or webhook call. */
function publish(event: OutboxEvent): void {
  if (event.type === 'item.written_off') {
    const { itemId, quantity, reason } = event.payload;
    console.log(`event #${event.id} ${event.type} item=${itemId} quantity=${quantity} reason=${JSON.stringify(reason)} attempt=${event.attempts}`);
    return;
  }
  const { reservationId, lines, status } = event.payload;
  const held = lines.map((line) => `${line.itemId}×${line.quantity}`).join(',');
  console.log(`event #${event.id} ${event.type} reservation=${reservationId} lines=${held} status=${status} attempt=${event.attempts}`);
}

if (isMain(import.meta.url)) {
  process.exitCode = await runCron('process-outbox', async (db, { budgetMs, limit }) =>
    outboxSummary(await drainOutbox({ db, handler: publish, budgetMs, limit })),
  );
}
