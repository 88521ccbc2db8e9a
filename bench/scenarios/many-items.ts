/**
 * 2. Many items: reservations of 1 unit spread uniformly over 1,000 items, so row locks rarely
 * collide. engine.reserve against the very statements it sends, through the raw driver: the
 * difference is the library's own cost (validation, hashing, Kysely, its retry wrapper).
 */
import { type ClosedLoopSpec, runClosedLoopScenario } from '../lib/closed-loop.js';
import { checkStock, pick, seedItems, verifyEngineStatements } from '../lib/fixtures.js';
import { engineReserve, rawArchitectureOrder, rawClientTransaction, rawEngineStatements } from '../lib/reserve-drivers.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';

export const MANY_ITEMS = 1000;
export const MANY_ITEMS_STOCK = 1_000_000;

interface Fixture {
  itemIds: number[];
}

function makeSpec(statementsNote: string): ClosedLoopSpec<Fixture> {
  return {
    id: 'many-items',
    title: 'Many items',
    description: `Each request reserves 1 unit of one of ${MANY_ITEMS.toLocaleString('en-US')} items (uniform random, ${MANY_ITEMS_STOCK.toLocaleString('en-US')} units each).`,
    baselines: ['raw', 'arch'],
    notes: [
      "raw sends the statement engine.reserve sends — one CALL / SELECT of the reserve_or_replay routine — through the raw driver's pool.getConnection() + conn.query().",
      "arch: the architecture's order (SELECT … FOR UPDATE first, then the writes, 6 client round trips with the row lock held).",
      "raw's values: UUID v7 (the engine's generator), SHA-256 of the request, the JSON payload; no input validation, no canonical JSON, no Kysely.",
      'tx-raw (reference, not a target): the client-side transaction the engine used before (SELECT; BEGIN; 3 INSERTs; guarded UPDATE; COMMIT).',
      statementsNote,
    ],
    variants: [
      {
        key: 'engine',
        label: 'engine.reserve',
        description: 'engine.reserve({ itemId: random, quantity: 1, idempotencyKey }) with a distinct key per call.',
        open: (bench, c, { itemIds }) => engineReserve(bench, c, () => pick(itemIds), `many-e${c}`),
      },
      {
        key: 'raw',
        label: "engine's statements (raw)",
        description: 'Raw driver: the reserve_or_replay routine, one statement in autocommit.',
        open: (bench, c, { itemIds }) => rawEngineStatements(bench, c, () => pick(itemIds), `many-r${c}`),
      },
      {
        key: 'arch',
        label: "architecture's order (raw)",
        description: 'Raw driver: BEGIN; SELECT available_quantity … FOR UPDATE; UPDATE items (decrement); INSERT idempotency_requests; INSERT reservations; INSERT outbox; COMMIT.',
        open: (bench, c, { itemIds }) => rawArchitectureOrder(bench, c, () => pick(itemIds), `many-a${c}`),
      },
      {
        key: 'tx-raw',
        label: 'client-side transaction (raw)',
        description: 'Reference: idempotency SELECT; BEGIN; INSERT idempotency_requests; INSERT reservations; INSERT outbox; guarded UPDATE items; COMMIT.',
        open: (bench, c, { itemIds }) => rawClientTransaction(bench, c, () => pick(itemIds), `many-t${c}`),
      },
    ],
    async setup(bench) {
      return { itemIds: await seedItems(bench, MANY_ITEMS, MANY_ITEMS_STOCK) };
    },
    async check(bench, { itemIds }, _variant, ops, checks) {
      await checkStock(bench, checks, { initial: new Map(itemIds.map((id) => [id, MANY_ITEMS_STOCK])), reservations: ops });
    },
  };
}

export const manyItems: Scenario = {
  id: 'many-items',
  title: 'Many items',
  async run(ctx: ScenarioContext) {
    const verified = await verifyEngineStatements(ctx.bench);
    if (!verified.matches) ctx.log(`  ${verified.note}`);
    return runClosedLoopScenario(ctx, makeSpec(verified.note));
  },
};
