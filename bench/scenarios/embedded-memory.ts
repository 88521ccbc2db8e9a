/**
 * Embedded memory: a steady reserve / confirm / cancel / expire / outbox load with retention on
 * `createEmbeddedDatabase()` (PGlite in memory), sampling the process's RSS and PGlite's own data
 * size as reservations accumulate. Retention keeps the rows steady, so memory should level off.
 *
 * Each variant runs in a child process of its own (this file, run with `child`), so that its RSS
 * is its own: not the bench's PGlite, not the other variant's WASM heap.
 *
 *   node --expose-gc --import tsx bench/scenarios/embedded-memory.ts child '{"variant":"maintained","samples":[1000,2000]}'
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { ReservationEngine, createEmbeddedDatabase, expireBatch, purgeBatch, runOutboxBatch } from '../../src/index.js';
import { embeddedPGliteOf } from '../../src/embedded/create-embedded-database.js';
import type { Measurement } from '../lib/load.js';
import { Checks, type Row, type Scenario, type ScenarioResult } from '../lib/scenario.js';
import { cpuShare, elapsedMs, Latencies, now } from '../lib/stats.js';

const ITEMS = 10;
const STOCK = 1_000_000_000;
/** Simulated time per reservation on the engine's clock: 20 reservations a second. */
const STEP_MS = 50;
const TTL_SECONDS = 30;
/** Retention of delivered events, idempotency keys and finished reservations: 1,200 reservations' worth. */
const RETENTION_MS = 60_000;
/** Reservations between two rounds of expireBatch, runOutboxBatch and purgeBatch (25 simulated seconds). */
const ROUND = 500;
const BATCH = 1000;
const MB = 2 ** 20;

type VariantKey = 'maintained' | 'unmaintained';

const VARIANTS: ReadonlyArray<{ key: VariantKey; label: string; description: string }> = [
  { key: 'maintained', label: 'purgeBatch', description: 'purgeBatch with its defaults: on PGlite it also VACUUMs the tables past autovacuum\'s threshold and CHECKPOINTs every 32 MB of WAL.' },
  {
    key: 'unmaintained',
    label: 'purgeBatch, maintenance: false',
    description: 'purgeBatch deleting the same rows, without VACUUM or CHECKPOINT: what every release before `maintenance` did.',
  },
];

/** One sample of the child's memory, after a forced GC. */
interface MemorySample {
  reservations: number;
  rssMB: number;
  heapUsedMB: number;
  externalMB: number;
  /** PGlite's WASM linear memory (it grows, never shrinks). */
  wasmHeapMB: number | null;
  /** Files under PGlite's PGDATA in its in-memory file system (tables, WAL, commit log…). */
  memfsMB: number | null;
  /** pg_database_size(current_database()). */
  databaseMB: number;
  /** Sum of pg_ls_waldir(). */
  walMB: number;
  /** pg_total_relation_size of the engine's five tables. */
  tablesMB: number;
  /** Live rows in reservations / outbox. */
  reservationRows: number;
  outboxRows: number;
  /** Wall seconds since the load started. */
  elapsedS: number;
}

interface ChildOptions {
  variant: VariantKey;
  /** Reservations after which to sample; the last one ends the run. */
  samples: number[];
  /** Reservations after which to report a row (a subset of `samples`). */
  rows: number[];
}

type ChildMessage =
  | { type: 'sample'; sample: MemorySample }
  | { type: 'row'; reservations: number; m: Measurement }
  | { type: 'done'; checks: Checks['list'] };

// ---------------------------------------------------------------------------------------------
// The child: the load itself.

