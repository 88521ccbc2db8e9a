import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, it, vi } from 'vitest';
import { type OutboxEvent, ReservationEngine, runOutboxBatch } from '../src/index.js';
import { describeError, MAX_ERROR_LENGTH } from '../src/outbox/describe-error.js';
import { compiledScript } from './support/compile.js';
import { describeEachDialect, describeEachServerDialect, unique } from './support/db.js';

const T0 = new Date('2026-07-01T00:00:00.000Z');
const at = (ms: number) => new Date(T0.getTime() + ms);

/** Reservations of quantities `quantities`, in order: one reservation.created event each. */
async function eventsOf(db: any, quantities: number[]) {
  const engine = new ReservationEngine({ db, clock: () => T0 });
  const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 10_000 });
  for (const quantity of quantities) await engine.reserve({ itemId: item.id, quantity, idempotencyKey: unique() });
}

it('describeError stores any thrown value: bounded, well-formed, without NUL, never throwing', () => {
  const hostile = Object.defineProperty(new Error('x'), 'name', {
    get() {
      throw new Error('getter');
    },
  });
  expect(describeError(new TypeError('boom'))).toBe('TypeError: boom');
  expect(describeError('plain')).toBe('plain');
  expect(describeError(null)).toBe('null');
  expect(describeError(42n)).toBe('42');
  expect(describeError(Symbol('s'))).toBe('Symbol(s)');
  expect(describeError(Object.create(null))).toBe('A thrown Object that cannot be turned into text');
  expect(describeError(hostile)).toBe('A thrown Error that cannot be turned into text');
  expect(describeError('a\u0000b\uD800c')).toBe('a\\0b\uFFFDc');
  const huge = describeError('𝄞'.repeat(1_000_000));
  expect(huge.length).toBeLessThanOrEqual(MAX_ERROR_LENGTH);
  expect(huge.endsWith('…')).toBe(true);
  expect(/\p{Cs}/u.test(huge)).toBe(false);
});

