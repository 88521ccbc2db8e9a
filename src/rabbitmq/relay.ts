import { z } from 'zod';
import { log, type Logger, loggerSchema } from '../observability/logger.js';
import type { OutboxBatchHandler, OutboxDeliveryResult, OutboxHandler, OutboxHandlerContext } from '../outbox/run-outbox-batch.js';
import type { OutboxEvent } from '../types.js';
import { functionSchema, parseOptions } from '../validation.js';
import { type AmqpConfirmChannel, type AmqpConnection, amqplibConnect } from './amqp.js';
import { type PublishSettings, publishBatch, Returns } from './publish-batch.js';

/** Options of {@link createRabbitMqRelay}. Pass `url` or `connect`, not both. */
export interface RabbitMqRelayOptions {
  /**
   * The broker, `amqp://user:password@host:5672/vhost` (or `amqps://`). The relay connects with
   * amqplib (an optional peer dependency: `npm install amqplib`), loaded on first use.
   * @defaultValue none: pass `url` or `connect`
   */
  readonly url?: string;
  /**
   * Opens a connection, for settings a URL cannot carry (TLS files, heartbeat, client
   * properties): e.g. `() => amqplib.connect(url, { ca: [caCert] })`. Called on the first batch
   * and again on the batch after a connection was lost. amqplib's `ChannelModel` (0.10, 1.x, 2.x)
   * is what it should resolve to (see {@link AmqpConnection}).
   * @defaultValue none: pass `url` or `connect`
   */
  readonly connect?: () => PromiseLike<AmqpConnection>;
  /**
   * The topic exchange events are published to; each event's routing key is its type
   * (`reservation.created`, …), so consumers bind queues with patterns like `reservation.*`.
   * 1–255 letters, digits, `-`, `_`, `.` and `:`.
   */
  readonly exchange: string;
  /**
   * Declare the exchange (`assertExchange(exchange, 'topic', { durable: true })`) on each new
   * connection. Turn it off when the exchange is declared elsewhere and the relay's user has no
   * `configure` permission on it.
   * @defaultValue true
   */
  readonly assertExchange?: boolean;
  /**
   * Publish with `mandatory`: a message no queue is bound for is returned by the broker, and the
   * relay counts it as a failed delivery (retried with the outbox's backoff, then dead-lettered),
   * rather than the broker dropping it silently.
   * @defaultValue true
   */
  readonly mandatory?: boolean;
  /**
   * The routing key of an event's message.
   * @defaultValue the event's type
   */
  readonly routingKey?: (event: OutboxEvent) => string;
  /**
   * The `appId` property of every message, for consumers that tell publishers apart.
   * @defaultValue none
   */
  readonly appId?: string;
  /**
   * Where a lost connection (`warn`) and a reopened one (`info`) are reported. Failed deliveries
   * are reported by `runOutboxBatch`'s own logger.
   * @defaultValue none: silent
   */
  readonly logger?: Logger;
}

/**
 * A relay from the outbox to RabbitMQ (see {@link createRabbitMqRelay}). It owns one connection,
 * opened on the first batch, and opens a new one on the next batch after it was lost.
 */
export interface RabbitMqRelay {
  /**
   * For `runOutboxBatch` or `startWorker`: publishes the batch's events, then awaits all their
   * publisher confirms together, one round trip per batch. Each event is acknowledged or failed
   * on its own: a nack, a return (unroutable) or a connection lost before the confirm fails that
   * event only.
   */
  readonly batchHandler: OutboxBatchHandler;
  /**
   * The same, one event at a time (a batch of one): for code that takes an `OutboxHandler`, such
   * as the `reservation-engine` command's `--handler` module. Prefer `batchHandler`.
   */
  readonly handler: OutboxHandler;
  /**
   * Waits for the batches in hand to finish, then closes the connection. Batches after it fail
   * (their events are retried later, by whatever delivers them next). Idempotent.
   */
  close(): Promise<void>;
}

/** One connection and its confirm channel. */
interface Session {
  readonly connection: AmqpConnection;
  readonly channel: AmqpConfirmChannel;
  readonly returns: Returns;
  /** The connection or the channel closed. */
  closed: boolean;
}

const EXCHANGE = /^[A-Za-z0-9_.:-]{1,255}$/;

