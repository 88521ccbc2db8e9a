/**
 * The reservation engine behind a small JSON HTTP API (Express 5). Copy it, keep the parts you
 * need: the error handling at the bottom is what makes every failure a problem document.
 *
 *   POST /items                          {sku, name, availableQuantity}      → 201 item
 *   GET  /items/:itemId                                                      → 200 item
 *   POST /items/:itemId/restock          {quantity}                          → 200 item
 *   POST /reservations                   {itemId, quantity, ttlSeconds?}     → 201 reservation
 *        Idempotency-Key: <key>           (a replay → 200 + Idempotent-Replayed: true)
 *   GET  /reservations/:reservationId                                        → 200 reservation
 *   POST /reservations/:reservationId/confirm                                → 200 reservation
 *   POST /reservations/:reservationId/cancel                                 → 200 reservation
 *   GET  /health                                                             → 200 {status: "ok"} or 503
 *   GET  /metrics                                                            → Prometheus text (when the OpenTelemetry packages are installed)
 *
 * Every error is an RFC 9457 `application/problem+json` document made by the library's
 * `toProblem`: a client's mistake is a 4xx, never a 500; a 500 reveals nothing internal.
 */
import type http from 'node:http';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { type Kysely, sql } from 'kysely';
import {
  type CreateItemInput,
  type Item,
  NotFoundError,
  PROBLEM_CONTENT_TYPE,
  type Reservation,
  type ReservationEngine,
  ReservationError,
  type ReserveInput,
  type RestockInput,
  type WriteOffInput,
  type ExtendInput,
  ValidationError,
  toProblem,
} from 'reservation-engine';

/** Options of {@link createApp}. */
export interface AppOptions {
  /** The engine serving the routes. */
  readonly engine: ReservationEngine;
  /** The engine's database, for the health check. */
  readonly db: Kysely<any>;
  /**
   * Largest request body accepted; larger ones are answered 413.
   * @defaultValue '16kb'
   */
  readonly bodyLimit?: string | number;
  /**
   * How long `GET /health` waits for the database before answering 503.
   * @defaultValue 2000
   */
  readonly healthTimeoutMs?: number;
  /**
   * Where failures of the server's own (5xx) are logged, with the error. Client errors are not logged.
   * @defaultValue console
   */
  readonly logger?: Pick<Console, 'error'>;
  /**
   * Answers `GET /metrics` (Prometheus text, see ../observability/metrics.ts).
   * @defaultValue none: no /metrics route
   */
  readonly metrics?: (req: http.IncomingMessage, res: http.ServerResponse) => void;
}

/** An item on the wire. */
export interface ItemJson {
  readonly id: number;
  readonly sku: string;
  readonly name: string;
  readonly availableQuantity: number;
  /** ISO-8601, UTC. */
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** A reservation on the wire. The idempotency key stays private to the client that chose it. */
export interface ReservationJson {
  readonly id: string;
  /** `null` for a reservation of several items: see `lines`. */
  readonly itemId: number | null;
  /** Units held in all. */
  readonly quantity: number;
  /** One line per item, in ascending item id. */
  readonly lines: readonly { readonly itemId: number; readonly quantity: number }[];
  readonly status: Reservation['status'];
  /** ISO-8601, UTC. */
  readonly expiresAt: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/**
 * The HTTP API as an Express application; the caller listens and closes the server.
 *
 * @example
 * ```ts
 * const app = createApp({ engine: new ReservationEngine({ db }), db });
 * app.listen(3000);
 * ```
 */
export function createApp(options: AppOptions): express.Application {
  const { engine, db, bodyLimit = '16kb', healthTimeoutMs = 2000, logger = console, metrics } = options;
  const app = express();
  app.disable('x-powered-by');
  if (metrics) app.get('/metrics', (req, res) => metrics(req, res));
  // Stock and reservation states change under the client's feet: nothing here may be cached.
  app.disable('etag');
  app.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });

  // strict: false lets any JSON value through, so a body that is an array or a string gets the
  // precise "must be a JSON object" answer below instead of a generic "malformed JSON".
  const parseJson = express.json({ limit: bodyLimit, strict: false });