describeEachDialect('poison outbox events', (t) => {
  const row = (id: string) => t.db.selectFrom('outbox').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  it.each([
    ['a null-prototype object', () => Object.create(null)],
    ['an error with NUL and a lone surrogate', () => new Error('bad\u0000byte \uDC00 here')],
    ['a 1 MB message', () => new Error('x'.repeat(1_000_000))],
    ['null', () => null],
    ['undefined', () => undefined],
    ['a number', () => 42],
  ])('a handler that throws %s: stored safely, the event retried, then dead-lettered', async (_label, thrown) => {
    await eventsOf(t.db, [1]);
    const first = await runOutboxBatch({ db: t.db, now: at(1), maxAttempts: 2, baseDelayMs: 1000, handler: () => Promise.reject(thrown()) });
    expect(first).toEqual({ processed: 0, failed: 1, deadLettered: 0, released: 0 });
    const stored = await t.db.selectFrom('outbox').selectAll().executeTakeFirstOrThrow();
    expect(typeof stored.last_error).toBe('string');
    expect(stored.last_error.length).toBeGreaterThan(0);
    expect(stored.last_error.length).toBeLessThanOrEqual(MAX_ERROR_LENGTH);
    expect(stored.last_error).not.toContain('\u0000');
    const second = await runOutboxBatch({ db: t.db, now: at(60_000), maxAttempts: 2, handler: () => Promise.reject(thrown()) });
    expect(second).toEqual({ processed: 0, failed: 0, deadLettered: 1, released: 0 });
  });

  it('a handler that never settles is aborted after handlerTimeoutMs; its neighbours are delivered', async () => {
    await eventsOf(t.db, [1, 2, 3]);
    const delivered: number[] = [];
    let abortedWith: unknown;
    const handler = (event: OutboxEvent, { signal }: { signal: AbortSignal }) => {
      if (event.payload.quantity !== 2) return void delivered.push(event.payload.quantity);
      signal.addEventListener('abort', () => (abortedWith = signal.reason));
      return new Promise(() => {}); // hangs forever
    };
    const result = await runOutboxBatch({ db: t.db, now: at(1), handlerTimeoutMs: 150, leaseMs: 5_000, maxAttempts: 2, handler });
    expect(result).toEqual({ processed: 2, failed: 1, deadLettered: 0, released: 0 });
    expect(delivered).toEqual([1, 3]);
    expect(abortedWith).toMatchObject({ name: 'HandlerTimeoutError' });
    const hung = await t.db.selectFrom('outbox').selectAll().where('processed_at', 'is', null).executeTakeFirstOrThrow();
    expect(hung.last_error).toMatch(/^HandlerTimeoutError: The handler did not settle within handlerTimeoutMs \(150 ms\)$/);
    // Its second and last attempt hangs too: dead-lettered, the others untouched.
    expect(await runOutboxBatch({ db: t.db, now: at(3_600_000), handlerTimeoutMs: 150, leaseMs: 5_000, maxAttempts: 2, handler })).toEqual({
      processed: 0,
      failed: 0,
      deadLettered: 1,
      released: 0,
    });
    expect(delivered).toEqual([1, 3]);
  });

  it('records each outcome as it happens: an event delivered before a failure is not delivered again', async () => {
    await eventsOf(t.db, [1, 2]);
    let calls = 0;
    await runOutboxBatch({
      db: t.db,
      now: at(1),
      handler: () => {
        if (++calls === 2) throw new Error('second fails');
      },
    });
    const rows = await t.db.selectFrom('outbox').selectAll().orderBy('id').execute();
    expect(rows.map((r) => [r.processed_at !== null, r.attempts])).toEqual([
      [true, 1],
      [false, 1],
    ]);
  });

  it('an event whose claims never reported back uses up its attempts and is dead-lettered at the claim', async () => {
    await eventsOf(t.db, [1, 2]);
    const poison = await t.db.selectFrom('outbox').select('id').orderBy('id').executeTakeFirstOrThrow();
    // As after three claims by workers that died before recording anything: lease over, no outcome.
    await t.db.updateTable('outbox').set({ attempts: 3, locked_until: at(0), available_at: at(0) }).where('id', '=', poison.id).execute();
    const seen: string[] = [];
    expect(await runOutboxBatch({ db: t.db, now: at(1), maxAttempts: 3, handler: (e) => void seen.push(e.id) })).toEqual({
      processed: 1,
      failed: 0,
      deadLettered: 1,
      released: 0,
    });
    expect(seen).not.toContain(String(poison.id));
    expect(await row(String(poison.id))).toMatchObject({ attempts: 3, available_at: null, locked_until: null, processed_at: null });
    expect((await row(String(poison.id))).dead_lettered_at).toEqual(at(1));
    expect((await row(String(poison.id))).last_error).toMatch(/^Gave up after 3 attempts: the last delivery never reported back/);
  });

  it('a suspect event (its last lease ran out with no outcome) is delivered alone, ahead of the others', async () => {
    await eventsOf(t.db, [1, 2, 3]);
    const suspect = await t.db.selectFrom('outbox').select('id').orderBy('id').executeTakeFirstOrThrow();
    await t.db.updateTable('outbox').set({ attempts: 1, locked_until: at(0), available_at: at(0) }).where('id', '=', suspect.id).execute();
    const batches: number[][] = [];
    for (let i = 0; i < 3; i++) {
      const seen: number[] = [];
      await runOutboxBatch({ db: t.db, now: at(1), handler: (e) => void seen.push(e.payload.quantity) });
      batches.push(seen);
    }
    expect(batches).toEqual([[1], [2, 3], []]);
  });

  it('hands back undelivered events when the lease has no room for another full delivery, without counting an attempt', async () => {
    await eventsOf(t.db, [1, 2, 3]);
    // Each delivery takes 600 ms of a 2,000 ms lease: the third would start with 800 ms left,
    // less than one handler timeout (1,000 ms). On a clock of the test's own (performance.now(),
    // which the lease is measured with), moved on by each delivery: a real 600 ms pause could
    // last longer on a busy machine, and leave no room for the second delivery either.
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const result = await runOutboxBatch({
        db: t.db,
        now: at(1),
        leaseMs: 2000,
        handlerTimeoutMs: 1000,
        handler: async () => void vi.advanceTimersByTime(600),
      });
      expect(result).toEqual({ processed: 2, failed: 0, deadLettered: 0, released: 1 });
    } finally {
      vi.useRealTimers();
    }
    const rows = await t.db.selectFrom('outbox').selectAll().orderBy('id').execute();
    expect(rows.map((r) => [r.attempts, r.locked_until, r.processed_at === null])).toEqual([
      [1, null, false],
      [1, null, false],
      [0, null, true],
    ]);
    expect(rows[2]!.available_at).toEqual(at(1));
  });

  it('delivers every event when the lease has room for each (the same batch, 300 ms a delivery)', async () => {
    await eventsOf(t.db, [1, 2, 3]);
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const result = await runOutboxBatch({ db: t.db, now: at(1), leaseMs: 2000, handlerTimeoutMs: 1000, handler: async () => void vi.advanceTimersByTime(300) });
      expect(result).toEqual({ processed: 3, failed: 0, deadLettered: 0, released: 0 });
    } finally {
      vi.useRealTimers();
    }
  });

  it('a handler that first asks for its signal after the timeout gets one that is aborted already', async () => {
    await eventsOf(t.db, [1]);
    let aborted: boolean | undefined;
    const result = await runOutboxBatch({
      db: t.db,
      now: at(1),
      handlerTimeoutMs: 50,
      handler: async (_event, context) => {
        await new Promise((resolve) => setTimeout(resolve, 200));
        aborted = context.signal.aborted;
      },
    });
    expect(result).toMatchObject({ failed: 1 });
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(aborted).toBe(true);
  });
});

