import { expect, it } from 'vitest';
import {
  ConfigurationError,
  IdempotencyConflictError,
  InsufficientStockError,
  InvalidStateError,
  NotFoundError,
  OutcomeUnknownError,
  ReservationError,
  TransactionConflictError,
  UnsupportedDatabaseError,
  ValidationError,
  toProblem,
} from '../src/index.js';

const GENERIC_500 = Object.freeze({
  type: 'urn:reservation-engine:problem:internal-error',
  title: 'Internal server error',
  status: 500,
  detail: 'The server failed to complete the request',
  code: 'INTERNAL_ERROR',
});

/** Marks an object as an error of another copy of the library (the other build, another version). */
const BRAND = Symbol.for('reservation-engine.error');

it('maps library errors to problem documents with their status and code', () => {
  expect(toProblem(new InsufficientStockError(7, 3, 1))).toEqual({
    type: 'urn:reservation-engine:problem:insufficient-stock',
    title: 'Insufficient stock',
    status: 409,
    detail: 'Item 7 has 1 available, 3 requested',
    code: 'INSUFFICIENT_STOCK',
    itemId: 7,
    available: 1,
    requested: 3,
    lines: [{ itemId: 7, requested: 3, available: 1 }],
  });
  // A cart: every short line.
  expect(toProblem(new InsufficientStockError([{ itemId: 7, requested: 3, available: 1 }, { itemId: 9, requested: 1, available: 0 }]))).toMatchObject({
    status: 409,
    code: 'INSUFFICIENT_STOCK',
    detail: 'Not enough stock for 2 lines: item 7 has 1 available, 3 requested; item 9 has 0 available, 1 requested',
    itemId: 7,
    lines: [
      { itemId: 7, requested: 3, available: 1 },
      { itemId: 9, requested: 1, available: 0 },
    ],
  });
  expect(toProblem(new ValidationError(['quantity: must be positive', 'itemId: is required']))).toEqual({
    type: 'urn:reservation-engine:problem:validation-error',
    title: 'Invalid request',
    status: 400,
    detail: 'Invalid input: quantity: must be positive; itemId: is required',
    code: 'VALIDATION_ERROR',
    errors: [
      { path: 'quantity', message: 'must be positive' },
      { path: 'itemId', message: 'is required' },
    ],
  });
  expect(toProblem(new NotFoundError('reservation', 'x'))).toMatchObject({ status: 404, code: 'RESERVATION_NOT_FOUND', title: 'Reservation not found' });
  expect(toProblem(new IdempotencyConflictError('k'))).toMatchObject({ status: 409, code: 'IDEMPOTENCY_CONFLICT' });
  expect(toProblem(new InvalidStateError('r', 'PENDING', 'confirm', true))).toMatchObject({
    status: 409,
    code: 'RESERVATION_EXPIRED',
    reservationId: 'r',
    currentStatus: 'PENDING',
  });
});

it('keeps the message of the library 503s, which tell the client what to do, but not their cause', () => {
  const conflict = toProblem(new TransactionConflictError(5, new Error('Deadlock found on `items` at 10.0.0.5')));
  expect(conflict).toEqual({
    type: 'urn:reservation-engine:problem:transaction-conflict',
    title: 'Temporarily unable to complete the request',
    status: 503,
    detail: 'The database reported lock conflicts 5 times in a row; try again',
    code: 'TRANSACTION_CONFLICT',
  });
  const unknown = toProblem(new OutcomeUnknownError('reserve', 'Retry with the same idempotency key.', new Error('read ECONNRESET 10.0.0.5:3306')));
  expect(unknown).toMatchObject({
    status: 503,
    code: 'OUTCOME_UNKNOWN',
    detail: 'The database connection failed during reserve; the outcome is unknown. Retry with the same idempotency key.',
  });
  expect(JSON.stringify([conflict, unknown])).not.toMatch(/10\.0\.0\.5|Deadlock|ECONNRESET/);
});

