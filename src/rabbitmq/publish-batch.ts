import type { OutboxDeliveryResult } from '../outbox/run-outbox-batch.js';
import type { OutboxEvent } from '../types.js';
import type { AmqpConfirmChannel, AmqpPublishOptions, AmqpReturnedMessage } from './amqp.js';

/** @internal How one relay publishes: the exchange, the routing and the fixed properties. */
export interface PublishSettings {
  readonly exchange: string;
  readonly routingKey: (event: OutboxEvent) => string;
  readonly mandatory: boolean;
  readonly appId: string | undefined;
}

/**
 * @internal
 * Returned messages (`basic.return`) of one channel, by message id, for the batch that waits for
 * them. The broker sends a message's return before its ack on the same channel, so a publish
 * whose confirm arrives knows by then whether it was returned.
 */
export class Returns {
  readonly #waiting = new Map<string, (message: AmqpReturnedMessage) => void>();

  expect(messageId: string, onReturn: (message: AmqpReturnedMessage) => void): void {
    this.#waiting.set(messageId, onReturn);
  }

  done(messageId: string): void {
    this.#waiting.delete(messageId);
  }

  /** The channel's `return` listener. */
  readonly onReturn = (message: AmqpReturnedMessage): void => {
    const messageId = message?.properties?.messageId;
    if (messageId !== undefined) this.#waiting.get(messageId)?.(message);
  };
}

/** The properties of an event's message. */
export function messageOptions(event: OutboxEvent, settings: PublishSettings): AmqpPublishOptions {
  return {
    persistent: true,
    mandatory: settings.mandatory,
    messageId: event.id,
    type: event.type,
    // AMQP's timestamp is in seconds since the epoch.
    timestamp: Math.floor(event.createdAt.getTime() / 1000),
    contentType: 'application/json',
    ...(settings.appId === undefined ? {} : { appId: settings.appId }),
    ...(event.traceparent ? { headers: { traceparent: event.traceparent } } : {}),
  };
}

/**
 * @internal
 * Publishes every event on the confirm channel, one after another without waiting, then awaits
 * all their confirms together: one round trip to the broker for the batch. Resolves to one result
 * per event: fulfilled when the broker acked it and did not return it; rejected when it nacked
 * it, returned it as unroutable (`mandatory`), or the channel closed first.
 */
export async function publishBatch(
  channel: AmqpConfirmChannel,
  returns: Returns,
  events: readonly OutboxEvent[],
  settings: PublishSettings,
  signal: AbortSignal | undefined,
): Promise<OutboxDeliveryResult[]> {
  const confirms: Array<Promise<OutboxDeliveryResult>> = [];
  for (const event of events) {
    let routingKey: string;
    let content: Buffer;
    try {
      routingKey = settings.routingKey(event);
      content = Buffer.from(JSON.stringify(event.payload));
    } catch (error) {
      confirms.push(Promise.resolve({ status: 'rejected', reason: error }));
      continue;
    }
    let full = false;
    confirms.push(
      new Promise<OutboxDeliveryResult>((resolve) => {
        let returned: AmqpReturnedMessage | undefined;
        returns.expect(event.id, (message) => (returned = message));
        const settle = (result: OutboxDeliveryResult) => {
          returns.done(event.id);
          resolve(result);
        };
        try {
          full = !channel.publish(settings.exchange, routingKey, content, messageOptions(event, settings), (error) => {
            if (error) settle({ status: 'rejected', reason: confirmFailure(error) });
            else if (returned) settle({ status: 'rejected', reason: unroutable(returned, settings.exchange, routingKey) });
            else settle({ status: 'fulfilled', value: undefined });
          });
        } catch (error) {
          // The channel is closed (or closing): amqplib throws at once.
          settle({ status: 'rejected', reason: error });
        }
      }),
    );
    if (full) await drained(channel, signal);
  }
  return Promise.all(confirms);
}

/** Resolves once the channel's write buffer has room again, or it closed, or `signal` aborted. */
function drained(channel: AmqpConfirmChannel, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      channel.removeListener('drain', done);
      channel.removeListener('close', done);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    channel.once('drain', done);
    channel.once('close', done);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A nack (amqplib: `message nacked`) or a channel that closed before the confirm. */
function confirmFailure(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  if (/nack/i.test(message)) {
    return named('RabbitMqNackError', 'The broker nacked the message: it did not take responsibility for it (a queue refused it, e.g. x-overflow reject-publish, or an internal error)', error);
  }
  return named('RabbitMqConfirmLostError', `The channel closed before the broker confirmed the message (${message}); it may or may not have been routed`, error);
}

function unroutable(returned: AmqpReturnedMessage, exchange: string, routingKey: string): Error {
  const { replyCode = 312, replyText = 'NO_ROUTE' } = returned.fields ?? {};
  return named(
    'RabbitMqUnroutableError',
    `The broker returned the message as unroutable (${replyCode} ${replyText}): no queue is bound to exchange ${JSON.stringify(exchange)} for routing key ${JSON.stringify(routingKey)}`,
  );
}

function named(name: string, message: string, cause?: unknown): Error {
  const error = new Error(message, cause === undefined ? undefined : { cause });
  error.name = name;
  return error;
}
