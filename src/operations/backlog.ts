import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import { z } from 'zod';
import { withStore } from '../schema/store.js';
import { toDate } from '../rows.js';
import type { DatabaseKind } from '../types.js';
import { dateSchema, dbOptionsShape, parseOptions } from '../validation.js';

/** Options of {@link getBacklog}. */
export interface BacklogOptions {
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
   * The time the figures are taken at.
   * @defaultValue the current time
   */
  readonly now?: Date;
}

/** What an operator watches. Each figure is one indexed query. */
export interface Backlog {
  /** Outbox events not yet delivered nor dead-lettered (due, scheduled for a retry, or being delivered). */
  readonly outboxPending: number;
  /** Of those, the ones due now and not leased by a worker: the delivery backlog. */
  readonly outboxDue: number;
  /** How long the longest-waiting due event has been due, in ms (0 when none is due): the outbox lag. */
  readonly outboxLagMs: number;
  /** Dead-lettered events (see `listDeadLetters`). */
  readonly deadLetters: number;
  /** PENDING reservations past their `expiresAt` that no expiry sweep has reached yet. */
  readonly expiryBacklog: number;
}

const optionsSchema = z.strictObject({ ...dbOptionsShape, now: dateSchema.optional() });

/**
 * The figures operators watch: outbox backlog and lag, dead letters, expiry backlog. Cheap
 * enough to call every few seconds: each is an index range (its cost grows with the backlog it
 * counts, not with the tables).
 *
 * @example
 * ```ts
 * const { outboxDue, outboxLagMs, deadLetters, expiryBacklog } = await getBacklog({ db });
 * ```
 */
export async function getBacklog(options: BacklogOptions): Promise<Backlog> {
  const o = parseOptions(optionsSchema, options);
  const now = o.now ?? new Date();
  return withStore(o, 'getBacklog', 'Nothing was written; try again.', async ({ db }) => {
    const count = sql<number>`count(*)`.as('n');
    const [pending, due, oldest, dead, overdue] = await Promise.all([
      db.selectFrom('outbox').select(count).where('available_at', 'is not', null).executeTakeFirstOrThrow(),
      // Leased events have available_at at their lease end, in the future: not due.
      db.selectFrom('outbox').select(count).where('available_at', '<=', now).executeTakeFirstOrThrow(),
      db.selectFrom('outbox').select('available_at').where('available_at', 'is not', null).orderBy('available_at').limit(1).executeTakeFirst(),
      db.selectFrom('outbox').select(count).where('processed_at', 'is', null).where('dead_lettered_at', 'is not', null).executeTakeFirstOrThrow(),
      db.selectFrom('reservations').select(count).where('status', '=', 'PENDING').where('expires_at', '<=', now).executeTakeFirstOrThrow(),
    ]);
    const oldestDue = oldest?.available_at ? toDate(oldest.available_at) : undefined;
    return Object.freeze({
      outboxPending: Number(pending.n),
      outboxDue: Number(due.n),
      outboxLagMs: oldestDue && oldestDue <= now ? now.getTime() - oldestDue.getTime() : 0,
      deadLetters: Number(dead.n),
      expiryBacklog: Number(overdue.n),
    });
  });
}
