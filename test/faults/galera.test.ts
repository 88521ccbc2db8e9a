/**
 * The engine on a 3-node MariaDB Galera cluster (issue 12, part 3): clients, outbox consumers and
 * expiry sweeps on all three nodes at once, one node cut off from the group under load and
 * brought back, then every promise checked from the database (test/support/invariants.ts).
 *
 * Skipped, with the reason printed, when galera-4 / mariadbd / rsync are missing, unless
 * REQUIRE_GALERA=1 (then it fails). Needs root: the nodes run as the `mysql` user.
 *
 *   npx vitest run --config vitest.faults.config.ts test/faults/galera.test.ts
 *   GALERA_FIGURES=figures.json …   also writes the figures table as JSON
 */
import { writeFile } from 'node:fs/promises';
import { Kysely, MysqlDialect, sql } from 'kysely';
import { createPool } from 'mysql2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expireBatch, migrateToLatest, ReservationEngine, ReservationError, runOutboxBatch } from '../../src/index.js';
import { findGalera, type GaleraCluster, missingGalera, startGaleraCluster } from '../support/galera.js';
import { checkInvariants } from '../support/invariants.js';

const available = findGalera() !== undefined;
const required = process.env.REQUIRE_GALERA === '1';
if (!available) console.warn(`[galera] skipped: ${missingGalera()}${required ? ' (REQUIRE_GALERA=1: failing)' : ''}`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const pick = <T>(values: readonly T[]): T => values[Math.floor(Math.random() * values.length)]!;

/** Load shape: small enough for 2 shared cores, big enough to make the nodes conflict. */
const CLIENTS_PER_NODE = 4;
const ITEMS = 12;
const ITEM_STOCK = 60;
const HOT_STOCK = 150;
const ISOLATION_MS = 7_000;
/** A call that takes longer is reported as hung (the pool of an isolated node can stall). */
const CALL_DEADLINE_MS = 60_000;

/** What callers saw, per operation and outcome: `reserve ok`, `confirm TRANSACTION_CONFLICT`, `cancel RAW 1047 …`. */
class Tally {
  readonly counts = new Map<string, number>();
  readonly raw: string[] = [];
  add(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
  /** Counts `error` under `operation` by its code, or as RAW (a failure) when it is not a ReservationError. */
  error(operation: string, error: unknown): string {
    if (error instanceof ReservationError) {
      this.add(`${operation} ${error.code}`);
      return error.code;
    }
    const e = error as { errno?: number; code?: string; sqlState?: string; message?: string };
    const shown = `errno ${e.errno ?? '-'} ${e.code ?? '-'} sqlState ${e.sqlState ?? '-'}: ${String(e.message).slice(0, 160)}`;
    this.add(`${operation} RAW ${shown}`);
    this.raw.push(`${operation}: ${shown}`);
    return 'RAW';
  }
  total(suffix: string): number {
    let n = 0;
    for (const [key, count] of this.counts) if (key.endsWith(` ${suffix}`) || key.includes(` ${suffix} `)) n += count;
    return n;
  }
}

/** Runs `call` with a deadline: a call still pending after it is counted as hung (and left running). */
async function withDeadline<T>(call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      call,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(Object.assign(new Error(`call still pending after ${CALL_DEADLINE_MS / 1000} s`), { code: 'HUNG' })), CALL_DEADLINE_MS))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Errors after which the same request may be sent again (to another node): the outcome is unknown or nothing was written. */
const RETRY_CODES = new Set(['OUTCOME_UNKNOWN', 'TRANSACTION_CONFLICT', 'RAW']);

describe.skipIf(!available && !required)('Galera: 3 nodes, one isolated under load', () => {
  let cluster: GaleraCluster;
  let dbs: Kysely<any>[] = [];
  let engines: ReservationEngine[] = [];
  const figures: Record<string, string | number> = {};
  const tally = new Tally();
  const delivered: string[] = [];
  const received = new Map<number, number>();

  beforeAll(async () => {
    if (!available) throw new Error(`REQUIRE_GALERA=1 but the Galera binaries are missing: ${missingGalera()}`);
    const started = performance.now();
    cluster = await startGaleraCluster({ nodes: 3 });
    figures['cluster start (s)'] = ((performance.now() - started) / 1000).toFixed(1);
    dbs = cluster.nodes.map((node) => new Kysely<any>({ dialect: new MysqlDialect({ pool: createPool({ uri: node.url, timezone: 'Z', connectionLimit: 12 }) }) }));
    await migrateToLatest(dbs[0]!);
    engines = dbs.map((db) => new ReservationEngine({ db, defaultTtlSeconds: 4 }));
  });

  afterAll(async () => {
    await Promise.all(dbs.map((db) => db.destroy().catch(() => {})));
    await cluster?.stop();
    console.log(`\n[galera] ${cluster?.label ?? 'Galera'}: figures\n${formatFigures(figures, tally)}`);
    // For the release note: the same figures as JSON (GALERA_FIGURES=<file> to keep them).
    if (process.env.GALERA_FIGURES) await writeFile(process.env.GALERA_FIGURES, `${JSON.stringify({ label: cluster?.label, figures, counts: Object.fromEntries(tally.counts) }, null, 2)}\n`);
  });

  it('reserving a hot item: one node vs spread over three', async () => {
    const item = await engines[0]!.createItem({ sku: 'THROUGHPUT', name: 'throughput', availableQuantity: 1_000_000 });
    received.set(item.id, 1_000_000);
    await waitUntilEverywhere(item.id);
    const calls = 600;
    const callers = 12;
    const run = async (label: string, engineFor: (caller: number) => ReservationEngine) => {
      let next = 0;
      let ok = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: callers }, async (_, caller) => {
          while (next < calls) {
            const n = next++;
            try {
              await engineFor(caller).reserve({ itemId: item.id, quantity: 1, idempotencyKey: `${label}-${n}`, ttlSeconds: 3600 });
              ok++;
            } catch (error) {
              tally.error(`throughput ${label}`, error);
            }
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      figures[`hot item, ${label}: reserves/s (${ok}/${calls} ok)`] = (ok / seconds).toFixed(0);
    };
    await run('one node', () => engines[0]!);
    await run('three nodes', (caller) => engines[caller % 3]!);
  });

  it('keeps every promise with clients on all nodes and node 3 isolated for a while', async () => {
    const hot = await engines[0]!.createItem({ sku: 'HOT', name: 'hot', availableQuantity: HOT_STOCK });
    received.set(hot.id, HOT_STOCK);
    const items = [hot.id];
    for (let i = 0; i < ITEMS; i++) {
      const item = await engines[i % 3]!.createItem({ sku: `ITEM-${i}`, name: `item ${i}`, availableQuantity: ITEM_STOCK });
      received.set(item.id, ITEM_STOCK);
      items.push(item.id);
    }
    for (const id of items) await waitUntilEverywhere(id);

    let running = true;
    let keys = 0;
    const latency = { max: 0, isolated: 0 };
    let phase: 'before' | 'isolated' | 'after' = 'before';

    /** Sends `call` to node `first`, then to the others while the answer says the outcome is unknown or nothing was written. */
    const persist = async <T>(operation: string, first: number, call: (engine: ReservationEngine) => Promise<T>): Promise<T | { failed: string }> => {
      for (let attempt = 0, node = first; ; attempt++, node = (node + 1) % 3) {
        const started = performance.now();
        const during = phase;
        try {
          const result = await withDeadline(call(engines[node]!));
          tally.add(`${operation} ok`);
          if (during === 'isolated') tally.add(`while isolated: node ${node + 1} ok`);
          return result;
        } catch (error) {
          const code = tally.error(operation, error);
          if (during === 'isolated') tally.add(`while isolated: node ${node + 1} ${code}`);
          if (!RETRY_CODES.has(code) || attempt >= 30) return { failed: code };
          tally.add('client retries');
          await sleep(20 + Math.random() * 80);
        } finally {
          const ms = performance.now() - started;
          latency.max = Math.max(latency.max, ms);
          if (ms > 2_000) tally.add(`calls over 2 s (node ${node + 1})`);
          if (during === 'isolated') latency.isolated = Math.max(latency.isolated, ms);
        }
      }
    };

    const client = async (node: number) => {
      while (running) {
        const itemId = Math.random() < 0.4 ? hot.id : pick(items);
        const quantity = 1 + Math.floor(Math.random() * 2);
        const roll = Math.random();
        if (roll < 0.05) {
          // A keyed restock, retried with its key until it is acknowledged: then it counts.
          const key = `restock-${node}-${keys++}`;
          const restocked = await persist('restock', node, (engine) => engine.restock({ itemId, quantity: 5, idempotencyKey: key }));
          if (!('failed' in restocked)) received.set(itemId, received.get(itemId)! + 5);
          else throw new Error(`restock ${key} never acknowledged: ${restocked.failed}`);
          continue;
        }
        const key = `k-${node}-${keys++}`;
        const request = { itemId, quantity, idempotencyKey: key, ttlSeconds: 2 + Math.floor(Math.random() * 3) };
        if (roll < 0.12) {
          // The same request to two nodes at once: one reservation, both answers name it.
          const other = (node + 1 + Math.floor(Math.random() * 2)) % 3;
          const [a, b] = await Promise.allSettled([engines[node]!.reserve(request), engines[other]!.reserve(request)]);
          const outcome = (r: PromiseSettledResult<{ reservation: { id: string }; replayed: boolean }>) =>
            r.status === 'fulfilled' ? (r.value.replayed ? 'replayed' : 'reserved') : r.reason instanceof ReservationError ? r.reason.code : 'RAW';
          tally.add(`same-key pair: ${[outcome(a), outcome(b)].sort().join(' + ')}`);
          for (const r of [a, b]) if (r.status === 'rejected') tally.error('reserve (same-key pair)', r.reason);
          if (a.status === 'fulfilled' && b.status === 'fulfilled' && a.value.reservation.id !== b.value.reservation.id) {
            tally.raw.push(`same-key pair ${key}: two reservations ${a.value.reservation.id} and ${b.value.reservation.id}`);
          }
          continue;
        }
        // Some are carts: the hot item and another, all or nothing, listed in a random order.
        const other = pick(items.filter((id) => id !== hot.id));
        const lines = [
          { itemId: hot.id, quantity: 1 },
          { itemId: other, quantity },
        ].sort(() => Math.random() - 0.5);
        const result = await persist('reserve', node, (engine) => engine.reserve(roll < 0.3 ? { lines, idempotencyKey: key, ttlSeconds: request.ttlSeconds } : request));
        if ('failed' in result) {
          if (result.failed === 'INSUFFICIENT_STOCK') await sleep(50);
          continue;
        }
        const next = Math.random();
        // Mostly on the node that reserved; sometimes on another, which may not have applied the reservation yet.
        const where = Math.random() < 0.8 ? node : (node + 1) % 3;
        if (next < 0.35) await persist('confirm', where, (engine) => engine.confirm(result.reservation.id));
        else if (next < 0.65) await persist('cancel', where, (engine) => engine.cancel(result.reservation.id));
        // else: left to expire.
      }
    };

    const consumer = async (node: number) => {
      while (running) {
        try {
          const result = await withDeadline(
            runOutboxBatch({ db: dbs[node]!, limit: 50, leaseMs: 6_000, handlerTimeoutMs: 2_000, baseDelayMs: 100, maxDelayMs: 1_000, handler: (event) => void delivered.push(String(event.id)) }),
          );
          tally.add('runOutboxBatch ok');
          if (result.processed + result.failed + result.released === 0) await sleep(100);
        } catch (error) {
          tally.error('runOutboxBatch', error);
          await sleep(200);
        }
      }
    };

    const sweeper = async (node: number) => {
      while (running) {
        try {
          const { expired } = await withDeadline(expireBatch({ db: dbs[node]!, limit: 100 }));
          tally.add('expireBatch ok');
          tally.counts.set('expired by sweeps', (tally.counts.get('expired by sweeps') ?? 0) + expired);
        } catch (error) {
          tally.error('expireBatch', error);
        }
        await sleep(250);
      }
    };

    const workers = [0, 1, 2].flatMap((node) => [
      ...Array.from({ length: CLIENTS_PER_NODE }, () => client(node)),
      consumer(node),
      sweeper(node),
    ]);
    const load = Promise.all(workers);

    await sleep(5_000);
    const isolating = performance.now();
    await cluster.nodes[2]!.isolate();
    phase = 'isolated';
    figures['isolate: node 3 non-primary after (s)'] = ((performance.now() - isolating) / 1000).toFixed(1);
    await sleep(ISOLATION_MS);
    const rejoining = performance.now();
    await cluster.nodes[2]!.rejoin();
    phase = 'after';
    figures['rejoin: all Synced after (s)'] = ((performance.now() - rejoining) / 1000).toFixed(1);
    await sleep(5_000);
    running = false;
    await load;
    figures['longest call (ms)'] = latency.max.toFixed(0);
    figures['longest call begun while node 3 isolated (ms)'] = latency.isolated.toFixed(0);

    // Drain: every reservation past its TTL expired, every event delivered.
    const drained = performance.now();
    await sleep(5_000); // the longest TTL
    for (let round = 0; ; round++) {
      const { expired } = await expireBatch({ db: dbs[round % 3]!, limit: 500 });
      const batch = await runOutboxBatch({ db: dbs[round % 3]!, limit: 500, leaseMs: 6_000, handlerTimeoutMs: 2_000, baseDelayMs: 100, maxDelayMs: 1_000, handler: (event) => void delivered.push(String(event.id)) });
      const { rows } = await sql<{ pending: number; due: number }>`
        select
          (select count(*) from reservation_engine_outbox where processed_at is null and dead_lettered_at is null) as pending,
          (select count(*) from reservation_engine_reservations where status = 'PENDING' and expires_at <= now(3)) as due`.execute(dbs[0]!);
      if (expired === 0 && batch.processed + batch.failed === 0 && Number(rows[0]!.pending) === 0 && Number(rows[0]!.due) === 0) break;
      if (performance.now() - drained > 60_000) throw new Error(`outbox/expiry not drained after 60 s: ${JSON.stringify(rows[0])}`);
      await sleep(200);
    }
    figures['drain (s)'] = ((performance.now() - drained) / 1000).toFixed(1);

    // Every node must hold the same data; the check reads node 1 with causal reads on.
    const sums = await Promise.all(dbs.map(async (db) => {
      const { rows } = await sql<{ s: string }>`select concat(count(*), '/', sum(available_quantity), '/', sum(held_quantity)) as s from reservation_engine_items`.execute(db);
      return rows[0]!.s;
    }));
    const checkDb = new Kysely<any>({ dialect: new MysqlDialect({ pool: createPool({ uri: cluster.nodes[0]!.url, timezone: 'Z', connectionLimit: 1 }) }) });
    try {
      await sql`set session wsrep_sync_wait = 1`.execute(checkDb);
      const report = await checkInvariants(checkDb, { received, delivered });
      figures.reservations = report.reservations;
      figures.events = report.events;
      figures['events delivered twice or more (redeliveries)'] = report.duplicatesDelivered;
      figures['dead-lettered'] = report.deadLettered;
      figures['invariant violations'] = report.violations.length;
      figures['raw driver errors reaching callers'] = tally.raw.length;
      if (report.violations.length > 0) console.error(`[galera] violations:\n${report.violations.slice(0, 50).join('\n')}`);
      if (tally.raw.length > 0) console.error(`[galera] raw errors (first 20):\n${tally.raw.slice(0, 20).join('\n')}`);
      expect(new Set(sums).size, `nodes disagree: ${sums.join(' | ')}`).toBe(1);
      expect(report.violations).toEqual([]);
      expect(tally.raw).toEqual([]);
    } finally {
      await checkDb.destroy();
    }
  }, 240_000);

  /** Waits until every node has applied the item (Galera applies asynchronously on the other nodes). */
  async function waitUntilEverywhere(itemId: number): Promise<void> {
    for (const engine of engines) await expect.poll(() => engine.getItem(itemId), { timeout: 10_000 }).toBeDefined();
  }
});

function formatFigures(figures: Record<string, string | number>, tally: Tally): string {
  const rows: [string, string][] = Object.entries(figures).map(([key, value]) => [key, String(value)]);
  for (const [key, value] of [...tally.counts].sort(([a], [b]) => a.localeCompare(b))) rows.push([key, String(value)]);
  const width = Math.max(...rows.map(([key]) => key.length), 10);
  return rows.map(([key, value]) => `  ${key.padEnd(width)}  ${value}`).join('\n');
}
