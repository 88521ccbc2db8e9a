/**
 * The consuming side: a service with its own database that keeps a ledger of held units per item
 * from the reservation events. `consumeOnce` records each message id in the same transaction as
 * the ledger update, so a message the broker delivers twice (its ack was lost, the publisher
 * retried after a lost confirm) moves the ledger once.
 *
 * The consumer acks after the transaction commits, and requeues the message when it fails; after
 * the broker or the network goes away it connects again.
 */
import amqplib, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Kysely, sql } from 'kysely';
import { consumeOnce, migrateInbox } from 'reservation-engine/rabbitmq';

/** Options of {@link startConsumer}. */
export interface StartConsumerOptions {
  /** The consumer's own database: the ledger and the inbox live there. */
  readonly db: Kysely<any>;
  readonly url: string;
  /** The exchange the relay publishes to. */
  readonly exchange: string;
  /** The consumer's durable queue, bound to every reservation event. */
  readonly queue: string;
  /** Called after each message, with whether it was a duplicate. */
  readonly onMessage?: (message: ConsumeMessage, duplicate: boolean) => void;
}

/** How a reservation event moves the ledger of held units. */
const HELD_DELTA: Record<string, (quantity: number) => number> = {
  'reservation.created': (quantity) => quantity,
  'reservation.confirmed': (quantity) => -quantity,
  'reservation.cancelled': (quantity) => -quantity,
  'reservation.expired': (quantity) => -quantity,
};

/** Creates the consumer's tables: the inbox (the library's) and the ledger (its own). */
export async function migrateConsumer(db: Kysely<any>): Promise<void> {
  await migrateInbox(db);
  await db.schema
    .createTable('ledger')
    .ifNotExists()
    .addColumn('item_id', 'integer', (c) => c.primaryKey())
    .addColumn('held', 'integer', (c) => c.notNull())
    .addColumn('events', 'integer', (c) => c.notNull())
    .execute();
}

/** Applies one message to the ledger, once. */
export async function applyOnce(db: Kysely<any>, message: ConsumeMessage): Promise<boolean> {
  const { itemId, quantity } = JSON.parse(message.content.toString()) as { itemId: number; quantity: number };
  const delta = HELD_DELTA[message.properties.type as string]?.(quantity) ?? 0;
  const { duplicate } = await consumeOnce({
    db,
    messageId: message.properties.messageId as string,
    consumer: 'ledger',
    handler: async (trx) => {
      // An upsert both MySQL and PostgreSQL understand: update, and insert when nothing was there.
      const updated = await trx
        .updateTable('ledger')
        .set({ held: sql`held + ${delta}`, events: sql`events + 1` })
        .where('item_id', '=', itemId)
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) === 0) await trx.insertInto('ledger').values({ item_id: itemId, held: delta, events: 1 }).execute();
    },
  });
  return duplicate;
}

/** Consumes until `stop()`, acking each message after its transaction; `ready` resolves once the queue is bound and consumed. */
export function startConsumer({ db, url, exchange, queue, onMessage }: StartConsumerOptions): { readonly ready: Promise<void>; stop(): Promise<void> } {
  let stopped = false;
  let consuming!: () => void;
  const ready = new Promise<void>((resolve) => (consuming = resolve));
  let connection: ChannelModel | undefined;
  const consume = (channel: Channel) => async (message: ConsumeMessage | null) => {
    if (!message) return;
    try {
      const duplicate = await applyOnce(db, message);
      channel.ack(message);
      onMessage?.(message, duplicate);
    } catch (error) {
      console.error(`consumer: message ${message.properties.messageId} failed, requeued: ${(error as Error).message}`);
      try {
        channel.nack(message, false, true);
      } catch {
        // The channel is gone: the broker redelivers the message anyway.
      }
    }
  };
  const run = async () => {
    while (!stopped) {
      try {
        connection = await amqplib.connect(url);
        const closed = new Promise((resolve) => connection!.once('close', resolve));
        connection.on('error', (error) => console.error(`consumer: connection failed: ${error.message}`));
        const channel = await connection.createChannel();
        await channel.assertExchange(exchange, 'topic', { durable: true });
        await channel.assertQueue(queue, { durable: true });
        await channel.bindQueue(queue, exchange, 'reservation.#');
        await channel.prefetch(20);
        await channel.consume(queue, consume(channel));
        consuming();
        await closed;
      } catch (error) {
        if (!stopped) console.error(`consumer: cannot reach the broker (${(error as Error).message}); trying again`);
      }
      if (!stopped) await sleep(1000);
    }
  };
  const running = run();
  return {
    ready,
    async stop() {
      stopped = true;
      await connection?.close().catch(() => {});
      await running;
    },
  };
}
