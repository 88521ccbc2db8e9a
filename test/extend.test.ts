import { expect, it } from 'vitest';
import {
  ConfigurationError,
  expireBatch,
  HoldLimitExceededError,
  InvalidStateError,
  NotFoundError,
  ReservationEngine,
  toProblem,
  ValidationError,
} from '../src/index.js';
import { uuidv7 } from '../src/uuid.js';
import { caught, describeEachDialect, unique } from './support/db.js';

describeEachDialect('extend', (t) => {
  const start = new Date('2026-03-01T12:00:00.000Z');
  let now = start;
  const clock = () => now;
  const after = (seconds: number) => new Date(start.getTime() + seconds * 1000);
  const engine = (maxHoldSeconds?: number) => new ReservationEngine({ db: t.db, clock, maxHoldSeconds });
  const parse = (payload: unknown) => (typeof payload === 'string' ? JSON.parse(payload) : payload);
  const events = async () => (await t.db.selectFrom('outbox').select(['type', 'payload']).orderBy('id').execute()).map((row: any) => ({ type: row.type, payload: parse(row.payload) }));
  const reserve = async (ttlSeconds = 600) => {
    now = start;
    const item = await engine().createItem({ sku: unique('sku'), name: 'thing', availableQuantity: 10 });
    return (await engine().reserve({ itemId: item.id, quantity: 2, idempotencyKey: unique('key'), ttlSeconds })).reservation;
  };

  it('moves expiresAt to ttlSeconds from now, with a reservation.extended event', async () => {
    const reservation = await reserve(600);
    now = after(300);
    const extended = await engine().extend(reservation.id, { ttlSeconds: 900 });
    expect(extended).toEqual({ ...reservation, expiresAt: after(1200), updatedAt: after(300) });
    expect(await engine().getReservation(reservation.id)).toEqual(extended);
    const [, event] = await events();
    expect(event).toEqual({ type: 'reservation.extended', payload: expect.objectContaining({ reservationId: reservation.id, status: 'PENDING', expiresAt: after(1200).toISOString(), occurredAt: after(300).toISOString() }) });
    // The sweep honours the new time.
    expect(await expireBatch({ db: t.db, now: after(601) })).toEqual({ expired: 0, failed: 0 });
    expect(await expireBatch({ db: t.db, now: after(1200) })).toEqual({ expired: 1, failed: 0 });
  });

  it('is idempotent: asking for no later time than it holds returns it unchanged and writes no event', async () => {
    const reservation = await reserve(600);
    now = after(60);
    const extended = await engine().extend(reservation.id, { ttlSeconds: 900 });
    // A retry of the same call, a little later, asks for nearly the same time: it moves by that little.
    expect(await engine().extend(reservation.id, { ttlSeconds: 900 })).toEqual(extended);
    now = after(100);
    expect(await engine().extend(reservation.id, { ttlSeconds: 60 })).toEqual(extended);
    expect((await events()).map((e) => e.type)).toEqual(['reservation.created', 'reservation.extended']);
  });

  it('extends up to createdAt + maxHoldSeconds, and refuses a request past it whole', async () => {
    const reservation = await reserve(600);
    now = after(300);
    // Exactly to the cap (1 hour by default).
    expect((await engine().extend(reservation.id, { ttlSeconds: 3300 })).expiresAt).toEqual(after(3600));
    now = after(1500);
    const error = await caught(() => engine().extend(reservation.id, { ttlSeconds: 2101 }));
    expect(error).toBeInstanceOf(HoldLimitExceededError);
    expect(error).toMatchObject({ code: 'HOLD_LIMIT_EXCEEDED', status: 409, reservationId: reservation.id, maxExpiresAt: after(3600), requestedExpiresAt: after(3601) });
    expect(toProblem(error)).toMatchObject({ status: 409, code: 'HOLD_LIMIT_EXCEEDED', maxExpiresAt: after(3600).toISOString() });
    expect((await engine().getReservation(reservation.id))!.expiresAt).toEqual(after(3600));
    expect((await events()).map((e) => e.type)).toEqual(['reservation.created', 'reservation.extended']);
    // Another engine option: its own cap.
    const second = await reserve(60);
    now = after(30);
    expect(await caught(() => engine(120).extend(second.id, { ttlSeconds: 91 }))).toBeInstanceOf(HoldLimitExceededError);
    expect((await engine(120).extend(second.id, { ttlSeconds: 90 })).expiresAt).toEqual(after(120));
  });

  it('refuses an expired, confirmed or cancelled reservation, and an unknown id', async () => {
    const expired = await reserve(60);
    now = after(60);
    expect(await caught(() => engine().extend(expired.id, { ttlSeconds: 60 }))).toMatchObject({ code: 'RESERVATION_EXPIRED', status: 409 });
    const confirmed = await reserve(60);
    await engine().confirm(confirmed.id);
    const error = await caught(() => engine().extend(confirmed.id, { ttlSeconds: 60 }));
    expect(error).toBeInstanceOf(InvalidStateError);
    expect(error).toMatchObject({ code: 'INVALID_STATE', currentStatus: 'CONFIRMED', attempted: 'extend' });
    const cancelled = await reserve(60);
    await engine().cancel(cancelled.id);
    expect(await caught(() => engine().extend(cancelled.id, { ttlSeconds: 60 }))).toMatchObject({ code: 'INVALID_STATE', currentStatus: 'CANCELLED' });
    expect(await caught(() => engine().extend(uuidv7(Date.now()), { ttlSeconds: 60 }))).toBeInstanceOf(NotFoundError);
    expect((await events()).filter((e) => e.type === 'reservation.extended')).toEqual([]);
  });

  it('refuses bad input with a ValidationError, and a bad maxHoldSeconds with a ConfigurationError', async () => {
    const reservation = await reserve(60);
    for (const input of [{}, { ttlSeconds: 0 }, { ttlSeconds: 1.5 }, { ttlSeconds: '60' }, { ttlSeconds: 60, extra: 1 }, null]) {
      expect(await caught(() => engine().extend(reservation.id, input as never)), JSON.stringify(input)).toBeInstanceOf(ValidationError);
    }
    expect(await caught(() => engine().extend('not-a-uuid', { ttlSeconds: 60 }))).toBeInstanceOf(ValidationError);
    for (const maxHoldSeconds of [0, -1, 1.5, 31 * 86_400]) expect(() => engine(maxHoldSeconds)).toThrow(ConfigurationError);
  });

  it('extends a cart as a whole', async () => {
    now = start;
    const [a, b] = [await engine().createItem({ sku: unique('sku'), name: 'a', availableQuantity: 5 }), await engine().createItem({ sku: unique('sku'), name: 'b', availableQuantity: 5 })];
    const { reservation } = await engine().reserve({ lines: [{ itemId: a.id, quantity: 1 }, { itemId: b.id, quantity: 2 }], idempotencyKey: unique('cart'), ttlSeconds: 60 });
    now = after(30);
    const extended = await engine().extend(reservation.id, { ttlSeconds: 600 });
    expect(extended).toMatchObject({ lines: reservation.lines, expiresAt: after(630) });
    const event = (await events()).at(-1)!;
    expect(event).toMatchObject({ type: 'reservation.extended', payload: { itemId: null, quantity: 3, lines: reservation.lines } });
  });

  it('in a host transaction: gone with its rollback', async () => {
    const reservation = await reserve(60);
    now = after(10);
    await t.db
      .transaction()
      .execute(async (trx) => {
        await engine().extend(reservation.id, { ttlSeconds: 600 }, { trx });
        throw new Error('rolled back');
      })
      .catch(() => {});
    expect((await engine().getReservation(reservation.id))!.expiresAt).toEqual(after(60));
    expect((await events()).map((e) => e.type)).toEqual(['reservation.created']);
  });
});
