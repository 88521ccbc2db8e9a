/**
 * `reservation-engine/rabbitmq`: the outbox relayed to RabbitMQ with publisher confirms
 * ({@link createRabbitMqRelay}), and exactly-once effects for its consumers ({@link consumeOnce}).
 * Needs amqplib (an optional peer dependency) only for `createRabbitMqRelay({ url })`.
 */
export { createRabbitMqRelay } from './relay.js';
export type { RabbitMqRelay, RabbitMqRelayOptions } from './relay.js';
export type { AmqpConfirmChannel, AmqpConnection, AmqpEmitter, AmqpPublishOptions, AmqpReturnedMessage } from './amqp.js';
export { consumeOnce, migrateInbox } from './inbox.js';
export type { ConsumeOnceOptions, ConsumeOnceResult, InboxOptions } from './inbox.js';
export type { OutboxBatchHandler, OutboxDeliveryResult } from '../outbox/run-outbox-batch.js';
