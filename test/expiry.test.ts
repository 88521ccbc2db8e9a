import { expect, it } from 'vitest';
import { ConfigurationError, ReservationEngine, expireBatch } from '../src/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';

describeEachDialect('expireBatch', (t) => {
  const start = new Date('2026-06-01T00:00:00.000Z');
  const engine = () => new ReservationEngine({ db: t.db, clock: () => start });
  const stock = async (itemId: number) => (await engine().getItem(itemId))?.availableQuantity;

  it('expires PENDING reservations past expiresAt, returns their stock and writes reservation.expired', async () => {
    const a = await engine().createItem({ sku: unique(), name: 'a', availableQuantity: 10 });
    const b = await engine().createItem({ sku: unique(), name: 'b', availableQuantity: 10 });
    const short1 = await engine().reserve({ itemId: a.id, quantity: 2, idempotencyKey: 's1', ttlSeconds: 60 });
    const short2 = await engine().reserve({ itemId: a.id, quantity: 3, idempotencyKey: 's2', ttlSeconds: 60 });
    const short3 = await engine().reserve({ itemId: b.id, quantity: 4, idempotencyKey: 's3', ttlSeconds: 60 });
    const long = await engine().reserve({ itemId: a.id, quantity: 1, idempotencyKey: 'long', ttlSeconds: 3600 });
    const confirmed = await engine().reserve({ itemId: b.id, quantity: 1, idempotencyKey: 'conf', ttlSeconds: 60 });
    await engine().confirm(confirmed.reservation.id);

    const now = new Date(start.getTime() + 60_000);
    expect(await expireBatch({ db: t.db, now })).toEqual({ expired: 3, failed: 0 });
    for (const r of [short1, short2, short3]) {
      expect(await engine().getReservation(r.reservation.id)).toMatchObject({ status: 'EXPIRED', updatedAt: now });
    }
    expect((await engine().getReservation(long.reservation.id))?.status).toBe('PENDING');
    expect((await engine().getReservation(confirmed.reservation.id))?.status).toBe('CONFIRMED');
    expect(await stock(a.id)).toBe(9);
    expect(await stock(b.id)).toBe(9);
    const expiredEvents = await t.db.selectFrom('outbox').select(['payload']).where('type', '=', 'reservation.expired').execute();
    const ids = expiredEvents.map((e) => (typeof e.payload === 'string' ? JSON.parse(e.payload) : e.payload).reservationId).sort();
    expect(ids).toEqual([short1, short2, short3].map((r) => r.reservation.id).sort());
    expect(await expireBatch({ db: t.db, now })).toEqual({ expired: 0, failed: 0 });
  });

  it('does not expire a reservation one millisecond before expiresAt', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'a', availableQuantity: 1 });
    const { reservation } = await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'edge', ttlSeconds: 10 });
    expect(await expireBatch({ db: t.db, now: new Date(reservation.expiresAt.getTime() - 1) })).toEqual({ expired: 0, failed: 0 });
    expect(await expireBatch({ db: t.db, now: reservation.expiresAt })).toEqual({ expired: 1, failed: 0 });
  });

  it('handles at most `limit` per call, oldest expiry first', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'a', availableQuantity: 100 });
    const made = [];
    for (let i = 0; i < 7; i++) made.push((await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: `l${i}`, ttlSeconds: 10 + i })).reservation);
    const now = new Date(start.getTime() + 3_600_000);
    expect(await expireBatch({ db: t.db, now, limit: 3 })).toEqual({ expired: 3, failed: 0 });
    const statuses = await Promise.all(made.map(async (r) => (await engine().getReservation(r.id))?.status));
    expect(statuses).toEqual(['EXPIRED', 'EXPIRED', 'EXPIRED', 'PENDING', 'PENDING', 'PENDING', 'PENDING']);
    expect(await expireBatch({ db: t.db, now, limit: 3 })).toEqual({ expired: 3, failed: 0 });
    expect(await expireBatch({ db: t.db, now, limit: 3 })).toEqual({ expired: 1, failed: 0 });
    expect(await stock(item.id)).toBe(100);
  });

  it('defaults `now` to the current time', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'a', availableQuantity: 5 });
    // The engine clock is in 2026-06; the real clock is later, so these are already past due...
    const past = new ReservationEngine({ db: t.db, clock: () => new Date(Date.now() - 120_000) });
    await past.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'past', ttlSeconds: 60 });
    // ...and this one is not.
    const future = new ReservationEngine({ db: t.db, clock: () => new Date(Date.now() + 120_000) });
    await future.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'future', ttlSeconds: 60 });
    expect(await expireBatch({ db: t.db })).toEqual({ expired: 1, failed: 0 });
    expect(await stock(item.id)).toBe(4);
  });

  it.each([
    ['limit 0', { limit: 0 }, /limit: must be positive/],
    ['limit 10,001', { limit: 10_001 }, /limit: must be at most 10,000/],
    ['fractional limit', { limit: 2.5 }, /limit: must be an integer/],
    ['a string now', { now: '2026-01-01' }, /now: must be a Date/],
    ['an invalid Date', { now: new Date('x') }, /now: must be a valid Date/],
    ['no db', { db: undefined }, /db: must be a Kysely instance/],
    ['an unknown option', { batch: 5 }, /unknown field "batch"/],
  ])('rejects %s', async (_label, change, message) => {
    const item = await engine().createItem({ sku: unique(), name: 'a', availableQuantity: 5 });
    await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'v', ttlSeconds: 1 });
    const error = await caught(() => expireBatch({ db: t.db, now: new Date(start.getTime() + 10_000), ...change } as never));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(error.message).toMatch(message);
    expect(await stock(item.id)).toBe(4);
  });

  it('accepts limit 10,000', async () => {
    expect(await expireBatch({ db: t.db, limit: 10_000 })).toEqual({ expired: 0, failed: 0 });
  });
});