const optionsSchema = z
  .strictObject({
    url: z
      .string({ error: 'must be a string' })
      .regex(/^amqps?:\/\/\S+$/, { error: 'must be an amqp:// or amqps:// URL' })
      .optional(),
    connect: functionSchema<() => PromiseLike<AmqpConnection>>().optional(),
    exchange: z.string({ error: 'must be a string' }).regex(EXCHANGE, { error: 'must be 1–255 letters, digits, "-", "_", "." and ":"' }),
    assertExchange: z.boolean({ error: 'must be true or false' }).default(true),
    mandatory: z.boolean({ error: 'must be true or false' }).default(true),
    routingKey: functionSchema<(event: OutboxEvent) => string>().optional(),
    appId: z.string({ error: 'must be a string' }).min(1, { error: 'must not be empty' }).max(255, { error: 'must be at most 255 characters' }).optional(),
    logger: loggerSchema.optional(),
  })
  .superRefine((o, context) => {
    if ((o.url === undefined) === (o.connect === undefined)) {
      context.addIssue({ code: 'custom', path: [o.url === undefined ? 'url' : 'connect'], message: o.url === undefined ? 'pass url or connect' : 'pass url or connect, not both' });
    }
  });

type Options = z.output<typeof optionsSchema>;

/**
 * Relays the outbox to RabbitMQ with publisher confirms: give its `batchHandler` to
 * `runOutboxBatch` or `startWorker`. Each event becomes a persistent message on the topic
 * exchange `exchange` (declared durable), routing key the event's type, body the event's payload
 * as JSON, with `messageId` (the event id: the same on every redelivery), `type`, `timestamp`
 * (seconds), `contentType: 'application/json'` and, when the event has one, a `traceparent` header.
 *
 * An event counts as delivered only once the broker confirmed it: persisted on every queue it was
 * routed to. A nack, a return (no queue bound, with `mandatory`) or a connection lost before the
 * confirm fails that event alone; the outbox retries it with its backoff and dead-letters it
 * after `maxAttempts`. Delivery is at least once: consumers drop duplicates by `messageId` (see
 * {@link consumeOnce}).
 *
 * The relay connects on the first batch; after the connection is lost (the broker restarted,
 * the network failed) the batches in hand fail and the next batch connects again. Nothing
 * happens until a batch runs, so create the relay at start-up and {@link RabbitMqRelay.close} it
 * at shutdown, after the worker stopped.
 *
 * @throws {ConfigurationError} bad options (code `INVALID_CONFIGURATION`)
 *
 * @example
 * ```ts
 * import { startWorker } from 'reservation-engine';
 * import { createRabbitMqRelay } from 'reservation-engine/rabbitmq';
 *
 * const relay = createRabbitMqRelay({ url: process.env.AMQP_URL ?? 'amqp://localhost', exchange: 'reservations' });
 * const shutdown = new AbortController();
 * process.once('SIGTERM', () => shutdown.abort());
 * const worker = startWorker({ db, batchHandler: relay.batchHandler, signal: shutdown.signal });
 * await worker.stopped; // after SIGTERM, once the batches in hand finished
 * await relay.close();
 * ```
 */
export function createRabbitMqRelay(options: RabbitMqRelayOptions): RabbitMqRelay {
  const relay = new Relay(parseOptions(optionsSchema, options));
  return Object.freeze({
    batchHandler: (events: readonly OutboxEvent[], context: OutboxHandlerContext) => relay.publish(events, context.signal),
    handler: async (event: OutboxEvent, context: OutboxHandlerContext) => {
      const [result] = await relay.publish([event], context.signal);
      if (result?.status === 'rejected') throw result.reason;
    },
    close: () => relay.close(),
  });
}

