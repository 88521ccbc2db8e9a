/**
 * The parts of an AMQP 0-9-1 client the relay uses, declared by shape (as Kysely declares its
 * `MysqlPool`): amqplib's `ChannelModel` and `ConfirmChannel` (0.10, 1.x, 2.x) fit them, and the
 * package's types never depend on amqplib's.
 */
import { ReservationError } from '../errors.js';

/** A message's properties, as the relay sets them and a returned message carries them. */
export interface AmqpPublishOptions {
  readonly persistent?: boolean;
  readonly mandatory?: boolean;
  readonly messageId?: string;
  readonly type?: string;
  readonly timestamp?: number;
  readonly contentType?: string;
  readonly appId?: string;
  readonly headers?: Record<string, unknown>;
}

/** A message the broker handed back (`basic.return`): unroutable under `mandatory`. */
export interface AmqpReturnedMessage {
  readonly fields: { readonly replyCode?: number; readonly replyText?: string; readonly exchange?: string; readonly routingKey?: string };
  readonly properties: { readonly messageId?: string };
}

/** An event emitter, as the relay listens to connections and channels. */
export interface AmqpEmitter {
  on(event: string, listener: (...args: any[]) => void): unknown;
  once(event: string, listener: (...args: any[]) => void): unknown;
  removeListener(event: string, listener: (...args: any[]) => void): unknown;
}

/** A channel in confirm mode: amqplib's `ConfirmChannel`. */
export interface AmqpConfirmChannel extends AmqpEmitter {
  assertExchange(exchange: string, type: string, options?: { durable?: boolean }): PromiseLike<unknown>;
  /** Returns false when the write buffer is full (wait for `drain`); `callback` gets the broker's ack (null) or nack (an error). */
  publish(exchange: string, routingKey: string, content: Buffer, options: AmqpPublishOptions, callback: (error: unknown) => void): boolean;
  close(): PromiseLike<unknown>;
}

/** A connection: amqplib's `ChannelModel`, what `amqplib.connect(url)` resolves to. */
export interface AmqpConnection extends AmqpEmitter {
  createConfirmChannel(): PromiseLike<AmqpConfirmChannel>;
  close(): PromiseLike<unknown>;
}

/** @internal amqplib's `connect`, loaded on first use: a host that passes `connect` never needs it installed. */
export async function amqplibConnect(): Promise<(url: string) => Promise<AmqpConnection>> {
  let loaded: { connect?: unknown; default?: { connect?: unknown } };
  try {
    loaded = (await import('amqplib')) as typeof loaded;
  } catch (error) {
    throw new ReservationError('createRabbitMqRelay with url needs amqplib: npm install amqplib (or pass connect)', 'MISSING_DEPENDENCY', 500, { cause: error });
  }
  const connect = (typeof loaded.connect === 'function' ? loaded.connect : loaded.default?.connect) as ((url: string) => Promise<AmqpConnection>) | undefined;
  if (typeof connect !== 'function') throw new ReservationError('The installed amqplib exports no connect function', 'MISSING_DEPENDENCY', 500);
  return connect;
}
