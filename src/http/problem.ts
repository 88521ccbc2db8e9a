import { isReservationError, type ReservationError } from '../errors.js';

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
  HOLD_LIMIT_EXCEEDED: 'Hold cannot be extended that far',
  DUPLICATE_SKU: 'SKU already exists',
  TRANSACTION_CONFLICT: 'Temporarily unable to complete the request',
  OUTCOME_UNKNOWN: 'Outcome unknown: retry to find out',
  INVALID_CONFIGURATION: 'Internal server error',
  UNSUPPORTED_DATABASE: 'Internal server error',
  MIGRATION_FAILED: 'Internal server error',
  MISSING_DEPENDENCY: 'Internal server error',
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
 * - the library's errors (from any copy of it: the ESM and CommonJS builds alike) keep their
 *   `status`, `code` and message;
 * - body-parser errors (malformed JSON, too large) become 400/413;
 * - another error keeps its message only if it opts in with `expose: true` (as http-errors does
 *   for 4xx); a 4xx error that does not opt in keeps its status with a generic detail;
 * - anything else is a 500 whose detail reveals nothing internal.
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
  if (isReservationError(error)) {
    // A 500 from the library is the host's set-up (options, migrations, drivers): its message
    // names internals, and stays in the server's logs.
    if (error.status >= 500 && error.status !== 503) return problem(error.status, error.code, 'The server failed to complete the request');
    return problem(error.status, error.code, error.message, extensions(error));
  }
  const e = (typeof error === 'object' && error !== null ? error : {}) as {
    type?: unknown;
    code?: unknown;
    status?: unknown;
    statusCode?: unknown;
    expose?: unknown;
    message?: unknown;
  };
  const parserCode = own(PARSER_CODES, e.type) ?? own(PARSER_CODES, e.code);
  if (parserCode) {
    return parserCode === 'MALFORMED_JSON'
      ? problem(400, parserCode, 'The request body is not valid JSON')
      : problem(413, parserCode, 'The request body is larger than this server accepts');
  }
  const status = Number(e.status ?? e.statusCode);
  const exposed = e.expose === true && typeof e.message === 'string';
  if (Number.isInteger(status) && status >= 400 && status < 600 && (status < 500 || exposed)) {
    const code = own(STATUS_CODES, status) ?? (status < 500 ? 'BAD_REQUEST' : 'INTERNAL_ERROR');
    return problem(status, code, exposed ? (e.message as string) : titleOf(code, status));
  }
  return problem(500, 'INTERNAL_ERROR', 'The server failed to complete the request');
}

/** Codes for a host's or framework's errors, by status. */
const STATUS_CODES: Readonly<Record<number, string>> = Object.freeze({
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  422: 'UNPROCESSABLE_CONTENT',
  429: 'TOO_MANY_REQUESTS',
  503: 'SERVICE_UNAVAILABLE',
});

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

/** `table[key]` if the table itself has it: never `constructor`, `toString`… from Object's prototype. */
function own<T>(table: Readonly<Record<string | number, T>>, key: unknown): T | undefined {
  return (typeof key === 'string' || typeof key === 'number') && Object.hasOwn(table, key) ? table[key] : undefined;
}

function titleOf(code: string, status: number): string {
  return own(TITLES, code) ?? own(STATUS_TITLES, status) ?? (status >= 500 ? 'Internal server error' : 'Bad request');
}

function problem(status: number, code: string, detail: string, extra: Record<string, unknown> = {}): ProblemDocument {
  return {
    type: `urn:reservation-engine:problem:${code.toLowerCase().replaceAll('_', '-')}`,
    title: titleOf(code, status),
    status,
    detail,
    code,
    ...extra,
  };
}

function extensions(error: ReservationError): Record<string, unknown> {
  const { available, requested, itemId, reservationId, currentStatus, issues, lines, maxExpiresAt } = error as unknown as Record<string, unknown>;
  // Configuration problems are the host's bug: their details stay in the server's logs.
  if (error.code === 'VALIDATION_ERROR' && Array.isArray(issues)) return { errors: issues };
  const extra: Record<string, unknown> = {};
  if (itemId !== undefined && typeof itemId === 'number') extra.itemId = itemId;
  if (reservationId !== undefined) extra.reservationId = reservationId;
  if (currentStatus !== undefined) extra.currentStatus = currentStatus;
  if (available !== undefined) extra.available = available;
  if (requested !== undefined) extra.requested = requested;
  // Every short line of a reservation of several items.
  if (error.code === 'INSUFFICIENT_STOCK' && Array.isArray(lines)) extra.lines = lines;
  if (maxExpiresAt instanceof Date) extra.maxExpiresAt = maxExpiresAt.toISOString();
  return extra;
}
