import { expect, it } from 'vitest';
import { InvalidStateError, NotFoundError, ReservationEngine, ValidationError, expireBatch } from '../src/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';

describeEachDialect('confirm and cancel', (t) => {
  let now = new Date('2026-05-01T10:00:00.000Z');
  const engine = () => new ReservationEngine({ db: t.db, clock: () => now, defaultTtlSeconds: 60 });
  const setup = async (stock = 10, quantity = 3) => {
    now = new Date('2026-05-01T10:00:00.000Z');
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: stock });
    const { reservation } = await engine().reserve({ itemId: item.id, quantity, idempotencyKey: unique() });
    return { item, reservation };
  };
  const stock = async (itemId: number) => (await engine().getItem(itemId))?.availableQuantity;
  const eventTypes = async () => (await t.db.selectFrom('outbox').select('type').orderBy('id').execute()).map((r) => r.type);

  it('confirm: PENDING → CONFIRMED, stock stays taken, one reservation.confirmed event', async () => {
    const { item, reservation } = await setup();
    now = new Date('2026-05-01T10:00:30.000Z');
    const confirmed = await engine().confirm(reservation.id);
    expect(confirmed).toEqual({ ...reservation, status: 'CONFIRMED', updatedAt: now });
    expect(await engine().getReservation(reservation.id)).toEqual(confirmed);
    expect(await stock(item.id)).toBe(7);
    expect(await eventTypes()).toEqual(['reservation.created', 'reservation.confirmed']);
  });

  it('confirm twice returns the confirmed reservation unchanged, with no second event', async () => {
    const { reservation } = await setup();
    const first = await engine().confirm(reservation.id);
    now = new Date('2026-05-01T10:00:40.000Z');
    expect(await engine().confirm(reservation.id)).toEqual(first);
    expect(await eventTypes()).toEqual(['reservation.created', 'reservation.confirmed']);
  });

  it('cancel: PENDING → CANCELLED, stock returned, one reservation.cancelled event', async () => {
    const { item, reservation } = await setup();
    const cancelled = await engine().cancel(reservation.id);
    expect(cancelled.status).toBe('CANCELLED');
    expect(await stock(item.id)).toBe(10);
    expect(await eventTypes()).toEqual(['reservation.created', 'reservation.cancelled']);
  });

  it('cancel twice returns the stock once', async () => {
    const { item, reservation } = await setup();
    const first = await engine().cancel(reservation.id);
    expect(await engine().cancel(reservation.id)).toEqual(first);
    expect(await stock(item.id)).toBe(10);
    expect(await eventTypes()).toEqual(['reservation.created', 'reservation.cancelled']);
  });

  it('cancel of a CONFIRMED reservation is an InvalidStateError and changes nothing', async () => {
    const { item, reservation } = await setup();
    await engine().confirm(reservation.id);
    const error = await caught(() => engine().cancel(reservation.id));
    expect(error).toBeInstanceOf(InvalidStateError);
    expect(error).toMatchObject({ code: 'INVALID_STATE', status: 409, currentStatus: 'CONFIRMED' });
    expect((await engine().getReservation(reservation.id))?.status).toBe('CONFIRMED');
    expect(await stock(item.id)).toBe(7);
  });

  it('confirm of a CANCELLED reservation is an InvalidStateError and changes nothing', async () => {
    const { reservation } = await setup();
    await engine().cancel(reservation.id);
    const error = await caught(() => engine().confirm(reservation.id));
    expect(error).toBeInstanceOf(InvalidStateError);
    expect(error).toMatchObject({ code: 'INVALID_STATE', currentStatus: 'CANCELLED' });
    expect((await engine().getReservation(reservation.id))?.status).toBe('CANCELLED');
    expect(await eventTypes()).toEqual(['reservation.created', 'reservation.cancelled']);
  });

  it('confirm of a PENDING reservation at or past expiresAt is RESERVATION_EXPIRED', async () => {
    const { reservation } = await setup();
    now = reservation.expiresAt; // expiresAt ≤ now: expired
    const error = await caught(() => engine().confirm(reservation.id));
    expect(error).toBeInstanceOf(InvalidStateError);
    expect(error).toMatchObject({ code: 'RESERVATION_EXPIRED', status: 409 });
    expect((await engine().getReservation(reservation.id))?.status).toBe('PENDING');
    now = new Date(reservation.expiresAt.getTime() - 1);
    expect((await engine().confirm(reservation.id)).status).toBe('CONFIRMED');
  });

  it('an EXPIRED reservation can be neither confirmed nor cancelled', async () => {
    const { item, reservation } = await setup();
    await expireBatch({ db: t.db, now: reservation.expiresAt });
    expect(await caught(() => engine().confirm(reservation.id))).toMatchObject({ code: 'INVALID_STATE', currentStatus: 'EXPIRED' });
    expect(await caught(() => engine().cancel(reservation.id))).toMatchObject({ code: 'INVALID_STATE', currentStatus: 'EXPIRED' });
    expect(await stock(item.id)).toBe(10);
  });

  it('a PENDING reservation past expiresAt that no sweep reached yet can still be cancelled', async () => {
    const { item, reservation } = await setup();
    now = new Date(reservation.expiresAt.getTime() + 1000);
    expect((await engine().cancel(reservation.id)).status).toBe('CANCELLED');
    expect(await stock(item.id)).toBe(10);
    expect(await expireBatch({ db: t.db, now })).toEqual({ expired: 0, failed: 0 });
  });

  it('confirm and cancel of an unknown id are NotFoundError; getReservation is undefined', async () => {
    await setup();
    const id = '0190f2a0-0000-7000-8000-000000000000';
    for (const action of ['confirm', 'cancel'] as const) {
      const error = await caught(() => engine()[action](id));
      expect(error).toBeInstanceOf(NotFoundError);
      expect(error).toMatchObject({ code: 'RESERVATION_NOT_FOUND', status: 404 });
    }
    expect(await engine().getReservation(id)).toBeUndefined();
    expect(await eventTypes()).toEqual(['reservation.created']);
  });

  it.each([
    ['a malformed id', 'not-a-uuid'],
    ['an SQL-looking id', "' OR 1=1 --"],
    ['an empty id', ''],
    ['null', null],
    ['a number', 42],
  ])('confirm, cancel and getReservation of %s are a ValidationError, as getItem of a malformed id is', async (_label, id) => {
    await setup();
    for (const action of ['confirm', 'cancel', 'getReservation'] as const) {
      const error = await caught(() => engine()[action](id as never));
      expect(error).toBeInstanceOf(ValidationError);
      expect(error).toMatchObject({ code: 'VALIDATION_ERROR', status: 400 });
      expect(error.message).toMatch(/^Invalid input: reservationId: must be a reservation id \(a UUID\), got /);
    }
    expect(await eventTypes()).toEqual(['reservation.created']);
  });
});
