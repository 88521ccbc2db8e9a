import type { Kysely } from 'kysely';
import { z } from 'zod';
import { dialectOf } from '../dialects/index.js';
import type { Database, OutboxEvent } from '../types.js';
import { batchLimitSchema, dateSchema, kyselySchema, parse } from '../validation.js';
import { claimEvents } from './claim.js';
import { markFailed, markProcessed } from './complete.js';

/** Options of {@link runOutboxBatch}. */
export interface RunOutboxBatchOptions {
  /** The host's Kysely instance (see {@link ReservationEngineOptions.db}). */
  readonly db: Kysely<any>;
  /**
   * Delivers one event (publish to a broker, call a webhook…). Resolve to acknowledge; throw or
   * reject to have it retried later. Called one event at a time, outside any transaction.
   * Delivery is at least once: use `event.id` to drop duplicates.
   */
  readonly handler: (event: OutboxEvent) => unknown;
  /**
   * Most events claimed by this call, 1–10,000.
   * @defaultValue 100
   */
  readonly limit?: number;
  /**
   * Deliveries an event gets before it is dead-lettered (kept, never retried), 1–1,000.
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
   * deliver them once the lease ends. Choose it longer than the whole batch takes to deliver.
   * @defaultValue 30000 (30 seconds)
   */
  readonly leaseMs?: number;
  /**
   * The time this call treats as current for due rows, leases and backoff.
   * @defaultValue the current time
   */
  readonly now?: Date;
}

/** What {@link runOutboxBatch} did. Every claimed event is counted in exactly one field. */
export interface OutboxBatchResult {
  /** Delivered and marked processed. */
  readonly processed: number;
  /** The handler failed; scheduled for another attempt. */
  readonly failed: number;
  /** The handler failed for the `maxAttempts`-th time; dead-lettered. */
  readonly deadLettered: number;
}

const MAX_ERROR_LENGTH = 2000;

const optionsSchema = z
  .strictObject({
    db: kyselySchema,
    handler: z.custom<(event: OutboxEvent) => unknown>((v) => typeof v === 'function', { error: 'must be a function' }),
    limit: batchLimitSchema(100),
    maxAttempts: z.number().int().min(1).max(1000).default(10),
    baseDelayMs: z.number().int().min(0).max(86_400_000).default(1000),
    maxDelayMs: z.number().int().min(0).max(7 * 86_400_000).default(300_000),
    leaseMs: z.number().int().min(1).max(86_400_000).default(30_000),
    now: dateSchema.optional(),
  })
  .refine((o) => o.maxDelayMs >= o.baseDelayMs, { error: 'must not be less than baseDelayMs', path: ['maxDelayMs'] });

/**
 * Delivers one batch of due outbox events to `handler`: the one-shot entry point for cron jobs,
 * schedulers and HTTP-triggered workers. Safe to run from many processes at once: while their
 * leases hold, no event is delivered twice.
 *
 * @example
 * ```ts
 * const { processed, failed, deadLettered } = await runOutboxBatch({
 *   db,
 *   handler: async (event) => broker.publish(event.type, event.payload, { messageId: event.id }),
 * });
 * ```
 */
export async function runOutboxBatch(options: RunOutboxBatchOptions): Promise<OutboxBatchResult> {
  const o = parse(optionsSchema, options, 'options');
  const db = o.db as Kysely<Database>;
  const dialect = dialectOf(db);
  const now = o.now ?? new Date();
  const leaseUntil = new Date(now.getTime() + o.leaseMs);

  const claimed = await claimEvents(db, dialect, now, leaseUntil, o.limit);
  const delivered: Array<string | number> = [];
  let failed = 0;
  let deadLettered = 0;
  for (const { rowId, event } of claimed) {
    try {
      await o.handler(event);
      delivered.push(rowId);
    } catch (error) {
      const final = event.attempts >= o.maxAttempts;
      const retryAt = final ? null : new Date(now.getTime() + retryDelayMs(event.attempts, o.baseDelayMs, o.maxDelayMs));
      await markFailed(db, rowId, leaseUntil, now, describeError(error), retryAt);
      if (final) deadLettered++;
      else failed++;
    }
  }
  await markProcessed(db, delivered, leaseUntil, now);
  return { processed: delivered.length, failed, deadLettered };
}

/**
 * The pause after failed attempt number `attempt` (1-based):
 * min(maxDelayMs, baseDelayMs · 2^(attempt−1)) × a random factor in [0.5, 1].
 */
export function retryDelayMs(attempt: number, baseDelayMs: number, maxDelayMs: number, random: () => number = Math.random): number {
  const capped = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  return Math.round(capped * (0.5 + random() * 0.5));
}

function describeError(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH - 1)}…` : text;
}
