/**
 * OpenTelemetry (issue 13): after a scripted workload, the spans, their attributes and links,
 * and the metric values, read from the SDK's in-memory exporter and a metric reader, on every
 * dialect. The providers are passed to the engine (`telemetry: { tracerProvider, meterProvider }`);
 * the context manager, which carries the active span through async calls, is the global one any
 * SDK registers.
 */
import { context, type Link } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { type DataPoint, type Histogram, MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import { createPool as createMysqlPool } from 'mysql2';
import pg from 'pg';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { expireBatch, observeBacklog, ReservationEngine, runOutboxBatch, startWorker } from '../src/index.js';
import { caught, describeEachDialect, describeEachServerDialect, unique } from './support/db.js';
import { startErrorProxy } from './support/error-proxy.js';

class TestReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const contextManager = new AsyncLocalStorageContextManager();
beforeAll(() => {
  context.setGlobalContextManager(contextManager.enable());
});
afterAll(() => {
  context.disable();
});

function setUp() {
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const metrics = async () => (await reader.collect()).resourceMetrics;
  return { spans, telemetry: { tracerProvider, meterProvider }, meterProvider, metrics };
}

/** The data points of metric `name`, as `attributes → value` (a histogram's value is its count). */
function points(resourceMetrics: ResourceMetrics, name: string): Record<string, number> {
  const result: Record<string, number> = {};
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== name) continue;
      for (const point of metric.dataPoints as DataPoint<number | Histogram>[]) {
        const key = Object.values(point.attributes).join(',');
        result[key] = typeof point.value === 'number' ? point.value : point.value.count;
      }
    }
  }
  return result;
}

const named = (spans: ReadableSpan[], name: string) => spans.filter((span) => span.name === name);
const traceparentOf = (span: ReadableSpan) => `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`;