describeEachServerDialect('a poison event that crashes its worker process', (t) => {
  it('is dead-lettered after maxAttempts crashes; every other event is delivered, none stuck', { timeout: 60_000 }, async () => {
    // Six events; the fourth crashes the worker (SIGKILL) whenever it is delivered.
    await eventsOf(t.db, [1, 2, 3, 7, 5, 6]);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'outbox-crash-'));
    const log = path.join(dir, 'delivered.log');
    writeFileSync(log, '');
    // Compiled once: through tsx, each of the dozen starts would compile src/ again.
    const worker = await compiledScript('test/fixtures/outbox-worker.ts');
    const run = (now: Date) =>
      new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve) => {
        const child = execFile(
          process.execPath,
          [worker],
          { env: { ...process.env, DATABASE_URL: t.url, NOW: now.toISOString(), LOG_FILE: log, POISON_QUANTITY: '7', MAX_ATTEMPTS: '3' }, timeout: 30_000 },
          (_error, stdout) => resolve({ code: child.exitCode, signal: child.signalCode, stdout }),
        );
      });
    try {
      const runs: unknown[] = [];
      const idle = { processed: 0, failed: 0, deadLettered: 0, released: 0 };
      // Each run starts after the previous worker's lease (60 s) ran out; until two find nothing.
      for (let i = 0; i < 20 && !(runs.length >= 2 && runs.slice(-2).every((r) => JSON.stringify(r) === JSON.stringify(idle))); i++) {
        const outcome = await run(at(1 + i * 61_000));
        runs.push(outcome.signal ?? JSON.parse(outcome.stdout));
      }
      // The poison event crashes its worker on each of its three attempts, then is dead-lettered at
      // the next claim; the runs after that find nothing left to do.
      expect(runs.filter((r) => r === 'SIGKILL')).toHaveLength(3);
      expect(runs.slice(-2)).toEqual([idle, idle]);
      const delivered = readFileSync(log, 'utf8').split('\n').filter(Boolean);
      const rows = await t.db.selectFrom('outbox').selectAll().orderBy('id').execute();
      const poison = rows[3]!;
      expect(poison).toMatchObject({ attempts: 3, processed_at: null, available_at: null });
      expect(poison.dead_lettered_at).not.toBeNull();
      expect(delivered).not.toContain(String(poison.id));
      const others = rows.filter((r) => r !== poison);
      expect(others.every((r) => r.processed_at !== null && r.dead_lettered_at === null)).toBe(true);
      // Every other event delivered. A crash can cost only the acknowledgements still in flight
      // (the events delivered just before the poison, in the first run): at most one duplicate
      // each, never one per crash.
      for (const r of others) expect(delivered.filter((id) => id === String(r.id)).length).toBeGreaterThanOrEqual(1);
      for (const r of others) expect(delivered.filter((id) => id === String(r.id)).length).toBeLessThanOrEqual(2);
      expect(delivered.length - others.length).toBeLessThanOrEqual(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
