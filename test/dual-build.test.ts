/**
 * The package users get, loaded twice as it happens in real programs: an ESM app whose
 * dependency `require`s the library gets both builds, and errors cross from one to the other.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import * as source from '../src/index.js';

type Library = typeof source;

const ROOT = path.resolve(import.meta.dirname, '..');


let outDir: string;
let esm: Library;
let cjs: Library;
let cjsDb: Awaited<ReturnType<Library['createEmbeddedDatabase']>> | undefined;

beforeAll(async () => {
  // Inside the project, so that both builds resolve zod and kysely from its node_modules.
  await mkdir(path.join(ROOT, 'node_modules/.cache'), { recursive: true });
  outDir = await mkdtemp(path.join(ROOT, 'node_modules/.cache/dual-build-'));
  // The project's tsup.config.ts (clean: true cleans only this outDir); types are not needed here.
  await promisify(execFile)(path.join(ROOT, 'node_modules/.bin/tsup'), ['--out-dir', outDir, '--no-dts', '--silent'], { cwd: ROOT, timeout: 30_000 });
  cjs = createRequire(import.meta.url)(path.join(outDir, 'index.cjs'));
  esm = await import(pathToFileURL(path.join(outDir, 'index.js')).href);
}, 60_000);

afterAll(async () => {
  await cjsDb?.destroy();
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

it('builds into its own directory', () => {
  // (./dist is test/tarball.test.ts's: it builds and packs it, maybe at the same time.)
  // The ES builds of the two entry points (index, rabbitmq) share a chunk, named by its hash.
  const files = readdirSync(outDir)
    .map((file) => file.replace(/^chunk-[A-Z0-9]+\./, 'chunk.'))
    .sort();
  expect(files).toEqual(['chunk.js', 'chunk.js.map', 'cli.js', 'cli.js.map', 'index.cjs', 'index.cjs.map', 'index.js', 'index.js.map', 'rabbitmq.cjs', 'rabbitmq.cjs.map', 'rabbitmq.js', 'rabbitmq.js.map']);
});

it('loads two distinct copies: plain prototype checks cannot tell their errors apart', () => {
  expect(cjs.ValidationError).not.toBe(esm.ValidationError);
  expect(cjs.ValidationError).not.toBe(source.ValidationError);
  const cjsError = new cjs.ValidationError(['quantity: must be positive']);
  expect(Function.prototype[Symbol.hasInstance].call(esm.ValidationError, cjsError)).toBe(false);
  expect(Object.getPrototypeOf(cjsError)).not.toBe(esm.ValidationError.prototype);
});

it("the ESM build's toProblem answers a CommonJS ValidationError with 400 VALIDATION_ERROR and its errors", () => {
  const cjsError = new cjs.ValidationError(['quantity: must be positive', 'itemId: is required']);
  const expected = {
    type: 'urn:reservation-engine:problem:validation-error',
    title: 'Invalid request',
    status: 400,
    detail: 'Invalid input: quantity: must be positive; itemId: is required',
    code: 'VALIDATION_ERROR',
    errors: [{ path: 'quantity', message: 'must be positive' }, { path: 'itemId', message: 'is required' }],
  };
  expect(esm.toProblem(cjsError)).toEqual(expected);
  expect(source.toProblem(cjsError)).toEqual(expected);
});

it("the CommonJS build's toProblem answers an ESM ValidationError with 400 VALIDATION_ERROR and its errors", () => {
  const esmError = new esm.ValidationError(['sku: must not be empty']);
  expect(cjs.toProblem(esmError)).toEqual({
    type: 'urn:reservation-engine:problem:validation-error',
    title: 'Invalid request',
    status: 400,
    detail: 'Invalid input: sku: must not be empty',
    code: 'VALIDATION_ERROR',
    errors: [{ path: 'sku', message: 'must not be empty' }],
  });
});

it('keeps the rules across builds: extensions for stock errors, a generic detail for library 500s', () => {
  expect(cjs.toProblem(new esm.InsufficientStockError(7, 3, 1))).toMatchObject({ status: 409, code: 'INSUFFICIENT_STOCK', itemId: 7, available: 1, requested: 3 });
  expect(esm.toProblem(new cjs.ConfigurationError(['leaseMs: must be positive']))).toEqual({
    type: 'urn:reservation-engine:problem:invalid-configuration',
    title: 'Internal server error',
    status: 500,
    detail: 'The server failed to complete the request',
    code: 'INVALID_CONFIGURATION',
  });
  expect(esm.toProblem(new cjs.TransactionConflictError(5, new Error('deadlock')))).toMatchObject({
    status: 503,
    code: 'TRANSACTION_CONFLICT',
    detail: 'The database reported lock conflicts 5 times in a row; try again',
  });
});

it('instanceof works across the builds, both ways, class by class', () => {
  for (const [from, to] of [
    [cjs, esm],
    [esm, cjs],
  ] as const) {
    const validation = new from.ValidationError(['x: bad']);
    expect(validation instanceof to.ValidationError).toBe(true);
    expect(validation instanceof to.ReservationError).toBe(true);
    expect(validation instanceof to.NotFoundError).toBe(false);
    expect(validation instanceof to.ConfigurationError).toBe(false);
    const notFound = new from.NotFoundError('reservation', 'r');
    expect(notFound instanceof to.NotFoundError).toBe(true);
    expect(notFound instanceof to.ReservationError).toBe(true);
    expect(notFound instanceof to.ValidationError).toBe(false);
    const configuration = new from.ConfigurationError(['limit: must be positive']);
    expect(configuration instanceof to.ConfigurationError).toBe(true);
    expect(configuration instanceof to.ValidationError).toBe(false);
    // Nothing else becomes one of the library's errors.
    expect(new Error('x') instanceof to.ReservationError).toBe(false);
    expect(Object.assign(new Error('x'), { code: 'VALIDATION_ERROR', status: 400 }) instanceof to.ValidationError).toBe(false);
  }
});

it("errors thrown by the CommonJS build's engine are recognised by the ESM build", async () => {
  expect(() => new cjs.ReservationEngine({ db: {} as never })).toThrow(esm.ConfigurationError);
  cjsDb = await cjs.createEmbeddedDatabase();
  const engine = new cjs.ReservationEngine({ db: cjsDb });

  const invalid = await engine.getItem(1.5).then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(invalid instanceof esm.ValidationError).toBe(true);
  expect(esm.toProblem(invalid)).toMatchObject({ status: 400, code: 'VALIDATION_ERROR', errors: [{ path: 'itemId', message: 'must be an integer' }] });

  const missing = await engine.confirm('0190a0b0-0000-7000-8000-000000000000').then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(missing instanceof esm.NotFoundError).toBe(true);
  expect(missing instanceof esm.ValidationError).toBe(false);
  expect(esm.toProblem(missing)).toMatchObject({ status: 404, code: 'RESERVATION_NOT_FOUND' });
}, 60_000);
