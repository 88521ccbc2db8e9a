/**
 * Scale: the hot paths — reserve, replay, expireBatch, runOutboxBatch — on small tables and on
 * tables of a million rows, in one run. Two copies of the engine's tables live side by side in
 * the bench database: the default prefix (small: 1,000 rows of history per table) and
 * `scale_large_` (1,000,000 rows per table, seeded server-side), so the rounds interleave —
 * reserve on small, reserve on large, replay on large, replay on small, … Every operation is an
 * index range or point lookup, so the large tables should cost what the small ones do.
 */
import { sql } from 'kysely';
import { DEFAULT_TABLE_PREFIX, expireBatch, migrateToLatest, ReservationEngine, runOutboxBatch } from '../../src/index.js';
import { payloadHash } from '../../src/idempotency/payload-hash.js';
import { uuidv7 } from '../../src/uuid.js';
import { keyMaker } from '../lib/closed-loop.js';
import type { BenchDatabase } from '../lib/db.js';
import { insertRows, pick } from '../lib/fixtures.js';
import { type DrainOptions, type Measurement, mergeMeasurements, runClosedLoop, runDrain } from '../lib/load.js';
import { type Check, Checks, computeRatios, type Scenario, type ScenarioContext, type ScenarioResult } from '../lib/scenario.js';
import { elapsedMs, Latencies, now } from '../lib/stats.js';

const ITEMS = 1_000;
const STOCK = 1_000_000;
/** Long enough that nothing the closed loops reserve expires during the run. */
const TTL_SECONDS = 86_400;
/** Keys replayed by the replay loop (seeded as replay.ts does, per table set). */
const REPLAY_KEYS = 1_000;
const SMALL_ROWS = 1_000;
const LARGE_PREFIX = 'scale_large_';

/** The closed loops' concurrency, and the drains' callers and batch sizes. */
const CONCURRENCY = 8;
const EXPIRY = { workers: 1, batch: 500 };
const OUTBOX = { workers: 1, batch: 100 };

/** Row configs (one key per operation, so that each operation's small and large rows pair up). Targets in lib/targets.ts name them. */
const CONFIG = {
  reserve: { 'reserve c': CONCURRENCY },
  replay: { 'replay c': CONCURRENCY },
  expiry: { 'expireBatch W': EXPIRY.workers, B: EXPIRY.batch },
  outbox: { 'runOutboxBatch W': OUTBOX.workers, B: OUTBOX.batch },
} as const;
type Op = keyof typeof CONFIG;
const OPS: Op[] = ['reserve', 'replay', 'expiry', 'outbox'];

type SetKey = 'small' | 'large';

interface Replayed {
  id: string;
  itemId: number;
  quantity: number;
  key: string;
}

/** One copy of the engine's tables and what the checks expect of it. */
interface TableSet {
  key: SetKey;
  prefix: string;
  /** Rows of history in each of reservations, idempotency_requests and outbox. */
  rows: number;
  firstItem: number;
  replays: Replayed[];
  /** PENDING reservations now: the replayed ones plus every fresh reserve so far. */
  pending: number;
  /** `reservation.created` events written since the last outbox step. */
  newEvents: number;
}

const ms = { second: 1_000, minute: 60_000, day: 86_400_000 };

/** Server-side SQL pieces per dialect; `seq` is the series' column. */
function dialectSql(bench: BenchDatabase) {
  const mysql = bench.dialect === 'mysql';
  const pad = (expr: string, width: number) => (mysql ? `lpad(${expr}, ${width}, '0')` : `lpad((${expr})::text, ${width}, '0')`);
  const hex = (expr: string) => (mysql ? `lower(hex(${expr}))` : `to_hex(${expr})`);
  const cat = (...parts: string[]) => (mysql ? `concat(${parts.join(', ')})` : `(${parts.join(' || ')})`);
  /** MariaDB datetime(3) literals are UTC, as the engine writes them (mysql2 `timezone: 'Z'`). */
  const ts = (at: number) => (mysql ? `timestamp'${new Date(at).toISOString().replace('T', ' ').replace('Z', '')}'` : `'${new Date(at).toISOString()}'::timestamptz`);
  return {
    series: (n: number) => (mysql ? `seq_1_to_${n} s` : `generate_series(1::bigint, ${n}) as s(seq)`),
    cat,
    pad,
    ts,
    /** `start + seq × step` milliseconds. */
    at: (start: number, step: number) => (mysql ? `(${ts(start)} + interval (seq * ${step * 1000}) microsecond)` : `(${ts(start)} + seq * interval '${step} milliseconds')`),
    /** A UUID v7 made at `start + seq × step` ms, unique per (tag, seq): ids of history sort before newer ones, as the engine's do. */
    v7: (start: number, step: number, tag: number) => {
      const h = pad(hex(`${start} + seq * ${step}`), 12);
      const text = cat(`substr(${h}, 1, 8)`, `'-'`, `substr(${h}, 9, 4)`, `'-7${tag.toString(16).padStart(3, '0')}-8000-'`, pad(hex('seq'), 12));
      return mysql ? text : `${text}::uuid`;
    },
    json: (text: string) => (mysql ? `'${text}'` : `'${text}'::jsonb`),
    sha256: (expr: string) => (mysql ? `sha2(${expr}, 256)` : `encode(sha256(convert_to(${expr}, 'UTF8')), 'hex')`),
  };
}

