import { expect, it } from 'vitest';
import { ConfigurationError, type OutboxEvent, ReservationEngine, runOutboxBatch } from '../src/index.js';
import { retryDelayMs } from '../src/outbox/run-outbox-batch.js';
import { caught, describeEachDialect, unique } from './support/db.js';

it('retryDelayMs: min(max, base·2^(attempt−1)) × a factor in [0.5, 1]', () => {
  expect(retryDelayMs(1, 1000, 300_000, () => 0)).toBe(500);
  expect(retryDelayMs(1, 1000, 300_000, () => 1)).toBe(1000);
  expect(retryDelayMs(4, 1000, 300_000, () => 1)).toBe(8000);
  expect(retryDelayMs(4, 1000, 300_000, () => 0)).toBe(4000);
  expect(retryDelayMs(20, 1000, 300_000, () => 1)).toBe(300_000);
  expect(retryDelayMs(20, 1000, 300_000, () => 0)).toBe(150_000);
});

describeEachDialect('runOutboxBatch', (t) => {
  const T0 = new Date('2026-07-01T00:00:00.000Z');
  const at = (ms: number) => new Date(T0.getTime() + ms);
  const engine = () => new ReservationEngine({ db: t.db, clock: () => T0 });

  /** Writes `n` reservation.created events, in order. */
  const events = async (n: number) => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 1000 });
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push((await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() })).reservation.id);
    return { item, ids };
  };
  const row = async () => t.db.selectFrom('outbox').selectAll().executeTakeFirstOrThrow();
  const failing = () => {
    throw new Error('broker down');
  };

  it('delivers due events in order, with the parsed payload, then marks them processed', async () => {
    const { item, ids } = await events(3);
    const seen: OutboxEvent[] = [];
    expect(await runOutboxBatch({ db: t.db, now: at(1), handler: (e) => void seen.push(e) })).toEqual({ processed: 3, failed: 0, deadLettered: 0, released: 0 });
    expect(seen.map((e) => (e.type === 'item.written_off' ? undefined : e.payload.reservationId))).toEqual(ids);
    expect(seen[0]).toEqual({
      id: expect.stringMatching(/^\d+$/),
      type: 'reservation.created',
      attempts: 1,
      createdAt: T0,
      payload: { reservationId: ids[0], itemId: item.id, quantity: 1, lines: [{ itemId: item.id, quantity: 1 }], status: 'PENDING', expiresAt: at(900_000).toISOString(), occurredAt: T0.toISOString() },
    });
    expect(new Set(seen.map((e) => e.id)).size).toBe(3);
    const rows = await t.db.selectFrom('outbox').selectAll().execute();
    expect(rows.every((r) => r.processed_at?.getTime() === at(1).getTime() && r.available_at === null && r.dead_lettered_at === null)).toBe(true);
    expect(await runOutboxBatch({ db: t.db, now: at(2), handler: () => expect.unreachable() })).toEqual({ processed: 0, failed: 0, deadLettered: 0, released: 0 });
  });

  it('delivers nothing that is not due yet', async () => {
    await events(1);
    expect(await runOutboxBatch({ db: t.db, now: at(-1), handler: () => expect.unreachable() })).toEqual({ processed: 0, failed: 0, deadLettered: 0, released: 0 });
  });

  it('claims at most `limit` events per call', async () => {
    await events(5);
    const seen: string[] = [];
    expect(await runOutboxBatch({ db: t.db, now: at(1), limit: 2, handler: (e) => void seen.push(e.id) })).toMatchObject({ processed: 2 });
    expect(await runOutboxBatch({ db: t.db, now: at(1), limit: 2, handler: (e) => void seen.push(e.id) })).toMatchObject({ processed: 2 });
    expect(await runOutboxBatch({ db: t.db, now: at(1), limit: 2, handler: (e) => void seen.push(e.id) })).toMatchObject({ processed: 1 });
    expect(new Set(seen).size).toBe(5);
  });

  it('counts every claimed event once: processed, failed or dead-lettered', async () => {
    await events(4);
    let n = 0;
    const result = await runOutboxBatch({
      db: t.db,
      now: at(1),
      maxAttempts: 1,
      handler: () => {
        if (n++ % 2) throw new Error('odd');
      },
    });
    expect(result).toEqual({ processed: 2, failed: 0, deadLettered: 2, released: 0 });
  });

  it('records a failure and retries after min(maxDelay, base·2^(n−1)) × [0.5, 1]', async () => {
    await events(1);
    const base = 1000;
    const max = 5000;
    let now = at(0);
    for (let attempt = 1; attempt <= 5; attempt++) {
      const result = await runOutboxBatch({ db: t.db, now, baseDelayMs: base, maxDelayMs: max, handler: failing });
      expect(result).toEqual({ processed: 0, failed: 1, deadLettered: 0, released: 0 });
      const r = await row();
      expect(r.attempts).toBe(attempt);
      expect(r.last_error).toBe('Error: broker down');
      expect(r.locked_until).toBeNull();
      const delay = r.available_at!.getTime() - now.getTime();
      const ceiling = Math.min(max, base * 2 ** (attempt - 1));
      expect(delay).toBeGreaterThanOrEqual(ceiling * 0.5);
      expect(delay).toBeLessThanOrEqual(ceiling);
      // Not due a millisecond early...
      expect(await runOutboxBatch({ db: t.db, now: new Date(r.available_at!.getTime() - 1), handler: () => expect.unreachable() })).toMatchObject({ processed: 0, failed: 0 });
      now = r.available_at!;
    }
    // ...and delivered when due, as attempt 6.
    const seen: OutboxEvent[] = [];
    expect(await runOutboxBatch({ db: t.db, now, handler: (e) => void seen.push(e) })).toMatchObject({ processed: 1 });
    expect(seen[0]?.attempts).toBe(6);
    expect((await row()).last_error).toBeNull();
  });

  it('spreads retries with jitter', async () => {
    await events(20);
    await runOutboxBatch({ db: t.db, now: at(0), baseDelayMs: 100_000, handler: failing });
    const delays = (await t.db.selectFrom('outbox').select('available_at').execute()).map((r) => r.available_at!.getTime());
    expect(new Set(delays).size).toBeGreaterThan(10);
  });

  it('dead-letters after maxAttempts failures and never delivers it again', async () => {
    await events(1);
    let now = at(0);
    const results = [];
    for (let i = 0; i < 3; i++) {
      results.push(await runOutboxBatch({ db: t.db, now, maxAttempts: 3, baseDelayMs: 10, handler: () => Promise.reject('plain string') }));
      now = new Date(now.getTime() + 60_000);
    }
    expect(results).toEqual([
      { processed: 0, failed: 1, deadLettered: 0, released: 0 },
      { processed: 0, failed: 1, deadLettered: 0, released: 0 },
      { processed: 0, failed: 0, deadLettered: 1, released: 0 },
    ]);
    const r = await row();
    expect(r).toMatchObject({ attempts: 3, available_at: null, processed_at: null, last_error: 'plain string' });
    expect(r.dead_lettered_at).toEqual(at(120_000));
    expect(await runOutboxBatch({ db: t.db, now: at(365 * 86_400_000), handler: () => expect.unreachable() })).toMatchObject({ processed: 0 });
  });

  it("a crashed worker's events come back when its lease ends, and its late acknowledgement changes nothing", async () => {
    await events(2);
    let finishCrashed!: () => void;
    const stuck = new Promise<void>((resolve) => {
      finishCrashed = resolve;
    });
    let crashedCalls = 0;
    // Worker A claims both events and hangs in the handler (as good as dead).
    const crashed = runOutboxBatch({
      db: t.db,
      now: at(0),
      leaseMs: 10_000,
      handler: () => {
        crashedCalls++;
        return stuck;
      },
    });
    await expect.poll(() => crashedCalls).toBe(1);
    expect((await t.db.selectFrom('outbox').select('locked_until').execute()).map((r) => r.locked_until)).toEqual([at(10_000), at(10_000)]);

    // While the lease holds, nobody else gets them.
    expect(await runOutboxBatch({ db: t.db, now: at(9_999), handler: () => expect.unreachable() })).toMatchObject({ processed: 0, failed: 0 });

    // After it, worker B gets them as attempt 2 and fails them. Their lease ran out with no
    // outcome (either may be what killed A), so each is delivered alone.
    const attempts: number[] = [];
    for (let i = 0; i < 2; i++) {
      const b = await runOutboxBatch({ db: t.db, now: at(10_000), baseDelayMs: 60_000, handler: (e) => (attempts.push(e.attempts), failing()) });
      expect(b).toEqual({ processed: 0, failed: 1, deadLettered: 0, released: 0 });
    }
    expect(attempts).toEqual([2, 2]);

    // A wakes up and acknowledges: its lease is gone, so B's retry schedule stands.
    finishCrashed();
    expect(await crashed).toMatchObject({ processed: 2 });
    const rows = await t.db.selectFrom('outbox').selectAll().execute();
    expect(rows.every((r) => r.processed_at === null && r.available_at !== null && r.last_error === 'Error: broker down')).toBe(true);
  });

  it.each([
    ['no handler', { handler: undefined }, /handler: must be a function/],
    ['limit 0', { limit: 0 }, /limit: must be positive/],
    ['limit 10,001', { limit: 10_001 }, /limit: must be at most 10,000/],
    ['maxAttempts 0', { maxAttempts: 0 }, /maxAttempts:/],
    ['negative baseDelayMs', { baseDelayMs: -1 }, /baseDelayMs:/],
    ['maxDelayMs below baseDelayMs', { baseDelayMs: 5000, maxDelayMs: 1000 }, /maxDelayMs: must not be less than baseDelayMs/],
    ['leaseMs 0', { leaseMs: 0 }, /leaseMs:/],
    ['a numeric now', { now: 5 }, /now: must be a Date, got a number/],
    ['an unknown option', { retries: 3 }, /unknown field "retries"/],
  ])('rejects %s and claims nothing', async (_label, change, message) => {
    await events(1);
    const error = await caught(() => runOutboxBatch({ db: t.db, handler: () => {}, now: at(1), ...change } as never));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(error).toMatchObject({ code: 'INVALID_CONFIGURATION', status: 500 });
    expect(error.message).toMatch(message);
    expect(await row()).toMatchObject({ attempts: 0, locked_until: null });
  });
});
