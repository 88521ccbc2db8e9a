import { loggerSchema } from '../observability/logger.js';
import { z } from 'zod';
import { type OutboxBatchHandler, type OutboxHandler, oneHandler } from '../outbox/run-outbox-batch.js';
import { reservationsOutliveKeys, retentionShape } from '../retention/purge-batch.js';
import { dbOptionsShape, functionSchema, integer, MAX_BATCH_LIMIT, telemetrySchema } from '../validation.js';

const DAY_MS = 86_400_000;

/** @internal How often the purge loop runs while it finds nothing more to delete. */
export const DEFAULT_PURGE_INTERVAL_MS = 60_000;

/** @internal The expiry batch size when the host sets none, as `expireBatch`'s. */
export const DEFAULT_EXPIRE_LIMIT = 500;

/**
 * The options `runOutboxBatch` takes besides `db` and `handler`, with its bounds and (where one
 * option is checked against another) its defaults: checked here so that a bad value fails
 * `startWorker` at once rather than every batch. test/worker.test.ts checks that both agree.
 */
const outboxSchema = z
  .strictObject({
    limit: integer(1, MAX_BATCH_LIMIT).optional(),
    maxAttempts: integer(1, 1000).optional(),
    baseDelayMs: integer(0, DAY_MS).optional(),
    maxDelayMs: integer(0, 7 * DAY_MS).optional(),
    leaseMs: integer(1, DAY_MS).optional(),
    handlerTimeoutMs: integer(1, DAY_MS).optional(),
  })
  .refine((o) => (o.maxDelayMs ?? 300_000) >= (o.baseDelayMs ?? 1000), { error: 'must not be less than baseDelayMs', path: ['maxDelayMs'] })
  .refine((o) => o.handlerTimeoutMs === undefined || o.handlerTimeoutMs * 2 <= (o.leaseMs ?? 30_000), { error: 'must be at most half of leaseMs', path: ['handlerTimeoutMs'] });

const expireSchema = z.union([z.literal(false), z.strictObject({ limit: integer(1, MAX_BATCH_LIMIT).default(DEFAULT_EXPIRE_LIMIT) })], {
  error: 'must be false or an object such as { limit: 500 }',
});

/** `false` (no purge loop) or the loop's options: not a union, whose errors would hide which field is wrong. */
const purgeSchema = z.preprocess(
  (value) => (value === false ? undefined : value),
  z
    .strictObject({ ...retentionShape, intervalMs: integer(1000, DAY_MS).default(DEFAULT_PURGE_INTERVAL_MS) })
    .refine(...reservationsOutliveKeys)
    .optional(),
);

const signalSchema = z.custom<AbortSignal>((v) => v instanceof AbortSignal, { error: 'must be an AbortSignal' });

/** A pause in milliseconds: at least 1, so that an idle or failing loop never spins. */
const pauseMs = (defaultMs: number) => integer(1, DAY_MS).default(defaultMs);

/** @internal The schema of `startWorker`'s options. */
export const workerOptionsSchema = z
  .strictObject({
    ...dbOptionsShape,
    handler: functionSchema<OutboxHandler>().optional(),
    batchHandler: functionSchema<OutboxBatchHandler>().optional(),
    signal: signalSchema.optional(),
    outbox: outboxSchema.default({}),
    expire: expireSchema.default({ limit: DEFAULT_EXPIRE_LIMIT }),
    purge: purgeSchema,
    idleIntervalMs: pauseMs(1000),
    maxIdleIntervalMs: pauseMs(5000),
    errorIntervalMs: pauseMs(1000),
    maxErrorIntervalMs: pauseMs(30_000),
    logger: loggerSchema.optional(),
    telemetry: telemetrySchema.optional(),
  })
  .superRefine(oneHandler)
  .refine((o) => o.maxIdleIntervalMs >= o.idleIntervalMs, { error: 'must not be less than idleIntervalMs', path: ['maxIdleIntervalMs'] })
  .refine((o) => o.maxErrorIntervalMs >= o.errorIntervalMs, { error: 'must not be less than errorIntervalMs', path: ['maxErrorIntervalMs'] });
