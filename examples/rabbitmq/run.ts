/**
 * The outbox relayed to RabbitMQ, end to end, in one process: the relay (./relay.ts) publishes
 * the engine's events with publisher confirms, and a consumer with a database of its own
 * (./consumer.ts) applies each of them exactly once. Reservations are made, confirmed, cancelled
 * and left to expire; the run ends once the consumer's ledger has seen every event.
 *
 *   npm run example:rabbitmq                               # broker on amqp://localhost
 *   AMQP_URL=amqp://user:pass@broker:5672/vhost npm run example:rabbitmq
 *
 * Environment: AMQP_URL (default amqp://localhost), DATABASE_URL for the engine and
 * CONSUMER_DATABASE_URL for the consumer (see ../database.ts; unset: PGlite in memory each).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ReservationEngine } from 'reservation-engine';
import { connectDatabase, describeDatabase } from '../database.js';
import { applyOnce, migrateConsumer, startConsumer } from './consumer.js';
import { startRelay } from './relay.js';

const EXCHANGE = 'reservation-engine.example';
const QUEUE = 'reservation-engine.example.ledger';
const TIMEOUT_MS = 60_000;

const url = process.env.AMQP_URL?.trim() || 'amqp://localhost';
const shopDb = await connectDatabase(process.env.DATABASE_URL);
const ledgerDb = await connectDatabase(process.env.CONSUMER_DATABASE_URL);
await migrateConsumer(ledgerDb);
console.log(`broker ${url.replace(/\/\/[^@/]*@/, '//')}; engine on ${describeDatabase(process.env.DATABASE_URL)}; consumer on ${describeDatabase(process.env.CONSUMER_DATABASE_URL)}`);

const logger = { warn: (message: string) => console.warn(message), error: (message: string) => console.error(message), info: (message: string) => console.log(message) };
const relay = startRelay({ db: shopDb, url, exchange: EXCHANGE, logger });
let applied = 0;
let duplicates = 0;
let lastMessage: Parameters<typeof applyOnce>[1] | undefined;
const consumer = startConsumer({
  db: ledgerDb,
  url,
  exchange: EXCHANGE,
  queue: QUEUE,
  onMessage: (message, duplicate) => {
    if (duplicate) duplicates++;
    else applied++;
    lastMessage = message;
    const { reservationId, quantity } = JSON.parse(message.content.toString()) as { reservationId: string; quantity: number };
    console.log(`consumer: ${message.properties.type} #${message.properties.messageId} (reservation …${reservationId.slice(-8)}, ${quantity} unit${quantity === 1 ? '' : 's'})${duplicate ? ': duplicate, acked without effect' : ''}`);
  },
});

let stopping = false;
const stop = async (code: number) => {
  if (stopping) return;
  stopping = true;
  await relay.stop();
  await consumer.stop();
  await Promise.all([shopDb.destroy(), ledgerDb.destroy()]);
  process.exit(code);
};
process.once('SIGINT', () => void stop(130));
process.once('SIGTERM', () => void stop(143));

try {
  // Bound before anything is published: a message no queue is bound for would come back
  // (mandatory), and be retried until one is.
  await consumer.ready;
  // The shop: five reservations; two confirmed, one cancelled, two left to expire after a second.
  const engine = new ReservationEngine({ db: shopDb });
  const item = await engine.createItem({ sku: `EXAMPLE-${Date.now()}`, name: 'T-shirt, size M', availableQuantity: 20 });
  const reservations = [];
  for (let i = 1; i <= 5; i++) {
    const { reservation } = await engine.reserve({ itemId: item.id, quantity: i, idempotencyKey: `example-${item.id}-${i}`, ttlSeconds: i > 3 ? 1 : 600 });
    reservations.push(reservation);
  }
  await engine.confirm(reservations[0]!.id);
  await engine.confirm(reservations[1]!.id);
  await engine.cancel(reservations[2]!.id);
  const expected = 5 + 2 + 1 + 2;

  // The queue is durable: it may hold messages of earlier runs too. Wait for this run's item.
  const eventsOfItem = async () => Number((await ledgerDb.selectFrom('ledger').select('events').where('item_id', '=', item.id).executeTakeFirst())?.events ?? 0);
  const deadline = Date.now() + TIMEOUT_MS;
  while ((await eventsOfItem()) < expected) {
    if (Date.now() > deadline) throw new Error(`only ${await eventsOfItem()} of ${expected} events reached the consumer within ${TIMEOUT_MS / 1000} s`);
    await sleep(100);
  }
  // A message delivered a second time (a lost ack, a publish retried after a lost confirm): the
  // inbox knows it, the ledger does not move.
  if (await applyOnce(ledgerDb, lastMessage!)) duplicates++;
  const ledger = await ledgerDb.selectFrom('ledger').selectAll().where('item_id', '=', item.id).executeTakeFirstOrThrow();
  console.log(`ledger: item ${item.id} held=${ledger.held} after ${ledger.events} events (${applied} applied, ${duplicates} duplicate${duplicates === 1 ? '' : 's'} ignored)`);
  if (Number(ledger.events) !== expected || Number(ledger.held) !== 0) throw new Error(`the ledger should show ${expected} events and 0 held units`);
  await stop(0);
} catch (error) {
  console.error(`example failed: ${(error as Error).message}`);
  await stop(1);
}
