import { ReservationError, ValidationError } from '../errors.js';

/** An RFC 9457 problem document (`application/problem+json`). */
export interface ProblemDocument {
  /** A URI naming the kind of problem; stable per `code`. */
  readonly type: string;
  /** A short, human summary of the kind of problem; the same for every occurrence. */
  readonly title: string;
  /** The HTTP status to answer with. */
  readonly status: number;
  /** What went wrong this time, for a human. */
  readonly detail: string;
  /** The library's stable error code, for programs (`INSUFFICIENT_STOCK`, …). */
  readonly code: string;
  /** Extension members: `errors` for validation problems, `available`/`requested` for stock. */
  readonly [extension: string]: unknown;
}

/** The media type to send problem documents with. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

const TITLES: Readonly<Record<string, string>> = Object.freeze({
  VALIDATION_ERROR: 'Invalid request',
  ITEM_NOT_FOUND: 'Item not found',
  RESERVATION_NOT_FOUND: 'Reservation not found',
  INSUFFICIENT_STOCK: 'Insufficient stock',
  IDEMPOTENCY_CONFLICT: 'Idempotency key reused with a different request',
  INVALID_STATE: 'Reservation is not in a state that allows this',
  RESERVATION_EXPIRED: 'Reservation expired',
  DUPLICATE_SKU: 'SKU already exists',
  TRANSACTION_CONFLICT: 'Temporarily unable to complete the request',
  MALFORMED_JSON: 'Malformed JSON',
  PAYLOAD_TOO_LARGE: 'Request body too large',
  NOT_FOUND: 'Not found',
  INTERNAL_ERROR: 'Internal server error',
});

/** Errors from HTTP body parsers (Express/body-parser, Koa, Fastify) that are the client's doing. */
const PARSER_CODES: Readonly<Record<string, string>> = Object.freeze({
  'entity.parse.failed': 'MALFORMED_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'MALFORMED_JSON',
  'entity.too.large': 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
});

/**
 * Maps any error to an RFC 9457 problem document, so every framework answers the same way:
 * the library's errors keep their `status` and `code`; body-parser errors (malformed JSON,
 * too large) become 400/413; a client error from the framework (`expose: true`, 4xx) keeps its
 * status; anything else is a 500 whose detail reveals nothing internal.
 *
 * @example
 * ```ts
 * app.use((error, req, res, next) => {
 *   const problem = toProblem(error);
 *   res.status(problem.status).type('application/problem+json').json(problem);
 * });
 * ```
 */
export function toProblem(error: unknown): ProblemDocument {
  if (error instanceof ReservationError) {
    return problem(error.status, error.code, error.message, extensions(error));
  }
  const e = (error ?? {}) as { type?: unknown; code?: unknown; status?: unknown; statusCode?: unknown; expose?: unknown; message?: unknown };
  const parserCode = PARSER_CODES[String(e.type)] ?? PARSER_CODES[String(e.code)];
  if (parserCode) {
    return parserCode === 'MALFORMED_JSON'
      ? problem(400, parserCode, 'The request body is not valid JSON')
      : problem(413, parserCode, 'The request body is larger than this server accepts');
  }
  const status = Number(e.status ?? e.statusCode);
  if (Number.isInteger(status) && status >= 400 && status < 500 && e.expose !== false) {
    return problem(status, status === 404 ? 'NOT_FOUND' : 'BAD_REQUEST', typeof e.message === 'string' ? e.message : 'Bad request');
  }
  return problem(500, 'INTERNAL_ERROR', 'The server failed to complete the request');
}

/** Titles for codes the library does not know (a host's own), by status. */
const STATUS_TITLES: Readonly<Record<number, string>> = Object.freeze({
  400: 'Bad request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not found',
  405: 'Method not allowed',
  409: 'Conflict',
  413: 'Request body too large',
  415: 'Unsupported media type',
  422: 'Unprocessable content',
  429: 'Too many requests',
  503: 'Service unavailable',
});

function problem(status: number, code: string, detail: string, extra: Record<string, unknown> = {}): ProblemDocument {
  return {
    type: `urn:reservation-engine:problem:${code.toLowerCase().replaceAll('_', '-')}`,
    title: TITLES[code] ?? STATUS_TITLES[status] ?? (status >= 500 ? 'Internal server error' : 'Bad request'),
    status,
    detail,
    code,
    ...extra,
  };
}

function extensions(error: ReservationError): Record<string, unknown> {
  if (error instanceof ValidationError) return { errors: error.issues };
  const { available, requested, itemId, reservationId, currentStatus } = error as unknown as Record<string, unknown>;
  const extra: Record<string, unknown> = {};
  if (itemId !== undefined && typeof itemId === 'number') extra.itemId = itemId;
  if (reservationId !== undefined) extra.reservationId = reservationId;
  if (currentStatus !== undefined) extra.currentStatus = currentStatus;
  if (available !== undefined) extra.available = available;
  if (requested !== undefined) extra.requested = requested;
  return extra;
}