async function child(options: ChildOptions): Promise<void> {
  const send = (message: ChildMessage) => process.stdout.write(`${JSON.stringify(message)}\n`);
  const db = await createEmbeddedDatabase();
  const pglite = embeddedPGliteOf(db) as unknown as { Module?: { HEAPU8?: Uint8Array; FS?: any } } | undefined;
  let clock = Date.UTC(2030, 0, 1);
  const engine = new ReservationEngine({ db, clock: () => new Date(clock) });
  const items: number[] = [];
  for (let i = 0; i < ITEMS; i++) items.push((await engine.createItem({ sku: `mem-${i}`, name: `item ${i}`, availableQuantity: STOCK })).id);
  const maintenance = options.variant === 'maintained';
  let confirmedUnits = 0;
  let delivered = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = now();

  const retention = async () => {
    const at = new Date(clock);
    while ((await expireBatch({ db, now: at, limit: BATCH })).expired === BATCH);
    for (;;) {
      const r = await runOutboxBatch({ db, now: at, limit: BATCH, handler: () => void delivered++ });
      if (r.processed + r.failed + r.deadLettered + r.released === 0) break;
    }
    for (;;) {
      const r = await purgeBatch({ db, now: at, processedEventsMs: RETENTION_MS, idempotencyKeysMs: RETENTION_MS, finishedReservationsMs: RETENTION_MS, limit: BATCH, maintenance });
      if (Math.max(r.outboxEvents, r.idempotencyKeys, r.restockKeys, r.reservations) < BATCH) break;
    }
  };

  const sample = async (reservations: number): Promise<MemorySample> => {
    (globalThis as { gc?: () => void }).gc?.();
    const mu = process.memoryUsage();
    const files = memfsBytes(pglite?.Module?.FS);
    const one = async (query: ReturnType<typeof sql<{ v: string | number }>>) => Number((await query.execute(db)).rows[0]?.v ?? 0);
    const tables = ['items', 'reservations', 'idempotency_requests', 'restock_requests', 'outbox'].map((t) => `reservation_engine_${t}`);
    return {
      reservations,
      rssMB: mu.rss / MB,
      heapUsedMB: mu.heapUsed / MB,
      externalMB: mu.external / MB,
      wasmHeapMB: pglite?.Module?.HEAPU8 ? pglite.Module.HEAPU8.length / MB : null,
      memfsMB: files === null ? null : files / MB,
      databaseMB: (await one(sql`select pg_database_size(current_database()) as v`)) / MB,
      walMB: (await one(sql`select coalesce(sum(size), 0) as v from pg_ls_waldir()`)) / MB,
      tablesMB: (await one(sql`select coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) as v from unnest(${tables}::text[]) as t`)) / MB,
      reservationRows: await one(sql`select count(*) as v from reservation_engine_reservations`),
      outboxRows: await one(sql`select count(*) as v from reservation_engine_outbox`),
      elapsedS: elapsedMs(started) / 1000,
    };
  };

  send({ type: 'sample', sample: await sample(0) });
  const last = Math.max(...options.samples);
  let latencies = new Latencies();
  let segmentStart = now();
  let segmentCpu = process.cpuUsage();
  let segmentFrom = 0;
  for (let n = 1; n <= last; n++) {
    clock += STEP_MS;
    const t = now();
    try {
      const { reservation } = await engine.reserve({ itemId: items[n % ITEMS]!, quantity: 1, idempotencyKey: `mem-${n}`, ttlSeconds: TTL_SECONDS });
      // 50% confirmed, 20% cancelled, 30% left to expire.
      const fate = n % 10;
      if (fate < 5) {
        await engine.confirm(reservation.id);
        confirmedUnits++;
      } else if (fate < 7) {
        await engine.cancel(reservation.id);
      }
      latencies.add(elapsedMs(t));
    } catch (error) {
      errors++;
      firstError ??= error instanceof Error ? error.message : String(error);
    }
    if (n % ROUND === 0) await retention();
    if (options.samples.includes(n)) {
      const wallMs = elapsedMs(segmentStart);
      if (options.rows.includes(n)) {
        const ops = n - segmentFrom;
        send({
          type: 'row',
          reservations: n,
          m: {
            ops,
            calls: ops,
            warmupOps: 0,
            errors,
            ...(firstError === undefined ? {} : { firstError }),
            wallMs,
            throughput: (ops / wallMs) * 1000,
            latency: latencies.summary(),
            nodeCpu: cpuShare(segmentCpu, wallMs),
          },
        });
      }
      send({ type: 'sample', sample: await sample(n) });
      if (options.rows.includes(n)) {
        latencies = new Latencies();
        segmentStart = now();
        segmentCpu = process.cpuUsage();
        segmentFrom = n;
      }
    }
  }

  // Drain what is due, then check the books.
  clock += (TTL_SECONDS + 1) * 1000;
  await retention();
  const checks = new Checks();
  checks.expect('no failed reservations', errors === 0, errors === 0 ? '0' : `${errors}: ${firstError}`);
  const stock = await sql<{ available: string; held: string }>`select sum(available_quantity) as available, sum(held_quantity) as held from reservation_engine_items`.execute(db);
  checks.equal('held units (none PENDING after the final expiry)', Number(stock.rows[0]?.held), 0);
  checks.equal('available + confirmed units = initial stock', Number(stock.rows[0]?.available) + confirmedUnits, ITEMS * STOCK);
  const due = await sql<{ n: string }>`select count(*) as n from reservation_engine_outbox where processed_at is null`.execute(db);
  checks.equal('undelivered events', Number(due.rows[0]?.n), 0);
  // reservation.created for all, plus confirmed / cancelled / expired for all.
  checks.equal('events delivered', delivered, 2 * last);
  send({ type: 'done', checks: checks.list });
  await db.destroy();
}

