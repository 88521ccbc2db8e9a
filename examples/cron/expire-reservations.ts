/**
 * Expires PENDING reservations past their hold and returns their stock, then exits: the cron
 * equivalent of the server's expiry loop.
 *
 *   DATABASE_URL=mysql://user:pass@db/shop npx tsx examples/cron/expire-reservations.ts [--budget=50] [--limit=500]
 *   → expire-reservations: expired=1200 batches=3 in 0.41s
 *
 * Crontab (every minute):
 *   * * * * *  cd /srv/shop && DATABASE_URL=mysql://… npx tsx examples/cron/expire-reservations.ts >> /var/log/shop/expiry.log 2>&1
 *
 * Safe to start while another copy (or the server's scheduler) is still running: each batch
 * locks its reservations with SKIP LOCKED, so concurrent runs take different rows and each
 * reservation expires exactly once. Exit code 0, or 1 with the error on stderr.
 */
import type { Kysely } from 'kysely';
import { expireBatch } from 'reservation-engine';
import { DEFAULT_BUDGET_MS, isMain, runCron, seconds } from './run-cron.js';

/** Options of {@link drainExpired}. */
export interface DrainExpiredOptions {
  readonly db: Kysely<any>;
  /**
   * Start no batch after this many milliseconds; the running one finishes. At least one batch runs.
   * @defaultValue 50000
   */
  readonly budgetMs?: number;
  /**
   * Reservations per batch (one transaction each).
   * @defaultValue 500
   */
  readonly limit?: number;
  /**
   * The time treated as current.
   * @defaultValue the current time, read at each batch
   */
  readonly now?: () => Date;
}

/** What {@link drainExpired} did, summed over its batches. */
export interface DrainExpiredResult {
  readonly expired: number;
  readonly batches: number;
  readonly elapsedMs: number;
  /** `false` when the budget ran out while batches were still coming back full. */
  readonly drained: boolean;
}

/**
 * Runs `expireBatch` until a batch comes back less than full, or the time budget is spent.
 *
 * @example
 * ```ts
 * const { expired } = await drainExpired({ db, budgetMs: 50_000 });
 * ```
 */
export async function drainExpired(options: DrainExpiredOptions): Promise<DrainExpiredResult> {
  const { db, budgetMs = DEFAULT_BUDGET_MS, limit = 500, now = () => new Date() } = options;
  const started = performance.now();
  let expired = 0;
  let batches = 0;
  for (;;) {
    const batch = await expireBatch({ db, limit, now: now() });
    batches++;
    expired += batch.expired;
    const full = batch.expired + batch.failed === limit;
    const elapsedMs = performance.now() - started;
    if (!full || elapsedMs >= budgetMs) return { expired, batches, elapsedMs, drained: !full };
  }
}

/** The summary line, e.g. `expire-reservations: expired=1200 batches=3 in 0.41s`. */
export function expiredSummary(result: DrainExpiredResult): string {
  const line = `expire-reservations: expired=${result.expired} batches=${result.batches} in ${seconds(result.elapsedMs)}`;
  return result.drained ? line : `${line} (time budget used up; more reservations are due)`;
}

if (isMain(import.meta.url)) {
  process.exitCode = await runCron('expire-reservations', async (db, { budgetMs, limit }) =>
    expiredSummary(await drainExpired({ db, budgetMs, limit })),
  );
}
