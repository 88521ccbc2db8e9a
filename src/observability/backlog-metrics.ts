import type { Kysely } from 'kysely';
import { z } from 'zod';
import { ReservationError } from '../errors.js';
import { getBacklog } from '../operations/backlog.js';
import type { DatabaseKind } from '../types.js';
import { dbOptionsShape, parseOptions } from '../validation.js';
import { openTelemetryApi, type TelemetryOptions } from './telemetry.js';

/** Options of {@link observeBacklog}. */
export interface ObserveBacklogOptions {
  /** The host's Kysely instance (see {@link ReservationEngineOptions.db}). */
  readonly db: Kysely<any>;
  /**
   * The prefix of the engine's tables (see {@link ReservationEngineOptions.tablePrefix}).
   * @defaultValue 'reservation_engine_'
   */
  readonly tablePrefix?: string;
  /**
   * Which database `db` talks to (see {@link ReservationEngineOptions.dialect}).
   * @defaultValue detected from the Kysely adapter
   */
  readonly dialect?: DatabaseKind;
  /**
   * Where the gauges are registered (`@opentelemetry/api`'s `MeterProvider`).
   * @defaultValue the global one (`metrics.getMeterProvider()`)
   */
  readonly meterProvider?: TelemetryOptions['meterProvider'];
}

const optionsSchema = z.strictObject({
  ...dbOptionsShape,
  meterProvider: z.custom<TelemetryOptions['meterProvider']>((v) => typeof (v as { getMeter?: unknown } | null)?.getMeter === 'function', { error: 'must be a MeterProvider' }).optional(),
});

/**
 * Registers OpenTelemetry gauges of what an operator watches, read with {@link getBacklog} each
 * time the metrics are collected (a Prometheus scrape: five indexed queries):
 * `reservation_engine.outbox.pending`, `reservation_engine.outbox.due`,
 * `reservation_engine.outbox.lag` (seconds the oldest due event has waited),
 * `reservation_engine.outbox.dead_letters` and `reservation_engine.expiry.backlog` (PENDING
 * reservations past `expiresAt`). A collection while the database is unreachable reports nothing.
 * Returns a function that unregisters them.
 *
 * @throws {ReservationError} code `MISSING_DEPENDENCY`: `@opentelemetry/api` is not installed
 *
 * @example
 * ```ts
 * const stop = observeBacklog({ db });
 * // … on shutdown:
 * stop();
 * ```
 */
export function observeBacklog(options: ObserveBacklogOptions): () => void {
  const o = parseOptions(optionsSchema, options);
  const api = openTelemetryApi();
  if (!api) throw new ReservationError('observeBacklog needs @opentelemetry/api: npm install @opentelemetry/api', 'MISSING_DEPENDENCY', 500);
  const meter = ((o.meterProvider ?? api.metrics.getMeterProvider()) as import('@opentelemetry/api').MeterProvider).getMeter('reservation-engine', '0.1.0');
  const gauges = {
    pending: meter.createObservableGauge('reservation_engine.outbox.pending', { description: 'Outbox events not yet delivered nor dead-lettered', unit: '{event}' }),
    due: meter.createObservableGauge('reservation_engine.outbox.due', { description: 'Outbox events due now and not leased', unit: '{event}' }),
    lag: meter.createObservableGauge('reservation_engine.outbox.lag', { description: 'How long the oldest due outbox event has waited', unit: 's' }),
    deadLetters: meter.createObservableGauge('reservation_engine.outbox.dead_letters', { description: 'Dead-lettered outbox events', unit: '{event}' }),
    expiryBacklog: meter.createObservableGauge('reservation_engine.expiry.backlog', { description: 'PENDING reservations past their expiresAt', unit: '{reservation}' }),
  };
  const observe = async (result: import('@opentelemetry/api').BatchObservableResult) => {
    let backlog;
    try {
      backlog = await getBacklog({ db: o.db, tablePrefix: o.tablePrefix, dialect: o.dialect });
    } catch {
      return;
    }
    result.observe(gauges.pending, backlog.outboxPending);
    result.observe(gauges.due, backlog.outboxDue);
    result.observe(gauges.lag, backlog.outboxLagMs / 1000);
    result.observe(gauges.deadLetters, backlog.deadLetters);
    result.observe(gauges.expiryBacklog, backlog.expiryBacklog);
  };
  const observables = Object.values(gauges);
  meter.addBatchObservableCallback(observe, observables);
  return () => meter.removeBatchObservableCallback(observe, observables);
}
