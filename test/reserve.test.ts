import { expect, it } from 'vitest';
import {
  IdempotencyConflictError,
  InsufficientStockError,
  NotFoundError,
  ReservationEngine,
  ValidationError,
} from '../src/index.js';
import { canonicalJson, payloadHash } from '../src/idempotency/payload-hash.js';
import { uuidv7 } from '../src/uuid.js';
import { caught, describeEachDialect, unique } from './support/db.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

it('hashes a canonical JSON: property order does not matter, values do', () => {
  expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}');
  expect(payloadHash({ itemId: 1, quantity: 2, ttlSeconds: 60 })).toBe(payloadHash({ ttlSeconds: 60, quantity: 2, itemId: 1 }));
  expect(payloadHash({ itemId: 1, quantity: 2, ttlSeconds: 60 })).not.toBe(payloadHash({ itemId: 1, quantity: 3, ttlSeconds: 60 }));
  expect(payloadHash({ a: 1 })).toMatch(/^[0-9a-f]{64}$/);
});

it('uuidv7: unique across random-pool refills, version 7, ordered by time', () => {
  const ids = Array.from({ length: 1000 }, (_, i) => uuidv7(1_800_000_000_000 + i));
  expect(new Set(ids).size).toBe(1000);
  expect(ids.every((id) => UUID_V7.test(id))).toBe(true);
  expect([...ids].sort()).toEqual(ids);
  // Same millisecond: still distinct (74 random bits).
  expect(new Set(Array.from({ length: 600 }, () => uuidv7(0))).size).toBe(600);
});

