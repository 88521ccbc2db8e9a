import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { expect, it } from 'vitest';
import { ConfigurationError, type OutboxEvent, ReservationEngine, runOutboxBatch, startWorker } from '../src/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';

describeEachDialect('runOutboxBatch with a batchHandler', (t) => {
  const T0 = new Date('2026-07-01T00:00:00.000Z');
  const at = (ms: number) => new Date(T0.getTime() + ms);
  const engine = () => new ReservationEngine({ db: t.db, clock: () => T0 });
  const events = async (n: number) => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 1000 });
    for (let i = 0; i < n; i++) await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
  };
  const rows = () => t.db.selectFrom('outbox').selectAll().orderBy('id').execute();

  it('hands over the whole batch in one call and records each result on its own: a rejected event is retried, then dead-lettered', async () => {
    await events(4);
    const calls: OutboxEvent[][] = [];
    // The second event fails every time; the others are delivered.
    const batchHandler = async (batch: readonly OutboxEvent[]) => {
      calls.push([...batch]);
      return batch.map((event, index): PromiseSettledResult<unknown> =>
        index === 1 || event.attempts > 1 ? { status: 'rejected', reason: new Error(`refused ${event.id}`) } : { status: 'fulfilled', value: undefined },
      );
    };
    expect(await runOutboxBatch({ db: t.db, now: at(1), batchHandler, maxAttempts: 2, baseDelayMs: 1000 })).toEqual({ processed: 3, failed: 1, deadLettered: 0, released: 0 });
    expect(calls.map((batch) => batch.length)).toEqual([4]);
    const failed = (await rows()).filter((row) => row.processed_at === null);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ attempts: 1, last_error: `Error: refused ${calls[0]![1]!.id}` });
    // Its neighbours are not delivered again; it is, alone, and dead-lettered after its last attempt.
    expect(await runOutboxBatch({ db: t.db, now: at(60_000), batchHandler, maxAttempts: 2 })).toEqual({ processed: 0, failed: 0, deadLettered: 1, released: 0 });
    expect(calls.map((batch) => batch.map((event) => event.id))).toEqual([calls[0]!.map((event) => event.id), [calls[0]![1]!.id]]);
  });

  it.each([
    ['throws', () => Promise.reject(new Error('broker down')), /^Error: broker down$/],
    ['answers with too few results', async () => [{ status: 'fulfilled', value: 1 }], /batchHandler must resolve to one result per event \(2\), got 1 results/],
    ['answers with no array', async () => undefined, /batchHandler must resolve to one result per event \(2\), got undefined/],
    ['times out', (_events: unknown, { signal }: { signal: AbortSignal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))), /HandlerTimeoutError/],
  ])('fails every event of the batch when it %s', async (_label, batchHandler, error) => {
    await events(2);
    const result = await runOutboxBatch({ db: t.db, now: at(1), batchHandler: batchHandler as never, handlerTimeoutMs: 50, leaseMs: 1000 });
    expect(result).toEqual({ processed: 0, failed: 2, deadLettered: 0, released: 0 });
    for (const row of await rows()) expect(row.last_error).toMatch(error);
  });

  it('each event of a batch gets its delivery span, failed by its own result', async () => {
    await events(3);
    const spans = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
    const batchHandler = async (batch: readonly OutboxEvent[]) =>
      batch.map((_event, index): PromiseSettledResult<unknown> => (index === 2 ? { status: 'rejected', reason: new Error('nacked') } : { status: 'fulfilled', value: undefined }));
    await runOutboxBatch({ db: t.db, now: at(1), batchHandler, telemetry: { tracerProvider } });
    const deliveries = spans.getFinishedSpans().filter((span) => span.name === 'reservation-engine deliver reservation.created');
    expect(deliveries.map((span) => span.status.code)).toEqual([0, 0, 2]);
    expect(deliveries[2]!.status.message).toBe('Error: nacked');
    expect(spans.getFinishedSpans().filter((span) => span.name === 'reservation-engine runOutboxBatch')).toHaveLength(1);
  });

  it('Promise.allSettled is a batch handler', async () => {
    await events(3);
    const seen: string[] = [];
    const result = await runOutboxBatch({ db: t.db, now: at(1), batchHandler: (batch) => Promise.allSettled(batch.map(async (event) => void seen.push(event.id))) });
    expect(result).toMatchObject({ processed: 3 });
    expect(seen).toHaveLength(3);
  });

  it('startWorker delivers with a batchHandler', async () => {
    await events(3);
    const batches: number[] = [];
    const worker = startWorker({ db: t.db, expire: false, idleIntervalMs: 20, batchHandler: async (batch) => (batches.push(batch.length), batch.map(() => ({ status: 'fulfilled' as const, value: null }))) });
    try {
      await expect.poll(() => batches.reduce((sum, n) => sum + n, 0)).toBe(3);
    } finally {
      worker.stop();
    }
    expect((await worker.stopped).outbox.processed).toBe(3);
  });

  it('takes handler or batchHandler, not both and not neither', async () => {
    for (const [options, message] of [
      [{}, /handler: must be a function \(or pass batchHandler\)/],
      [{ handler: () => {}, batchHandler: async () => [] }, /batchHandler: pass handler or batchHandler, not both/],
      [{ batchHandler: 'publish' }, /batchHandler: must be a function/],
    ] as const) {
      const error = await caught(() => runOutboxBatch({ db: t.db, ...options } as never));
      expect(error).toBeInstanceOf(ConfigurationError);
      expect(error.message).toMatch(message);
      expect(() => startWorker({ db: t.db, ...options } as never)).toThrow(message);
    }
  });
});
