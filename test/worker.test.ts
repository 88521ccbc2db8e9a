/**
 * startWorker: the long-running worker. It delivers and expires continuously, goes again at once
 * while there is work and backs off while idle, finishes the batch in hand on abort, and keeps
 * going through database outages (a pool pointing where nothing listens, on every dialect; a
 * dedicated server crashed and restarted under it, on the server dialects).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  ConfigurationError,
  migrateToLatest,
  type OutboxEvent,
  ReservationEngine,
  type RunningWorker,
  runOutboxBatch,
  type StartWorkerOptions,
  startWorker,
} from '../src/index.js';
import { DIALECTS, describeEachDialect, type TestDatabase, unique } from './support/db.js';
import { findMariaDbServer, findPostgresBinaries, getFreePort, startMariaDb, startPostgres, type ThrowawayServer } from './support/servers.js';

/** A logger whose every level is a spy. */
const spyLogger = () => ({ debug: vi.fn(), info: vi.fn(), warn: vi.fn(), error: vi.fn() });
type SpyLogger = ReturnType<typeof spyLogger>;

/** The messages logged at `level` that start with `prefix`. */
const logged = (logger: SpyLogger, level: keyof SpyLogger, prefix: string) => logger[level].mock.calls.filter(([message]) => String(message).startsWith(prefix));

/** Workers a test started, stopped after it whatever happened. */
const running = new Set<RunningWorker>();
function track(worker: RunningWorker): RunningWorker {
  running.add(worker);
  return worker;
}
afterEach(async () => {
  await Promise.all([...running].map((worker) => worker.stop()));
  running.clear();
});

/** An engine whose reservations are made an hour ago with the default 15-minute hold: due at once. */
const pastEngine = (db: Kysely<any>) => new ReservationEngine({ db, clock: () => new Date(Date.now() - 3_600_000) });

/** Makes `count` reservations already past their hold; returns their ids. */
async function dueReservations(db: Kysely<any>, count: number): Promise<string[]> {
  const engine = pastEngine(db);
  const item = await engine.createItem({ sku: unique('sku'), name: 'T-shirt', availableQuantity: 1000 });
  const ids: string[] = [];
  for (let i = 0; i < count; i++) ids.push((await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() })).reservation.id);
  return ids;
}

/** Collects delivered events by type. */
function recorder() {
  const delivered = { created: new Set<string>(), expired: new Set<string>() };
  const handler = (event: OutboxEvent) => {
    if (event.type === 'reservation.created') delivered.created.add(event.payload.reservationId);
    if (event.type === 'reservation.expired') delivered.expired.add(event.payload.reservationId);
  };
  return { delivered, handler };
}

/** Short pauses, for tests. */
const FAST: Partial<StartWorkerOptions> = { idleIntervalMs: 10, maxIdleIntervalMs: 50, errorIntervalMs: 10, maxErrorIntervalMs: 100 };