describeEachDialect('OpenTelemetry', (t) => {
  const dbSystem = () => (t.name === 'mysql' ? 'mysql' : 'postgresql');

  it('carts, extend, writeOff and audit: a span each with its outcome, and their events carry their trace context', async () => {
    const { spans, telemetry } = setUp();
    const engine = new ReservationEngine({ db: t.db, telemetry, maxHoldSeconds: 120 });
    const [a, b] = [await engine.createItem({ sku: unique(), name: 'a', availableQuantity: 5 }), await engine.createItem({ sku: unique(), name: 'b', availableQuantity: 5 })];
    const { reservation } = await engine.reserve({ lines: [{ itemId: a.id, quantity: 1 }, { itemId: b.id, quantity: 2 }], idempotencyKey: unique(), ttlSeconds: 30 });
    await caught(() => engine.reserve({ lines: [{ itemId: a.id, quantity: 9 }, { itemId: b.id, quantity: 1 }], idempotencyKey: unique() }));
    await engine.extend(reservation.id, { ttlSeconds: 60 });
    await caught(() => engine.extend(reservation.id, { ttlSeconds: 600 }));
    await engine.writeOff({ itemId: a.id, quantity: 1, reason: 'damaged' });
    await engine.audit();
    const finished = spans.getFinishedSpans();
    expect(named(finished, 'reservation-engine reserve').map((span) => span.attributes['reservation_engine.outcome'])).toEqual(['created', 'insufficient_stock']);
    expect(named(finished, 'reservation-engine extend').map((span) => span.attributes['reservation_engine.outcome'])).toEqual(['ok', 'hold_limit_exceeded']);
    expect(named(finished, 'reservation-engine writeOff')[0]?.attributes).toMatchObject({ 'reservation_engine.outcome': 'ok', 'db.system.name': dbSystem() });
    expect(named(finished, 'reservation-engine audit')[0]?.attributes).toMatchObject({ 'reservation_engine.outcome': 'ok' });
    const writers: Record<string, string> = {
      'reservation.created': traceparentOf(named(finished, 'reservation-engine reserve')[0]!),
      'reservation.extended': traceparentOf(named(finished, 'reservation-engine extend')[0]!),
      'item.written_off': traceparentOf(named(finished, 'reservation-engine writeOff')[0]!),
    };
    const events = await t.db.selectFrom('outbox').select(['type', 'trace_context']).orderBy('id').execute();
    expect(events.map((e: any) => [e.type, e.trace_context])).toEqual(Object.entries(writers));
  });

  it('spans and metrics of a scripted workload: outcomes, transitions, trace context from reserve to delivery', async () => {
    const { spans, telemetry, metrics } = setUp();
    let now = new Date('2030-01-01T00:00:00Z');
    const engine = new ReservationEngine({ db: t.db, telemetry, clock: () => now });
    const item = await engine.createItem({ sku: unique(), name: 'traced', availableQuantity: 5 });
    const key = unique();
    const { reservation: first } = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: key });
    await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: key });
    await caught(() => engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: key }));
    await caught(() => engine.reserve({ itemId: item.id, quantity: 10, idempotencyKey: unique() }));
    await caught(() => engine.reserve({ itemId: 999_999, quantity: 1, idempotencyKey: unique() }));
    const { reservation: lapsing } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique(), ttlSeconds: 60 });
    const { reservation: cancelled } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    await engine.confirm(first.id);
    await engine.confirm(first.id); // a repeat: no second transition
    await engine.cancel(cancelled.id);
    await caught(() => engine.cancel(first.id));
    now = new Date(now.getTime() + 61_000);
    expect(await expireBatch({ db: t.db, now, telemetry })).toEqual({ expired: 1, failed: 0 });

    // Every event carries the traceparent of the span whose transaction wrote it.
    const finished = spans.getFinishedSpans();
    const reserves = named(finished, 'reservation-engine reserve');
    expect(reserves.map((span) => span.attributes['reservation_engine.outcome'])).toEqual([
      'created',
      'replayed',
      'idempotency_conflict',
      'insufficient_stock',
      'item_not_found',
      'created',
      'created',
    ]);
    for (const span of reserves) expect(span.attributes['db.system.name']).toBe(dbSystem());
    const events = await t.db.selectFrom('outbox').select(['id', 'type', 'payload', 'trace_context']).orderBy('id').execute();
    const payloadOf = (row: { payload: unknown }) => (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as { reservationId: string };
    const createdSpans = reserves.filter((span) => span.attributes['reservation_engine.outcome'] === 'created');
    const reservesById = new Map([first, lapsing, cancelled].map((r, i) => [r.id, createdSpans[i]!]));
    const writerOf = (row: { type: string; payload: unknown }) => {
      if (row.type === 'reservation.created') return reservesById.get(payloadOf(row).reservationId);
      if (row.type === 'reservation.expired') return named(finished, 'reservation-engine expireBatch')[0];
      return named(finished, `reservation-engine ${row.type === 'reservation.confirmed' ? 'confirm' : 'cancel'}`)[0];
    };
    expect(events).toHaveLength(6);
    for (const row of events) expect(row.trace_context, row.type).toBe(traceparentOf(writerOf(row)!));

    // Delivery: a span per event, linked to the writer's span; the first attempt of the
    // confirmed event fails.
    spans.reset();
    let failedOnce = false;
    const logger = { warn: vi.fn(), error: vi.fn() };
    const handler = (event: { type: string }) => {
      if (event.type === 'reservation.confirmed' && !failedOnce) {
        failedOnce = true;
        throw new Error('broker down');
      }
    };
    expect(await runOutboxBatch({ db: t.db, now, handler, telemetry, logger })).toMatchObject({ processed: 5, failed: 1 });
    expect(logger.warn).toHaveBeenCalledTimes(1);
    expect(logger.warn.mock.calls[0]?.[0]).toMatch(/^outbox: event \S+ \(reservation\.confirmed\) failed \(attempt 1\)/);
    expect(await runOutboxBatch({ db: t.db, now: new Date(now.getTime() + 600_000), handler, telemetry })).toMatchObject({ processed: 1, failed: 0 });
    const deliveries = spans.getFinishedSpans().filter((span) => span.name.startsWith('reservation-engine deliver '));
    expect(deliveries).toHaveLength(7);
    for (const delivery of deliveries) {
      const row = events.find((e) => String(e.id) === delivery.attributes['reservation_engine.event_id'])!;
      expect(delivery.name).toBe(`reservation-engine deliver ${row.type}`);
      expect(delivery.links.map((link: Link) => link.context.spanId)).toEqual([row.trace_context!.split('-')[2]]);
    }
    expect(deliveries.filter((span) => span.status.code === 2)).toHaveLength(1);
    // Batch spans carry their counts.
    expect(named(finished, 'reservation-engine expireBatch')[0]?.attributes).toMatchObject({ 'reservation_engine.batch.expired': 1, 'reservation_engine.batch.failed': 0 });
    expect(named(spans.getFinishedSpans(), 'reservation-engine runOutboxBatch').map((span) => span.attributes['reservation_engine.batch.processed'])).toEqual([5, 1]);
    expect(named(spans.getFinishedSpans(), 'reservation-engine runOutboxBatch')[0]?.attributes['reservation_engine.batch.failed']).toBe(1);

    const m = await metrics();
    expect(points(m, 'reservation_engine.reservations')).toEqual({ created: 3, replayed: 1, idempotency_conflict: 1, insufficient_stock: 1, item_not_found: 1 });
    expect(points(m, 'reservation_engine.transitions')).toEqual({ confirmed: 1, cancelled: 1, expired: 1 });
    expect(points(m, 'reservation_engine.outbox.events')).toEqual({
      'delivered,reservation.created': 3,
      'delivered,reservation.confirmed': 1,
      'failed,reservation.confirmed': 1,
      'delivered,reservation.cancelled': 1,
      'delivered,reservation.expired': 1,
    });
    expect(Object.values(points(m, 'reservation_engine.outbox.delivery.attempts')).reduce((a, b) => a + b, 0)).toBe(7);
    expect(points(m, 'reservation_engine.outbox.handler.duration')).toMatchObject({ 'reservation.confirmed,error': 1, 'reservation.confirmed,ok': 1 });
    const durations = points(m, 'reservation_engine.operation.duration');
    expect(durations).toMatchObject({ 'reserve,created': 3, 'confirm,ok': 2, 'cancel,ok': 1, 'cancel,invalid_state': 1, 'expireBatch,ok': 1, 'runOutboxBatch,ok': 2, 'createItem,ok': 1 });
  });

  it('backlog gauges are read from the database at each collection', async () => {
    const { telemetry, meterProvider, metrics } = setUp();
    const now = new Date();
    const engine = new ReservationEngine({ db: t.db, telemetry, clock: () => new Date(now.getTime() - 120_000) });
    const item = await engine.createItem({ sku: unique(), name: 'backlog', availableQuantity: 5 });
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique(), ttlSeconds: 60 });
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique(), ttlSeconds: 600 });
    const stop = observeBacklog({ db: t.db, meterProvider });
    const before = await metrics();
    expect(points(before, 'reservation_engine.expiry.backlog')).toEqual({ '': 1 });
    expect(points(before, 'reservation_engine.outbox.pending')).toEqual({ '': 2 });
    expect(points(before, 'reservation_engine.outbox.due')).toEqual({ '': 2 });
    expect(points(before, 'reservation_engine.outbox.lag')['']).toBeGreaterThanOrEqual(119);
    expect(points(before, 'reservation_engine.outbox.dead_letters')).toEqual({ '': 0 });
    await expireBatch({ db: t.db, telemetry });
    await runOutboxBatch({ db: t.db, handler: () => {}, telemetry });
    const after = await metrics();
    expect(points(after, 'reservation_engine.expiry.backlog')).toEqual({ '': 0 });
    expect(points(after, 'reservation_engine.outbox.pending')).toEqual({ '': 0 });
    expect(points(after, 'reservation_engine.outbox.lag')).toEqual({ '': 0 });
    // Once stopped, the gauges are no longer read: a reservation that lapses now does not show.
    stop();
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique(), ttlSeconds: 60 });
    expect(points(await metrics(), 'reservation_engine.expiry.backlog')).not.toEqual({ '': 1 });
  });

  it('telemetry: false records nothing, and the worker passes its setting and logger to its batches', async () => {
    const { spans, telemetry, metrics } = setUp();
    const engine = new ReservationEngine({ db: t.db, telemetry: false });
    const item = await engine.createItem({ sku: unique(), name: 'silent', availableQuantity: 5 });
    await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    expect(spans.getFinishedSpans()).toEqual([]);
    expect(await t.db.selectFrom('outbox').select('trace_context').execute()).toEqual([{ trace_context: null }]);

    const controller = new AbortController();
    const worker = startWorker({ db: t.db, handler: () => {}, signal: controller.signal, telemetry, idleIntervalMs: 10, maxIdleIntervalMs: 20 });
    await expect.poll(() => worker.summary().outbox.processed).toBe(1);
    controller.abort();
    await worker.stopped;
    expect(named(spans.getFinishedSpans(), 'reservation-engine deliver reservation.created')).toHaveLength(1);
    expect(points(await metrics(), 'reservation_engine.outbox.events')).toEqual({ 'delivered,reservation.created': 1 });
  });
});

