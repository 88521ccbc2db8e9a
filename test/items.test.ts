import { expect, it } from 'vitest';
import { ConfigurationError, DuplicateSkuError, MAX_AVAILABLE_QUANTITY, NotFoundError, ReservationEngine, ValidationError } from '../src/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';

describeEachDialect('items', (t) => {
  const engine = () => new ReservationEngine({ db: t.db });

  it('creates an item and reads it back with UTC millisecond timestamps', async () => {
    const at = new Date('2026-01-02T03:04:05.678Z');
    const e = new ReservationEngine({ db: t.db, clock: () => at });
    const item = await e.createItem({ sku: 'SKU-1', name: 'Blue mug ☕', availableQuantity: 7 });
    expect(item).toEqual({ id: expect.any(Number), sku: 'SKU-1', name: 'Blue mug ☕', availableQuantity: 7, heldQuantity: 0, createdAt: at, updatedAt: at });
    expect(await e.getItem(item.id)).toEqual(item);
  });

  it('returns undefined for an unknown item id', async () => {
    expect(await engine().getItem(987654)).toBeUndefined();
  });

  it('rejects a duplicate SKU with a 409 and keeps the first item', async () => {
    const first = await engine().createItem({ sku: 'DUP', name: 'one', availableQuantity: 1 });
    const error = await caught(() => engine().createItem({ sku: 'DUP', name: 'two', availableQuantity: 2 }));
    expect(error).toBeInstanceOf(DuplicateSkuError);
    expect(error).toMatchObject({ code: 'DUPLICATE_SKU', status: 409 });
    expect(await t.count('items')).toBe(1);
    expect((await engine().getItem(first.id))?.name).toBe('one');
  });

  it('treats SKUs that differ only in case as different', async () => {
    await engine().createItem({ sku: 'abc', name: 'lower', availableQuantity: 1 });
    await engine().createItem({ sku: 'ABC', name: 'upper', availableQuantity: 1 });
    expect(await t.count('items')).toBe(2);
  });

  it('restocks: adds to the available quantity and bumps updatedAt', async () => {
    let now = new Date('2026-01-01T00:00:00.000Z');
    const e = new ReservationEngine({ db: t.db, clock: () => now });
    const item = await e.createItem({ sku: unique(), name: 'x', availableQuantity: 3 });
    now = new Date('2026-01-01T00:00:01.500Z');
    const restocked = await e.restock({ itemId: item.id, quantity: 4 });
    expect(restocked).toMatchObject({ id: item.id, availableQuantity: 7, createdAt: item.createdAt, updatedAt: now });
  });

  it('restock of an unknown item is a NotFoundError', async () => {
    const error = await caught(() => engine().restock({ itemId: 424242, quantity: 1 }));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ code: 'ITEM_NOT_FOUND', status: 404 });
  });

  it('refuses a restock that would overflow the stock column, changing nothing', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: MAX_AVAILABLE_QUANTITY - 10 });
    const error = await caught(() => engine().restock({ itemId: item.id, quantity: 11 }));
    expect(error).toBeInstanceOf(ValidationError);
    expect((await engine().getItem(item.id))?.availableQuantity).toBe(MAX_AVAILABLE_QUANTITY - 10);
    expect((await engine().restock({ itemId: item.id, quantity: 10 })).availableQuantity).toBe(MAX_AVAILABLE_QUANTITY);
  });

  it.each([
    ['null', null, /input: must be an object, got null/],
    ['missing sku', { name: 'n', availableQuantity: 1 }, /sku: is required/],
    ['empty sku', { sku: '', name: 'n', availableQuantity: 1 }, /sku: must not be empty/],
    ['padded sku', { sku: ' a', name: 'n', availableQuantity: 1 }, /sku: must not start or end with whitespace/],
    ['long name', { sku: 's', name: 'n'.repeat(256), availableQuantity: 1 }, /name: must be at most 255 characters/],
    ['negative stock', { sku: 's', name: 'n', availableQuantity: -1 }, /availableQuantity: must not be negative/],
    ['fractional stock', { sku: 's', name: 'n', availableQuantity: 1.5 }, /availableQuantity: must be an integer/],
    ['string stock', { sku: 's', name: 'n', availableQuantity: '5' }, /availableQuantity: must be a number, got a string/],
    ['unknown field', { sku: 's', name: 'n', availableQuantity: 1, price: 3 }, /unknown field "price"/],
  ])('createItem rejects %s with a readable ValidationError and writes nothing', async (_label, input, message) => {
    const error = await caught(() => engine().createItem(input as never));
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'VALIDATION_ERROR', status: 400 });
    expect(error.message).toMatch(message);
    expect(await t.count('items')).toBe(0);
  });

  it.each([
    ['zero quantity', { itemId: 1, quantity: 0 }, /quantity: must be positive/],
    ['too much', { itemId: 1, quantity: 1_000_001 }, /quantity: must be at most 1,000,000/],
    ['string id', { itemId: '1', quantity: 1 }, /itemId: must be a number, got a string/],
  ])('restock rejects %s', async (_label, input, message) => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 1 });
    const error = await caught(() => engine().restock(input as never));
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toMatch(message);
    expect((await engine().getItem(item.id))?.availableQuantity).toBe(1);
  });

  it.each([[0], [-3], [1.5], ['7'], [null], [Number.NaN]])('getItem(%s) is a ValidationError', async (id) => {
    expect(await caught(() => engine().getItem(id as never))).toBeInstanceOf(ValidationError);
  });

  it('validates its own options', async () => {
    expect(() => new ReservationEngine({ db: t.db, defaultTtlSeconds: 0 })).toThrow(/defaultTtlSeconds: must be positive/);
    expect(() => new ReservationEngine({ db: {} as never })).toThrow(/db: must be a Kysely instance/);
    expect(() => new ReservationEngine(null as never)).toThrow(ConfigurationError);
    // A broken clock is the host's bug: a 500, never a 400 blamed on the client.
    const broken = new ReservationEngine({ db: t.db, clock: () => new Date('nope') });
    const error = await caught(() => broken.createItem({ sku: 's', name: 'n', availableQuantity: 1 }));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(error).toMatchObject({ code: 'INVALID_CONFIGURATION', status: 500 });
    expect(error.message).toMatch(/clock: must return a valid Date in the years 1000–9999, got an invalid Date/);
    expect(await t.count('items')).toBe(0);
  });
});
