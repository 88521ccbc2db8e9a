import { expect, it } from 'vitest';
import {
  IdempotencyConflictError,
  InsufficientStockError,
  InvalidStateError,
  NotFoundError,
  TransactionConflictError,
  ValidationError,
  toProblem,
} from '../src/index.js';

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
  });
  expect(toProblem(new ValidationError(['quantity: must be positive', 'itemId: is required']))).toMatchObject({
    status: 400,
    code: 'VALIDATION_ERROR',
    errors: ['quantity: must be positive', 'itemId: is required'],
  });
  expect(toProblem(new NotFoundError('reservation', 'x'))).toMatchObject({ status: 404, code: 'RESERVATION_NOT_FOUND', title: 'Reservation not found' });
  expect(toProblem(new IdempotencyConflictError('k'))).toMatchObject({ status: 409, code: 'IDEMPOTENCY_CONFLICT' });
  expect(toProblem(new InvalidStateError('r', 'PENDING', 'confirm', true))).toMatchObject({
    status: 409,
    code: 'RESERVATION_EXPIRED',
    reservationId: 'r',
    currentStatus: 'PENDING',
  });
  expect(toProblem(new TransactionConflictError(5, new Error('deadlock')))).toMatchObject({ status: 503, code: 'TRANSACTION_CONFLICT' });
});

it('maps body-parser errors to 400 and 413', () => {
  expect(toProblem(Object.assign(new SyntaxError('Unexpected token'), { type: 'entity.parse.failed', status: 400 }))).toMatchObject({
    status: 400,
    code: 'MALFORMED_JSON',
  });
  expect(toProblem(Object.assign(new Error('too large'), { type: 'entity.too.large', status: 413 }))).toMatchObject({ status: 413, code: 'PAYLOAD_TOO_LARGE' });
  expect(toProblem(Object.assign(new Error('Body is too large'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }))).toMatchObject({ status: 413 });
});

it('keeps other client errors and hides everything else behind a 500', () => {
  expect(toProblem(Object.assign(new Error('Unsupported Media Type'), { status: 415, expose: true }))).toMatchObject({ status: 415, detail: 'Unsupported Media Type' });
  const internal = toProblem(new Error('connect ECONNREFUSED 10.0.0.5:3306 password=hunter2'));
  expect(internal).toEqual({
    type: 'urn:reservation-engine:problem:internal-error',
    title: 'Internal server error',
    status: 500,
    detail: 'The server failed to complete the request',
    code: 'INTERNAL_ERROR',
  });
  expect(toProblem(null)).toMatchObject({ status: 500 });
  expect(toProblem('a string')).toMatchObject({ status: 500 });
  expect(toProblem(Object.assign(new Error('x'), { status: 502 }))).toMatchObject({ status: 500 });
});

it("titles a host's own codes by status", async () => {
  const { ReservationError } = await import('../src/index.js');
  expect(toProblem(new ReservationError('no route', 'NOT_FOUND', 404))).toMatchObject({ title: 'Not found', status: 404 });
  expect(toProblem(new ReservationError('down', 'DATABASE_UNAVAILABLE', 503))).toMatchObject({ title: 'Service unavailable' });
  expect(toProblem(new ReservationError('weird', 'ODD', 418))).toMatchObject({ title: 'Bad request' });
});