describeEachDialect('startWorker', (t) => {
  const expiredCount = () => t.count('reservations', (q) => q.where('status', '=', 'EXPIRED'));

  it('delivers and expires continuously: reservations made while it runs are expired and their events delivered', async () => {
    const { delivered, handler } = recorder();
    const logger = spyLogger();
    const worker = track(startWorker({ db: t.db, handler, ...FAST, logger }));
    const made: string[] = [];
    for (let round = 0; round < 3; round++) {
      made.push(...(await dueReservations(t.db, 4)));
      await expect.poll(() => delivered.expired.size, { timeout: 15_000 }).toBe(made.length);
      await sleep(60); // idle for a while: the worker must wake up for the next round by itself
    }
    expect([...delivered.created].sort()).toEqual([...made].sort());
    expect([...delivered.expired].sort()).toEqual([...made].sort());
    expect(await expiredCount()).toBe(12);

    const summary = await worker.stop();
    expect(summary).toEqual({
      outbox: { batches: expect.any(Number), failedBatches: 0, failingSince: null, processed: 24, failed: 0, deadLettered: 0, released: 0 },
      expire: { batches: expect.any(Number), failedBatches: 0, failingSince: null, expired: 12, failed: 0 },
      purge: { batches: 0, failedBatches: 0, failingSince: null, outboxEvents: 0, idempotencyKeys: 0, restockKeys: 0, reservations: 0 },
    });
    expect(Object.isFrozen(summary) && Object.isFrozen(summary.outbox)).toBe(true);
    expect(logger.error).not.toHaveBeenCalled();
    expect(logger.info).toHaveBeenCalledWith(expect.stringMatching(/^worker: stopped; outbox: processed=24 .*; expire: expired=12 failed=0$/));
  });

  it('goes again at once while batches find work, whatever the idle interval', async () => {
    await dueReservations(t.db, 25);
    const { delivered, handler } = recorder();
    const worker = track(startWorker({ db: t.db, handler, outbox: { limit: 10 }, expire: { limit: 10 }, idleIntervalMs: 60_000, maxIdleIntervalMs: 60_000 }));
    // 25 each at 10 a batch: only loops that go again at once get there before 60 s.
    await expect.poll(expiredCount, { timeout: 10_000 }).toBe(25);
    await expect.poll(() => delivered.created.size, { timeout: 10_000 }).toBe(25);
    const asked = performance.now();
    await worker.stop();
    // Stopping ends the 60-second pause (well within it, however busy the machine).
    expect(performance.now() - asked).toBeLessThan(20_000);
  });

  it('retries a failing handler, logs the retries as warnings, and keeps going', async () => {
    await dueReservations(t.db, 1);
    const attempts: number[] = [];
    const logger = spyLogger();
    const worker = track(
      startWorker({
        db: t.db,
        handler: (event) => {
          attempts.push(event.attempts);
          if (event.attempts < 3) throw new Error('broker down');
        },
        ...FAST,
        outbox: { baseDelayMs: 20, maxDelayMs: 40 },
        logger,
      }),
    );
    await expect.poll(() => worker.summary().outbox.processed, { timeout: 15_000 }).toBe(2); // created + expired
    expect(worker.summary().outbox.failed).toBe(4);
    expect(attempts.filter((attempt) => attempt < 3)).toHaveLength(4);
    // One line per failed delivery, with the event's id, type and attempt.
    const warnings = logged(logger, 'warn', 'outbox: event ');
    expect(warnings).toHaveLength(4);
    for (const [message, details] of warnings) {
      expect(message).toMatch(/^outbox: event \S+ \(reservation\.(created|expired)\) failed \(attempt [12]\), retried at \S+: Error: broker down$/);
      expect(details).toMatchObject({ eventId: expect.any(String), type: expect.stringMatching(/^reservation\./), attempt: expect.any(Number) });
    }
    expect(logger.error).not.toHaveBeenCalled();
  });

  it('backs off while idle, and wake() ends the pause', async () => {
    // The pauses the loops ask for (their setTimeout calls), in order: what backing off is, and
    // not how many batches fit in a second, which depends on how busy the machine is.
    const pauses: number[] = [];
    const realSetTimeout = globalThis.setTimeout;
    const spy = vi.spyOn(globalThis, 'setTimeout').mockImplementation(((callback: () => void, ms?: number, ...args: unknown[]) => {
      // Called by the loop itself, not by something it called (pg's pool sets an idle timer).
      const caller = (new Error().stack ?? '').split('\n').slice(1).find((frame) => !frame.includes('/test/worker.test.ts') && !frame.includes('@vitest/spy'));
      if (caller?.includes('/src/worker/poll-loop.ts')) pauses.push(ms ?? 0);
      return realSetTimeout(callback, ms, ...(args as []));
    }) as typeof setTimeout);
    let summary: Awaited<ReturnType<RunningWorker['stop']>>;
    try {
      const worker = track(startWorker({ db: t.db, handler: () => {}, idleIntervalMs: 20, maxIdleIntervalMs: 160 }));
      // Six idle pauses in each of the two loops (outbox and expiry).
      await expect.poll(() => pauses.length, { timeout: 10_000 }).toBeGreaterThanOrEqual(12);
      summary = await worker.stop();
    } finally {
      spy.mockRestore();
    }
    // Each loop doubles its pause after every empty batch, from 20 ms up to 160 ms, and stays
    // there: 20, 40, 80, 160, 160… Without backoff it would be 20 ms every time.
    const count = (ms: number) => pauses.filter((pause) => pause === ms).length;
    expect([count(20), count(40), count(80)]).toEqual([2, 2, 2]);
    expect(count(160)).toBe(pauses.length - 6);
    expect(count(160)).toBeGreaterThanOrEqual(6);
    // Every batch found nothing and was followed by one of those pauses (the last maybe cut short by stop()).
    expect(summary!.outbox).toMatchObject({ failedBatches: 0, processed: 0 });
    expect(summary!.expire).toMatchObject({ failedBatches: 0, expired: 0 });
    const batches = summary!.outbox.batches + summary!.expire.batches;
    expect(batches).toBeGreaterThanOrEqual(pauses.length);
    expect(batches).toBeLessThanOrEqual(pauses.length + 2);

    // A worker in a 30 s pause (the only one: the other has stopped) delivers a new event once woken.
    const { delivered, handler } = recorder();
    const sleepy = track(startWorker({ db: t.db, handler, idleIntervalMs: 30_000, maxIdleIntervalMs: 30_000 }));
    await expect.poll(() => [sleepy.summary().outbox.batches, sleepy.summary().expire.batches]).toEqual([1, 1]);
    const [id] = await dueReservations(t.db, 1);
    sleepy.wake();
    // Well within the pause: only wake() can have ended it.
    await expect.poll(() => delivered.created.has(id!), { timeout: 15_000 }).toBe(true);
  });

  it('on abort, finishes the delivery in hand, acknowledges it, resolves, and starts no batch after', async () => {
    const engine = new ReservationEngine({ db: t.db });
    const item = await engine.createItem({ sku: unique('sku'), name: 'T-shirt', availableQuantity: 10 });
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    let entered!: () => void;
    const delivering = new Promise<void>((resolve) => (entered = resolve));
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => (finish = resolve));
    const handled: string[] = [];
    const controller = new AbortController();
    const worker = track(
      startWorker({
        db: t.db,
        handler: async (event) => {
          handled.push(event.type);
          entered();
          await gate;
        },
        signal: controller.signal,
        ...FAST,
      }),
    );
    await delivering;
    controller.abort();
    // Still delivering: the worker waits for it.
    expect(await Promise.race([worker.stopped.then(() => 'stopped'), sleep(200, 'waiting')])).toBe('waiting');
    finish();
    const summary = await worker.stopped;
    expect(summary.outbox).toMatchObject({ processed: 1, failed: 0 });
    expect(await t.count('outbox', (q) => q.where('processed_at', 'is not', null))).toBe(1);

    // Stopped for good: a new event and a due reservation stay as they are.
    const batches = [summary.outbox.batches, summary.expire.batches];
    await dueReservations(t.db, 1);
    await sleep(200);
    expect(handled).toEqual(['reservation.created']);
    expect(await expiredCount()).toBe(0);
    expect([worker.summary().outbox.batches, worker.summary().expire.batches]).toEqual(batches);
    expect(await worker.stop()).toBe(summary); // idempotent
  });

  it('a signal aborted already starts nothing; expire: false runs no expiry loop', async () => {
    await dueReservations(t.db, 1);
    const idle = startWorker({ db: t.db, handler: () => {}, signal: AbortSignal.abort() });
    expect((await idle.stopped).outbox.batches).toBe(0);
    expect(await t.count('outbox', (q) => q.where('processed_at', 'is not', null))).toBe(0);

    const { delivered, handler } = recorder();
    const deliverOnly = track(startWorker({ db: t.db, handler, expire: false, ...FAST }));
    await expect.poll(() => delivered.created.size).toBe(1);
    await sleep(100);
    expect(await expiredCount()).toBe(0);
    expect((await deliverOnly.stop()).expire).toEqual({ batches: 0, failedBatches: 0, failingSince: null, expired: 0, failed: 0 });
  });

  it('purge runs retention in a loop of its own: delivered events, keys and finished reservations past their periods go', async () => {
    const made = await dueReservations(t.db, 6);
    const { delivered, handler } = recorder();
    const logger = spyLogger();
    const worker = track(
      startWorker({ db: t.db, handler, ...FAST, logger, purge: { processedEventsMs: 0, idempotencyKeysMs: 0, finishedReservationsMs: 0, limit: 4, intervalMs: 1000 } }),
    );
    await expect.poll(() => delivered.expired.size, { timeout: 5000 }).toBe(made.length);
    // Everything is finished and delivered: retention takes it all, 4 a batch, then idles.
    await expect.poll(() => t.count('reservations'), { timeout: 10_000 }).toBe(0);
    await expect.poll(() => t.count('outbox'), { timeout: 10_000 }).toBe(0);
    expect(await t.count('idempotency_requests')).toBe(0);
    const { purge } = await worker.stop();
    expect(purge).toMatchObject({ failedBatches: 0, outboxEvents: 12, reservations: 6, restockKeys: 0 });
    // A key goes by its own age or with its reservation, whichever batch comes first.
    expect(purge.idempotencyKeys).toBeLessThanOrEqual(6);
    expect(purge.batches).toBeGreaterThanOrEqual(3);
    expect(logger.info).toHaveBeenCalledWith(expect.stringMatching(/; purge: events=12 keys=\d restock-keys=0 reservations=6$/));
    expect(logger.error).not.toHaveBeenCalled();
  });

  it('rejects bad options at once, with a ConfigurationError naming each', () => {
    const base = { db: t.db, handler: () => {} };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ handler: undefined }, 'handler: must be a function'],
      [{ db: {} }, 'db: must be a Kysely instance'],
      [{ signal: 'stop' }, 'signal: must be an AbortSignal'],
      [{ idleIntervalMs: 0 }, 'idleIntervalMs: must be positive'],
      [{ idleIntervalMs: 2000, maxIdleIntervalMs: 1000 }, 'maxIdleIntervalMs: must not be less than idleIntervalMs'],
      [{ errorIntervalMs: 1.5 }, 'errorIntervalMs: must be an integer'],
      [{ maxErrorIntervalMs: 10 }, 'maxErrorIntervalMs: must not be less than errorIntervalMs'],
      [{ expire: true }, 'expire: must be false or an object such as { limit: 500 }'],
      [{ expire: { limit: 0 } }, 'expire.limit: must be positive'],
      [{ logger: { error: 'loud' } }, 'logger: must be an object whose debug, info, warn and error, where present, are functions (console, pino…)'],
      [{ outbox: { limit: 10_001 } }, 'outbox.limit: must be at most 10,000'],
      [{ outbox: { now: new Date() } }, `outbox: unknown field "now"`],
      [{ pollIntervalMs: 5 }, 'options: unknown field "pollIntervalMs"'],
      [{ tablePrefix: '1x' }, 'tablePrefix: must be 1–30 letters'],
      [{ purge: true }, 'purge: must be an object, got a boolean'],
      [{ purge: { limit: 10_001 } }, 'purge.limit: must be at most 10,000'],
      [{ purge: { intervalMs: 10 } }, 'purge.intervalMs: must be at least 1,000'],
      [{ purge: { idempotencyKeysMs: 5000, finishedReservationsMs: 1000 } }, 'purge.finishedReservationsMs: must be at least idempotencyKeysMs'],
      [{ purge: { maintenance: 'yes' } }, 'purge.maintenance: must be true or false'],
    ];
    for (const [options, message] of cases) {
      const error = (() => {
        try {
          startWorker({ ...base, ...options } as StartWorkerOptions);
        } catch (thrown) {
          return thrown;
        }
        throw new Error(`startWorker accepted ${JSON.stringify(Object.keys(options))}`);
      })();
      expect(error, message).toBeInstanceOf(ConfigurationError);
      expect((error as ConfigurationError).message).toContain(message);
    }
  });

  it('checks the outbox options as runOutboxBatch does', async () => {
    const bad: Array<Record<string, unknown>> = [
      { limit: 0 },
      { maxAttempts: 1001 },
      { baseDelayMs: -1 },
      { maxDelayMs: 500 },
      { baseDelayMs: 5000, maxDelayMs: 4000 },
      { leaseMs: 0 },
      { handlerTimeoutMs: 20_000 },
      { leaseMs: 1000, handlerTimeoutMs: 501 },
      { handlerTimeoutMs: 'soon' },
    ];
    const good: Array<Record<string, unknown>> = [{ baseDelayMs: 0, maxDelayMs: 0 }, { leaseMs: 1000, handlerTimeoutMs: 500 }, { handlerTimeoutMs: 15_000 }];
    const handler = () => {};
    for (const outbox of bad) {
      const batchError = await runOutboxBatch({ db: t.db, handler, ...outbox }).then(() => undefined, (error: unknown) => error);
      expect(batchError, JSON.stringify(outbox)).toBeInstanceOf(ConfigurationError);
      const issues = (batchError as ConfigurationError).issues.map((issue) => ({ ...issue, path: `outbox.${issue.path}` }));
      expect(() => startWorker({ db: t.db, handler, outbox })).toThrow(ConfigurationError);
      try {
        startWorker({ db: t.db, handler, outbox });
      } catch (error) {
        expect((error as ConfigurationError).issues, JSON.stringify(outbox)).toEqual(issues);
      }
    }
    for (const outbox of good) await track(startWorker({ db: t.db, handler, outbox, signal: AbortSignal.abort() })).stopped;
  });

  it('keeps going while the database is unreachable: logs it once per loop, never rejects', async () => {
    const db = await unreachableDatabase(t);
    const logger = spyLogger();
    const worker = track(startWorker({ db, handler: () => {}, ...FAST, maxErrorIntervalMs: 40, logger }));
    try {
      await expect.poll(() => worker.summary().outbox.failedBatches, { timeout: 10_000 }).toBeGreaterThanOrEqual(5);
      await expect.poll(() => worker.summary().expire.failedBatches, { timeout: 10_000 }).toBeGreaterThanOrEqual(5);
      for (const loop of ['outbox', 'expire']) {
        const errors = logged(logger, 'error', `${loop}: batch failed`);
        expect(errors).toHaveLength(1);
        expect(errors[0]![0]).toMatch(/retrying with backoff until it succeeds: The database connection failed/);
        expect(errors[0]![1]).toEqual({ error: expect.any(Error) });
      }
      expect(worker.summary().outbox.failingSince).toBeInstanceOf(Date);
      expect(worker.summary().outbox.batches).toBe(0);
      const summary = await worker.stop();
      expect(summary.outbox.failedBatches).toBeGreaterThanOrEqual(5);
    } finally {
      await db.destroy();
    }
  });
});