const PAYLOAD = JSON.stringify({
  reservationId: '00000000-0000-7000-8000-000000000000',
  itemId: 1,
  quantity: 1,
  status: 'PENDING',
  expiresAt: '2026-01-01T00:15:00.000Z',
  occurredAt: '2026-01-01T00:00:00.000Z',
});

let tags = 0x100;

/** Finished history, server-side: `n` CONFIRMED/EXPIRED/CANCELLED reservations with their keys, and `n` delivered events. Returns seconds per table. */
async function seedHistory(bench: BenchDatabase, set: TableSet, n: number): Promise<Record<string, number>> {
  const s = dialectSql(bench);
  const t = (name: string) => set.prefix + name;
  const start = Date.now() - 30 * ms.day;
  const step = 2 * ms.second; // 1,000,000 rows over 23 days
  const item = `${set.firstItem} + seq % ${ITEMS}`;
  const quantity = '1 + seq % 3';
  const key = s.cat(`'hist-'`, s.pad('seq', 7));
  const id = s.v7(start, step, 0);
  const seconds: Record<string, number> = {};
  const timed = async (table: string, text: string) => {
    const t0 = performance.now();
    await bench.admin.query(text);
    seconds[table] = (performance.now() - t0) / 1000;
  };
  await timed(
    'reservations',
    `insert into ${t('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
     select ${id}, ${item}, ${quantity}, case seq % 3 when 0 then 'CONFIRMED' when 1 then 'EXPIRED' else 'CANCELLED' end, '', ${key},
       ${s.at(start + 15 * ms.minute, step)}, ${s.at(start, step)}, ${s.at(start + ms.minute, step)}
     from ${s.series(n)}`,
  );
  // The hash the engine computes for { itemId, quantity, ttlSeconds: 900 } (canonical JSON): the history is replayable.
  await timed(
    'idempotency_requests',
    `insert into ${t('idempotency_requests')} (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at)
     select '', ${key}, ${s.sha256(s.cat(`'{"itemId":'`, `(${item})`, `',"quantity":'`, `(${quantity})`, `',"ttlSeconds":900}'`))}, ${id}, ${s.at(start, step)}
     from ${s.series(n)}`,
  );
  await timed(
    'outbox',
    `insert into ${t('outbox')} (type, payload, created_at, attempts, processed_at)
     select case seq % 3 when 0 then 'reservation.confirmed' when 1 then 'reservation.expired' else 'reservation.cancelled' end, ${s.json(PAYLOAD)},
       ${s.at(start, step)}, 1, ${s.at(start + ms.second, step)}
     from ${s.series(n)}`,
  );
  return seconds;
}

