/**
 * The example HTTP server: the API of ./app.ts plus the library's worker (`startWorker`), which
 * expires reservations and delivers outbox events in the background.
 *
 *   npm run example                                        # embedded PGlite, in memory
 *   DATABASE_URL=mysql://user:pass@localhost:3306/shop PORT=8080 npm run example
 *   DATABASE_URL=postgres://user:pass@localhost:5432/shop npm run example
 *
 * Environment: DATABASE_URL (see ../database.ts), PORT (default 3000), HOST (default: all
 * interfaces), DATABASE_POOL_SIZE (default 10). Migrations run at start.
 *
 * The database may go away while it runs (restart, failover, killed connections): requests then
 * fail with a problem document, GET /health answers 503 and the worker logs the outage once and retries.
 * Once the database is back the pools open new connections and everything works again, with no
 * restart of this process.
 *
 * SIGINT/SIGTERM shut down gracefully: stop accepting connections, stop the worker after its
 * running batches, let in-flight requests finish, close the database, exit 0. A second signal (a
 * second or more after the first), or 10 seconds without finishing, exits 1 at once.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { Kysely } from 'kysely';
import { type OutboxEvent, ReservationEngine, type RunningWorker, type StartWorkerOptions, startWorker } from 'reservation-engine';
import { connectDatabase, describeDatabase } from '../database.js';
import { createApp } from './app.js';
import { createMetrics, type Metrics } from '../observability/metrics.js';

const SHUTDOWN_TIMEOUT_MS = 10_000;
/** A second signal sooner than this after the first is the same one, delivered twice. */
const REPEATED_SIGNAL_MS = 1000;

/** Options of {@link startServer}. */
export interface StartServerOptions {
  /**
   * Where the data lives (see ../database.ts). Ignored when `db` is given.
   * @defaultValue process.env.DATABASE_URL
   */
  readonly databaseUrl?: string;
  /**
   * An open, migrated database to serve instead of connecting to `databaseUrl`. The caller keeps
   * ownership: `close()` leaves it open.
   */
  readonly db?: Kysely<any>;
  /**
   * TCP port; 0 picks a free one (see `url`).
   * @defaultValue 3000
   */
  readonly port?: number;
  /**
   * Interface to listen on.
   * @defaultValue all interfaces
   */
  readonly host?: string;
  /**
   * Delivers outbox events.
   * @defaultValue {@link logEvent}
   */
  readonly handler?: (event: OutboxEvent) => unknown;
  /** Poll intervals, batch sizes and outbox options of the background worker (see `startWorker`). */
  readonly worker?: Omit<StartWorkerOptions, 'db' | 'handler' | 'logger' | 'signal'>;
  /**
   * Largest request body accepted.
   * @defaultValue '16kb'
   */
  readonly bodyLimit?: string | number;
  /** @defaultValue console */
  readonly logger?: Pick<Console, 'info' | 'error'>;
  /**
   * Serve `GET /metrics` (Prometheus text) from the library's OpenTelemetry metrics, when the
   * OpenTelemetry packages are installed (see ../observability/metrics.ts).
   * @defaultValue true
   */
  readonly metrics?: boolean;
}

