/**
 * Carts (issue 15): one reservation holding 5 items, all or nothing, in one round trip (the
 * `reserve_lines` routine), against the same 5 items reserved one after another, and against a
 * reservation of 1 item. First on items spread so wide that row locks rarely meet (the cost per
 * call), then, at the concurrencies above 1, on a handful of items that every cart shares (how
 * carts fare when they queue for the same rows).
 */
import type { ReservationEngine } from '../../src/index.js';
import { type ClosedLoopSpec, keyMaker, openEngine, runClosedLoopScenario } from '../lib/closed-loop.js';
import type { BenchDatabase } from '../lib/db.js';
import { checkStock, pick, seedItems } from '../lib/fixtures.js';
import { computeRatios, type Checks, type Row, type Scenario, type ScenarioContext, type ScenarioResult } from '../lib/scenario.js';

/** Lines of a cart: distinct items, 1 unit each. */
const CART_LINES = 5;
/** Items the spread runs draw from (quick: fewer, so that seeding stays short). bench/lib/targets.ts names the full-mode count. */
const SPREAD_ITEMS = { full: 10_000, quick: 1_000 } as const;
/** Items every cart of the shared runs draws its 5 from. */
const SHARED_ITEMS = 10;
const STOCK = 10_000_000;

interface Fixture {
  itemIds: number[];
}

/** `n` distinct items among `itemIds`, in ascending id. */
function pickDistinct(itemIds: readonly number[], n: number): number[] {
  const chosen = new Set<number>();
  while (chosen.size < n) chosen.add(pick(itemIds));
  return [...chosen].sort((a, b) => a - b);
}

/** The variant's op on an engine over a pool of `concurrency` connections. */
function engineVariant(key: string, op: (engine: ReservationEngine, itemIds: readonly number[], key: () => string) => Promise<void>) {
  return async (bench: BenchDatabase, concurrency: number, { itemIds }: Fixture) => {
    const { engine, close } = openEngine(bench, concurrency);
    const next = keyMaker(`cart-${key}-${concurrency}`);
    return { op: () => op(engine, itemIds, next), close };
  };
}

function fresh(replayed: boolean): void {
  if (replayed) throw new Error('a fresh key was replayed');
}

function makeSpec(items: number): ClosedLoopSpec<Fixture> {
  return {
    id: 'cart',
    title: 'Carts',
    description: '',
    baselines: ['single', 'cart'],
    notes: [],
    variants: [
      {
        key: 'cart',
        label: `${CART_LINES}-line cart`,
        description: `engine.reserve({ lines: [${CART_LINES} distinct random items, 1 unit each], idempotencyKey }): one reservation, one round trip (the reserve_lines routine).`,
        open: engineVariant('cart', async (engine, itemIds, key) => {
          const lines = pickDistinct(itemIds, CART_LINES).map((itemId) => ({ itemId, quantity: 1 }));
          fresh((await engine.reserve({ lines, idempotencyKey: key() })).replayed);
        }),
      },
      {
        key: 'five',
        label: `${CART_LINES} single reserves`,
        description: `${CART_LINES} distinct random items, as a cart takes them, reserved one after another with engine.reserve({ itemId, quantity: 1, idempotencyKey }), each under its own key: ${CART_LINES} reservations, ${CART_LINES} round trips, not all or nothing.`,
        open: engineVariant('five', async (engine, itemIds, key) => {
          for (const itemId of pickDistinct(itemIds, CART_LINES)) fresh((await engine.reserve({ itemId, quantity: 1, idempotencyKey: key() })).replayed);
        }),
      },
      {
        key: 'single',
        label: '1-line reservation',
        description: 'engine.reserve({ lines: [1 random item, 1 unit], idempotencyKey }): the engine stores and sends it as a single-item reservation (the reserve_or_replay routine), as { itemId, quantity }.',
        open: engineVariant('single', async (engine, itemIds, key) => {
          fresh((await engine.reserve({ lines: [{ itemId: pick(itemIds), quantity: 1 }], idempotencyKey: key() })).replayed);
        }),
      },
    ],
    async setup(bench) {
      return { itemIds: await seedItems(bench, items, STOCK) };
    },
    async check(bench, { itemIds }, variant, ops, checks) {
      await checkStock(bench, checks, {
        initial: new Map(itemIds.map((id) => [id, STOCK])),
        reservations: variant === 'five' ? CART_LINES * ops : ops,
        lines: variant === 'cart' ? CART_LINES * ops : 0,
      });
      await checkAudit(bench, checks);
    },
  };
}

/** engine.audit over every item: received = available + PENDING units, and the held counters match. */
async function checkAudit(bench: BenchDatabase, checks: Checks): Promise<void> {
  const { engine, close } = openEngine(bench, 1);
  try {
    const report = await engine.audit();
    const first = report.discrepancies[0];
    checks.expect('engine.audit ok', report.ok, report.ok ? `${report.itemsChecked} items` : `${report.discrepancies.length} items off, e.g. item ${first?.itemId}: ${first?.problems.join('; ')}`);
  } finally {
    await close();
  }
}