/** The items (ids contiguous from `firstItem`), then the history, then the reservations the replay loop replays (as replay.ts seeds them). */
async function seedSet(bench: BenchDatabase, set: TableSet): Promise<Record<string, number>> {
  const s = dialectSql(bench);
  const t = (name: string) => set.prefix + name;
  const nowMs = Date.now();
  await bench.admin.query(
    `insert into ${t('items')} (sku, name, available_quantity, held_quantity, created_at, updated_at)
     select ${s.cat(`'SCALE-'`, s.pad('seq', 4))}, ${s.cat(`'Scale item '`, 'seq')}, ${STOCK}, 0, ${s.ts(nowMs)}, ${s.ts(nowMs)} from ${s.series(ITEMS)}`,
  );
  const { rows } = await bench.admin.query(`select min(id) as lo, max(id) as hi, count(*) as n from ${t('items')}`);
  const { lo, hi, n } = rows[0] as { lo: unknown; hi: unknown; n: unknown };
  if (Number(n) !== ITEMS || Number(hi) - Number(lo) + 1 !== ITEMS) throw new Error(`${t('items')}: expected ${ITEMS} contiguous ids, got ${n} from ${lo} to ${hi}`);
  set.firstItem = Number(lo);

  const seconds = await seedHistory(bench, set, set.rows);

  const expiresAt = new Date(nowMs + TTL_SECONDS * 1000);
  const run = Math.random().toString(36).slice(2, 8);
  set.replays = Array.from({ length: REPLAY_KEYS }, (_, i) => ({
    id: uuidv7(nowMs - REPLAY_KEYS + i),
    itemId: set.firstItem + Math.floor(Math.random() * ITEMS),
    quantity: 1 + (i % 3),
    key: `replay-${run}-${i}`,
  }));
  const at = new Date(nowMs);
  await insertRows(
    bench,
    t('reservations'),
    ['id', 'item_id', 'quantity', 'status', 'idempotency_key', 'expires_at', 'created_at', 'updated_at'],
    set.replays.map((r) => [r.id, r.itemId, r.quantity, 'PENDING', r.key, expiresAt, at, at]),
  );
  await insertRows(
    bench,
    t('idempotency_requests'),
    ['idempotency_key', 'payload_hash', 'reservation_id', 'created_at'],
    set.replays.map((r) => [r.key, payloadHash({ itemId: r.itemId, quantity: r.quantity, ttlSeconds: TTL_SECONDS }), r.id, at]),
  );
  const held = new Map<number, number>();
  for (const r of set.replays) held.set(r.itemId, (held.get(r.itemId) ?? 0) + r.quantity);
  for (const [itemId, quantity] of held) {
    await bench.admin.query(bench.sql(`update ${t('items')} set available_quantity = available_quantity - ?, held_quantity = held_quantity + ? where id = ?`), [quantity, quantity, itemId]);
  }
  set.pending = REPLAY_KEYS;
  set.newEvents = 0;

  // The history is replayable: its keys carry the hash the engine computes (a replay writes nothing).
  const db = bench.kysely(1);
  try {
    const k = Math.ceil(set.rows / 2);
    const key = `hist-${String(k).padStart(7, '0')}`;
    const r = await new ReservationEngine({ db, tablePrefix: set.prefix }).reserve({ itemId: set.firstItem + (k % ITEMS), quantity: 1 + (k % 3), idempotencyKey: key, ttlSeconds: 900 });
    if (!r.replayed || r.reservation.idempotencyKey !== key) throw new Error(`${set.key}: history key ${key} was not replayed`);
  } finally {
    await bench.closeKysely(db);
  }

  if (bench.dialect !== 'mysql') {
    const t0 = performance.now();
    const tables = ['items', 'reservations', 'idempotency_requests', 'outbox'].map(t).join(', ');
    // Large: what autovacuum would do after a bulk load (visibility map, statistics), done now rather than mid-measurement.
    await bench.admin.query(set.key === 'large' ? `vacuum analyze ${tables}` : `analyze ${tables}`);
    seconds[set.key === 'large' ? 'vacuum analyze' : 'analyze'] = (performance.now() - t0) / 1000;
  }
  return seconds;
}

/** `n` PENDING reservations that expired 10–60 minutes ago, n / ITEMS per item, their units held. */
async function seedExpired(bench: BenchDatabase, set: TableSet, n: number): Promise<void> {
  const s = dialectSql(bench);
  const t = (name: string) => set.prefix + name;
  const tag = tags++;
  const start = Date.now() - 75 * ms.minute;
  const step = Math.floor((50 * ms.minute) / n);
  await bench.admin.query(
    `insert into ${t('reservations')} (id, item_id, quantity, status, idempotency_scope, idempotency_key, expires_at, created_at, updated_at)
     select ${s.v7(start, step, tag)}, ${set.firstItem} + seq % ${ITEMS}, 1, 'PENDING', '', ${s.cat(`'exp-${tag}-'`, s.pad('seq', 7))},
       ${s.at(start + 15 * ms.minute, step)}, ${s.at(start, step)}, ${s.at(start, step)}
     from ${s.series(n)}`,
  );
  const perItem = n / ITEMS;
  await bench.admin.query(`update ${t('items')} set available_quantity = available_quantity - ${perItem}, held_quantity = held_quantity + ${perItem}`);
}

