/**
 * Prometheus metrics for the example server: the library's OpenTelemetry metrics, served as
 * Prometheus text on `GET /metrics` by OpenTelemetry's Prometheus exporter, mounted on the app
 * (no second HTTP server).
 *
 * Why the OpenTelemetry exporter and not prom-client: the library emits OpenTelemetry metrics, and
 * the exporter is the standard bridge from them to Prometheus. prom-client would need a second set
 * of instruments kept in step with the first.
 *
 * Optional like the library's OpenTelemetry support: when the packages are not installed,
 * {@link createMetrics} returns `undefined` and the server runs without `/metrics`.
 */
import type http from 'node:http';
import type { Kysely } from 'kysely';
import { observeBacklog, type TelemetryOptions } from 'reservation-engine';

export interface Metrics {
  /** For `new ReservationEngine({ telemetry })`, `startWorker({ telemetry })`. */
  readonly telemetry: TelemetryOptions;
  /** Answers a scrape: `app.get('/metrics', metrics.handler)`. */
  readonly handler: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  /** Stops reading the backlog and shuts the meter provider down. */
  shutdown(): Promise<void>;
}

/** A meter provider whose reader is the Prometheus exporter, with the backlog gauges of `db`; `undefined` without the packages. */
export async function createMetrics(db: Kysely<any>): Promise<Metrics | undefined> {
  let sdk: typeof import('@opentelemetry/sdk-metrics');
  let prometheus: typeof import('@opentelemetry/exporter-prometheus');
  try {
    sdk = await import('@opentelemetry/sdk-metrics');
    prometheus = await import('@opentelemetry/exporter-prometheus');
  } catch {
    return undefined;
  }
  const exporter = new prometheus.PrometheusExporter({ preventServerStart: true });
  const meterProvider = new sdk.MeterProvider({ readers: [exporter] });
  const stopObserving = observeBacklog({ db, meterProvider });
  return {
    telemetry: { meterProvider },
    handler: (req, res) => exporter.getMetricsRequestHandler(req, res),
    async shutdown() {
      stopObserving();
      await meterProvider.shutdown();
    },
  };
}
