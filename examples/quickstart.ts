/**
 * The whole lifecycle on the embedded database (PGlite, in memory): no server needed.
 *
 *   npm run quickstart
 */
import { ReservationEngine, createEmbeddedDatabase, expireBatch, runOutboxBatch } from 'reservation-engine';

const db = await createEmbeddedDatabase();
const engine = new ReservationEngine({ db });
const log = (what: string, value: unknown) => console.log(`${what.padEnd(34)} ${typeof value === 'string' ? value : JSON.stringify(value)}`);

try {
  const item = await engine.createItem({ sku: 'TSHIRT-M', name: 'T-shirt, size M', availableQuantity: 5 });
  log('created item', { id: item.id, sku: item.sku, availableQuantity: item.availableQuantity });

  const first = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'order-1001' });
  log('reserved 2 (order-1001)', { id: first.reservation.id, status: first.reservation.status, replayed: first.replayed });

  const replay = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'order-1001' });
  log('same request again', { sameReservation: replay.reservation.id === first.reservation.id, replayed: replay.replayed });

  try {
    await engine.reserve({ itemId: item.id, quantity: 3, idempotencyKey: 'order-1001' });
  } catch (error) {
    log('same key, other quantity', `${(error as Error).name} (${(error as { status: number }).status})`);
  }

  log('confirmed order-1001', (await engine.confirm(first.reservation.id)).status);

  const second = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'order-1002' });
  log('reserved 1, then cancelled', (await engine.cancel(second.reservation.id)).status);

  const third = await engine.reserve({ itemId: item.id, quantity: 3, idempotencyKey: 'order-1003', ttlSeconds: 60 });
  log('reserved 3 for 60 s', `available now: ${(await engine.getItem(item.id))?.availableQuantity}`);

  try {
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'order-1004' });
  } catch (error) {
    log('one more', `${(error as Error).name}: ${(error as Error).message}`);
  }

  // Pretend 61 seconds went by, as a cron job would see it.
  const { expired } = await expireBatch({ db, now: new Date(third.reservation.expiresAt.getTime() + 1000) });
  log('expiry sweep 61 s later', `${expired} expired, status ${(await engine.getReservation(third.reservation.id))?.status}`);
  log('available after expiry', (await engine.getItem(item.id))?.availableQuantity);

  const delivered: string[] = [];
  const result = await runOutboxBatch({
    db,
    now: new Date(Date.now() + 120_000),
    handler: (event) => {
      delivered.push(`${event.type}#${event.id}`);
    },
  });
  log('outbox delivered', result);
  for (const line of delivered) console.log(`  ${line}`);
} finally {
  await db.destroy();
}
