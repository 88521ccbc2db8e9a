/**
 * 1. Hot item: every request reserves 1 unit of the same item (10,000,000 units, never runs
 * out). The item's row lock serialises every writer, so throughput is bounded by how long each
 * transaction holds it.
 */
import { type ClosedLoopSpec, runClosedLoopScenario } from '../lib/closed-loop.js';
import { checkStock, seedItems, verifyEngineStatements } from '../lib/fixtures.js';
import { engineReserve, rawArchitectureOrder, rawBareUpdate, rawClientTransaction, rawEngineStatements } from '../lib/reserve-drivers.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';

const STOCK = 10_000_000;

interface Fixture {
  itemId: number;
}

function makeSpec(statementsNote: string): ClosedLoopSpec<Fixture> {
  return {
    id: 'hot-item',
    title: 'Hot item',
    description: `Every request reserves 1 unit of one item holding ${STOCK.toLocaleString('en-US')} units. The item's row lock serialises the writers.`,
    baselines: ['arch', 'bare'],
    notes: [
      "engine: one round trip to the engine's routine reserve_or_replay (MySQL/MariaDB: CALL of a stored procedure; PostgreSQL: SELECT of a PL/pgSQL function), which looks the key up, checks the stock and writes, decrementing the stock last: the row lock is held inside the server only, from the decrement to the COMMIT.",
      'arch: the row lock is taken by the first statement (SELECT … FOR UPDATE) and held for 5 statements + COMMIT, i.e. 6 client round trips.',
      "Diagnostics (not targets): engine-raw = the engine's statements through the raw driver (engine ÷ engine-raw = the library's own cost); tx-raw = the client-side transaction the engine used before (row lock held for the guarded UPDATE's round trip + COMMIT).",
      'bare: one autocommit UPDATE, the row lock held inside the server only, no reservation and no event: the upper limit.',
      statementsNote,
    ],
    variants: [
      {
        key: 'engine',
        label: 'engine.reserve',
        description: 'engine.reserve({ itemId, quantity: 1, idempotencyKey }) with a distinct key per call.',
        open: (bench, c, { itemId }) => engineReserve(bench, c, () => itemId, `hot-e${c}`),
      },
      {
        key: 'arch',
        label: "architecture's order (raw)",
        description: 'Raw driver: BEGIN; SELECT available_quantity … FOR UPDATE; UPDATE items (decrement); INSERT idempotency_requests; INSERT reservations; INSERT outbox; COMMIT.',
        open: (bench, c, { itemId }) => rawArchitectureOrder(bench, c, () => itemId, `hot-a${c}`),
      },
      {
        key: 'engine-raw',
        label: "engine's statements (raw)",
        description: 'Diagnostic: what engine.reserve sends (one CALL / SELECT of the reserve_or_replay routine), through the raw driver.',
        open: (bench, c, { itemId }) => rawEngineStatements(bench, c, () => itemId, `hot-r${c}`),
      },
      {
        key: 'tx-raw',
        label: 'client-side transaction (raw)',
        description: 'Diagnostic: idempotency SELECT; BEGIN; 3 INSERTs; guarded UPDATE items last; COMMIT — the engine before its one-round-trip reserve.',
        open: (bench, c, { itemId }) => rawClientTransaction(bench, c, () => itemId, `hot-t${c}`),
      },
      {
        key: 'bare',
        label: 'bare UPDATE (raw, autocommit)',
        description: 'Raw driver, autocommit: UPDATE items SET available_quantity = available_quantity - 1 WHERE id = ? AND available_quantity >= 1. No reservation, no event: the upper limit.',
        open: (bench, c, { itemId }) => rawBareUpdate(bench, c, () => itemId),
      },
    ],
    async setup(bench) {
      const [itemId] = await seedItems(bench, 1, STOCK);
      return { itemId: itemId! };
    },
    async check(bench, { itemId }, variant, ops, checks) {
      const initial = new Map([[itemId, STOCK]]);
      if (variant === 'bare') await checkStock(bench, checks, { initial, reservations: 0, bareDecrements: ops });
      else await checkStock(bench, checks, { initial, reservations: ops });
    },
  };
}

export const hotItem: Scenario = {
  id: 'hot-item',
  title: 'Hot item',
  async run(ctx: ScenarioContext) {
    const verified = await verifyEngineStatements(ctx.bench);
    if (!verified.matches) ctx.log(`  ${verified.note}`);
    return runClosedLoopScenario(ctx, makeSpec(verified.note));
  },
};