  // Runs before the route's body parsing, so a bad id is a 404 whatever the body holds.
  app.param('itemId', (_req: Request, _res: Response, next: NextFunction, value: string) => {
    next(isItemId(value) ? undefined : new NotFoundError('item', value));
  });

  app
    .route('/items')
    .post(requireJsonBody, parseJson, async (req, res) => {
      const item = await engine.createItem(jsonObject(req.body) as unknown as CreateItemInput);
      res.status(201).location(`/items/${item.id}`).json(itemJson(item));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/items/:itemId')
    .get(async (req, res) => {
      const itemId = Number(req.params.itemId);
      const item = await engine.getItem(itemId);
      if (!item) throw new NotFoundError('item', itemId);
      res.json(itemJson(item));
    })
    .all(methodNotAllowed('GET'));

  app
    .route('/items/:itemId/write-offs')
    .post(requireJsonBody, parseJson, async (req, res) => {
      const body = withoutPathField(jsonObject(req.body), 'itemId');
      const item = await engine.writeOff({ ...body, itemId: Number(req.params.itemId) } as WriteOffInput);
      res.json(itemJson(item));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/items/:itemId/restock')
    .post(requireJsonBody, parseJson, async (req, res) => {
      const body = withoutPathField(jsonObject(req.body), 'itemId');
      const item = await engine.restock({ ...body, itemId: Number(req.params.itemId) } as RestockInput);
      res.json(itemJson(item));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/reservations')
    .post(requireIdempotencyKey, requireJsonBody, parseJson, async (req, res) => {
      const body = withoutPathField(jsonObject(req.body), 'idempotencyKey', 'the Idempotency-Key header');
      const { reservation, replayed } = await engine.reserve({ ...body, idempotencyKey: req.get('Idempotency-Key') } as ReserveInput);
      if (replayed) res.set('Idempotent-Replayed', 'true');
      res
        .status(replayed ? 200 : 201)
        .location(`/reservations/${reservation.id}`)
        .json(reservationJson(reservation));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/reservations/:reservationId')
    .get(async (req, res) => {
      // An id that is not a UUID names no reservation: the engine answers undefined, we 404.
      const reservation = await engine.getReservation(req.params.reservationId!);
      if (!reservation) throw new NotFoundError('reservation', req.params.reservationId);
      res.json(reservationJson(reservation));
    })
    .all(methodNotAllowed('GET'));

  app
    .route('/reservations/:reservationId/confirm')
    .post(async (req, res) => {
      res.json(reservationJson(await engine.confirm(req.params.reservationId!)));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/reservations/:reservationId/extend')
    .post(requireJsonBody, parseJson, async (req, res) => {
      res.json(reservationJson(await engine.extend(req.params.reservationId!, jsonObject(req.body) as unknown as ExtendInput)));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/reservations/:reservationId/cancel')
    .post(async (req, res) => {
      res.json(reservationJson(await engine.cancel(req.params.reservationId!)));
    })
    .all(methodNotAllowed('POST'));

  app
    .route('/health')
    .get(async (_req, res) => {
      try {
        await withTimeout(sql`select 1`.execute(db), healthTimeoutMs);
      } catch (error) {
        throw new ReservationError('The database is not answering', 'DATABASE_UNAVAILABLE', 503, { cause: error });
      }
      res.json({ status: 'ok' });
    })
    .all(methodNotAllowed('GET'));

  app.use((req, _res, next) => {
    next(new ReservationError(`There is no resource at ${req.method} ${shorten(req.path)}`, 'NOT_FOUND', 404));
  });

  // Express 5 sends errors thrown by (async) handlers and middleware here.
  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    // Too late for a problem document: let Express cut the connection.
    if (res.headersSent) return next(error);
    const problem = toProblem(error);
    if (problem.status >= 500) logger.error(`${req.method} ${req.originalUrl} failed with ${problem.status}:`, error);
    res
      .status(problem.status)
      .type(PROBLEM_CONTENT_TYPE)
      .json({ ...problem, title: APP_TITLES[problem.code] ?? problem.title });
  });

  return app;
}

/** The wire shape of an item: spelled out, so that it does not follow internal changes. */
export function itemJson(item: Item): ItemJson {
  return {
    id: item.id,
    sku: item.sku,
    name: item.name,
    availableQuantity: item.availableQuantity,
    createdAt: item.createdAt.toISOString(),
    updatedAt: item.updatedAt.toISOString(),
  };
}

/** The wire shape of a reservation. */
export function reservationJson(reservation: Reservation): ReservationJson {
  return {
    id: reservation.id,
    itemId: reservation.itemId,
    quantity: reservation.quantity,
    lines: reservation.lines.map((line) => ({ itemId: line.itemId, quantity: line.quantity })),
    status: reservation.status,
    expiresAt: reservation.expiresAt.toISOString(),
    createdAt: reservation.createdAt.toISOString(),
    updatedAt: reservation.updatedAt.toISOString(),
  };
}

/** Titles of the codes this app adds to the library's. */
const APP_TITLES: Readonly<Record<string, string>> = Object.freeze({
  IDEMPOTENCY_KEY_REQUIRED: 'Idempotency-Key header required',
  UNSUPPORTED_MEDIA_TYPE: 'Unsupported media type',
  METHOD_NOT_ALLOWED: 'Method not allowed',
  DATABASE_UNAVAILABLE: 'Service unavailable',
});

/** Item ids are positive 32-bit integers in canonical decimal; anything else names no item. */
const ITEM_ID = /^[1-9][0-9]{0,9}$/;
const MAX_ITEM_ID = 2_147_483_647;

function isItemId(value: string): boolean {
  return ITEM_ID.test(value) && Number(value) <= MAX_ITEM_ID;
}

/**
 * Request bodies are JSON. A request that carries a body of another type, or of no declared type,
 * is answered 415: a client that forgot `Content-Type: application/json` learns exactly that,
 * instead of a puzzling "must be an object". A request without a body (no Content-Length, or 0)
 * passes with an undefined body, and validation then says what is missing (400).
 */
const requireJsonBody: RequestHandler = (req, _res, next) => {
  const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  if (hasBody && !req.is('application/json')) {
    next(new ReservationError('Send the request body as JSON, with Content-Type: application/json', 'UNSUPPORTED_MEDIA_TYPE', 415));
    return;
  }
  next();
};

/** Reservations need a client-chosen key, so that retrying a request cannot reserve twice. */
const requireIdempotencyKey: RequestHandler = (req, _res, next) => {
  if (req.get('Idempotency-Key') !== undefined) return next();
  next(
    new ReservationError(
      'The Idempotency-Key header is required: a unique value per reservation, sent again unchanged when retrying it',
      'IDEMPOTENCY_KEY_REQUIRED',
      400,
    ),
  );
};

/** Answers 405 with `Allow` for the other methods on a known path; OPTIONS gets 204 with `Allow`. */
function methodNotAllowed(...allowed: string[]): RequestHandler {
  const allow = [...allowed, ...(allowed.includes('GET') ? ['HEAD'] : []), 'OPTIONS'].join(', ');
  return (req, res, next) => {
    res.set('Allow', allow);
    if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    next(new ReservationError(`${req.method} is not allowed on ${shorten(req.path)}; use ${allowed.join(' or ')}`, 'METHOD_NOT_ALLOWED', 405));
  };
}

/** The parsed body, which must be a JSON object. */
function jsonObject(body: unknown): Record<string, unknown> {
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) return body as Record<string, unknown>;
  const got = body === undefined ? 'no body' : body === null ? 'null' : Array.isArray(body) ? 'an array' : `a ${typeof body}`;
  throw new ValidationError([`input: must be a JSON object, got ${got}`]);
}

/** Rejects a body field that the request carries elsewhere, rather than silently preferring one. */
function withoutPathField(body: Record<string, unknown>, field: string, where = 'the path'): Record<string, unknown> {
  if (Object.hasOwn(body, field)) throw new ValidationError([`${field}: not allowed in the body; it is taken from ${where}`]);
  return body;
}

function shorten(path: string): string {
  return path.length > 100 ? `${path.slice(0, 99)}…` : path;
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