class Relay {
  readonly #options: Options;
  readonly #settings: PublishSettings;
  /** The session opening or open. */
  #session: Promise<Session> | undefined;
  /** The session open, once it is. */
  #current: Session | undefined;
  #closing: Promise<void> | undefined;
  /** A connection was lost since the last one opened: the next one opening is worth an `info`. */
  #lost = false;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: Options) {
    this.#options = options;
    this.#settings = Object.freeze({
      exchange: options.exchange,
      routingKey: options.routingKey ?? ((event: OutboxEvent) => event.type),
      mandatory: options.mandatory,
      appId: options.appId,
    });
  }

  publish(events: readonly OutboxEvent[], signal: AbortSignal | undefined): Promise<OutboxDeliveryResult[]> {
    if (this.#closing) {
      const closed = new Error('The RabbitMQ relay is closed: nothing is published after close()');
      closed.name = 'RabbitMqRelayClosedError';
      return Promise.reject(closed);
    }
    const work = this.#publish(events, signal);
    this.#inFlight.add(work);
    const forget = () => this.#inFlight.delete(work);
    work.then(forget, forget);
    return work;
  }

  async #publish(events: readonly OutboxEvent[], signal: AbortSignal | undefined): Promise<OutboxDeliveryResult[]> {
    const session = await this.#openWithin(signal);
    // Past the handler's timeout the batch has failed already: drop the connection, which fails
    // the confirms still awaited, so that nothing waits on a broker that stopped answering.
    const abandon = () => this.#drop(session, new Error('the batch timed out waiting for publisher confirms'));
    signal?.addEventListener('abort', abandon, { once: true });
    try {
      return await publishBatch(session.channel, session.returns, events, this.#settings, signal);
    } finally {
      signal?.removeEventListener('abort', abandon);
    }
  }

  /**
   * The open session, or a new one, unless `signal` aborts first: then that connection attempt is
   * given up (a broker that accepts TCP but does not answer would hold it forever), and the next
   * batch starts another.
   */
  #openWithin(signal: AbortSignal | undefined): Promise<Session> {
    const opening = this.#open();
    if (!signal) return opening;
    return new Promise<Session>((resolve, reject) => {
      const giveUp = () => {
        if (this.#session === opening) this.#session = undefined;
        reject(signal.reason ?? new Error('aborted while connecting to the broker'));
      };
      if (signal.aborted) return giveUp();
      signal.addEventListener('abort', giveUp, { once: true });
      opening.then(
        (session) => (signal.removeEventListener('abort', giveUp), resolve(session)),
        (error: unknown) => (signal.removeEventListener('abort', giveUp), reject(error)),
      );
    });
  }

  /** The open session, or a new one: the connection is opened at most once at a time. */
  #open(): Promise<Session> {
    if (this.#session) return this.#session;
    const opening: Promise<Session> = this.#connect().then(
      (session) => {
        // Given up while it opened (or the relay closed, or the connection died meanwhile): not ours.
        if (this.#session !== opening || this.#closing || session.closed) {
          if (this.#session === opening) this.#session = undefined;
          void closeQuietly(session.connection);
          throw new Error('The connection to the broker was given up or lost while it opened');
        }
        this.#current = session;
        if (this.#lost) log(this.#options.logger, 'info', 'rabbitmq: connected again');
        this.#lost = false;
        return session;
      },
      (error: unknown) => {
        if (this.#session === opening) this.#session = undefined;
        throw error;
      },
    );
    this.#session = opening;
    return opening;
  }

  async #connect(): Promise<Session> {
    const connect = this.#options.connect ?? (await this.#amqplib());
    const connection = await connect();
    let session: Session | undefined;
    // Until the channel is open a failure is the caller's error; after, it ends the session.
    const lost = (error?: unknown) => {
      if (!session) return;
      session.closed = true;
      this.#drop(session, error);
    };
    connection.on('error', lost);
    connection.on('close', lost);
    try {
      const channel = await connection.createConfirmChannel();
      const returns = new Returns();
      channel.on('return', returns.onReturn);
      channel.on('error', lost);
      channel.on('close', lost);
      if (this.#options.assertExchange) await channel.assertExchange(this.#options.exchange, 'topic', { durable: true });
      session = { connection, channel, returns, closed: false };
    } catch (error) {
      await closeQuietly(connection);
      throw error;
    }
    return session;
  }

  async #amqplib(): Promise<() => Promise<AmqpConnection>> {
    const connect = await amqplibConnect();
    return () => connect(this.#options.url!);
  }

  /** Forgets `session` (the next batch opens a new one) and closes its connection, once. */
  #drop(session: Session, error: unknown): void {
    if (this.#current !== session) return;
    this.#current = undefined;
    this.#session = undefined;
    if (!this.#closing) {
      this.#lost = true;
      log(this.#options.logger, 'warn', `rabbitmq: connection lost (${describe(error)}); a new one opens with the next batch`, { error });
    }
    void closeQuietly(session.connection);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#inFlight]);
      const session = await this.#session?.catch(() => undefined);
      this.#session = undefined;
      this.#current = undefined;
      if (session) await closeQuietly(session.connection);
    })();
    return this.#closing;
  }
}

function describe(error: unknown): string {
  if (error === undefined) return 'closed';
  return error instanceof Error ? error.message : String(error);
}

/** Closes a connection that may be closed or broken already: whatever it throws is moot. */
async function closeQuietly(connection: AmqpConnection): Promise<void> {
  try {
    await connection.close();
  } catch {
    // Closed already, or the socket is gone: either way it is closed.
  }
}