/** Bytes of the files under PGDATA in PGlite's in-memory file system; null when it is not MEMFS. */
function memfsBytes(FS: any): number | null {
  if (!FS) return null;
  let total = 0;
  const walk = (path: string): void => {
    const node = FS.lookupPath(path).node;
    if (FS.isDir(node.mode)) {
      for (const name of FS.readdir(path) as string[]) if (name !== '.' && name !== '..') walk(`${path}/${name}`);
    } else {
      total += node.usedBytes ?? 0;
    }
  };
  try {
    walk('/pglite/data');
  } catch {
    return null;
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// The parent: one child per variant, their rows and a memory table for the report.

const signed = (n: number, digits = 0) => `${n < 0 ? '−' : '+'}${fmt(Math.abs(n), digits)}`;
const fmt = (n: number | null, digits = 0): string => (n === null ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));

function runChild(options: ChildOptions, log: (message: string) => void): Promise<{ samples: MemorySample[]; rows: Map<number, Measurement>; checks: Checks['list'] }> {
  const file = fileURLToPath(import.meta.url);
  const root = fileURLToPath(new URL('../../', import.meta.url));
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', file, 'child', JSON.stringify(options)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const samples: MemorySample[] = [];
    const rows = new Map<number, Measurement>();
    let checks: Checks['list'] | undefined;
    let buffered = '';
    let stderr = '';
    proc.stderr.on('data', (chunk) => (stderr += String(chunk)));
    proc.stdout.on('data', (chunk) => {
      buffered += String(chunk);
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let message: ChildMessage;
        try {
          message = JSON.parse(line) as ChildMessage;
        } catch {
          continue;
        }
        if (message.type === 'sample') {
          const s = message.sample;
          samples.push(s);
          log(
            `  ${options.variant.padEnd(12)} ${fmt(s.reservations).padStart(7)} reservations  RSS ${fmt(s.rssMB).padStart(5)} MB  WASM heap ${fmt(s.wasmHeapMB)} MB  memfs ${fmt(s.memfsMB)} MB (database ${fmt(s.databaseMB, 1)}, WAL ${fmt(s.walMB)}, engine tables ${fmt(s.tablesMB, 1)})  rows: ${fmt(s.reservationRows)} reservations, ${fmt(s.outboxRows)} events  ${fmt(s.elapsedS)} s`,
          );
        } else if (message.type === 'row') {
          rows.set(message.reservations, message.m);
        } else {
          checks = message.checks;
        }
      }
    });
    proc.on('error', reject);
    proc.on('close', (code) => {
      if (code === 0 && checks) resolve({ samples, rows, checks });
      else reject(new Error(`embedded-memory child (${options.variant}) exited with ${code}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}

function memoryTable(byVariant: Array<{ key: VariantKey; label: string; samples: MemorySample[] }>, rows: number[]): string {
  const head = ['variant', 'reservations', 'RSS MB', 'Node heap MB', 'WASM heap MB', 'memfs MB', 'database MB', 'WAL MB', 'engine tables MB', 'rows (reservations / events)'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 1 ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const v of byVariant) {
    for (const s of v.samples.filter((x) => x.reservations === 0 || rows.includes(x.reservations))) {
      lines.push(
        `| ${v.label} | ${fmt(s.reservations)} | ${fmt(s.rssMB)} | ${fmt(s.heapUsedMB)} | ${fmt(s.wasmHeapMB)} | ${fmt(s.memfsMB)} | ${fmt(s.databaseMB, 1)} | ${fmt(s.walMB)} | ${fmt(s.tablesMB, 1)} | ${fmt(s.reservationRows)} / ${fmt(s.outboxRows)} |`,
      );
    }
  }
  return lines.join('\n');
}

export const embeddedMemory: Scenario = {
  id: 'embedded-memory',
  title: 'Embedded memory under steady load',
  async run(ctx) {
    const rowsAt = ctx.mode === 'full' ? [10_000, 50_000, 100_000] : [2_000, 5_000, 10_000];
    const step = ctx.mode === 'full' ? 10_000 : 1_000;
    const samplesAt = [...new Set([...Array.from({ length: rowsAt.at(-1)! / step }, (_, i) => (i + 1) * step), ...rowsAt])].sort((a, b) => a - b);
    const result: ScenarioResult = {
      id: 'embedded-memory',
      title: 'Embedded memory under steady load',
      unit: 'reservations/s',
      latencyOf: 'reservation',
      description: '',
      variants: VARIANTS.map((v) => ({ ...v })),
      baselines: [],
      rows: [],
      notes: [],
    };
    if (ctx.bench.dialect !== 'pglite') {
      result.description = 'PGlite only: run it with `--dialect pglite`.';
      ctx.log('  skipped: PGlite only (--dialect pglite)');
      return result;
    }
    const measured: Array<{ key: VariantKey; label: string; samples: MemorySample[] }> = [];
    for (const variant of VARIANTS.filter((v) => !ctx.variants || ctx.variants.includes(v.key))) {
      const { samples, rows, checks } = await runChild({ variant: variant.key, samples: samplesAt, rows: rowsAt }, ctx.log);
      measured.push({ key: variant.key, label: variant.label, samples });
      for (const n of rowsAt) {
        const m = rows.get(n);
        if (!m) continue;
        const s = samples.find((x) => x.reservations === n);
        // The memory figures ride along in the JSON (the Markdown has them in the table above).
        const row: Row & { memory?: MemorySample } = { variant: variant.key, config: { reservations: n }, m, ratios: {}, checks: n === rowsAt.at(-1) ? checks : [], ...(s ? { memory: s } : {}) };
        result.rows.push(row);
      }
      const at = (n: number) => samples.find((x) => x.reservations === n);
      const mid = at(rowsAt[1]!);
      const end = at(rowsAt[2]!);
      if (mid && end) {
        const perReservationKB = ((end.rssMB - mid.rssMB) * MB) / (rowsAt[2]! - rowsAt[1]!) / 1024;
        const files = end.memfsMB !== null && mid.memfsMB !== null ? `, PGlite's files ${signed(end.memfsMB - mid.memfsMB)} MB` : '';
        result.notes.push(`${variant.label}: from ${fmt(rowsAt[1]!)} to ${fmt(rowsAt[2]!)} reservations, RSS ${signed(end.rssMB - mid.rssMB)} MB (${signed(perReservationKB, 1)} KB per reservation)${files}.`);
      }
    }
    result.description = [
      `createEmbeddedDatabase() (PGlite, memory://) in a child process per variant, under a steady load on ${ITEMS} items: each reservation (1 unit, TTL ${TTL_SECONDS} s) is confirmed (50%), cancelled (20%) or left to expire (30%); every ${ROUND} reservations, expireBatch, runOutboxBatch and purgeBatch (retention ${RETENTION_MS / 1000} s for delivered events, keys and finished reservations) run until they find nothing more. The engine's clock advances ${STEP_MS} ms per reservation, so retention holds about ${fmt((RETENTION_MS / STEP_MS))} reservations' rows. Memory is sampled after a forced GC: RSS, the Node heap, PGlite's WASM heap, the files of its in-memory PGDATA (memfs), pg_database_size, the WAL (pg_ls_waldir) and the engine's tables (pg_total_relation_size). Throughput (reservations ÷ wall time, retention rounds included) and latencies (one reserve plus its confirm or cancel) are per segment, since the previous row.`,
      '',
      memoryTable(measured, rowsAt),
    ].join('\n');
    return result;
  },
};

const invokedDirectly = process.argv[1] !== undefined && existsSync(process.argv[1]) && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly && process.argv[2] === 'child') {
  child(JSON.parse(process.argv[3] ?? '{}') as ChildOptions).then(
    () => process.exit(0),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
}
