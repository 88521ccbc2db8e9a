import type { Kysely } from 'kysely';
import type { SqlDialect } from '../dialects/index.js';
import { HoldLimitExceededError, InvalidStateError, NotFoundError } from '../errors.js';
import { eventRow } from '../outbox/event-row.js';
import type { Database, Reservation } from '../types.js';
import { withLines } from './lines.js';

/** @internal What one `extend` asks for, and the engine settings it is bound by. */
export interface ExtendRequest {
  /** The id as stored (lower case), and as the caller wrote it (for messages). */
  readonly id: string;
  readonly reservationId: string;
  readonly ttlSeconds: number;
  readonly now: Date;
  readonly maxHoldSeconds: number;
  /** The traceparent stored with the event. */
  readonly traceContext: string | null;
}

/**
 * @internal
 * The statements of `extend`, in the caller's transaction: a locking read of the reservation
 * (its row lock first, as every transition takes it; extend touches no item), the checks, then
 * the new `expiresAt` and its `reservation.extended` event. A request for no later time than the
 * reservation holds returns it unchanged.
 */
export async function extendHold(db: Kysely<Database>, dialect: SqlDialect, request: ExtendRequest): Promise<Reservation> {
  const { id, now } = request;
  const wanted = new Date(now.getTime() + request.ttlSeconds * 1000);
  const row = await db.selectFrom('reservations').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  if (!row) throw new NotFoundError('reservation', request.reservationId);
  const [current] = (await withLines(db, [row])) as [Reservation];
  if (current.status !== 'PENDING') throw new InvalidStateError(current.id, current.status, 'extend');
  if (current.expiresAt.getTime() <= now.getTime()) throw new InvalidStateError(current.id, current.status, 'extend', true);
  if (wanted.getTime() <= current.expiresAt.getTime()) return current;
  const latest = new Date(current.createdAt.getTime() + request.maxHoldSeconds * 1000);
  if (wanted.getTime() > latest.getTime()) throw new HoldLimitExceededError(current.id, latest, wanted);
  await db.updateTable('reservations').set({ expires_at: wanted, updated_at: now }).where('id', '=', id).where('status', '=', 'PENDING').execute();
  const reservation: Reservation = Object.freeze({ ...current, expiresAt: wanted, updatedAt: now });
  await db.insertInto('outbox').values(eventRow(dialect, 'reservation.extended', reservation, now, request.traceContext)).execute();
  return reservation;
}