const fmt = (n: number | undefined, digits = 2) => (n === undefined || !Number.isFinite(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const sameConfig = (a: Row, b: Row) => JSON.stringify(a.config) === JSON.stringify(b.config);

/** Per-op latency ratios, which the throughput columns only imply: cart ÷ 1-line (the target) and five singles ÷ cart. */
function latencyTable(result: ScenarioResult): string {
  const label = (key: string) => result.variants.find((v) => v.key === key)?.label ?? key;
  const ratio = (row: Row, baseline: string, p: 'p50Ms' | 'p95Ms') => {
    const base = result.rows.find((r) => r.variant === baseline && sameConfig(r, row));
    return base ? row.m.latency[p] / base.m.latency[p] : undefined;
  };
  const head = ['config', 'variant', 'ops/s', 'p50 ms / op', 'p95 ms / op', 'p50 ÷ 1-line', 'p95 ÷ 1-line', 'p50 ÷ cart', 'p95 ÷ cart'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const row of result.rows) {
    const config = `c=${row.config.concurrency} items=${row.config.items}`;
    const cells = [config, label(row.variant), fmt(row.m.throughput, 0), fmt(row.m.latency.p50Ms), fmt(row.m.latency.p95Ms)];
    cells.push(fmt(ratio(row, 'single', 'p50Ms')), fmt(ratio(row, 'single', 'p95Ms')), fmt(ratio(row, 'cart', 'p50Ms')), fmt(ratio(row, 'cart', 'p95Ms')));
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export const cart: Scenario = {
  id: 'cart',
  title: 'Carts',
  async run(ctx: ScenarioContext) {
    const spread = SPREAD_ITEMS[ctx.mode];
    // Carts cannot overlap with one caller: the shared items run only above concurrency 1.
    const sharedConcurrencies = ctx.concurrencies.filter((c) => c > 1);
    const sets = [
      { items: spread, concurrencies: ctx.concurrencies, heading: `spread: ${spread.toLocaleString('en-US')} items` },
      { items: SHARED_ITEMS, concurrencies: sharedConcurrencies, heading: `shared: every cart takes ${CART_LINES} of the same ${SHARED_ITEMS} items` },
    ];
    let result: ScenarioResult | undefined;
    const rows: Row[] = [];
    for (const set of sets.filter((s) => s.concurrencies.length > 0)) {
      ctx.log(`  ${set.heading}`);
      result = await runClosedLoopScenario({ ...ctx, concurrencies: set.concurrencies }, makeSpec(set.items));
      for (const row of result.rows) rows.push({ ...row, config: { concurrency: row.config.concurrency!, items: set.items }, ratios: {} });
    }
    result!.rows = rows.sort((a, b) => a.config.concurrency! - b.config.concurrency! || b.config.items! - a.config.items!);
    computeRatios(result!);
    result!.notes = [
      `Each op: the variant's whole work, so per-op latency is comparable across variants; ${CART_LINES} single reserves make ${CART_LINES} reservations per op, a cart 1 (holding ${CART_LINES} units), a 1-line reservation 1 (1 unit).`,
      `Target (issue 15): a ${CART_LINES}-line cart's p50 ≤ 2× a 1-line reservation's, on the spread items, at every concurrency. The shared runs are for reference: there the carts queue for the same row locks (taken in ascending item id, so they never deadlock).`,
      `Items: ${STOCK.toLocaleString('en-US')} units each, never short. Checks also run engine.audit() over every item after each slice.`,
      ...(sharedConcurrencies.length === 0 ? ['The shared runs need a concurrency above 1: skipped.'] : []),
    ];
    result!.description = [
      `${CART_LINES} distinct random items per op, 1 unit each, as one cart, as ${CART_LINES} single-item reserves one after another, or 1 item as a 1-line reservation; items=${spread.toLocaleString('en-US')}: spread over that many items (row locks rarely meet: the cost per call); items=${SHARED_ITEMS}: every cart draws from the same ${SHARED_ITEMS} (overlapping carts). Per-op latency ratios (the table below the variants has throughput and its ratios):`,
      '',
      latencyTable(result!),
    ].join('\n');
    for (const row of result!.rows.filter((r) => r.variant !== 'single')) {
      const base = row.variant === 'cart' ? 'single' : 'cart';
      const other = result!.rows.find((r) => r.variant === base && sameConfig(r, row));
      if (other) ctx.log(`  c=${row.config.concurrency} items=${row.config.items}: ${row.variant} ÷ ${base} p50 ${fmt(row.m.latency.p50Ms / other.m.latency.p50Ms)}×, p95 ${fmt(row.m.latency.p95Ms / other.m.latency.p95Ms)}×`);
    }
    return result!;
  },
};
