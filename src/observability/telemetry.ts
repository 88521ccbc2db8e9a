import { createRequire } from 'node:module';
import type * as OtelApi from '@opentelemetry/api';
import { ReservationError } from '../errors.js';
import { describeError } from '../outbox/describe-error.js';

/**
 * OpenTelemetry, built in and optional (issue 13). `@opentelemetry/api` is an optional peer
 * dependency, loaded once on first use when it is installed; without it every hook below is a
 * no-op that costs a function call. The library never depends on an SDK: spans and metrics go to
 * whatever providers the host registered (or passed in `telemetry`), and nowhere when it
 * registered none.
 */

/** Where the engine's spans and metrics go, when not to the global providers of `@opentelemetry/api`. */
export interface TelemetryOptions {
  /**
   * A tracer provider (`@opentelemetry/api`'s `TracerProvider`).
   * @defaultValue the global one (`trace.getTracerProvider()`)
   */
  readonly tracerProvider?: { getTracer(name: string, version?: string): unknown };
  /**
   * A meter provider (`@opentelemetry/api`'s `MeterProvider`).
   * @defaultValue the global one (`metrics.getMeterProvider()`)
   */
  readonly meterProvider?: { getMeter(name: string, version?: string): unknown };
}

/** @internal `db.system.name` (OpenTelemetry's database conventions) for a dialect. */
export function dbSystemName(dialect: { readonly name: 'mysql' | 'postgres' }): string {
  return dialect.name === 'mysql' ? 'mysql' : 'postgresql';
}

/** `telemetry` as every entry point takes it: on (the default), off, or with providers of its own. */
export type TelemetrySetting = boolean | TelemetryOptions;

const NAME = 'reservation-engine';
const VERSION = '0.1.0';
/** Seconds: the operations take from a millisecond to a few seconds. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

let loaded: typeof OtelApi | null | undefined;

/** @internal `@opentelemetry/api` when installed, else `null` (asked once). */
export function openTelemetryApi(): typeof OtelApi | null {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)('@opentelemetry/api') as typeof OtelApi;
    } catch {
      loaded = null;
    }
  }
  return loaded;
}

/** What a delivery span says of its event. */
interface DeliveredEvent {
  readonly id: string;
  readonly type: string;
  readonly attempts: number;
  readonly traceparent?: string;
}

/** What an outcome function makes of a call's result; errors are named by {@link errorOutcome}. */
type Outcome<T> = (result: T) => string;

/**
 * @internal
 * The engine's instruments for one setting. {@link NO_TELEMETRY} when OpenTelemetry is absent or
 * turned off: every method then does nothing but call through.
 */
export interface Telemetry {
  /** Runs an engine call in its span (`reservation-engine <operation>`), and records its duration and outcome. */
  call<T>(operation: string, outcome: Outcome<T>, work: () => Promise<T>): Promise<T>;
  /** Reservations moved to `status`. */
  transitions(status: 'confirmed' | 'cancelled' | 'expired', count: number): void;
  /** A transaction or call about to run again. */
  retry(reason: 'conflict' | 'connection'): void;
  /** The W3C traceparent of the active span, for the outbox event a transaction writes; null without one. */
  traceparent(): string | null;
  /**
   * Runs one event's delivery (`work` resolves to the handler's failure, or undefined) in its span,
   * linked to the span that wrote the event.
   */
  deliver(event: DeliveredEvent, work: () => Promise<unknown>): Promise<unknown>;
  /** An event's delivery settled: `delivered`, `failed` (to be retried) or `dead_lettered`. */
  outboxEvents(result: 'delivered' | 'failed' | 'dead_lettered', eventType: string, count?: number): void;
}

/** @internal Telemetry that does nothing. */
export const NO_TELEMETRY: Telemetry = Object.freeze({
  call: <T>(_operation: string, _outcome: Outcome<T>, work: () => Promise<T>) => work(),
  transitions: () => {},
  retry: () => {},
  traceparent: () => null,
  deliver: (_event: DeliveredEvent, work: () => Promise<unknown>) => work(),
  outboxEvents: () => {},
});

/** The outcome attribute of a call that threw: the library's error code, lowercased; `error` for anything else. */
export function errorOutcome(error: unknown): string {
  return error instanceof ReservationError ? error.code.toLowerCase() : 'error';
}

/** The context key under which a call's span carries its {@link Telemetry}, for code deep inside the call. */
const TELEMETRY_KEY = Symbol.for('reservation-engine.telemetry');

/**
 * @internal
 * A retry inside the current engine call (a transaction run again, a call repeated on a new
 * connection): counted, and noted on the call's span. Needs a context manager (any OpenTelemetry
 * SDK registers one) to find the call.
 */
export function recordRetry(reason: 'conflict' | 'connection'): void {
  const api = openTelemetryApi();
  (api?.context.active().getValue(TELEMETRY_KEY) as Telemetry | undefined)?.retry(reason);
}