/**
 * A Kysely instance whose database really does not answer: a pool pointing at a port where
 * nothing listens. PGlite runs in-process and cannot be down, so it gets PostgreSQL's driver.
 */
async function unreachableDatabase(t: TestDatabase): Promise<Kysely<any>> {
  const port = await getFreePort();
  if (t.name === 'mysql') {
    return new Kysely({ dialect: new MysqlDialect({ pool: mysql.createPool({ host: '127.0.0.1', port, user: 'nobody', connectionLimit: 1, timezone: 'Z' }) }) });
  }
  return new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ host: '127.0.0.1', port, user: 'nobody', max: 1 }) }) });
}

interface OutageVariant {
  readonly name: 'mysql' | 'postgres';
  readonly installed: boolean;
  /** A dedicated server and a Kysely instance on a database in it (not yet migrated). */
  start(): Promise<{ server: ThrowawayServer; db: Kysely<any> }>;
}

const OUTAGE_VARIANTS: OutageVariant[] = [
  {
    name: 'mysql',
    installed: findMariaDbServer() !== undefined,
    async start() {
      const server = await startMariaDb();
      const admin = mysql.createConnection({ uri: server.url });
      await admin.promise().query('CREATE DATABASE shop');
      await admin.promise().end();
      const pool = mysql.createPool({ uri: `${server.url}shop`, connectionLimit: 5, timezone: 'Z' });
      // As a host must: a connection that dies with the server is reported, not a crash.
      pool.on('connection', (connection) => connection.on('error', () => {}));
      return { server, db: new Kysely({ dialect: new MysqlDialect({ pool }) }) };
    },
  },
  {
    name: 'postgres',
    installed: findPostgresBinaries() !== undefined,
    async start() {
      // Commits acknowledged before the crash must still be there after it.
      const server = await startPostgres({ crashSafe: true });
      const pool = new pg.Pool({ connectionString: server.url, max: 5 });
      pool.on('error', () => {});
      pool.on('connect', (client) => client.on('error', () => {}));
      return { server, db: new Kysely({ dialect: new PostgresDialect({ pool }) }) };
    },
  },
];

