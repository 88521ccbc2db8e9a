/**
 * PGlite runs PostgreSQL as one single-user backend: no autovacuum, no checkpointer. Without
 * purgeBatch's maintenance, the space of purged and updated rows is never reused and the WAL is
 * never recycled, so an embedded database grows with every reservation however short its
 * retention. These tests run real PGlite (`createEmbeddedDatabase`), in memory and on disk.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, ReservationEngine, createEmbeddedDatabase, expireBatch, migrateToLatest, purgeBatch, runOutboxBatch } from '../src/index.js';
import { caught, describeEachServerDialect } from './support/db.js';

const T0 = Date.UTC(2030, 0, 1);
const MB = 2 ** 20;

/** Bytes of the five tables of `prefix`, with their indexes. */
async function tablesBytes(db: Kysely<any>, prefix: string): Promise<number> {
  const tables = ['items', 'reservations', 'idempotency_requests', 'restock_requests', 'outbox'].map((t) => `${prefix}${t}`);
  const { rows } = await sql<{ n: string }>`select sum(pg_total_relation_size(to_regclass(t))) as n from unnest(${tables}::text[]) as t`.execute(db);
  return Number(rows[0]?.n);
}

/** Bytes of the files in pg_wal, and bytes of WAL written since the database was made. */
async function wal(db: Kysely<any>): Promise<{ files: number; written: number }> {
  const { rows } = await sql<{ files: string; written: string }>`
    select (select sum(size) from pg_ls_waldir()) as files, pg_current_wal_insert_lsn() - '0/0'::pg_lsn as written`.execute(db);
  return { files: Number(rows[0]?.files), written: Number(rows[0]?.written) };
}

/** Calls purgeBatch until a call deletes less than its limit. */
async function purgeAll(options: Parameters<typeof purgeBatch>[0]): Promise<void> {
  const limit = options.limit ?? 1000;
  for (;;) {
    const r = await purgeBatch(options);
    if (Math.max(r.outboxEvents, r.idempotencyKeys, r.restockKeys, r.reservations) < limit) return;
  }
}

/**
 * Rounds of engine load (reserve; confirm, cancel or let expire; expire; deliver the outbox),
 * each followed by a purge of everything finished, so that every round ends with the same rows
 * (one item). Returns the size of the tables after each round.
 */
async function tableSizesOverRounds(db: Kysely<any>, tablePrefix: string, maintenance: boolean): Promise<number[]> {
  let clock = T0;
  const engine = new ReservationEngine({ db, tablePrefix, clock: () => new Date(clock) });
  const item = await engine.createItem({ sku: 'rounds', name: 'x', availableQuantity: 1_000_000 });
  const sizes: number[] = [];
  for (let round = 0; round < 7; round++) {
    for (let i = 0; i < 36; i++) {
      clock += 10;
      const { reservation } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `r${round}-${i}`, ttlSeconds: 60 });
      if (i % 3 === 0) await engine.confirm(reservation.id);
      else if (i % 3 === 1) await engine.cancel(reservation.id);
    }
    clock += 61_000;
    const now = new Date(clock);
    await expireBatch({ db, tablePrefix, now });
    while ((await runOutboxBatch({ db, tablePrefix, now, handler: () => {} })).processed > 0);
    await purgeAll({ db, tablePrefix, now, processedEventsMs: 0, idempotencyKeysMs: 0, finishedReservationsMs: 0, maintenance });
    sizes.push(await tablesBytes(db, tablePrefix));
  }
  return sizes;
}

/**
 * WAL, quickly: delivered events inserted and purged, then a switch to the next 16 MB WAL segment
 * (what a busy database fills in a few thousand reservations).
 */
async function writeWal(db: Kysely<any>, maintenance: boolean): Promise<void> {
  await sql`
    insert into reservation_engine_outbox (type, payload, created_at, available_at, attempts, processed_at)
    select 'reservation.created', jsonb_build_object('n', g), now() - interval '30 day', null, 1, now() - interval '30 day'
    from generate_series(1, 1000) as g`.execute(db);
  await sql`select pg_switch_wal()`.execute(db);
  await purgeAll({ db, maintenance });
}

const max = (values: number[]) => Math.max(...values);