/** Marks every due event delivered (what the reserves and the expiry wrote), then adds `n` due events. Returns the last id before them. */
async function seedDue(bench: BenchDatabase, set: TableSet, n: number): Promise<number> {
  const s = dialectSql(bench);
  const t = (name: string) => set.prefix + name;
  const nowMs = Date.now();
  await bench.admin.query(
    `update ${t('outbox')} set processed_at = ${s.ts(nowMs)}, available_at = null, locked_until = null, attempts = attempts + 1 where available_at is not null`,
  );
  const before = Number((await bench.admin.query(`select coalesce(max(id), 0) as id from ${t('outbox')}`)).rows[0]?.id);
  await bench.admin.query(
    `insert into ${t('outbox')} (type, payload, created_at, available_at, attempts)
     select 'reservation.created', ${s.json(PAYLOAD)}, ${s.ts(nowMs - ms.second)}, ${s.ts(nowMs - ms.second)}, 0 from ${s.series(n)}`,
  );
  return before;
}

/** No item below zero; per item available + held = initial stock and held = Σ quantity of its PENDING reservations; `set.pending` PENDING reservations. */
async function checkStock(bench: BenchDatabase, set: TableSet, checks: Checks): Promise<void> {
  const t = (name: string) => set.prefix + name;
  const off = await bench.count(
    `select count(*) as n from ${t('items')} i
       left join (select item_id, sum(quantity) as q from ${t('reservations')} where status = 'PENDING' group by item_id) r on r.item_id = i.id
      where i.available_quantity < 0 or i.available_quantity + i.held_quantity <> ${STOCK} or i.held_quantity <> coalesce(r.q, 0)`,
  );
  checks.expect('available ≥ 0, available + held = stock, held = Σ PENDING, per item', off === 0, off === 0 ? `all ${ITEMS} items` : `${off} items off`);
  checks.equal('PENDING reservations', await bench.count(`select count(*) as n from ${t('reservations')} where status = 'PENDING'`), set.pending);
}

interface Step {
  m: Measurement;
  checks: Check[];
  /** MySQL/MariaDB: InnoDB buffer-pool page requests and pages read from disk during the step (warm-up included), and its ops. */
  pages?: Pages;
}

interface Pages {
  requests: number;
  reads: number;
  ops: number;
}

/**
 * MySQL/MariaDB: waits (at most 3 s) until InnoDB's purge has caught up with the previous step's
 * updates, so that its background work is not charged to the next measurement (of the other set).
 */