describeEachDialect('reserve', (t) => {
  const at = new Date('2026-03-01T12:00:00.000Z');
  const engine = (defaultTtlSeconds?: number) => new ReservationEngine({ db: t.db, clock: () => at, defaultTtlSeconds });
  const item = (availableQuantity = 10) => engine().createItem({ sku: unique('sku'), name: 'thing', availableQuantity });

  it('holds stock: a PENDING reservation, the stock decremented, one reservation.created event', async () => {
    const { id: itemId } = await item(10);
    const { reservation, replayed } = await engine().reserve({ itemId, quantity: 3, idempotencyKey: 'key-1' });
    expect(replayed).toBe(false);
    expect(reservation).toEqual({
      id: expect.stringMatching(UUID_V7),
      itemId,
      quantity: 3,
      lines: [{ itemId, quantity: 3 }],
      status: 'PENDING',
      idempotencyScope: null,
      idempotencyKey: 'key-1',
      expiresAt: new Date(at.getTime() + 900_000),
      createdAt: at,
      updatedAt: at,
    });
    expect(await engine().getReservation(reservation.id)).toEqual(reservation);
    expect((await engine().getItem(itemId))?.availableQuantity).toBe(7);
    const events = await t.db.selectFrom('outbox').selectAll().execute();
    expect(events).toHaveLength(1);
    const [event] = events as [any];
    expect(event.type).toBe('reservation.created');
    const payload = typeof event.payload === 'string' ? JSON.parse(event.payload) : event.payload;
    expect(payload).toMatchObject({ reservationId: reservation.id, itemId, quantity: 3, status: 'PENDING' });
  });

  it('uses ttlSeconds, else the engine default', async () => {
    const { id: itemId } = await item();
    const a = await engine().reserve({ itemId, quantity: 1, idempotencyKey: 'a', ttlSeconds: 30 });
    const b = await engine(120).reserve({ itemId, quantity: 1, idempotencyKey: 'b' });
    expect(a.reservation.expiresAt).toEqual(new Date(at.getTime() + 30_000));
    expect(b.reservation.expiresAt).toEqual(new Date(at.getTime() + 120_000));
  });

  it('generates distinct, time-ordered ids', async () => {
    const { id: itemId } = await item(100);
    let now = 1_800_000_000_000;
    const e = new ReservationEngine({ db: t.db, clock: () => new Date((now += 1)) });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await e.reserve({ itemId, quantity: 1, idempotencyKey: `o-${i}` })).reservation.id);
    expect(new Set(ids).size).toBe(20);
    expect([...ids].sort()).toEqual(ids);
  });

  it('can take the last unit, and then refuses with InsufficientStockError, storing nothing', async () => {
    const { id: itemId } = await item(2);
    await engine().reserve({ itemId, quantity: 2, idempotencyKey: 'all' });
    const error = await caught(() => engine().reserve({ itemId, quantity: 1, idempotencyKey: 'one-more' }));
    expect(error).toBeInstanceOf(InsufficientStockError);
    expect(error).toMatchObject({ code: 'INSUFFICIENT_STOCK', status: 409, requested: 1, available: 0 });
    expect(await t.count('reservations')).toBe(1);
    expect(await t.count('idempotency_requests')).toBe(1);
    expect(await t.count('outbox')).toBe(1);
    expect((await engine().getItem(itemId))?.availableQuantity).toBe(0);
  });

  it('lets a client retry a key whose request failed for lack of stock', async () => {
    const { id: itemId } = await item(1);
    expect(await caught(() => engine().reserve({ itemId, quantity: 2, idempotencyKey: 'retry-me' }))).toBeInstanceOf(InsufficientStockError);
    await engine().restock({ itemId, quantity: 5 });
    const { replayed, reservation } = await engine().reserve({ itemId, quantity: 2, idempotencyKey: 'retry-me' });
    expect(replayed).toBe(false);
    expect(reservation.quantity).toBe(2);
  });

  it('refuses an unknown item with NotFoundError, storing nothing', async () => {
    const error = await caught(() => engine().reserve({ itemId: 99999, quantity: 1, idempotencyKey: 'ghost' }));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ code: 'ITEM_NOT_FOUND', status: 404 });
    expect(await t.count('reservations')).toBe(0);
    expect(await t.count('idempotency_requests')).toBe(0);
    expect(await t.count('outbox')).toBe(0);
  });

  it('replays the same key and payload: same reservation, no second decrement or event', async () => {
    const { id: itemId } = await item(10);
    const first = await engine().reserve({ itemId, quantity: 2, idempotencyKey: 'same' });
    const again = await engine().reserve({ quantity: 2, idempotencyKey: 'same', itemId });
    expect(again).toEqual({ reservation: first.reservation, replayed: true });
    expect((await engine().getItem(itemId))?.availableQuantity).toBe(8);
    expect(await t.count('outbox')).toBe(1);
    expect(await t.count('reservations')).toBe(1);
  });

  it('compares what the client sent, not server defaults: a retry served by an engine with another defaultTtlSeconds replays', async () => {
    const { id: itemId } = await item();
    // A rolling deploy: the first attempt reaches an engine with a 15-minute default, the retry one with 2 minutes.
    const first = await engine(900).reserve({ itemId, quantity: 1, idempotencyKey: 'ttl' });
    const again = await engine(120).reserve({ itemId, quantity: 1, idempotencyKey: 'ttl' });
    expect(again.replayed).toBe(true);
    expect(again.reservation).toEqual(first.reservation);
    // Sending a ttlSeconds the first request did not send is another request.
    expect(await caught(() => engine(900).reserve({ itemId, quantity: 1, idempotencyKey: 'ttl', ttlSeconds: 900 }))).toBeInstanceOf(IdempotencyConflictError);
  });

  it('replays the current state after the reservation moved on', async () => {
    const { id: itemId } = await item();
    const first = await engine().reserve({ itemId, quantity: 1, idempotencyKey: 'moved' });
    await engine().confirm(first.reservation.id);
    const again = await engine().reserve({ itemId, quantity: 1, idempotencyKey: 'moved' });
    expect(again.replayed).toBe(true);
    expect(again.reservation.status).toBe('CONFIRMED');
  });

  it.each([
    ['another quantity', { quantity: 3 }],
    ['another item', { itemId: -1 }],
    ['another ttl', { ttlSeconds: 61 }],
  ])('rejects the same key with %s: IdempotencyConflictError, nothing written', async (_label, change) => {
    const { id: itemId } = await item(10);
    const other = await item(10);
    const request = { itemId, quantity: 2, idempotencyKey: 'conflict', ttlSeconds: 60 };
    await engine().reserve(request);
    const changed = { ...request, ...change, ...('itemId' in change ? { itemId: other.id } : {}) };
    const error = await caught(() => engine().reserve(changed));
    expect(error).toBeInstanceOf(IdempotencyConflictError);
    expect(error).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT', status: 409 });
    expect(await t.count('reservations')).toBe(1);
    expect((await engine().getItem(itemId))?.availableQuantity).toBe(8);
    expect((await engine().getItem(other.id))?.availableQuantity).toBe(10);
  });

  it('keys are case-sensitive', async () => {
    const { id: itemId } = await item();
    await engine().reserve({ itemId, quantity: 1, idempotencyKey: 'Key' });
    expect((await engine().reserve({ itemId, quantity: 1, idempotencyKey: 'key' })).replayed).toBe(false);
  });

  it.each([
    ['null', null, /input: must be an object, got null/],
    ['a string', 'reserve', /input: must be an object, got a string/],
    ['zero quantity', { quantity: 0 }, /quantity: must be positive/],
    ['negative quantity', { quantity: -1 }, /quantity: must be positive/],
    ['fractional quantity', { quantity: 1.5 }, /quantity: must be an integer/],
    ['quantity over 1,000,000', { quantity: 1_000_001 }, /quantity: must be at most 1,000,000/],
    ['NaN quantity', { quantity: Number.NaN }, /quantity: must be a finite number, got NaN/],
    ['Infinity quantity', { quantity: Number.POSITIVE_INFINITY }, /quantity:/],
    ['string quantity', { quantity: '2' }, /quantity: must be a number, got a string/],
    ['null quantity', { quantity: null }, /quantity: must be a number, got null/],
    ['missing quantity', { quantity: undefined }, /quantity: is required/],
    ['string item id', { itemId: 'abc' }, /itemId: must be a number, got a string/],
    ['zero item id', { itemId: 0 }, /itemId: must be positive/],
    ['empty key', { idempotencyKey: '' }, /idempotencyKey: must not be empty/],
    ['256-character key', { idempotencyKey: 'k'.repeat(256) }, /idempotencyKey: must be at most 255 characters/],
    ['key with a newline', { idempotencyKey: 'a\nb' }, /idempotencyKey: must be printable ASCII/],
    ['key with a leading space', { idempotencyKey: ' a' }, /idempotencyKey: must be printable ASCII/],
    ['non-ASCII key', { idempotencyKey: 'clé' }, /idempotencyKey: must be printable ASCII/],
    ['numeric key', { idempotencyKey: 42 }, /idempotencyKey: must be a string, got a number/],
    ['zero ttl', { ttlSeconds: 0 }, /ttlSeconds: must be positive/],
    ['ttl over 30 days', { ttlSeconds: 2_592_001 }, /ttlSeconds: must be at most 2,592,000/],
    ['null ttl', { ttlSeconds: null }, /ttlSeconds: must be a number, got null/],
    ['unknown field', { qty: 1 }, /unknown field "qty"/],
  ])('rejects %s with a readable ValidationError and writes nothing', async (_label, change, message) => {
    const { id: itemId } = await item(5);
    const input = change !== null && typeof change === 'object' ? { itemId, quantity: 1, idempotencyKey: 'v', ...change } : change;
    const error = await caught(() => engine().reserve(input as never));
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'VALIDATION_ERROR', status: 400 });
    expect(error.message).toMatch(message);
    expect(await t.count('reservations')).toBe(0);
    expect(await t.count('idempotency_requests')).toBe(0);
    expect(await t.count('outbox')).toBe(0);
    expect((await engine().getItem(itemId))?.availableQuantity).toBe(5);
  });

  it('accepts the boundaries: 64-character key, quantity 1,000,000, ttl 30 days', async () => {
    const { id: itemId } = await item(1_000_000);
    const { reservation } = await engine().reserve({ itemId, quantity: 1_000_000, idempotencyKey: `${'~'.repeat(32)} ${'!'.repeat(31)}`, ttlSeconds: 2_592_000 });
    expect(reservation.idempotencyKey).toHaveLength(64);
    expect((await engine().getItem(itemId))?.availableQuantity).toBe(0);
  });
});
