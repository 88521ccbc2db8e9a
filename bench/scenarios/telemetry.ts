/**
 * OpenTelemetry's cost (issue 13): the same reserves on many items, side by side, with the
 * engine's telemetry off (`telemetry: false`: the code path taken when `@opentelemetry/api` is not
 * installed, every hook a no-op), with the API installed and no SDK registered (the default on a
 * host that has the package but records nothing), and with an SDK recording every span and metric.
 */
import { context, type ContextManager } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ReservationEngine } from '../../src/index.js';
import { type ClosedLoopSpec, keyMaker, runClosedLoopScenario } from '../lib/closed-loop.js';
import { checkStock, pick, seedItems } from '../lib/fixtures.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';
import { MANY_ITEMS, MANY_ITEMS_STOCK } from './many-items.js';

interface Fixture {
  itemIds: number[];
}

/** Receives the batches a production exporter would send, and drops them. */
class DroppingExporter implements SpanExporter {
  spans = 0;
  export(spans: ReadableSpan[], done: (result: { code: 0 }) => void): void {
    this.spans += spans.length;
    done({ code: 0 });
  }
  async shutdown(): Promise<void> {}
}

function reserveVariant(key: string, label: string, description: string, telemetry: () => { setting: boolean | object; close(): Promise<void> }) {
  return {
    key,
    label,
    description,
    async open(bench: import('../lib/db.js').BenchDatabase, concurrency: number, { itemIds }: Fixture) {
      const db = bench.kysely(concurrency);
      const t = telemetry();
      const engine = new ReservationEngine({ db, telemetry: t.setting as never });
      const next = keyMaker(`${key}-${concurrency}`);
      return {
        async op() {
          await engine.reserve({ itemId: pick(itemIds), quantity: 1, idempotencyKey: next() });
        },
        async close() {
          await t.close();
          await bench.closeKysely(db);
        },
      };
    },
  };
}

const spec: ClosedLoopSpec<Fixture> = {
  id: 'telemetry',
  title: 'OpenTelemetry overhead',
  description: `engine.reserve on a random one of ${MANY_ITEMS.toLocaleString('en-US')} items, new key each time, with telemetry off, with the API and no SDK, and with an SDK recording.`,
  baselines: ['off', 'ctx'],
  notes: [
    '`off` is `telemetry: false`, the same no-op path as when @opentelemetry/api is not installed; the library cannot be run without its instrumentation code in the same process, so "≤ 2% with the API absent" is measured as api-only ÷ off (the cost of the API calls that go nowhere), an upper bound on what the absent API costs.',
    '`ctx` registers only the context manager every SDK installs (AsyncLocalStorage, which tracks every promise of the process): sdk ÷ ctx is what the engine\'s own recording costs a host that runs an SDK anyway.',
    '`sdk`: BasicTracerProvider with a BatchSpanProcessor (an exporter that drops the batches), a MeterProvider with a periodic reader (1 s, in-memory exporter), and AsyncLocalStorageContextManager registered globally while the variant runs.',
  ],
  variants: [
    reserveVariant('off', 'telemetry off', 'new ReservationEngine({ db, telemetry: false })', () => ({ setting: false, close: async () => {} })),
    reserveVariant('api', 'API, no SDK', 'new ReservationEngine({ db }) with no provider registered: every span and instrument is a no-op', () => ({ setting: true, close: async () => {} })),
    reserveVariant('ctx', 'context manager only', 'telemetry: false, with AsyncLocalStorageContextManager registered globally: what an SDK costs a host before any library records anything', () => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      return {
        setting: false,
        async close() {
          context.disable();
        },
      };
    }),
    reserveVariant('sdk', 'SDK recording', 'new ReservationEngine({ db, telemetry: { tracerProvider, meterProvider } }), spans batched to an exporter, metrics read every second', () => {
      const manager: ContextManager = new AsyncLocalStorageContextManager().enable();
      context.setGlobalContextManager(manager);
      const exporter = new DroppingExporter();
      const tracerProvider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] });
      const reader = new PeriodicExportingMetricReader({ exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE), exportIntervalMillis: 1000 });
      const meterProvider = new MeterProvider({ readers: [reader] });
      return {
        setting: { tracerProvider, meterProvider },
        async close() {
          await tracerProvider.shutdown();
          await meterProvider.shutdown();
          context.disable();
          
        },
      };
    }),
  ],
  async setup(bench) {
    return { itemIds: await seedItems(bench, MANY_ITEMS, MANY_ITEMS_STOCK) };
  },
  async check(bench, { itemIds }, _variant, ops, checks) {
    await checkStock(bench, checks, { initial: new Map(itemIds.map((id) => [id, MANY_ITEMS_STOCK])), reservations: ops });
  },
};

export const telemetry: Scenario = {
  id: 'telemetry',
  title: 'OpenTelemetry overhead',
  run: (ctx: ScenarioContext) => runClosedLoopScenario(ctx, spec),
};
