/**
 * 3. Idempotent replay: clients retrying a request with a key the engine has seen already. The
 * engine answers from one SELECT (idempotency record JOIN reservation) without a transaction.
 */
import { payloadHash } from '../../src/idempotency/payload-hash.js';
import { uuidv7 } from '../../src/uuid.js';
import { type ClosedLoopSpec, keyMaker, openEngine, runClosedLoopScenario } from '../lib/closed-loop.js';
import type { BenchDatabase } from '../lib/db.js';
import { checkStock, eventPayload, insertRows, pick, seedItems } from '../lib/fixtures.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';
import { MANY_ITEMS, MANY_ITEMS_STOCK } from './many-items.js';

const TTL_SECONDS = 900;

interface Existing {
  id: string;
  itemId: number;
  quantity: number;
  key: string;
}

interface Fixture {
  itemIds: number[];
  existing: Existing[];
}

/** `n` PENDING reservations over the items, with their idempotency records and events; the items' stock reduced to match. */
export async function seedReservations(bench: BenchDatabase, itemIds: number[], n: number): Promise<Existing[]> {
  const now = new Date();
  const expiresAt = new Date(now.getTime() + TTL_SECONDS * 1000);
  const run = Math.random().toString(36).slice(2, 8);
  const existing: Existing[] = Array.from({ length: n }, (_, i) => ({
    id: uuidv7(now.getTime() - n + i),
    itemId: pick(itemIds),
    quantity: 1 + (i % 3),
    key: `replay-${run}-${i}`,
  }));
  await insertRows(
    bench,
    'reservations',
    ['id', 'item_id', 'quantity', 'status', 'idempotency_key', 'expires_at', 'created_at', 'updated_at'],
    existing.map((r) => [r.id, r.itemId, r.quantity, 'PENDING', r.key, expiresAt, now, now]),
  );
  await insertRows(
    bench,
    'idempotency_requests',
    ['idempotency_key', 'payload_hash', 'reservation_id', 'created_at'],
    existing.map((r) => [r.key, payloadHash({ itemId: r.itemId, quantity: r.quantity, ttlSeconds: TTL_SECONDS }), r.id, now]),
  );
  await insertRows(
    bench,
    'outbox',
    ['type', 'payload', 'created_at', 'available_at', 'attempts'],
    existing.map((r) => ['reservation.created', eventPayload({ ...r, status: 'PENDING', expiresAt }, now), now, now, 0]),
  );
  const held = new Map<number, number>();
  for (const r of existing) held.set(r.itemId, (held.get(r.itemId) ?? 0) + r.quantity);
  for (const [itemId, quantity] of held) {
    await bench.admin.query(bench.sql('UPDATE items SET available_quantity = available_quantity - ? WHERE id = ?'), [quantity, itemId]);
  }
  return existing;
}

function makeSpec(existingCount: number): ClosedLoopSpec<Fixture> {
  return {
    id: 'replay',
    title: 'Idempotent replay',
    description: `${existingCount.toLocaleString('en-US')} reservations exist over ${MANY_ITEMS.toLocaleString('en-US')} items; replay sends one of their requests again (random key), fresh reserves a new key on a random item.`,
    baselines: ['fresh'],
    notes: ['replay must return replayed: true and the original reservation id, and write nothing.'],
    variants: [
      {
        key: 'replay',
        label: 'replay (existing key)',
        description: 'engine.reserve with the itemId, quantity and idempotencyKey of an existing reservation.',
        async open(bench, concurrency, { existing }) {
          const { engine, close } = openEngine(bench, concurrency);
          return {
            async op() {
              const r = pick(existing);
              const result = await engine.reserve({ itemId: r.itemId, quantity: r.quantity, idempotencyKey: r.key, ttlSeconds: TTL_SECONDS });
              if (!result.replayed || result.reservation.id !== r.id) throw new Error(`key ${r.key} was not replayed as reservation ${r.id}`);
            },
            close,
          };
        },
      },
      {
        key: 'fresh',
        label: 'fresh reserve',
        description: 'engine.reserve({ itemId: random, quantity: 1, idempotencyKey: new }).',
        async open(bench, concurrency, { itemIds }) {
          const { engine, close } = openEngine(bench, concurrency);
          const key = keyMaker(`fresh-${concurrency}`);
          return {
            async op() {
              const { replayed } = await engine.reserve({ itemId: pick(itemIds), quantity: 1, idempotencyKey: key(), ttlSeconds: TTL_SECONDS });
              if (replayed) throw new Error('a fresh key was replayed');
            },
            close,
          };
        },
      },
    ],
    async setup(bench) {
      const itemIds = await seedItems(bench, MANY_ITEMS, MANY_ITEMS_STOCK);
      return { itemIds, existing: await seedReservations(bench, itemIds, existingCount) };
    },
    async check(bench, { itemIds, existing }, variant, ops, checks) {
      await checkStock(bench, checks, {
        initial: new Map(itemIds.map((id) => [id, MANY_ITEMS_STOCK])),
        reservations: existing.length + (variant === 'fresh' ? ops : 0),
      });
    },
  };
}

export const replay: Scenario = {
  id: 'replay',
  title: 'Idempotent replay',
  run: (ctx: ScenarioContext) => runClosedLoopScenario(ctx, makeSpec(ctx.mode === 'quick' ? 1_000 : 10_000)),
};
