/**
 * The RabbitMQ relay and the consumer's inbox against a real broker (test/support/rabbitmq.ts
 * starts one for this file), on every dialect. Skipped, with the reason printed, when
 * rabbitmq-server is not installed; REQUIRE_RABBITMQ=1 (CI) makes that a failure.
 */
import amqplib, { type Channel, type ChannelModel, type ConsumeMessage, type GetMessage, type Message } from 'amqplib';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, ReservationEngine, type RunningWorker, runOutboxBatch, startWorker } from '../src/index.js';
import { consumeOnce, createRabbitMqRelay, migrateInbox, type AmqpConnection, type RabbitMqRelay } from '../src/rabbitmq/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';
import { rabbitMqMissingReason, startRabbitMq, type ThrowawayBroker } from './support/rabbitmq.js';

const missing = rabbitMqMissingReason();
if (missing) {
  if (process.env.REQUIRE_RABBITMQ === '1') throw new Error(`REQUIRE_RABBITMQ=1, but the RabbitMQ tests cannot run: ${missing}`);
  console.log(`[rabbitmq] skipped — ${missing}`);
}

describe.skipIf(missing !== undefined)('RabbitMQ', () => {
  let broker: ThrowawayBroker;
  beforeAll(async () => {
    const started = performance.now();
    broker = await startRabbitMq();
    console.log(`[rabbitmq] throwaway ${broker.label} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }, 120_000);
  afterAll(() => broker?.stop(), 60_000);

  // Connections, relays and workers a test opened: closed after it, whatever happened.
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });
  const relayFor = (options: Omit<Parameters<typeof createRabbitMqRelay>[0], 'url' | 'connect'> & { connect?: () => Promise<AmqpConnection> }): RabbitMqRelay => {
    const relay = createRabbitMqRelay(options.connect ? options : { ...options, url: broker.url });
    cleanups.push(() => relay.close());
    return relay;
  };
  /** A channel of the test's own, for declaring queues and reading what arrived. */
  const admin = async (): Promise<Channel> => {
    const connection = await amqplib.connect(broker.url);
    connection.on('error', () => {});
    cleanups.push(() => connection.close());
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    return channel;
  };
  /** Declares the exchange and a durable queue bound to it with `patterns`. */
  const queueFor = async (channel: Channel, exchange: string, patterns: string[], args: Record<string, unknown> = {}) => {
    await channel.assertExchange(exchange, 'topic', { durable: true });
    const { queue } = await channel.assertQueue(unique('q'), { durable: true, arguments: args });
    for (const pattern of patterns) await channel.bindQueue(queue, exchange, pattern);
    return queue;
  };
  /** Every message in `queue` once `count` have arrived. */
  const drain = async (channel: Channel, queue: string, count: number) => {
    const messages: Message[] = [];
    await expect
      .poll(async () => {
        for (let message = await channel.get(queue, { noAck: true }); message; message = await channel.get(queue, { noAck: true })) messages.push(message);
        return messages.length;
      })
      .toBeGreaterThanOrEqual(count);
    return messages;
  };

  it('npm run example:rabbitmq: relay and consumer, every event applied once', async () => {
    const root = path.resolve(import.meta.dirname, '..');
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'examples/rabbitmq/run.ts'], {
      cwd: root,
      env: { ...process.env, AMQP_URL: broker.url, DATABASE_URL: '', CONSUMER_DATABASE_URL: '' },
      timeout: 120_000,
    });
    expect(stdout).toMatch(/^ledger: item \d+ held=0 after 10 events \(10 applied, 1 duplicate ignored\)$/m);
    expect(stdout).toMatch(/^worker: stopped; outbox: processed=10 failed=0 dead-lettered=0/m);
  }, 150_000);

  describeEachDialect('the outbox relayed to RabbitMQ', (t) => {
    const engine = () => new ReservationEngine({ db: t.db });
    /** Writes `n` reservation.created events; with `confirm`, confirms that many of them too. */
    const events = async (n: number, confirm = 0) => {
      const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 100_000 });
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push((await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() })).reservation.id);
      for (const id of ids.slice(0, confirm)) await engine().confirm(id);
      return ids;
    };
    const outbox = () => t.db.selectFrom('outbox').selectAll().orderBy('id').execute();

    it('publishes persistent messages with messageId, type, timestamp, content type and traceparent, confirms awaited once per batch', async () => {
      const exchange = unique('x');
      const channel = await admin();
      const queue = await queueFor(channel, exchange, ['reservation.#']);
      await events(20);
      const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      const [first] = await outbox();
      await t.db.updateTable('outbox').set({ trace_context: traceparent }).where('id', '=', first!.id).execute();

      // What the relay does on the wire: every publish of a batch before the first confirm.
      const wire: string[] = [];
      let connects = 0;
      const connect = async () => {
        connects++;
        return recording(await amqplib.connect(broker.url), wire);
      };
      const relay = relayFor({ exchange, connect, appId: 'shop' });
      expect(await runOutboxBatch({ db: t.db, batchHandler: relay.batchHandler, limit: 15 })).toEqual({ processed: 15, failed: 0, deadLettered: 0, released: 0 });
      expect(wire).toEqual([...Array(15).fill('publish'), ...Array(15).fill('confirm')]);
      wire.length = 0;
      expect(await runOutboxBatch({ db: t.db, batchHandler: relay.batchHandler })).toMatchObject({ processed: 5 });
      expect(wire).toEqual([...Array(5).fill('publish'), ...Array(5).fill('confirm')]);
      expect(connects).toBe(1);

      const rows = await outbox();
      const messages = await drain(channel, queue, 20);
      expect(messages.map((m) => m.properties.messageId)).toEqual(rows.map((row) => String(row.id)));
      for (const [index, message] of messages.entries()) {
        const row = rows[index]!;
        expect(message.fields).toMatchObject({ exchange, routingKey: 'reservation.created' });
        expect(message.properties).toMatchObject({
          type: 'reservation.created',
          contentType: 'application/json',
          deliveryMode: 2,
          appId: 'shop',
          timestamp: Math.floor(new Date(row.created_at).getTime() / 1000),
        });
        expect(JSON.parse(message.content.toString())).toEqual(typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload);
        expect(message.properties.headers?.traceparent).toBe(index === 0 ? traceparent : undefined);
      }
    });

    it('an unroutable message (mandatory) fails alone: retried with backoff, then dead-lettered; its neighbours are delivered', async () => {
      const exchange = unique('x');
      const channel = await admin();
      const queue = await queueFor(channel, exchange, ['reservation.created']);
      await events(2, 1); // two created (bound), one confirmed (no queue bound)
      const relay = relayFor({ exchange });
      const options = { db: t.db, batchHandler: relay.batchHandler, maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 1 };
      expect(await runOutboxBatch(options)).toEqual({ processed: 2, failed: 1, deadLettered: 0, released: 0 });
      await sleep(5);
      expect(await runOutboxBatch(options)).toEqual({ processed: 0, failed: 0, deadLettered: 1, released: 0 });
      const dead = (await outbox()).filter((row) => row.dead_lettered_at !== null);
      expect(dead).toMatchObject([{ type: 'reservation.confirmed', attempts: 2 }]);
      expect(dead[0]!.last_error).toMatch(/^RabbitMqUnroutableError: The broker returned the message as unroutable \(312 NO_ROUTE\).*routing key "reservation\.confirmed"/);
      expect((await drain(channel, queue, 2)).map((m) => m.properties.type)).toEqual(['reservation.created', 'reservation.created']);
    });

    it('a nack fails that event alone', async () => {
      const exchange = unique('x');
      const channel = await admin();
      // A queue that takes one message and nacks the rest.
      await queueFor(channel, exchange, ['reservation.#'], { 'x-max-length': 1, 'x-overflow': 'reject-publish' });
      await events(3);
      const relay = relayFor({ exchange });
      expect(await runOutboxBatch({ db: t.db, batchHandler: relay.batchHandler, baseDelayMs: 60_000 })).toEqual({ processed: 1, failed: 2, deadLettered: 0, released: 0 });
      const failed = (await outbox()).filter((row) => row.processed_at === null);
      expect(failed).toHaveLength(2);
      for (const row of failed) expect(row.last_error).toMatch(/^RabbitMqNackError: The broker nacked the message/);
    });

    it('relay.handler publishes one event at a time, with the same confirms', async () => {
      const exchange = unique('x');
      const channel = await admin();
      const queue = await queueFor(channel, exchange, ['reservation.*']);
      await events(2, 1);
      const relay = relayFor({ exchange, routingKey: (event) => event.type.replace('reservation.', 'reservation.v1-') });
      expect(await runOutboxBatch({ db: t.db, handler: relay.handler })).toMatchObject({ processed: 3 });
      expect((await drain(channel, queue, 3)).map((m) => m.fields.routingKey).sort()).toEqual(['reservation.v1-confirmed', 'reservation.v1-created', 'reservation.v1-created']);
    });

    it('the inbox: a redelivered message has one effect; a failed effect records nothing', async () => {
      await migrateInbox(t.db);
      await migrateInbox(t.db); // a no-op
      const effects = unique('effects').replace('-', '_');
      await t.db.schema.createTable(effects).addColumn('message_id', 'varchar(255)', (c) => c.notNull()).execute();
      const count = async () => Number((await t.db.selectFrom(effects).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
      const messageId = unique('m');
      const effect = (trx: typeof t.db) => trx.insertInto(effects).values({ message_id: messageId }).execute();

      // The effect fails: nothing recorded, so the redelivery runs it.
      await expect(consumeOnce({ db: t.db, messageId, handler: async (trx) => (await effect(trx), Promise.reject(new Error('boom'))) })).rejects.toThrow('boom');
      expect(await count()).toBe(0);
      expect(await consumeOnce({ db: t.db, messageId, handler: async (trx) => (await effect(trx), 'done') })).toEqual({ duplicate: false, result: 'done' });
      expect(await consumeOnce({ db: t.db, messageId, handler: effect })).toEqual({ duplicate: true });
      // Redelivered at the same time: one runs the effect, the other waits for it and is a duplicate.
      const concurrent = unique('m');
      const outcomes = await Promise.all(
        [1, 2, 3].map(() => consumeOnce({ db: t.db, messageId: concurrent, handler: async (trx) => (await sleep(20), trx.insertInto(effects).values({ message_id: concurrent }).execute()) })),
      );
      expect(outcomes.filter((o) => !o.duplicate)).toHaveLength(1);
      // Another consumer of the same message has its own effect.
      expect(await consumeOnce({ db: t.db, messageId, consumer: 'audit', handler: effect })).toMatchObject({ duplicate: false });
      expect(await count()).toBe(3);

      const invalid = await caught(() => consumeOnce({ db: t.db, messageId: '', handler: effect }));
      expect(invalid).toMatchObject({ code: 'VALIDATION_ERROR', status: 400 });
      expect(invalid.message).toMatch(/messageId: must not be empty/);
    });

    it('a message redelivered by the broker (its ack lost) has one effect', async () => {
      await migrateInbox(t.db);
      const exchange = unique('x');
      const channel = await admin();
      const queue = await queueFor(channel, exchange, ['reservation.#']);
      const effects = unique('effects').replace('-', '_');
      await t.db.schema.createTable(effects).addColumn('message_id', 'varchar(255)', (c) => c.notNull()).execute();
      await events(3);
      expect(await runOutboxBatch({ db: t.db, batchHandler: relayFor({ exchange }).batchHandler })).toMatchObject({ processed: 3 });
      const consume = (message: Message) =>
        consumeOnce({ db: t.db, messageId: message.properties.messageId, handler: (trx) => trx.insertInto(effects).values({ message_id: message.properties.messageId }).execute() });

      // First delivery: the effects commit, then the acks are lost (the consumer died): requeued.
      const first: Message[] = [];
      await expect.poll(async () => {
        const message = await channel.get(queue);
        if (message) first.push(message);
        return first.length;
      }).toBe(3);
      for (const message of first) expect(await consume(message)).toMatchObject({ duplicate: false });
      channel.nackAll(true);
      // The redelivery: duplicates, acked without a second effect.
      const again: GetMessage[] = [];
      await expect.poll(async () => {
        const message = await channel.get(queue);
        if (message) again.push(message);
        return again.length;
      }).toBe(3);
      for (const message of again) {
        expect(message.fields.redelivered).toBe(true);
        expect(await consume(message)).toEqual({ duplicate: true });
        channel.ack(message);
      }
      const rows = await t.db.selectFrom(effects).select('message_id').execute();
      expect(rows.map((r) => r.message_id).sort()).toEqual(first.map((m) => m.properties.messageId).sort());
    });

    it.each([
      ['stopped cleanly', () => broker.halt()],
      ['killed (SIGKILL)', () => broker.crash()],
    ])('broker %s and restarted while the worker relays: every event delivered, each effect once, nothing dead-lettered', async (_how, stopBroker) => {
      await migrateInbox(t.db);
      const exchange = unique('x');
      const setup = await admin();
      const queue = await queueFor(setup, exchange, ['reservation.#']);
      const effects = unique('effects').replace('-', '_');
      await t.db.schema.createTable(effects).addColumn('message_id', 'varchar(255)', (c) => c.notNull()).execute();

      const logged: string[] = [];
      const relay = relayFor({ exchange, logger: { warn: (m) => logged.push(m), info: (m) => logged.push(m) } });
      const worker: RunningWorker = startWorker({
        db: t.db,
        batchHandler: relay.batchHandler,
        expire: false,
        idleIntervalMs: 20,
        maxIdleIntervalMs: 100,
        // Enough attempts to ride out the restart (several seconds) at this backoff.
        outbox: { baseDelayMs: 100, maxDelayMs: 1000, maxAttempts: 100, handlerTimeoutMs: 2000, leaseMs: 10_000 },
      });
      cleanups.push(async () => (worker.stop(), worker.stopped));
      let deliveries = 0;
      const consumer = reconnectingConsumer(broker.url, queue, async (message) => {
        deliveries++;
        await consumeOnce({ db: t.db, messageId: message.properties.messageId, handler: (trx) => trx.insertInto(effects).values({ message_id: message.properties.messageId }).execute() });
      });
      cleanups.push(() => consumer.stop());
      const effectCount = async () => Number((await t.db.selectFrom(effects).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

      await events(10);
      await expect.poll(effectCount).toBeGreaterThanOrEqual(5);
      await stopBroker();
      await events(10); // written while the broker is down
      await sleep(300);
      await broker.start();
      await events(10);

      await expect.poll(effectCount, { timeout: 60_000, interval: 200 }).toBe(30);
      await expect.poll(async () => (await outbox()).filter((row) => row.processed_at === null).length, { timeout: 30_000 }).toBe(0);
      const rows = await outbox();
      expect(rows.filter((row) => row.dead_lettered_at !== null)).toEqual([]);
      const distinct = await t.db.selectFrom(effects).select('message_id').distinct().execute();
      expect(distinct.map((r) => r.message_id).sort()).toEqual(rows.map((row) => String(row.id)).sort());
      expect(deliveries).toBeGreaterThanOrEqual(30);
      expect(logged.some((m) => /^rabbitmq: connection lost/.test(m))).toBe(true);
      expect(logged).toContain('rabbitmq: connected again');
    }, 120_000);

    it('a broker that stops answering: the batch times out, and the relay connects afresh once it answers again', async () => {
      const exchange = unique('x');
      const channel = await admin();
      const queue = await queueFor(channel, exchange, ['reservation.#']);
      const logged: string[] = [];
      const relay = relayFor({ exchange, logger: { warn: (m) => logged.push(m), info: (m) => logged.push(m) } });
      const options = { db: t.db, batchHandler: relay.batchHandler, handlerTimeoutMs: 500, leaseMs: 5000, baseDelayMs: 1, maxDelayMs: 1 };
      await events(1);
      expect(await runOutboxBatch(options)).toMatchObject({ processed: 1 });
      cleanups.push(async () => broker.resume());
      broker.pause();
      await events(2);
      // The confirms never come: the batch times out and the connection is dropped. The next
      // batch's connection attempt hangs too, and is given up the same way.
      for (let attempt = 0; attempt < 2; attempt++) {
        await sleep(5);
        expect(await runOutboxBatch(options)).toEqual({ processed: 0, failed: 2, deadLettered: 0, released: 0 });
      }
      broker.resume();
      await sleep(5);
      expect(await runOutboxBatch(options)).toEqual({ processed: 2, failed: 0, deadLettered: 0, released: 0 });
      const rows = await outbox();
      expect(rows.map((row) => row.attempts)).toEqual([1, 3, 3]);
      expect(logged[0]).toMatch(/^rabbitmq: connection lost \(the batch timed out waiting for publisher confirms\)/);
      expect(logged).toContain('rabbitmq: connected again');
      // At least once: the first attempt's messages may have reached the queue as well.
      const ids = new Set((await drain(channel, queue, 3)).map((m) => m.properties.messageId));
      expect([...ids].sort()).toEqual(rows.map((row) => String(row.id)).sort());
    });

    it('rejects bad options with a ConfigurationError naming each', () => {
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{ exchange: 'x' }, /url: pass url or connect/],
        [{ exchange: 'x', url: 'amqp://h', connect: async () => ({}) }, /connect: pass url or connect, not both/],
        [{ exchange: 'x', url: 'http://h' }, /url: must be an amqp:\/\/ or amqps:\/\/ URL/],
        [{ url: 'amqp://h' }, /exchange: must be a string/],
        [{ url: 'amqp://h', exchange: 'a b' }, /exchange: must be 1–255 letters/],
        [{ url: 'amqp://h', exchange: 'x', mandatory: 'yes' }, /mandatory: must be true or false/],
        [{ url: 'amqp://h', exchange: 'x', routingKey: 'type' }, /routingKey: must be a function/],
        [{ url: 'amqp://h', exchange: 'x', confirm: false }, /unknown field "confirm"/],
      ];
      for (const [options, message] of cases) {
        const error = (() => {
          try {
            createRabbitMqRelay(options as never);
          } catch (thrown) {
            return thrown;
          }
          throw new Error(`accepted ${JSON.stringify(options)}`);
        })();
        expect(error).toBeInstanceOf(ConfigurationError);
        expect(error).toMatchObject({ code: 'INVALID_CONFIGURATION', status: 500 });
        expect((error as Error).message).toMatch(message);
      }
    });
  });
});

/** The connection, its confirm channels recording `publish` and `confirm` (the broker's ack or nack) in `wire`. */
function recording(connection: ChannelModel, wire: string[]): AmqpConnection {
  return new Proxy(connection, {
    get(target, property) {
      if (property === 'createConfirmChannel') {
        return async () => {
          const channel = await target.createConfirmChannel();
          return new Proxy(channel, {
            get(inner, name) {
              if (name === 'publish') {
                return (exchange: string, routingKey: string, content: Buffer, options: object, callback: (error: unknown) => void) => {
                  wire.push('publish');
                  return inner.publish(exchange, routingKey, content, options, (error: unknown) => (wire.push('confirm'), callback(error)));
                };
              }
              const value = Reflect.get(inner, name);
              return typeof value === 'function' ? value.bind(inner) : value;
            },
          });
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as unknown as AmqpConnection;
}

/** A consumer as a service runs one: acks after `handle`, requeues when it throws, reconnects after the broker went away. */
function reconnectingConsumer(url: string, queue: string, handle: (message: ConsumeMessage) => Promise<void>): { stop(): Promise<void> } {
  let stopped = false;
  let connection: ChannelModel | undefined;
  const run = async () => {
    while (!stopped) {
      try {
        connection = await amqplib.connect(url);
        const closed = new Promise((resolve) => connection!.once('close', resolve));
        connection.on('error', () => {});
        const channel = await connection.createChannel();
        channel.on('error', () => {});
        await channel.prefetch(5);
        await channel.consume(queue, (message) => {
          if (!message) return;
          handle(message).then(
            () => {
              try {
                channel.ack(message);
              } catch {
                // The channel is gone: the broker redelivers the message.
              }
            },
            () => {
              try {
                channel.nack(message, false, true);
              } catch {
                // The channel is gone: the broker redelivers the message.
              }
            },
          );
        });
        await closed;
      } catch {
        // The broker is down (or stopping): try again shortly.
      }
      if (!stopped) await sleep(200);
    }
  };
  const running = run();
  return {
    async stop() {
      stopped = true;
      await connection?.close().catch(() => {});
      await running;
    },
  };
}