it('gives library 500s (configuration, migrations, drivers) a generic detail: their messages name internals', () => {
  const configuration = toProblem(new ConfigurationError(['leaseMs: must be positive', 'db: must be a Kysely instance']));
  expect(configuration).toEqual({
    type: 'urn:reservation-engine:problem:invalid-configuration',
    title: 'Internal server error',
    status: 500,
    detail: 'The server failed to complete the request',
    code: 'INVALID_CONFIGURATION',
  });
  const unsupported = toProblem(new UnsupportedDatabaseError('SqliteAdapter'));
  expect(unsupported).toMatchObject({ status: 500, code: 'UNSUPPORTED_DATABASE', detail: 'The server failed to complete the request' });
  const migration = toProblem(new ReservationError('Migration 0003 failed: relation "items" at /var/lib/postgresql does not exist', 'MIGRATION_FAILED', 500));
  expect(migration).toMatchObject({ status: 500, code: 'MIGRATION_FAILED', title: 'Internal server error', detail: 'The server failed to complete the request' });
  const missing = toProblem(new ReservationError("Cannot find package '@electric-sql/pglite' from /srv/app", 'MISSING_DEPENDENCY', 500));
  expect(missing).toMatchObject({ status: 500, code: 'MISSING_DEPENDENCY', detail: 'The server failed to complete the request' });
  expect(JSON.stringify([configuration, unsupported, migration, missing])).not.toMatch(/leaseMs|Kysely|Sqlite|0003|postgresql|pglite|\/srv/);
});

it('maps body-parser errors to 400 and 413', () => {
  expect(toProblem(Object.assign(new SyntaxError('Unexpected token } in JSON at position 12'), { type: 'entity.parse.failed', status: 400 }))).toEqual({
    type: 'urn:reservation-engine:problem:malformed-json',
    title: 'Malformed JSON',
    status: 400,
    detail: 'The request body is not valid JSON',
    code: 'MALFORMED_JSON',
  });
  expect(toProblem(Object.assign(new Error('too large'), { type: 'entity.too.large', status: 413 }))).toMatchObject({ status: 413, code: 'PAYLOAD_TOO_LARGE' });
  expect(toProblem(Object.assign(new Error('Body is too large'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }))).toMatchObject({ status: 413 });
  expect(toProblem(Object.assign(new Error("Body is not valid JSON but content-type is 'application/json'"), { code: 'FST_ERR_CTP_INVALID_JSON_BODY', statusCode: 400 }))).toMatchObject({
    status: 400,
    code: 'MALFORMED_JSON',
  });
});

it('keeps the status of a 4xx that does not opt in with expose: true, never its message', () => {
  const problem = toProblem(Object.assign(new Error('secret at http://10.0.0.5'), { status: 400 }));
  expect(problem).toEqual({
    type: 'urn:reservation-engine:problem:bad-request',
    title: 'Bad request',
    status: 400,
    detail: 'Bad request',
    code: 'BAD_REQUEST',
  });
  expect(JSON.stringify(problem)).not.toMatch(/secret|10\.0\.0\.5/);
  // Fastify and others say statusCode; expose must be exactly true.
  expect(toProblem(Object.assign(new Error('no route GET /admin/internal'), { statusCode: 404 }))).toEqual({
    type: 'urn:reservation-engine:problem:not-found',
    title: 'Not found',
    status: 404,
    detail: 'Not found',
    code: 'NOT_FOUND',
  });
  expect(toProblem(Object.assign(new Error('token abc123 expired'), { status: 401, expose: 'true' }))).toMatchObject({ status: 401, code: 'UNAUTHORIZED', detail: 'Unauthorized' });
  expect(toProblem(Object.assign(new Error('secret'), { status: 418 }))).toMatchObject({ status: 418, detail: 'Bad request' });
});

it('keeps the message of any error that opts in with expose: true, 4xx or 5xx', () => {
  expect(toProblem(Object.assign(new Error('Unsupported Media Type'), { status: 415, expose: true }))).toEqual({
    type: 'urn:reservation-engine:problem:unsupported-media-type',
    title: 'Unsupported media type',
    status: 415,
    detail: 'Unsupported Media Type',
    code: 'UNSUPPORTED_MEDIA_TYPE',
  });
  expect(toProblem({ status: 418, expose: true, message: 'short and stout' })).toMatchObject({ status: 418, detail: 'short and stout' });
  expect(toProblem(Object.assign(new Error('The payment provider is not answering'), { status: 502, expose: true }))).toMatchObject({
    status: 502,
    detail: 'The payment provider is not answering',
  });
  // expose: true without a string message has nothing to expose.
  expect(toProblem({ status: 409, expose: true, message: 42 })).toMatchObject({ status: 409, code: 'CONFLICT', detail: 'Conflict' });
});

