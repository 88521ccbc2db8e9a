/**
 * The publishing side: the library's worker (`startWorker`) expires reservations and relays the
 * outbox to RabbitMQ through `createRabbitMqRelay`, whole batches at a time with publisher
 * confirms. Run it wherever the engine's database is reachable, as many copies as you like
 * (events are leased, so no two copies publish one at the same time).
 */
import type { Kysely } from 'kysely';
import { type Logger, type RunningWorker, startWorker } from 'reservation-engine';
import { createRabbitMqRelay } from 'reservation-engine/rabbitmq';

/** Options of {@link startRelay}. */
export interface StartRelayOptions {
  /** The engine's database (migrated). */
  readonly db: Kysely<any>;
  /** The broker, e.g. `amqp://localhost`. */
  readonly url: string;
  /** The topic exchange events go to; declared durable by the relay. */
  readonly exchange: string;
  readonly logger?: Logger;
}

/** A running relay: `stop()` finishes the batches in hand, then closes the broker connection. */
export interface RunningRelay {
  readonly worker: RunningWorker;
  stop(): Promise<void>;
}

export function startRelay({ db, url, exchange, logger }: StartRelayOptions): RunningRelay {
  const relay = createRabbitMqRelay({ url, exchange, logger });
  const worker = startWorker({
    db,
    batchHandler: relay.batchHandler,
    logger,
    // An outage of the broker costs each due event an attempt per retry: with these settings an
    // event is retried for about an hour (a minute apart at most) before it is dead-lettered.
    outbox: { limit: 200, maxAttempts: 70, baseDelayMs: 500, maxDelayMs: 60_000 },
    idleIntervalMs: 100,
    maxIdleIntervalMs: 1000,
  });
  return {
    worker,
    async stop() {
      worker.stop();
      await worker.stopped;
      await relay.close();
    },
  };
}