describeEachServerDialect('OpenTelemetry retries', (t) => {
  it('a conflict retried inside a call is counted and noted on its span; a repeat on a new connection too', async () => {
    const { spans, telemetry, metrics } = setUp();
    const url = new URL(t.url);
    const proxy = await startErrorProxy(t.name === 'mysql' ? 'mysql' : 'postgres', { host: url.hostname, port: Number(url.port) });
    const db = t.name === 'mysql' ? mysqlThrough(proxy.url(t.url)) : postgresThrough(proxy.url(t.url));
    try {
      const engine = new ReservationEngine({ db, telemetry });
      const item = await engine.createItem({ sku: unique(), name: 'contended', availableQuantity: 1 });
      proxy.failNext(/update .*items/i, t.name === 'mysql' ? { errno: 1213, sqlState: '40001', message: 'Deadlock found' } : { sqlState: '40P01', message: 'deadlock detected' });
      await engine.restock({ itemId: item.id, quantity: 1 });
      proxy.failNext(/update .*reservations/i, t.name === 'mysql' ? { errno: 1927, sqlState: '70100', message: 'Connection was killed' } : { sqlState: '57P01', message: 'terminating connection' });
      const { reservation } = await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
      await engine.confirm(reservation.id);
      const finished = spans.getFinishedSpans();
      expect(named(finished, 'reservation-engine restock')[0]?.attributes).toMatchObject({ 'reservation_engine.outcome': 'ok', 'reservation_engine.retries': 1 });
      expect(named(finished, 'reservation-engine confirm')[0]?.attributes).toMatchObject({ 'reservation_engine.outcome': 'ok', 'reservation_engine.retries': 1 });
      expect(named(finished, 'reservation-engine createItem')[0]?.attributes['reservation_engine.retries']).toBeUndefined();
      expect(points(await metrics(), 'reservation_engine.transaction.retries')).toEqual({ conflict: 1, connection: 1 });
    } finally {
      await db.destroy();
      await proxy.close();
    }
  });
});

function mysqlThrough(url: string): Kysely<any> {
  const pool = createMysqlPool({ uri: url, connectionLimit: 2, timezone: 'Z' });
  pool.on('connection', (connection) => connection.on('error', () => {}));
  return new Kysely({ dialect: new MysqlDialect({ pool }) });
}

function postgresThrough(url: string): Kysely<any> {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return new Kysely({ dialect: new PostgresDialect({ pool }) });
}