it('hides everything else behind a generic 500', () => {
  expect(toProblem(new Error('connect ECONNREFUSED 10.0.0.5:3306 password=hunter2'))).toEqual(GENERIC_500);
  expect(toProblem(Object.assign(new Error('upstream 10.0.0.5 down'), { status: 502 }))).toEqual(GENERIC_500);
  expect(toProblem(Object.assign(new Error('db password=hunter2'), { status: 500 }))).toEqual(GENERIC_500);
  for (const status of [200, 302, 399, 600, 404.5, Number.NaN, 'teapot']) {
    expect(toProblem(Object.assign(new Error('secret'), { status, expose: true }))).toEqual(GENERIC_500);
  }
  expect(toProblem(null)).toEqual(GENERIC_500);
  expect(toProblem(undefined)).toEqual(GENERIC_500);
  expect(toProblem('a string with a secret')).toEqual(GENERIC_500);
  expect(toProblem(42)).toEqual(GENERIC_500);
  // Looks like one of the library's errors, but is not branded.
  expect(toProblem(Object.assign(new Error('Invalid input: internal detail'), { code: 'VALIDATION_ERROR', status: 500, issues: ['x'] }))).toEqual(GENERIC_500);
});

it('never throws, whatever the error carries: a code or type that names an Object.prototype member is just an unknown code', () => {
  for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__', 'valueOf']) {
    expect(toProblem(Object.assign(new Error('secret'), { code: name }))).toEqual(GENERIC_500);
    expect(toProblem(Object.assign(new Error('secret'), { type: name }))).toEqual(GENERIC_500);
    expect(toProblem(Object.assign(new Error('secret'), { code: name, status: 400 }))).toMatchObject({ status: 400, code: 'BAD_REQUEST', detail: 'Bad request' });
  }
  const problem = toProblem(new ReservationError('a host error', 'toString', 409));
  expect(problem).toMatchObject({ status: 409, code: 'toString', detail: 'a host error' });
  expect(typeof problem.title).toBe('string');
});

it("recognises errors from another copy of the library by its brand, not by class", () => {
  // What the other build's ValidationError looks like from here: another class, the shared brand.
  class OtherValidationError extends Error {
    readonly code = 'VALIDATION_ERROR';
    readonly status = 400;
    readonly issues = Object.freeze([{ path: 'quantity', message: 'must be positive' }]);
  }
  Object.defineProperty(OtherValidationError, 'name', { value: 'ValidationError' });
  const other = new OtherValidationError('Invalid input: quantity: must be positive');
  Object.defineProperty(other, BRAND, { value: true });
  expect(toProblem(other)).toEqual({
    type: 'urn:reservation-engine:problem:validation-error',
    title: 'Invalid request',
    status: 400,
    detail: 'Invalid input: quantity: must be positive',
    code: 'VALIDATION_ERROR',
    errors: [{ path: 'quantity', message: 'must be positive' }],
  });
  expect(other instanceof ValidationError).toBe(true);
  expect(other instanceof ReservationError).toBe(true);
  expect(other instanceof NotFoundError).toBe(false);
  expect(other instanceof ConfigurationError).toBe(false);
  // Unbranded, the same shape is nobody's ValidationError.
  const forged = new OtherValidationError('Invalid input: quantity: must be positive');
  expect(forged instanceof ValidationError).toBe(false);
  expect(forged instanceof ReservationError).toBe(false);
  expect(toProblem(forged)).toMatchObject({ status: 400, code: 'BAD_REQUEST', detail: 'Bad request' });
});

it("titles a host's own codes by status", () => {
  expect(toProblem(new ReservationError('no route', 'NOT_FOUND', 404))).toMatchObject({ title: 'Not found', status: 404, detail: 'no route' });
  expect(toProblem(new ReservationError('down', 'DATABASE_UNAVAILABLE', 503))).toMatchObject({ title: 'Service unavailable', detail: 'down' });
  expect(toProblem(new ReservationError('weird', 'ODD', 418))).toMatchObject({ title: 'Bad request' });
});
