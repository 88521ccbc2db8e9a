import { expect, it } from 'vitest';
import { ConfigurationError, ReservationEngine, expireBatch, getBacklog, listDeadLetters, purgeBatch, retryDeadLetters, runOutboxBatch } from '../src/index.js';
import { uuidv7, uuidv7LowerBound } from '../src/uuid.js';
import { caught, describeEachDialect, unique } from './support/db.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

it('uuidv7LowerBound sorts before every id of its millisecond and after every earlier one', () => {
  const ms = 1_800_000_000_000;
  const bound = uuidv7LowerBound(ms);
  for (let i = 0; i < 200; i++) {
    expect(uuidv7(ms) > bound).toBe(true);
    expect(uuidv7(ms - 1) < bound).toBe(true);
  }
});

describeEachDialect('retention, dead letters and backlog', (t) => {
  const T0 = new Date('2026-10-01T00:00:00.000Z');
  const at = (ms: number) => new Date(T0.getTime() + ms);
  const engineAt = (ms: number) => new ReservationEngine({ db: t.db, clock: () => at(ms), defaultTtlSeconds: 600 });

  it('purgeBatch deletes delivered events and keys past their retention, keeps what is pending, dead or young', async () => {
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    const old = await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'old' });
    await engineAt(0).confirm(old.reservation.id);
    const pendingOld = await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'pending-old', ttlSeconds: 30 * 24 * 3600 });
    await engineAt(0).restock({ itemId: item.id, quantity: 1, idempotencyKey: 'restock-old' });
    // Deliver everything so far at T0, then make one more event and dead-letter it.
    expect(await runOutboxBatch({ db: t.db, now: at(1), handler: () => {} })).toMatchObject({ processed: 3 });
    const young = await engineAt(10 * DAY).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'young' });
    await engineAt(10 * DAY).cancel(young.reservation.id);
    await runOutboxBatch({ db: t.db, now: at(10 * DAY), maxAttempts: 1, handler: () => Promise.reject(new Error('down')) });

    const result = await purgeBatch({ db: t.db, now: at(10 * DAY + HOUR) });
    // Events delivered at T0 are 10 days old (> 7); the dead letters stay.
    expect(result).toEqual({ outboxEvents: 3, idempotencyKeys: 1, restockKeys: 1, reservations: 0 });
    expect(await t.count('outbox')).toBe(2);
    // The PENDING reservation's key stays, so a retry still replays it.
    expect((await engineAt(10 * DAY).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'pending-old', ttlSeconds: 30 * 24 * 3600 })).reservation.id).toBe(pendingOld.reservation.id);
    // A key past its retention is a new request: a new reservation.
    const reused = await engineAt(10 * DAY).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'old' });
    expect(reused.replayed).toBe(false);
    expect(reused.reservation.id).not.toBe(old.reservation.id);
    // Nothing else is due for purging.
    expect(await purgeBatch({ db: t.db, now: at(10 * DAY + HOUR) })).toEqual({ outboxEvents: 0, idempotencyKeys: 0, restockKeys: 0, reservations: 0 });
  });

  it('purges finished reservations only when asked, with their keys, never PENDING ones', async () => {
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    const done = await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'done' });
    await engineAt(0).confirm(done.reservation.id);
    const pending = await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'still', ttlSeconds: 30 * 24 * 3600 });
    const recent = await engineAt(40 * DAY).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'recent' });
    await engineAt(40 * DAY).cancel(recent.reservation.id);
    const later = at(41 * DAY);
    expect((await purgeBatch({ db: t.db, now: later })).reservations).toBe(0);
    expect(await purgeBatch({ db: t.db, now: later, idempotencyKeysMs: 0, finishedReservationsMs: 30 * DAY })).toMatchObject({ reservations: 1 });
    expect(await engineAt(41 * DAY).getReservation(done.reservation.id)).toBeUndefined();
    expect((await engineAt(41 * DAY).getReservation(pending.reservation.id))?.status).toBe('PENDING');
    expect((await engineAt(41 * DAY).getReservation(recent.reservation.id))?.status).toBe('CANCELLED');
    expect(await caught(() => purgeBatch({ db: t.db, finishedReservationsMs: HOUR }))).toBeInstanceOf(ConfigurationError);
  });

  it("purging an old finished reservation never takes the key a new, PENDING reservation reuses", async () => {
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    const first = await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'reused' });
    await engineAt(0).confirm(first.reservation.id);
    expect((await purgeBatch({ db: t.db, now: at(2 * DAY) })).idempotencyKeys).toBe(1);
    // The key, past its retention, is used again: a new reservation, still PENDING.
    const second = await engineAt(40 * DAY).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'reused', ttlSeconds: 3600 });
    expect(second.replayed).toBe(false);
    expect(await purgeBatch({ db: t.db, now: at(40 * DAY), finishedReservationsMs: 30 * DAY })).toMatchObject({ reservations: 1, idempotencyKeys: 0 });
    // The new reservation's key survived: a retry replays it, no second hold.
    expect(await engineAt(40 * DAY).reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'reused', ttlSeconds: 3600 })).toEqual({ reservation: second.reservation, replayed: true });
    expect(await engineAt(40 * DAY).getItem(item.id)).toMatchObject({ availableQuantity: 98, heldQuantity: 1 });
  });

  it('purgeBatch deletes at most `limit` rows of each kind per call', async () => {
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    for (let i = 0; i < 5; i++) await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: `k${i}` });
    await runOutboxBatch({ db: t.db, now: at(1), handler: () => {} });
    expect((await purgeBatch({ db: t.db, now: at(30 * DAY), limit: 2 })).outboxEvents).toBe(2);
    expect((await purgeBatch({ db: t.db, now: at(30 * DAY), limit: 2 })).outboxEvents).toBe(2);
    expect((await purgeBatch({ db: t.db, now: at(30 * DAY), limit: 2 })).outboxEvents).toBe(1);
  });

  it('keeps the tables bounded under a steady load when it runs with the other jobs', async () => {
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 1_000_000 });
    const sizes: number[] = [];
    for (let hour = 0; hour < 60; hour++) {
      const engine = engineAt(hour * HOUR);
      for (let i = 0; i < 5; i++) {
        const { reservation } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `h${hour}-${i}` });
        if (i % 2) await engine.confirm(reservation.id);
      }
      await expireBatch({ db: t.db, now: at(hour * HOUR) });
      await runOutboxBatch({ db: t.db, now: at(hour * HOUR), handler: () => {} });
      await purgeBatch({ db: t.db, now: at(hour * HOUR), processedEventsMs: 6 * HOUR, idempotencyKeysMs: 6 * HOUR, finishedReservationsMs: 12 * HOUR });
      sizes.push((await t.count('outbox')) + (await t.count('idempotency_requests')) + (await t.count('reservations')));
    }
    // Growth stops once the retention periods are reached: the last day is as big as its first hours.
    expect(Math.max(...sizes.slice(20))).toBeLessThanOrEqual(Math.max(...sizes.slice(12, 20)) + 5);
    expect(sizes.at(-1)).toBeLessThan(300);
  });

  it('lists dead letters with their last error, pages through them, and re-arms them by id or all', async () => {
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    for (let i = 0; i < 3; i++) await engineAt(0).reserve({ itemId: item.id, quantity: 1, idempotencyKey: `d${i}` });
    await runOutboxBatch({ db: t.db, now: at(1), maxAttempts: 1, handler: () => Promise.reject(new Error('broker rejected')) });
    const first = await listDeadLetters({ db: t.db, limit: 2 });
    expect(first.deadLetters).toHaveLength(2);
    expect(first.deadLetters[0]).toMatchObject({ type: 'reservation.created', attempts: 1, lastError: 'Error: broker rejected', deadLetteredAt: at(1) });
    expect(first.deadLetters[0]!.payload).toMatchObject({ itemId: item.id, status: 'PENDING' });
    const second = await listDeadLetters({ db: t.db, limit: 2, after: first.next });
    expect(second).toMatchObject({ next: undefined });
    expect(second.deadLetters).toHaveLength(1);
    expect(await getBacklog({ db: t.db, now: at(2) })).toMatchObject({ deadLetters: 3, outboxPending: 0 });

    expect(await retryDeadLetters({ db: t.db, ids: [first.deadLetters[0]!.id, '999999'], now: at(2) })).toEqual({ retried: 1 });
    const delivered: string[] = [];
    expect(await runOutboxBatch({ db: t.db, now: at(3), handler: (e) => void delivered.push(e.id) })).toMatchObject({ processed: 1 });
    expect(delivered).toEqual([first.deadLetters[0]!.id]);
    expect(await retryDeadLetters({ db: t.db, all: true, now: at(3) })).toEqual({ retried: 2 });
    expect((await listDeadLetters({ db: t.db })).deadLetters).toEqual([]);
    expect(await caught(() => retryDeadLetters({ db: t.db }))).toBeInstanceOf(ConfigurationError);
    expect(await caught(() => retryDeadLetters({ db: t.db, ids: ["1' or 1=1"] }))).toBeInstanceOf(ConfigurationError);
  });

  it('getBacklog: pending and due events, lag, dead letters and the expiry backlog', async () => {
    expect(await getBacklog({ db: t.db, now: at(0) })).toEqual({ outboxPending: 0, outboxDue: 0, outboxLagMs: 0, deadLetters: 0, expiryBacklog: 0 });
    const item = await engineAt(0).createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    for (let i = 0; i < 3; i++) await engineAt(i * 1000).reserve({ itemId: item.id, quantity: 1, idempotencyKey: `b${i}`, ttlSeconds: 60 });
    expect(await getBacklog({ db: t.db, now: at(5_000) })).toEqual({ outboxPending: 3, outboxDue: 3, outboxLagMs: 5_000, deadLetters: 0, expiryBacklog: 0 });
    // A worker leases one: pending, not due.
    await runOutboxBatch({ db: t.db, now: at(5_000), limit: 1, handler: () => Promise.reject(new Error('x')), baseDelayMs: 600_000, maxDelayMs: 600_000 });
    expect(await getBacklog({ db: t.db, now: at(70_000) })).toEqual({ outboxPending: 3, outboxDue: 2, outboxLagMs: 69_000, deadLetters: 0, expiryBacklog: 3 });
  });
});