const cache = new WeakMap<object, Telemetry>();
/** OpenTelemetry's no-op tracer provider and no-op meter class, found once. */
let noopProviders: { readonly tracer: unknown; readonly meter: unknown } | undefined;
/** Whether a meter provider hands out no-op meters (the global one before an SDK registers). */
const noopMeters = new WeakMap<object, boolean>();
let globalTelemetry: Telemetry | undefined;

/** @internal The telemetry for a `telemetry` option (cached per options object). */
export function telemetryFor(setting: TelemetrySetting | undefined, dbSystem: string): Telemetry {
  if (setting === false) return NO_TELEMETRY;
  const api = openTelemetryApi();
  if (!api) return NO_TELEMETRY;
  if (setting === undefined || setting === true) {
    return (globalTelemetry ??= new OpenTelemetry(api, {}, dbSystem));
  }
  let telemetry = cache.get(setting);
  if (!telemetry) {
    telemetry = new OpenTelemetry(api, setting, dbSystem);
    cache.set(setting, telemetry);
  }
  return telemetry;
}

interface Instruments {
  readonly provider: unknown;
  readonly duration: OtelApi.Histogram;
  readonly reservations: OtelApi.Counter;
  readonly transitions: OtelApi.Counter;
  readonly retries: OtelApi.Counter;
  readonly outboxEvents: OtelApi.Counter;
  readonly attempts: OtelApi.Counter;
  readonly handlerDuration: OtelApi.Histogram;
}

class OpenTelemetry implements Telemetry {
  readonly #api: typeof OtelApi;
  readonly #options: TelemetryOptions;
  readonly #dbSystem: string;
  #instruments: Instruments | undefined;
  #tracer: { provider: unknown; tracer: OtelApi.Tracer } | undefined;
  /** Retries taken under each active span, for its `reservation_engine.retries` attribute. */
  readonly #retries = new WeakMap<OtelApi.Span, number>();

  constructor(api: typeof OtelApi, options: TelemetryOptions, dbSystem: string) {
    this.#api = api;
    this.#options = options;
    this.#dbSystem = dbSystem;
  }

  /** The tracer of the current provider: a host may register its SDK after creating the engine. */
  get #currentTracer(): OtelApi.Tracer {
    const provider = this.#options.tracerProvider ?? this.#api.trace.getTracerProvider();
    if (this.#tracer?.provider !== provider) this.#tracer = { provider, tracer: (provider as OtelApi.TracerProvider).getTracer(NAME, VERSION) };
    return this.#tracer.tracer;
  }