describe('embedded database: purgeBatch keeps PGlite bounded', () => {
  let db: Kysely<any>;
  beforeAll(async () => {
    db = await createEmbeddedDatabase();
  });
  afterAll(async () => {
    await db?.destroy();
  });

  it('the tables stop growing across rounds of load and purge (without maintenance they grow every round)', async () => {
    await migrateToLatest(db, { tablePrefix: 'unmaintained_' });
    const kept = await tableSizesOverRounds(db, 'reservation_engine_', true);
    const bloated = await tableSizesOverRounds(db, 'unmaintained_', false);
    // Without VACUUM, every round adds the space of its deleted and updated rows for good.
    for (let r = 1; r < bloated.length; r++) expect(bloated[r]!, `without maintenance: ${bloated.join(', ')}`).toBeGreaterThan(bloated[r - 1]!);
    // With it, the space is reused: after the first rounds the size never passes its early peak.
    expect(max(kept.slice(3)), `with maintenance: ${kept.join(', ')}`).toBeLessThanOrEqual(max(kept.slice(0, 3)));
    expect(kept.at(-1)!).toBeLessThan(bloated.at(-1)! * 0.6);
    // purgeBatch's plain VACUUMs did it: PGlite has no autovacuum.
    const { rows } = await sql<{ vacuums: string; autovacuums: string }>`
      select sum(vacuum_count) as vacuums, sum(autovacuum_count) as autovacuums from pg_stat_user_tables where relname like 'reservation_engine_%'`.execute(db);
    expect(Number(rows[0]?.vacuums)).toBeGreaterThan(0);
    expect(Number(rows[0]?.autovacuums)).toBe(0);
  });

  it('the WAL is checkpointed: its files shrink back to 64 MB at most and stay there however much is written', async () => {
    const start = await wal(db);
    // Without maintenance nothing ever checkpoints a single-user backend: the WAL only grows.
    for (let i = 0; i < 6; i++) await writeWal(db, false);
    const unmaintained = await wal(db);
    expect(unmaintained.files - start.files).toBeGreaterThanOrEqual(4 * 16 * MB);
    // The first purgeBatch with maintenance checkpoints; the WAL stays bounded from then on.
    const files: number[] = [];
    for (let i = 0; i < 6; i++) {
      await writeWal(db, true);
      files.push((await wal(db)).files);
    }
    expect((await wal(db)).written - unmaintained.written).toBeGreaterThanOrEqual(5 * 16 * MB);
    expect(max(files), `WAL files (MB): ${files.map((f) => f / MB).join(', ')}`).toBeLessThanOrEqual(64 * MB);
  });

  it('maintenance must be a boolean', async () => {
    const error = await caught(() => purgeBatch({ db, maintenance: 'yes' as unknown as boolean }));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(error.message).toMatch(/maintenance/);
  });
});

describe('embedded database on disk', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'reservation-engine-embedded-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('purgeBatch keeps the data directory bounded too, and the data survives a reopen', async () => {
    let db = await createEmbeddedDatabase({ dataDir: dir });
    try {
      for (let i = 0; i < 3; i++) await writeWal(db, false);
      const grown = directoryBytes(dir);
      const sizes: number[] = [];
      for (let i = 0; i < 3; i++) {
        await writeWal(db, true);
        sizes.push(directoryBytes(dir));
      }
      expect(max(sizes), `${grown / MB} MB, then ${sizes.map((s) => (s / MB).toFixed(0)).join(', ')} MB`).toBeLessThan(grown);
      expect(sizes.at(-1)!).toBeLessThanOrEqual(sizes[0]! + MB);
      const engine = new ReservationEngine({ db });
      const item = await engine.createItem({ sku: 'disk', name: 'x', availableQuantity: 5 });
      await db.destroy();
      db = await createEmbeddedDatabase({ dataDir: dir });
      expect((await new ReservationEngine({ db }).getItem(item.id))?.availableQuantity).toBe(5);
    } finally {
      await db.destroy();
    }
  });
});

describeEachServerDialect('purgeBatch maintenance on a database server', (t) => {
  it('leaves vacuuming to the server: purgeBatch runs no VACUUM', async () => {
    const engine = new ReservationEngine({ db: t.db, clock: () => new Date(T0) });
    const item = await engine.createItem({ sku: 'server', name: 'x', availableQuantity: 10 });
    for (let i = 0; i < 5; i++) await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: `s${i}` });
    await runOutboxBatch({ db: t.db, now: new Date(T0), handler: () => {} });
    expect((await purgeBatch({ db: t.db, now: new Date(T0 + 8 * 86_400_000) })).outboxEvents).toBe(5);
    if (t.name === 'postgres') {
      // A VACUUM counts itself at once (autovacuum's runs are counted apart).
      const { rows } = await sql<{ n: string }>`select coalesce(sum(vacuum_count), 0) as n from pg_stat_user_tables where relname like 'reservation_engine_%'`.execute(t.db);
      expect(Number(rows[0]?.n)).toBe(0);
    }
  });
});

function directoryBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += statSync(path.join(entry.parentPath ?? (entry as { path?: string }).path ?? dir, entry.name)).size;
  }
  return total;
}
