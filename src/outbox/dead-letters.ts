import type { Kysely } from 'kysely';
import { z } from 'zod';
import { withStore } from '../schema/store.js';
import { toDate } from '../rows.js';
import type { DatabaseKind, OutboxEventType } from '../types.js';
import { dateSchema, dbOptionsShape, integer, parseOptions } from '../validation.js';

/** An outbox event that used up its attempts, kept for an operator to inspect and re-arm. */
export interface DeadLetter {
  /** The event id (as `OutboxEvent.id`). */
  readonly id: string;
  readonly type: OutboxEventType;
  readonly payload: unknown;
  readonly attempts: number;
  /** What the last attempt failed with. */
  readonly lastError: string | null;
  readonly deadLetteredAt: Date;
  readonly createdAt: Date;
}

interface StoreOptions {
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
}

/** Options of {@link listDeadLetters}. */
export interface ListDeadLettersOptions extends StoreOptions {
  /**
   * Most dead letters returned, 1–1,000.
   * @defaultValue 100
   */
  readonly limit?: number;
  /**
   * The `next` of the previous page.
   * @defaultValue the first page
   */
  readonly after?: string;
}

/** Options of {@link retryDeadLetters}: `ids`, or `all: true`. */
export interface RetryDeadLettersOptions extends StoreOptions {
  /** The dead letters to re-arm, by event id. */
  readonly ids?: readonly string[];
  /** Re-arm every dead letter. */
  readonly all?: boolean;
  /**
   * When the re-armed events are due.
   * @defaultValue the current time
   */
  readonly now?: Date;
}

const EVENT_ID = /^[1-9][0-9]{0,18}$/;
const eventIdSchema = z.string({ error: 'must be an event id (a string of digits)' }).regex(EVENT_ID, { error: 'must be an event id (a string of digits)' });

const listSchema = z.strictObject({ ...dbOptionsShape, limit: integer(1, 1000).default(100), after: eventIdSchema.optional() });
const retrySchema = z
  .strictObject({ ...dbOptionsShape, ids: z.array(eventIdSchema).max(10_000, { error: 'must list at most 10,000 ids' }).optional(), all: z.boolean().optional(), now: dateSchema.optional() })
  .refine((o) => (o.all === true) !== (o.ids !== undefined), { error: 'give either ids or all: true', path: ['ids'] });

/**
 * Dead-lettered outbox events, oldest first, with their last error: a page, and the `next` to
 * pass as `after` for the following one.
 *
 * @example
 * ```ts
 * const { deadLetters } = await listDeadLetters({ db });
 * for (const letter of deadLetters) console.log(letter.id, letter.type, letter.attempts, letter.lastError);
 * ```
 */
export async function listDeadLetters(options: ListDeadLettersOptions): Promise<{ readonly deadLetters: readonly DeadLetter[]; readonly next: string | undefined }> {
  const o = parseOptions(listSchema, options);
  return withStore(o, 'listDeadLetters', 'Nothing was written; try again.', async ({ db, dialect }) => {
    let query = db
      .selectFrom('outbox')
      .select(['id', 'type', 'payload', 'attempts', 'last_error', 'dead_lettered_at', 'created_at'])
      .where('processed_at', 'is', null)
      .where('dead_lettered_at', 'is not', null)
      .orderBy('id')
      .limit(o.limit + 1);
    if (o.after !== undefined) query = query.where('id', '>', o.after);
    const rows = await query.execute();
    const deadLetters = rows.slice(0, o.limit).map(
      (row): DeadLetter =>
        Object.freeze({
          id: String(row.id),
          type: row.type,
          payload: dialect.parseJson(row.payload),
          attempts: Number(row.attempts),
          lastError: row.last_error,
          deadLetteredAt: toDate(row.dead_lettered_at!),
          createdAt: toDate(row.created_at),
        }),
    );
    return Object.freeze({ deadLetters: Object.freeze(deadLetters), next: rows.length > o.limit ? deadLetters.at(-1)?.id : undefined });
  });
}

/**
 * Re-arms dead letters (by id, or all): due again at `now`, with all their attempts back. Their
 * last error stays until the next attempt. Ids that are not dead letters are ignored.
 *
 * @example
 * ```ts
 * const { retried } = await retryDeadLetters({ db, all: true });
 * ```
 */
export async function retryDeadLetters(options: RetryDeadLettersOptions): Promise<{ readonly retried: number }> {
  const o = parseOptions(retrySchema, options);
  if (o.ids !== undefined && o.ids.length === 0) return { retried: 0 };
  return withStore(o, 'retryDeadLetters', 'Run it again: re-arming twice is harmless.', async ({ db }) => {
    let update = db
      .updateTable('outbox')
      .set({ dead_lettered_at: null, available_at: o.now ?? new Date(), locked_until: null, attempts: 0 })
      .where('processed_at', 'is', null)
      .where('dead_lettered_at', 'is not', null);
    if (o.ids !== undefined) update = update.where('id', 'in', o.ids);
    const result = await update.executeTakeFirst();
    return { retried: Number(result.numUpdatedRows) };
  });
}
