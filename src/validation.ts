import type { Kysely } from 'kysely';
import { z } from 'zod';
import { ValidationError } from './errors.js';

/** Largest quantity a single reservation or restock may carry. */
export const MAX_QUANTITY = 1_000_000;
/** Largest stock an item may hold (a signed 32-bit column). */
export const MAX_AVAILABLE_QUANTITY = 2_147_483_647;
/** Longest hold a reservation may ask for: 30 days. */
export const MAX_TTL_SECONDS = 30 * 24 * 60 * 60;
/** Most rows one batch call handles. */
export const MAX_BATCH_LIMIT = 10_000;

const positiveInt = (max: number) =>
  z
    .number({ error: (issue) => (issue.input === undefined ? 'is required' : `must be a number, got ${describe(issue.input)}`) })
    .int({ error: 'must be an integer' })
    .positive({ error: 'must be positive' })
    .max(max, { error: `must be at most ${max.toLocaleString('en-US')}` });

const nonNegativeInt = (max: number) =>
  z
    .number({ error: (issue) => (issue.input === undefined ? 'is required' : `must be a number, got ${describe(issue.input)}`) })
    .int({ error: 'must be an integer' })
    .min(0, { error: 'must not be negative' })
    .max(max, { error: `must be at most ${max.toLocaleString('en-US')}` });

const text = (max: number) =>
  z
    .string({ error: (issue) => (issue.input === undefined ? 'is required' : `must be a string, got ${describe(issue.input)}`) })
    .min(1, { error: 'must not be empty' })
    .max(max, { error: `must be at most ${max} characters` })
    .refine((s) => s.trim() === s, { error: 'must not start or end with whitespace' });

export const itemIdSchema = positiveInt(MAX_AVAILABLE_QUANTITY);

/** 1–64 printable ASCII characters, no leading or trailing space. */
export const idempotencyKeySchema = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : `must be a string, got ${describe(issue.input)}`) })
  .min(1, { error: 'must not be empty' })
  .max(64, { error: 'must be at most 64 characters' })
  .regex(/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/, { error: 'must be printable ASCII characters without leading or trailing spaces' });

export const ttlSecondsSchema = positiveInt(MAX_TTL_SECONDS);

export const createItemSchema = z.strictObject({
  sku: text(255),
  name: text(255),
  availableQuantity: nonNegativeInt(MAX_AVAILABLE_QUANTITY),
});

export const restockSchema = z.strictObject({
  itemId: itemIdSchema,
  quantity: positiveInt(MAX_QUANTITY),
});

export const reserveSchema = z.strictObject({
  itemId: itemIdSchema,
  quantity: positiveInt(MAX_QUANTITY),
  idempotencyKey: idempotencyKeySchema,
  ttlSeconds: ttlSecondsSchema.optional(),
});

/** The host's Kysely instance, recognised by shape (a host may load another copy of Kysely). */
export const kyselySchema = z.custom<Kysely<any>>((v) => typeof (v as Kysely<any> | null)?.getExecutor === 'function', {
  error: 'must be a Kysely instance',
});

export const batchLimitSchema = (defaultLimit: number) => positiveInt(MAX_BATCH_LIMIT).default(defaultLimit);

export const dateSchema = z.date({
  error: (issue) => (issue.input instanceof Date ? 'must be a valid Date' : `must be a Date, got ${describe(issue.input)}`),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `value` is a UUID string: anything else names no reservation. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number' && Number.isNaN(value)) return 'NaN';
  return typeof value === 'string' ? `a string` : typeof value;
}

/** Parses `input` with `schema` or throws a {@link ValidationError} listing every problem. */
export function parse<S extends z.ZodType>(schema: S, input: unknown, what = 'input'): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new ValidationError(
    result.error.issues.map((issue) => {
      const path = issue.path.length > 0 ? issue.path.join('.') : what;
      if (issue.code === 'invalid_type' && issue.path.length === 0) return `${what}: must be an object, got ${describe(input)}`;
      if (issue.code === 'unrecognized_keys') return `${path}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
      return `${path}: ${issue.message}`;
    }),
  );
}
