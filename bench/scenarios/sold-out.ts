/**
 * 7. Sold-out flash sale: one item whose stock is all held, and a crowd still asking for it. Most
 * requests are new (fresh keys, answered INSUFFICIENT_STOCK); every fourth is a client retrying
 * a request that won (a replay). What a "no" costs decides how a flash sale ends.
 */
import { InsufficientStockError } from '../../src/index.js';
import { type ClosedLoopSpec, keyMaker, openEngine, rawTransaction, runClosedLoopScenario } from '../lib/closed-loop.js';
import { checkStock, pick, seedItems, statements } from '../lib/fixtures.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';
import { seedReservations } from './replay.js';

const TTL_SECONDS = 900;
/** One request in this many is a replay of a winner's request. */
const REPLAY_EVERY = 4;

interface Fixture {
  itemId: number;
  stock: number;
  winners: Array<{ id: string; key: string; quantity: number }>;
}

/** Every REPLAY_EVERY-th call of the returned function is true. */
function replayTurns(): () => boolean {
  let n = 0;
  return () => ++n % REPLAY_EVERY === 0;
}

function makeSpec(winners: number): ClosedLoopSpec<Fixture> {
  return {
    id: 'sold-out',
    title: 'Sold-out flash sale',
    description: `One item, sold out: ${winners.toLocaleString('en-US')} PENDING reservations hold all its units. Three requests in four reserve 1 unit under a fresh key (answer: insufficient stock); one in four replays a winner's request (answer: its reservation).`,
    baselines: ['classic', 'bare'],
    notes: [
      'engine: one round trip per request: the routine reads the stock and the key without a lock and answers without starting a transaction.',
      "classic: the architecture's order as a hand-written app would run it, at its cheapest: a fresh key → BEGIN; SELECT available_quantity … FOR UPDATE (sees 0); ROLLBACK (3 round trips, waiting for the row lock); a replay → one SELECT of the key.",
      'bare: one autocommit SELECT available_quantity FROM items WHERE id = ? per request, replay or not: the upper limit of answering at all.',
    ],
    variants: [
      {
        key: 'engine',
        label: 'engine.reserve',
        description: 'engine.reserve with a fresh key (must throw InsufficientStockError) or a winner\'s request (must replay its reservation).',
        async open(bench, concurrency, { itemId, winners }) {
          const { engine, close } = openEngine(bench, concurrency);
          const key = keyMaker(`sold-${concurrency}`);
          const replayTurn = replayTurns();
          return {
            async op() {
              if (replayTurn()) {
                const w = pick(winners);
                const result = await engine.reserve({ itemId, quantity: w.quantity, idempotencyKey: w.key, ttlSeconds: TTL_SECONDS });
                if (!result.replayed || result.reservation.id !== w.id) throw new Error(`key ${w.key} was not replayed`);
                return;
              }
              try {
                await engine.reserve({ itemId, quantity: 1, idempotencyKey: key(), ttlSeconds: TTL_SECONDS });
              } catch (error) {
                if (error instanceof InsufficientStockError) return;
                throw error;
              }
              throw new Error('a sold-out item was reserved');
            },
            close,
          };
        },
      },
      {
        key: 'classic',
        label: 'classic order (raw)',
        description: 'Raw driver. Fresh key: BEGIN; SELECT available_quantity … FOR UPDATE; sees 0; ROLLBACK. Replay: SELECT the key (idempotency record JOIN reservation).',
        async open(bench, concurrency, { itemId, winners }) {
          const pool = await bench.raw(concurrency);
          const s = statements(bench);
          const replayTurn = replayTurns();
          return {
            async op() {
              if (replayTurn()) {
                const w = pick(winners);
                const { rows } = await pool.withConnection((conn) => conn.query(s.findByKey.sql, ['', w.key]));
                if (rows.length !== 1) throw new Error(`key ${w.key} not found`);
                return;
              }
              const soldOut = Symbol('sold out');
              const outcome = await rawTransaction(pool, async (q) => {
                const { rows } = await q(s.lockItem.sql, [itemId]);
                if (Number(rows[0]?.available_quantity) < 1) throw soldOut;
              }).catch((error) => (error === soldOut ? error : Promise.reject(error)));
              if (outcome !== soldOut) throw new Error('a sold-out item had stock');
            },
            close: () => pool.end(),
          };
        },
      },
      {
        key: 'bare',
        label: 'bare SELECT (raw, autocommit)',
        description: 'Raw driver, autocommit: SELECT available_quantity FROM items WHERE id = ? — the upper limit.',
        async open(bench, concurrency, { itemId }) {
          const pool = await bench.raw(concurrency);
          const s = statements(bench);
          return {
            async op() {
              const { rows } = await pool.withConnection((conn) => conn.query(s.readStock.sql, [itemId]));
              if (Number(rows[0]?.available_quantity) !== 0) throw new Error('a sold-out item had stock');
            },
            close: () => pool.end(),
          };
        },
      },
    ],
    async setup(bench) {
      // Quantities 1, 2, 3, 1, 2, 3, … : the stock is exactly what the winners hold.
      const stock = Array.from({ length: winners }, (_, i) => 1 + (i % 3)).reduce((a, b) => a + b, 0);
      const [itemId] = await seedItems(bench, 1, stock);
      const existing = await seedReservations(bench, [itemId!], winners);
      return { itemId: itemId!, stock, winners: existing.map((r) => ({ id: r.id, key: r.key, quantity: r.quantity })) };
    },
    async check(bench, { itemId, stock, winners }, _variant, _ops, checks) {
      await checkStock(bench, checks, { initial: new Map([[itemId, stock]]), reservations: winners.length });
    },
  };
}

export const soldOut: Scenario = {
  id: 'sold-out',
  title: 'Sold-out flash sale',
  run: (ctx: ScenarioContext) => runClosedLoopScenario(ctx, makeSpec(ctx.mode === 'quick' ? 99 : 999)),
};