async function settle(bench: BenchDatabase): Promise<void> {
  if (bench.dialect !== 'mysql') return;
  const deadline = performance.now() + 3_000;
  while (performance.now() < deadline) {
    const { rows } = await bench.admin.query(`SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'`);
    if (!(Number(rows[0]?.Value) > 100)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Server-wide InnoDB page counters (MySQL/MariaDB only). */
async function innodbPages(bench: BenchDatabase): Promise<Pages | undefined> {
  if (bench.dialect !== 'mysql') return undefined;
  const { rows } = await bench.admin.query(`SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads')`);
  const status = Object.fromEntries(rows.map((r: any) => [r.Variable_name, Number(r.Value)]));
  return { requests: status.Innodb_buffer_pool_read_requests ?? 0, reads: status.Innodb_buffer_pool_reads ?? 0, ops: 0 };
}

function pagesBetween(before: Pages | undefined, after: Pages | undefined, ops: number): { pages?: Pages } {
  return before && after ? { pages: { requests: after.requests - before.requests, reads: after.reads - before.reads, ops } } : {};
}

/** runDrain, keeping the per-call samples (it returns only their summary), so that the rounds' percentiles can be merged. */
async function drain(step: (worker: number) => Promise<number>, options: DrainOptions): Promise<Measurement> {
  const samples = new Latencies();
  const m = await runDrain(async (w) => {
    const start = now();
    const n = await step(w);
    if (n > 0) samples.add(elapsedMs(start));
    return n;
  }, options);
  return { ...m, samples };
}

/** How long a closed loop runs (round 0 is the unmeasured warm-up round). */
function sliceOf(ctx: ScenarioContext, round: number): { durationMs: number; warmupMs: number } {
  return round === 0 ? { durationMs: Math.max(ctx.warmupMs, 200), warmupMs: 0 } : { durationMs: ctx.durationMs / ctx.rounds, warmupMs: ctx.warmupMs };
}

async function measureReserve(ctx: ScenarioContext, set: TableSet, round: number): Promise<Step> {
  const { bench } = ctx;
  const db = bench.kysely(CONCURRENCY);
  const engine = new ReservationEngine({ db, tablePrefix: set.prefix });
  const prefix = `fresh-${set.key}-r${round}`;
  const key = keyMaker(prefix);
  let m: Measurement;
  await settle(bench);
  const pages = await innodbPages(bench);
  try {
    m = await runClosedLoop(
      async () => {
        const { replayed } = await engine.reserve({ itemId: set.firstItem + Math.floor(Math.random() * ITEMS), quantity: 1, idempotencyKey: key(), ttlSeconds: TTL_SECONDS });
        if (replayed) throw new Error('a fresh key was replayed');
      },
      { concurrency: CONCURRENCY, ...sliceOf(ctx, round), counters: () => bench.counters(), profileName: `scale-reserve-${set.key}-r${round}` },
    );
  } finally {
    await bench.closeKysely(db);
  }
  const ops = m.ops + m.warmupOps;
  const after = pagesBetween(pages, await innodbPages(bench), ops);
  set.pending += ops;
  set.newEvents += ops;
  const checks = new Checks();
  checks.expect('no failed ops', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
  checks.equal('idempotency records of the reserves', await bench.count(bench.sql(`select count(*) as n from ${set.prefix}idempotency_requests where idempotency_scope = '' and idempotency_key like ?`), [`${prefix}-%`]), ops);
  await checkStock(bench, set, checks);
  return { m, checks: checks.list, ...after };
}

async function measureReplay(ctx: ScenarioContext, set: TableSet, round: number): Promise<Step> {
  const { bench } = ctx;
  const db = bench.kysely(CONCURRENCY);
  const engine = new ReservationEngine({ db, tablePrefix: set.prefix });
  let m: Measurement;
  await settle(bench);
  const pages = await innodbPages(bench);
  try {
    m = await runClosedLoop(
      async () => {
        const r = pick(set.replays);
        const result = await engine.reserve({ itemId: r.itemId, quantity: r.quantity, idempotencyKey: r.key, ttlSeconds: TTL_SECONDS });
        if (!result.replayed || result.reservation.id !== r.id) throw new Error(`key ${r.key} was not replayed as reservation ${r.id}`);
      },
      { concurrency: CONCURRENCY, ...sliceOf(ctx, round), counters: () => bench.counters(), profileName: `scale-replay-${set.key}-r${round}` },
    );
  } finally {
    await bench.closeKysely(db);
  }
  const after = pagesBetween(pages, await innodbPages(bench), m.ops + m.warmupOps);
  const checks = new Checks();
  checks.expect('no failed ops (each replayed: true, the original id)', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
  await checkStock(bench, set, checks); // nothing written: PENDING count and stock unchanged
  return { m, checks: checks.list, ...after };
}

async function measureExpiry(ctx: ScenarioContext, set: TableSet, round: number, n: number): Promise<Step> {
  const { bench } = ctx;
  await seedExpired(bench, set, n);
  set.pending += n;
  const dbs = Array.from({ length: EXPIRY.workers }, () => bench.kysely(2));
  const totals = { expired: 0, failed: 0 };
  let m: Measurement;
  let pages: Pages | undefined;
  try {
    // Open the connections and run the engine's one-time session check outside the measurement.
    for (const db of dbs) await expireBatch({ db, tablePrefix: set.prefix, now: new Date(0) });
    await settle(bench);
    pages = await innodbPages(bench);
    m = await drain(
      async (w) => {
        const r = await expireBatch({ db: dbs[w]!, tablePrefix: set.prefix, limit: EXPIRY.batch });
        totals.expired += r.expired;
        totals.failed += r.failed;
        return r.expired;
      },
      { workers: EXPIRY.workers, counters: () => bench.counters(), profileName: `scale-expiry-${set.key}-r${round}` },
    );
  } finally {
    for (const db of new Set(dbs)) await bench.closeKysely(db);
  }
  const after = pagesBetween(pages, await innodbPages(bench), m.ops);
  set.pending -= totals.expired;
  const checks = new Checks();
  checks.expect('no failed calls', m.errors === 0 && totals.failed === 0, m.errors === 0 && totals.failed === 0 ? '0' : `${m.errors} errors, ${totals.failed} failed: ${m.firstError}`);
  checks.equal('expireBatch: expired', totals.expired, n);
  checks.equal('PENDING past expiry left', await bench.count(bench.sql(`select count(*) as n from ${set.prefix}reservations where status = 'PENDING' and expires_at <= ?`), [new Date()]), 0);
  await checkStock(bench, set, checks);
  const due = await bench.count(`select count(*) as n from ${set.prefix}outbox where available_at is not null`);
  checks.equal('due events (one per reserve and per expired reservation)', due, set.newEvents + n);
  return { m, checks: checks.list, ...after };
}

async function measureOutbox(ctx: ScenarioContext, set: TableSet, round: number, n: number): Promise<Step> {
  const { bench } = ctx;
  const before = await seedDue(bench, set, n);
  set.newEvents = 0;
  const seen = new Set<string>();
  let delivered = 0;
  const handler = (event: { id: string }) => {
    seen.add(event.id);
    delivered++;
  };
  const totals = { processed: 0, failed: 0, deadLettered: 0, released: 0 };
  const dbs = Array.from({ length: OUTBOX.workers }, () => bench.kysely(2));
  let m: Measurement;
  let pages: Pages | undefined;
  try {
    for (const db of dbs) {
      await Promise.all([sql`select 1`.execute(db), sql`select 1`.execute(db)]);
      await runOutboxBatch({ db, tablePrefix: set.prefix, handler, now: new Date(0) });
    }
    await settle(bench);
    pages = await innodbPages(bench);
    m = await drain(
      async (w) => {
        const r = await runOutboxBatch({ db: dbs[w]!, tablePrefix: set.prefix, handler, limit: OUTBOX.batch });
        totals.processed += r.processed;
        totals.failed += r.failed;
        totals.deadLettered += r.deadLettered;
        totals.released += r.released;
        return r.processed + r.failed + r.deadLettered;
      },
      { workers: OUTBOX.workers, counters: () => bench.counters(), profileName: `scale-outbox-${set.key}-r${round}` },
    );
  } finally {
    for (const db of new Set(dbs)) await bench.closeKysely(db);
  }
  const after = pagesBetween(pages, await innodbPages(bench), m.ops);
  const checks = new Checks();
  checks.expect('no failed calls', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
  checks.equal('runOutboxBatch: processed', totals.processed, n);
  checks.equal('runOutboxBatch: failed + dead-lettered + released', totals.failed + totals.deadLettered + totals.released, 0);
  checks.equal('distinct events delivered (exactly once)', seen.size === delivered ? seen.size : -delivered, n);
  checks.equal(
    'events processed with attempts = 1',
    await bench.count(bench.sql(`select count(*) as n from ${set.prefix}outbox where id > ? and processed_at is not null and attempts = 1`), [before]),
    n,
  );
  checks.equal('events still due or leased', await bench.count(`select count(*) as n from ${set.prefix}outbox where available_at is not null`), 0);
  return { m, checks: checks.list, ...after };
}

/** The checks of several slices as one list: a check passes if it passed in every slice. */
function mergeChecks(slices: Check[][]): Check[] {
  if (slices.length === 1) return slices[0]!;
  return slices[0]!.map((first, i) => {
    const failed = slices.map((list) => list[i]!).find((c) => !c.ok);
    return failed ? { ...failed, detail: `${failed.detail} (in one of ${slices.length} rounds)` } : { ...first, detail: `${first.detail} (each of ${slices.length} rounds)` };
  });
}

/** PostgreSQL/PGlite: rows read by sequential scans of the large tables during the run (pg_stat_user_tables), to show that nothing scans them. */
async function sequentialReads(bench: BenchDatabase): Promise<string> {
  try {
    // Stats reach the shared counters when a backend commits (at most once a second) or exits: the pools are closed by now.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const { rows } = await bench.admin.query(
      `select relname, seq_scan, seq_tup_read, idx_scan from pg_stat_user_tables where relname in ('${['reservations', 'idempotency_requests', 'outbox'].map((t) => LARGE_PREFIX + t).join("', '")}') order by relname`,
    );
    return `Sequential scans of the large tables during the run (pg_stat_user_tables; seeding and checks included): ${rows
      .map((r: any) => `${String(r.relname).slice(LARGE_PREFIX.length)} ${fmt(Number(r.seq_scan))} scans reading ${fmt(Number(r.seq_tup_read))} rows (${fmt(Number(r.idx_scan))} index scans)`)
      .join('; ')}.`;
  } catch (error) {
    return `pg_stat_user_tables: ${error instanceof Error ? error.message : String(error)}`;
  }
}

async function dropLargeTables(bench: BenchDatabase): Promise<void> {
  const tables = ['outbox', 'idempotency_requests', 'restock_requests', 'reservations', 'items', 'migration', 'migration_lock'].map((name) => LARGE_PREFIX + name);
  await bench.admin.query(`drop table if exists ${tables.join(', ')}`);
}

const fmt = (n: number) => n.toLocaleString('en-US');

export const scale: Scenario = {
  id: 'scale',
  title: 'Scale: small vs million-row tables',
  async run(ctx) {
    const { bench } = ctx;
    const large = bench.dialect === 'pglite' ? (ctx.mode === 'full' ? 100_000 : 20_000) : ctx.mode === 'full' ? 1_000_000 : 100_000;
    const drainSize = ctx.mode === 'full' ? 10_000 : 2_000;
    const sets: TableSet[] = (
      [
        { key: 'small', prefix: DEFAULT_TABLE_PREFIX, rows: SMALL_ROWS, firstItem: 0, replays: [], pending: 0, newEvents: 0 },
        { key: 'large', prefix: LARGE_PREFIX, rows: large, firstItem: 0, replays: [], pending: 0, newEvents: 0 },
      ] satisfies TableSet[]
    ).filter((s) => !ctx.variants || ctx.variants.includes(s.key));
    const result: ScenarioResult = {
      id: 'scale',
      title: 'Scale: small vs million-row tables',
      unit: 'ops/s',
      latencyOf: 'call',
      description:
        `The same operations on small tables (${fmt(SMALL_ROWS)} rows of history in each of reservations, idempotency_requests and outbox) and on large ones (${fmt(large)} rows in each), interleaved in one run, both with ${fmt(ITEMS)} items: ` +
        `engine.reserve with fresh keys on random items and replays of ${fmt(REPLAY_KEYS)} existing keys (closed loops, c=${CONCURRENCY}), expireBatch draining ${fmt(drainSize)} expired PENDING reservations (W=${EXPIRY.workers}, B=${EXPIRY.batch}) and runOutboxBatch draining ${fmt(drainSize)} due events (W=${OUTBOX.workers}, B=${OUTBOX.batch}, no-op handler). ` +
        'ops = reserves, replays, reservations expired or events delivered; latency per call (one reserve; one batch call for the drains). × small = large ÷ small for the same operation: flat is 1.',
      variants: [
        { key: 'small', label: `${fmt(SMALL_ROWS)} rows`, description: "the engine's tables under the default prefix" },
        { key: 'large', label: `${fmt(large)} rows`, description: `a second copy of the engine's tables in the same database (migrateToLatest with tablePrefix '${LARGE_PREFIX}'; the engine and the batch functions are given it)` },
      ],
      baselines: ['small'],
      rows: [],
      notes: [
        `History, seeded server-side (INSERT … SELECT from ${bench.dialect === 'mysql' ? 'seq_1_to_N' : 'generate_series'}): CONFIRMED/EXPIRED/CANCELLED reservations (UUID v7 ids from the last 30 days, so new ids append) with their idempotency keys, and delivered events (processed_at set, available_at NULL).`,
        'reserve (reserve_or_replay routine): items primary key (stock read, guarded UPDATE); idempotency_requests primary key (scope, key) for the lookup and the insert; the inserts append to reservations (primary key UUID v7; status_expires_at, item_id, scope), idempotency_requests_created_at and outbox (id; available_at, processed_dead).',
        `replay: one idempotency_requests primary-key lookup (scope, key), then the reservation by primary key. The replayed keys: ${fmt(REPLAY_KEYS)} PENDING reservations per set, seeded as the replay scenario does (the history's keys carry the engine's hash too).`,
        "expireBatch: reservations_status_expires_at, the range status = 'PENDING' AND expires_at <= now in expires_at order (LIMIT, FOR UPDATE SKIP LOCKED): finished reservations are outside it; then reservations and items by primary key, events appended.",
        'runOutboxBatch: outbox_available_at (available_at, id), the range available_at <= now in (available_at, id) order (LIMIT, FOR UPDATE SKIP LOCKED): delivered events have available_at NULL and are never visited; lease and acknowledgement by primary key.',
        'These plans were checked with EXPLAIN on 1,000,000-row tables (MariaDB 10.11, PostgreSQL 15): range/ref on the named index, never a scan.',
        ...(bench.dialect === 'mysql' ? ["Before each step the bench waits (up to 3 s) for InnoDB's purge to catch up (history list ≤ 100), so that one step's background work is not charged to the next."] : []),
        'Both sets are seeded once and keep what the rounds add (mostly the reserves: up to about 10,000 rows per round). An unmeasured warm-up round runs every operation once on each set; then each round runs every operation on both sets, one after the other, which goes first alternating between operations and rounds.',
        "Before each outbox drain, the events the round's reserves and expiry wrote are marked delivered, so each drain delivers exactly its own events.",
        ...(bench.dialect === 'pglite' ? [`PGlite: large = ${fmt(large)} rows (in-process, in memory).`] : []),
      ],
    };

    const parts = new Map<string, { ms: Measurement[]; checks: Check[][]; pages: Pages[] }>();
    const add = (op: Op, set: TableSet, step: Step) => {
      const k = `${op}/${set.key}`;
      if (!parts.has(k)) parts.set(k, { ms: [], checks: [], pages: [] });
      parts.get(k)!.ms.push(step.m);
      parts.get(k)!.checks.push(step.checks);
      if (step.pages) parts.get(k)!.pages.push(step.pages);
      ctx.log(`    ${op.padEnd(7)} ${set.key.padEnd(5)} ${step.m.throughput.toFixed(0).padStart(7)} ops/s${step.pages ? `  ${(step.pages.requests / step.pages.ops).toFixed(1).padStart(6)} page requests/op` : ''}${step.checks.some((c) => !c.ok) ? `  CHECK FAILED: ${step.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ')}` : ''}`);
    };

    const largeSet = sets.find((s) => s.key === 'large');
    try {
      for (const set of sets) {
        if (set.key === 'small') {
          await bench.reset();
        } else {
          await dropLargeTables(bench);
          const db = bench.kysely(1);
          try {
            await migrateToLatest(db, { tablePrefix: LARGE_PREFIX });
          } finally {
            await bench.closeKysely(db);
          }
        }
        const t0 = performance.now();
        const seconds = await seedSet(bench, set);
        ctx.log(
          `  ${set.key}: seeded ${fmt(set.rows)} rows per table in ${((performance.now() - t0) / 1000).toFixed(1)} s (${Object.entries(seconds)
            .map(([table, s]) => `${table} ${s.toFixed(1)} s`)
            .join(', ')})`,
        );
      }
      // Round 0 warms up, unmeasured: every operation once on each set (Node's JIT, the server's caches), with short loops and drains of 1,000.
      for (let round = 0; round <= ctx.rounds; round++) {
        ctx.log(round === 0 ? '  warm-up round' : `  round ${round}/${ctx.rounds}`);
        const n = round === 0 ? ITEMS : drainSize;
        for (const [i, op] of OPS.entries()) {
          // Which size goes first alternates between operations and between rounds.
          for (const set of (round + i) % 2 === 1 ? sets : [...sets].reverse()) {
            const step =
              op === 'reserve'
                ? await measureReserve(ctx, set, round)
                : op === 'replay'
                  ? await measureReplay(ctx, set, round)
                  : op === 'expiry'
                    ? await measureExpiry(ctx, set, round, n)
                    : await measureOutbox(ctx, set, round, n);
            if (round > 0) {
              add(op, set, step);
            } else if (step.checks.some((c) => !c.ok)) {
              throw new Error(`warm-up, ${op} on ${set.key}: ${step.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ')}`);
            }
          }
        }
      }
      if (largeSet && bench.dialect !== 'mysql') result.notes.push(await sequentialReads(bench));
    } finally {
      if (largeSet) await dropLargeTables(bench);
    }

    for (const op of OPS) {
      for (const set of sets) {
        const p = parts.get(`${op}/${set.key}`);
        if (!p) continue;
        result.rows.push({ variant: set.key, config: { ...CONFIG[op] }, m: mergeMeasurements(p.ms), ratios: {}, checks: mergeChecks(p.checks) });
      }
    }
    computeRatios(result);
    if (bench.dialect === 'mysql') {
      const perOp = (op: Op, set: TableSet, f: (p: Pages) => number, digits: number) => {
        const list = parts.get(`${op}/${set.key}`)?.pages ?? [];
        const ops = list.reduce((a, p) => a + p.ops, 0);
        return ops > 0 ? (list.reduce((a, p) => a + f(p), 0) / ops).toFixed(digits) : '–';
      };
      const line = (f: (p: Pages) => number, digits: number) => OPS.map((op) => `${op} ${sets.map((set) => perOp(op, set, f, digits)).join(' → ')}`).join(', ');
      result.notes.push(
        `InnoDB buffer-pool page requests per op (server-wide, warm-ups included), ${sets.map((s) => s.key).join(' → ')}: ${line((p) => p.requests, 1)}; pages read from disk per op: ${line((p) => p.reads, 2)}.`,
      );
    }
    for (const op of OPS) {
      const rows = result.rows.filter((r) => JSON.stringify(r.config) === JSON.stringify(CONFIG[op]));
      const large = rows.find((r) => r.variant === 'large');
      ctx.log(
        `  ${op.padEnd(7)} ${rows.map((r) => `${r.variant} ${r.m.throughput.toFixed(0).padStart(6)} ops/s (p50 ${r.m.latency.p50Ms.toFixed(2)} ms)`).join('  ')}` +
          (large?.ratios.small !== undefined ? `  × ${large.ratios.small.toFixed(2)}` : '') +
          (ctx.rounds > 1 ? `  (rounds: ${rows.map((r) => parts.get(`${op}/${r.variant}`)!.ms.map((m) => m.throughput.toFixed(0)).join(', ')).join(' | ')})` : ''),
      );
    }
    return result;
  },
};