for (const variant of OUTAGE_VARIANTS) {
  const inRun = DIALECTS.some((dialect) => dialect.name === variant.name);
  if (!inRun || !variant.installed) {
    console.warn(`[worker] outage test on ${variant.name}: not run (${inRun ? 'no server binaries installed' : 'not in this run'})`);
    continue;
  }

  describe(`startWorker through a database crash [${variant.name}]`, () => {
    let server: ThrowawayServer;
    let db: Kysely<any>;

    beforeAll(async () => {
      ({ server, db } = await variant.start());
      await migrateToLatest(db);
    });
    afterAll(async () => {
      await db?.destroy();
      await server?.stop();
    });

    it('keeps running while the database is down, logs the outage once, and works again once it is back', async () => {
      const logger = spyLogger();
      const { delivered, handler } = recorder();
      const worker = track(startWorker({ db, handler, ...FAST, maxErrorIntervalMs: 200, logger }));
      let stopped = false;
      void worker.stopped.then(() => (stopped = true));

      const before = await dueReservations(db, 2);
      await expect.poll(() => before.every((id) => delivered.expired.has(id)), { timeout: 15_000 }).toBe(true);

      await server.crash();
      await expect.poll(() => worker.summary().outbox.failedBatches, { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
      await expect.poll(() => worker.summary().expire.failedBatches, { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
      expect(stopped).toBe(false);
      for (const loop of ['outbox', 'expire']) expect(logged(logger, 'error', `${loop}: batch failed`)).toHaveLength(1);
      expect(worker.summary().outbox.failingSince).toBeInstanceOf(Date);

      await server.start();
      // The same worker, never restarted, expires and delivers again.
      const after = await dueReservations(db, 2);
      await expect.poll(() => after.every((id) => delivered.expired.has(id) && delivered.created.has(id)), { timeout: 10_000 }).toBe(true);
      for (const loop of ['outbox', 'expire']) {
        expect(logged(logger, 'error', `${loop}: batch failed`)).toHaveLength(1);
        expect(logged(logger, 'info', `${loop}: batch succeeded again after `)).toHaveLength(1);
      }
      expect(worker.summary().outbox.failingSince).toBeNull();
      expect(worker.summary().expire.failingSince).toBeNull();
      expect(stopped).toBe(false);
      await worker.stop();
    });
  });
}