/** A server started by {@link startServer}. */
export interface RunningServer {
  /** Where it listens, e.g. `http://127.0.0.1:3000`. */
  readonly url: string;
  /** The Node HTTP server, e.g. to tune its timeouts. */
  readonly server: http.Server;
  /**
   * Graceful shutdown: stops accepting connections, stops the worker after its running batches,
   * waits for in-flight requests, then closes the database if this server opened it. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Connects (and migrates), listens, and starts the worker.
 *
 * @example
 * ```ts
 * const server = await startServer({ port: 0, host: '127.0.0.1' });
 * await fetch(`${server.url}/health`);
 * await server.close();
 * ```
 */
export async function startServer(options: StartServerOptions = {}): Promise<RunningServer> {
  const { port = 3000, host, handler = logEvent, logger = console } = options;
  const ownsDb = options.db === undefined;
  const db = options.db ?? (await connectDatabase(options.databaseUrl));
  const server = http.createServer();
  let closing = false;
  const inFlight = new Set<http.ServerResponse>();
  let worker: RunningWorker;
  let metrics: Metrics | undefined;
  try {
    // Registered before the app, so it sees every response before anything is sent.
    server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      if (closing) res.setHeader('Connection', 'close');
      inFlight.add(res);
      res.once('close', () => inFlight.delete(res));
    });
    metrics = options.metrics === false ? undefined : await createMetrics(db);
    const telemetry = metrics?.telemetry;
    server.on('request', createApp({ engine: new ReservationEngine({ db, telemetry }), db, bodyLimit: options.bodyLimit, logger, metrics: metrics?.handler }));
    await listen(server, port, host);
    worker = startWorker({
      // Retention every minute with the library's periods: on the embedded database this also
      // vacuums and checkpoints it, which keeps its memory bounded.
      purge: {},
      ...options.worker,
      db,
      handler,
      telemetry,
      // Outages (once each), retried and dead-lettered events to the server's log; no line per batch.
      logger: {
        info: (message) => logger.info(message),
        warn: (message) => logger.info(message),
        error: (message, details) => (details?.error === undefined ? logger.error(message) : logger.error(message, details.error)),
      },
    });
  } catch (error) {
    if (server.listening) await new Promise((resolve) => server.close(resolve));
    await metrics?.shutdown();
    if (ownsDb) await db.destroy();
    throw error;
  }

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      // Clients must not send more requests on the connections of requests still running.
      for (const res of inFlight) if (!res.headersSent) res.setHeader('Connection', 'close');
      const serverClosed = new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
      // Keep-alive connections with no request running would otherwise hold close() for their timeout.
      server.closeIdleConnections();
      const results = await Promise.allSettled([serverClosed, worker.stop()]);
      await metrics?.shutdown();
      if (ownsDb) await db.destroy();
      const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failure) throw failure.reason;
    })());

  return { url: urlOf(server.address() as AddressInfo, host), server, close };
}

/** The sample outbox handler: one line per event. Replace it with your broker or webhook call. */
export function logEvent(event: OutboxEvent): void {
  if (event.type === 'item.written_off') {
    const { itemId, quantity, reason } = event.payload;
    console.log(`event #${event.id} ${event.type} item=${itemId} quantity=${quantity} reason=${JSON.stringify(reason)} attempt=${event.attempts}`);
    return;
  }
  const { reservationId, lines, status } = event.payload;
  const held = lines.map((line) => `${line.itemId}×${line.quantity}`).join(',');
  console.log(`event #${event.id} ${event.type} reservation=${reservationId} lines=${held} status=${status} attempt=${event.attempts}`);
}

function listen(server: http.Server, port: number, host: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function urlOf(address: AddressInfo, host: string | undefined): string {
  const name = host === undefined || host === '' || host === '::' || host === '0.0.0.0' ? 'localhost' : address.address;
  return `http://${name.includes(':') ? `[${name}]` : name}:${address.port}`;
}

function parsePort(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === '') return 3000;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new Error(`PORT must be an integer from 0 to 65535, got ${JSON.stringify(raw)}`);
  return port;
}

async function main(): Promise<void> {
  const running = await startServer({ port: parsePort(process.env.PORT), host: process.env.HOST?.trim() || undefined });
  console.log(`reservation-engine example listening on ${running.url} (database: ${describeDatabase()})`);

  let firstSignalAt: number | undefined;
  const shutDown = (signal: NodeJS.Signals) => {
    if (firstSignalAt !== undefined) {
      // Ctrl-C signals the whole process group, and wrappers (npm, tsx) forward it once more:
      // a repeat within a second is that echo, not someone asking twice.
      if (performance.now() - firstSignalAt < REPEATED_SIGNAL_MS) return;
      console.error(`${signal} again: exiting without waiting`);
      process.exit(1);
    }
    firstSignalAt = performance.now();
    console.log(`${signal}: shutting down (finishing in-flight requests and the running batch)`);
    setTimeout(() => {
      console.error(`shutdown did not finish within ${SHUTDOWN_TIMEOUT_MS / 1000} s: exiting`);
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS).unref();
    running.close().then(
      () => {
        console.log('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        console.error('shutdown failed:', error);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutDown);
  process.on('SIGTERM', shutDown);
}

/** Whether this module is the program being run (`tsx examples/express/server.ts`), not an import. */
function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return moduleUrl === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isMain(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error('failed to start:', error);
    process.exit(1);
  });
}
