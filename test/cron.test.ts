import { execFile } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import { drainExpired, expiredSummary } from '../examples/cron/expire-reservations.js';
import { drainOutbox, outboxSummary } from '../examples/cron/process-outbox.js';
import { DEFAULT_BUDGET_MS, parseCronArgs, serverDatabaseUrl } from '../examples/cron/run-cron.js';
import { connectDatabase, describeDatabase } from '../examples/database.js';
import { ReservationEngine } from '../src/index.js';
import { compiledScript } from './support/compile.js';
import { type TestDatabase, describeEachDialect, unique } from './support/db.js';


const ROOT = path.resolve(import.meta.dirname, '..');

/**
 * Runs a cron script as crontab would, and returns its exit code and output. The script is
 * compiled once, as tsx would compile it at every start (./support/compile.ts).
 */
async function runScript(script: string, env: Record<string, string>, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const compiled = await compiledScript(script);
  return new Promise((resolve) => {
    execFile(process.execPath, [compiled, ...args], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The DATABASE_URL of the test database (mysql/postgres only: PGlite in memory has no URL). */
async function databaseUrl(t: TestDatabase): Promise<string> {
  const query = t.name === 'mysql' ? sql<{ name: string }>`select database() as name` : sql<{ name: string }>`select current_database() as name`;
  const { rows } = await query.execute(t.db);
  const url = new URL(t.target.url);
  url.pathname = `/${rows[0]!.name}`;
  return url.toString();
}

describeEachDialect('cron jobs', (t) => {
  const HOUR_AGO = () => new Date(Date.now() - 3_600_000);
  /** `n` PENDING reservations created an hour ago with the default 15-minute hold: all past it. */
  const expiredReservations = async (n: number) => {
    const engine = new ReservationEngine({ db: t.db, clock: HOUR_AGO });
    const item = await engine.createItem({ sku: unique(), name: 'x', availableQuantity: 100 });
    for (let i = 0; i < n; i++) await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: unique() });
    return item;
  };
  const stock = async (itemId: number) =>
    Number((await t.db.selectFrom('items').select('available_quantity').where('id', '=', itemId).executeTakeFirstOrThrow()).available_quantity);

  it('drainExpired runs batches until one is not full, and sums them', async () => {
    const item = await expiredReservations(25);
    const result = await drainExpired({ db: t.db, limit: 10 });
    expect(result).toMatchObject({ expired: 25, batches: 3, drained: true });
    expect(await stock(item.id)).toBe(100);
    expect(await t.count('reservations', (q) => q.where('status', '=', 'EXPIRED'))).toBe(25);
    expect(expiredSummary(result)).toMatch(/^expire-reservations: expired=25 batches=3 in \d+\.\d\ds$/);
    // A batch of exactly `limit` is full: one more (empty) batch confirms there is nothing left.
    await expiredReservations(10);
    expect(await drainExpired({ db: t.db, limit: 10 })).toMatchObject({ expired: 10, batches: 2, drained: true });
  });

  it('drainExpired starts no batch once the budget is spent', async () => {
    await expiredReservations(25);
    const result = await drainExpired({ db: t.db, limit: 10, budgetMs: 0 });
    expect(result).toMatchObject({ expired: 10, batches: 1, drained: false });
    expect(expiredSummary(result)).toMatch(/^expire-reservations: expired=10 batches=1 in \d+\.\d\ds \(time budget used up; more reservations are due\)$/);
    expect(await t.count('reservations', (q) => q.where('status', '=', 'PENDING'))).toBe(15);
  });

  it('drainOutbox runs batches until one comes back empty, and counts processed, failed and dead-lettered', async () => {
    await expiredReservations(12); // 12 reservation.created events
    const seen: string[] = [];
    const result = await drainOutbox({
      db: t.db,
      limit: 5,
      outbox: { maxAttempts: 2 },
      handler: (event) => {
        seen.push(event.id);
        if (seen.length % 4 === 0) throw new Error('broker down');
      },
    });
    expect(result).toMatchObject({ processed: 9, failed: 3, deadLettered: 0, released: 0, batches: 4, drained: true });
    expect(new Set(seen).size).toBe(12);
    expect(outboxSummary(result)).toMatch(/^process-outbox: processed=9 failed=3 dead-lettered=0 released=0 batches=4 in \d+\.\d\ds$/);

    // The failed ones, when due again, fail for the last time.
    const later = new Date(Date.now() + 3_600_000);
    const retried = await drainOutbox({ db: t.db, limit: 5, outbox: { maxAttempts: 2, now: later }, handler: () => Promise.reject(new Error('still down')) });
    expect(retried).toMatchObject({ processed: 0, failed: 0, deadLettered: 3, batches: 2, drained: true });
  });

  it('drainOutbox stops starting batches when the budget is spent; the running batch finishes', async () => {
    await expiredReservations(20);
    const result = await drainOutbox({ db: t.db, limit: 2, budgetMs: 50, handler: () => sleep(20) });
    // Each batch takes ≥ 40 ms, so the budget is spent after at most two.
    expect(result.batches).toBeGreaterThanOrEqual(1);
    expect(result.batches).toBeLessThanOrEqual(2);
    expect(result).toMatchObject({ processed: result.batches * 2, failed: 0, drained: false });
    expect(outboxSummary(result)).toMatch(/\(time budget used up; more events are due\)$/);
  });

  if (t.target.name === 'pglite') {
    it('a cron script without DATABASE_URL exits 1 with the reason on stderr', async () => {
      const { code, stdout, stderr } = await runScript('examples/cron/expire-reservations.ts', { DATABASE_URL: '' });
      expect({ code, stdout }).toEqual({ code: 1, stdout: '' });
      expect(stderr.trim()).toBe('expire-reservations: DATABASE_URL is not set: point it at the database the server uses (mysql://… or postgres://…)');
    });
  } else {
    it('expire-reservations.ts as a child process: drains, prints one summary line, exits 0', async () => {
      const item = await expiredReservations(5);
      const { code, stdout, stderr } = await runScript('examples/cron/expire-reservations.ts', { DATABASE_URL: await databaseUrl(t) }, ['--limit=2']);
      expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
      expect(stdout).toMatch(/^expire-reservations: expired=5 batches=3 in \d+\.\d\ds\n$/);
      expect(await stock(item.id)).toBe(100);
    });
  }
});

describe('cron and database configuration', () => {
  it('parses --budget and --limit, falling back to the environment and then the defaults', () => {
    expect(parseCronArgs([], {})).toEqual({ budgetMs: DEFAULT_BUDGET_MS, limit: undefined });
    expect(parseCronArgs(['--budget=2.5', '--limit', '20'], { CRON_BUDGET_SECONDS: '9' })).toEqual({ budgetMs: 2500, limit: 20 });
    expect(parseCronArgs([], { CRON_BUDGET_SECONDS: '9', CRON_BATCH_LIMIT: '7' })).toEqual({ budgetMs: 9000, limit: 7 });
    expect(() => parseCronArgs(['--budget=soon'], {})).toThrow(/--budget \(seconds\) must be a number/);
    expect(() => parseCronArgs(['--limit=0'], {})).toThrow(/--limit must be an integer from 1 to 10000/);
    expect(() => parseCronArgs(['--verbose'], {})).toThrow(/Unknown option '--verbose'/);
  });

  it('cron jobs need a database server', () => {
    expect(() => serverDatabaseUrl(undefined)).toThrow(/DATABASE_URL is not set/);
    expect(() => serverDatabaseUrl('  ')).toThrow(/DATABASE_URL is not set/);
    expect(() => serverDatabaseUrl('pglite:./data')).toThrow(/only one process may open/);
    expect(serverDatabaseUrl('mysql://u@h/db')).toBe('mysql://u@h/db');
  });

  it('connectDatabase rejects what it cannot open, with the reason', async () => {
    await expect(connectDatabase('sqlite:///tmp/x.db')).rejects.toThrow(/Unsupported DATABASE_URL scheme "sqlite": use mysql:\/\//);
    await expect(connectDatabase('pglite:')).rejects.toThrow(/needs a directory/);
    vi.stubEnv('DATABASE_POOL_SIZE', 'lots');
    try {
      await expect(connectDatabase('postgres://u@127.0.0.1/db')).rejects.toThrow(/DATABASE_POOL_SIZE must be an integer/);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('describes a database without its credentials', () => {
    expect(describeDatabase('mysql://shop:s3cret@db.internal:3306/shop')).toBe('MySQL/MariaDB at db.internal:3306/shop');
    expect(describeDatabase('postgresql://shop:s3cret@db/shop')).toBe('PostgreSQL at db/shop');
    expect(describeDatabase('')).toBe('embedded PGlite (in memory)');
    expect(describeDatabase('pglite:///var/lib/shop')).toBe('embedded PGlite (/var/lib/shop)');
  });
});