  /** The instruments of the current meter provider (the global one has no proxy: instruments made before the SDK registered would record nothing). */
  get #metrics(): Instruments {
    const provider = this.#options.meterProvider ?? this.#api.metrics.getMeterProvider();
    if (this.#instruments?.provider === provider) return this.#instruments;
    const meter = (provider as OtelApi.MeterProvider).getMeter(NAME, VERSION);
    const seconds = { unit: 's', advice: { explicitBucketBoundaries: DURATION_BUCKETS } };
    this.#instruments = {
      provider,
      duration: meter.createHistogram('reservation_engine.operation.duration', { description: 'Duration of engine and batch calls', ...seconds }),
      reservations: meter.createCounter('reservation_engine.reservations', { description: 'Reserve calls by outcome', unit: '{call}' }),
      transitions: meter.createCounter('reservation_engine.transitions', { description: 'Reservations confirmed, cancelled or expired', unit: '{reservation}' }),
      retries: meter.createCounter('reservation_engine.transaction.retries', { description: 'Transactions and calls run again after a conflict or a failed connection', unit: '{retry}' }),
      outboxEvents: meter.createCounter('reservation_engine.outbox.events', { description: 'Outbox events delivered, failed (to be retried) or dead-lettered', unit: '{event}' }),
      attempts: meter.createCounter('reservation_engine.outbox.delivery.attempts', { description: 'Outbox deliveries attempted', unit: '{attempt}' }),
      handlerDuration: meter.createHistogram('reservation_engine.outbox.handler.duration', { description: 'Duration of the outbox handler per event', ...seconds }),
    };
    return this.#instruments;
  }

  /**
   * Whether anything records: with the API installed and no SDK registered, the providers are
   * OpenTelemetry's no-op ones, and a call skips its span and metrics altogether.
   */
  get #recording(): boolean {
    const api = this.#api;
    const tracerProvider = this.#options.tracerProvider ?? api.trace.getTracerProvider();
    const meterProvider = this.#options.meterProvider ?? api.metrics.getMeterProvider();
    const noop = (noopProviders ??= { tracer: new api.ProxyTracerProvider().getDelegate(), meter: api.createNoopMeter().constructor });
    const tracer = tracerProvider instanceof api.ProxyTracerProvider ? tracerProvider.getDelegate() : tracerProvider;
    if (tracer !== noop.tracer) return true;
    let meterIsNoop = noopMeters.get(meterProvider);
    if (meterIsNoop === undefined) {
      meterIsNoop = (meterProvider as OtelApi.MeterProvider).getMeter(NAME, VERSION).constructor === noop.meter;
      noopMeters.set(meterProvider, meterIsNoop);
    }
    return !meterIsNoop;
  }

  async call<T>(operation: string, outcome: Outcome<T>, work: () => Promise<T>): Promise<T> {
    if (!this.#recording) return work();
    const api = this.#api;
    const started = performance.now();
    const span = this.#currentTracer.startSpan(`${NAME} ${operation}`, {
      kind: api.SpanKind.INTERNAL,
      attributes: { 'db.system.name': this.#dbSystem, 'reservation_engine.operation': operation },
    });
    const context = api.trace.setSpan(api.context.active(), span).setValue(TELEMETRY_KEY, this);
    let result = 'error';
    try {
      const value = await api.context.with(context, work);
      result = outcome(value);
      // A batch's counts (expired, processed, failed, …) answer "how much did it do".
      if (operation.endsWith('Batch') && typeof value === 'object' && value !== null) {
        for (const [name, count] of Object.entries(value)) if (typeof count === 'number') span.setAttribute(`reservation_engine.batch.${name}`, count);
      }
      return value;
    } catch (error) {
      result = errorOutcome(error);
      // A client's mistake or a business answer (no stock) is not a failure of the call.
      if (result === 'error' || result === 'transaction_conflict' || result === 'outcome_unknown') failed(api, span, error);
      throw error;
    } finally {
      span.setAttribute('reservation_engine.outcome', result);
      const retries = this.#retries.get(span);
      if (retries) span.setAttribute('reservation_engine.retries', retries);
      span.end();
      const metrics = this.#metrics;
      metrics.duration.record((performance.now() - started) / 1000, { 'reservation_engine.operation': operation, 'reservation_engine.outcome': result });
      if (operation === 'reserve') metrics.reservations.add(1, { 'reservation_engine.outcome': result });
    }
  }

  transitions(status: 'confirmed' | 'cancelled' | 'expired', count: number): void {
    if (count > 0) this.#metrics.transitions.add(count, { 'reservation_engine.status': status });
  }

  retry(reason: 'conflict' | 'connection'): void {
    this.#metrics.retries.add(1, { 'reservation_engine.reason': reason });
    const span = this.#api.trace.getActiveSpan();
    if (span) {
      this.#retries.set(span, (this.#retries.get(span) ?? 0) + 1);
      span.addEvent('retry', { 'reservation_engine.reason': reason });
    }
  }

  traceparent(): string | null {
    const context = this.#api.trace.getActiveSpan()?.spanContext();
    if (!context || !this.#api.trace.isSpanContextValid(context)) return null;
    return `00-${context.traceId}-${context.spanId}-${(context.traceFlags & 1).toString(16).padStart(2, '0')}`;
  }

  async deliver(event: DeliveredEvent, work: () => Promise<unknown>): Promise<unknown> {
    if (!this.#recording) return work();
    const api = this.#api;
    const writer = parseTraceparent(event.traceparent);
    const attributes = { 'reservation_engine.event_type': event.type };
    this.#metrics.attempts.add(1, attributes);
    const started = performance.now();
    const span = this.#currentTracer.startSpan(`${NAME} deliver ${event.type}`, {
      kind: api.SpanKind.CONSUMER,
      links: writer ? [{ context: writer }] : [],
      attributes: { ...attributes, 'reservation_engine.event_id': event.id, 'reservation_engine.attempt': event.attempts },
    });
    let failure: unknown;
    try {
      // The handler runs in the delivery's context: a broker client's spans become its children.
      failure = await api.context.with(api.trace.setSpan(api.context.active(), span), work);
      return failure;
    } finally {
      if (failure !== undefined) failed(api, span, failure);
      span.end();
      this.#metrics.handlerDuration.record((performance.now() - started) / 1000, { ...attributes, 'reservation_engine.result': failure === undefined ? 'ok' : 'error' });
    }
  }

  outboxEvents(result: 'delivered' | 'failed' | 'dead_lettered', eventType: string, count = 1): void {
    if (count > 0) this.#metrics.outboxEvents.add(count, { 'reservation_engine.result': result, 'reservation_engine.event_type': eventType });
  }
}

/** Marks the span failed with what was thrown: any value, a hostile one included (see describeError). */
function failed(api: typeof OtelApi, span: OtelApi.Span, thrown: unknown): void {
  const message = describeError(thrown);
  span.setStatus({ code: api.SpanStatusCode.ERROR, message });
  try {
    span.recordException(thrown instanceof Error ? thrown : message);
  } catch {
    // An Error whose getters throw: the status says enough.
    span.recordException(message);
  }
}

/** A stored W3C traceparent → a remote span context to link to; undefined when absent or malformed. */
function parseTraceparent(value: string | null | undefined): OtelApi.SpanContext | undefined {
  const match = value ? /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(value) : null;
  if (!match) return undefined;
  return { traceId: match[1]!, spanId: match[2]!, traceFlags: Number.parseInt(match[3]!, 16), isRemote: true };
}
