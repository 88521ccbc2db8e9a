import type { Kysely } from 'kysely';
import { z } from 'zod';
import { ConfigurationError, ValidationError } from './errors.js';

/** Largest quantity a single reservation or restock may carry. */
export const MAX_QUANTITY = 1_000_000;
/**
 * Largest stock an item may hold, counting the units its PENDING reservations hold (a signed
 * 32-bit column): returning held units can then never overflow it.
 */
export const MAX_AVAILABLE_QUANTITY = 2_147_483_647;
/** Longest hold a reservation may ask for: 30 days. */
export const MAX_TTL_SECONDS = 30 * 24 * 60 * 60;
/** Most rows one batch call handles. */
export const MAX_BATCH_LIMIT = 10_000;

/** What an input was, for messages: "got a string", "got NaN". Never the value itself. */
function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : Number.isFinite(value) ? 'a number' : value > 0 ? 'Infinity' : '-Infinity';
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'object') return value instanceof Date ? 'a Date' : 'an object';
  return typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`;
}

/** The message for a value of the wrong type; numbers here are NaN or ±Infinity. */
function wrongType(kind: 'number' | 'string') {
  return (issue: { input?: unknown }) => {
    if (issue.input === undefined) return 'is required';
    if (kind === 'number' && typeof issue.input === 'number') return `must be a finite number, got ${describe(issue.input)}`;
    return `must be a ${kind}, got ${describe(issue.input)}`;
  };
}

/** An integer in [min, max], with the messages every number in the API uses. */
export const integer = (min: number, max: number) =>
  z
    .number({ error: wrongType('number') })
    .int({ error: 'must be an integer' })
    .min(min, { error: min === 1 ? 'must be positive' : min === 0 ? 'must not be negative' : `must be at least ${min.toLocaleString('en-US')}` })
    .max(max, { error: `must be at most ${max.toLocaleString('en-US')}` });

const positiveInt = (max: number) => integer(1, max);

/** Lone UTF-16 surrogates: the databases would store U+FFFD instead, so two inputs could collide. */
const LONE_SURROGATE = /\p{Cs}/u;
const CONTROL = /\p{Cc}/u;

/**
 * 1–`max` characters of well-formed Unicode without U+0000, no leading or trailing whitespace;
 * with `controls: false`, no control characters at all (C0, DEL, C1).
 */
const text = (max: number, { controls }: { controls: boolean }) =>
  z
    .string({ error: wrongType('string') })
    .min(1, { error: 'must not be empty' })
    .max(max, { error: `must be at most ${max} characters` })
    .superRefine((s, ctx) => {
      const fail = (message: string) => ctx.addIssue({ code: 'custom', message });
      if (LONE_SURROGATE.test(s)) fail('must be well-formed Unicode (it has an unpaired surrogate)');
      else if (s.includes('\u0000')) fail('must not contain the NUL character (U+0000)');
      else if (!controls && CONTROL.test(s)) fail('must not contain control characters');
      else if (s.trim() !== s) fail('must not start or end with whitespace');
    });

export const itemIdSchema = positiveInt(MAX_AVAILABLE_QUANTITY);

/** 1–255 printable ASCII characters, no leading or trailing space: idempotency keys and scopes. */
export const idempotencyKeySchema = z
  .string({ error: wrongType('string') })
  .min(1, { error: 'must not be empty', abort: true })
  .max(255, { error: 'must be at most 255 characters', abort: true })
  .regex(/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/, { error: 'must be printable ASCII characters without leading or trailing spaces' });

export const ttlSecondsSchema = positiveInt(MAX_TTL_SECONDS);

export const createItemSchema = z.strictObject({
  sku: text(255, { controls: false }),
  name: text(255, { controls: true }),
  availableQuantity: integer(0, MAX_AVAILABLE_QUANTITY),
});

export const restockSchema = z.strictObject({
  itemId: itemIdSchema,
  quantity: positiveInt(MAX_QUANTITY),
  idempotencyKey: idempotencyKeySchema.optional(),
  idempotencyScope: idempotencyKeySchema.optional(),
});

/** Most lines one reservation may hold. */
export const MAX_LINES = 100;

const lineSchema = z.strictObject({
  itemId: itemIdSchema,
  quantity: positiveInt(MAX_QUANTITY),
});

/**
 * `reserve`'s input: one item (`itemId`, `quantity`) or several (`lines`), never both. Lines for
 * the same item are summed (at most {@link MAX_QUANTITY} units per item) and sorted by item id:
 * `lines` comes out in that normal form, whatever the caller's order.
 */
export const reserveSchema = z
  .strictObject({
    itemId: itemIdSchema.optional(),
    quantity: positiveInt(MAX_QUANTITY).optional(),
    lines: z
      .array(lineSchema, { error: (issue) => (issue.input === undefined ? 'is required' : `must be an array of { itemId, quantity }, got ${describe(issue.input)}`) })
      .min(1, { error: 'must have at least one line' })
      .max(MAX_LINES, { error: `must have at most ${MAX_LINES} lines` })
      .optional(),
    idempotencyKey: idempotencyKeySchema,
    idempotencyScope: idempotencyKeySchema.optional(),
    ttlSeconds: ttlSecondsSchema.optional(),
  })
  .superRefine((input, ctx) => {
    const fail = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    if (input.lines !== undefined) {
      if (input.itemId !== undefined || input.quantity !== undefined) fail('lines', 'pass either itemId and quantity, or lines, not both');
      for (const line of summedLines(input.lines)) {
        if (line.quantity > MAX_QUANTITY) fail('lines', `the lines for item ${line.itemId} add up to ${line.quantity.toLocaleString('en-US')} units, at most ${MAX_QUANTITY.toLocaleString('en-US')}`);
      }
    } else if (input.itemId === undefined && input.quantity === undefined) {
      fail('itemId', 'is required (or pass lines)');
      fail('quantity', 'is required (or pass lines)');
    } else {
      if (input.itemId === undefined) fail('itemId', 'is required');
      if (input.quantity === undefined) fail('quantity', 'is required');
    }
  })
  .transform(({ itemId, quantity, lines, ...rest }) => ({ ...rest, lines: lines ? summedLines(lines) : [{ itemId: itemId!, quantity: quantity! }] }));

/** Lines summed per item, in ascending item id. */
function summedLines(lines: readonly { itemId: number; quantity: number }[]): { itemId: number; quantity: number }[] {
  const units = new Map<number, number>();
  for (const { itemId, quantity } of lines) units.set(itemId, (units.get(itemId) ?? 0) + quantity);
  return [...units].sort(([a], [b]) => a - b).map(([itemId, quantity]) => ({ itemId, quantity }));
}

/** Longest total hold `maxHoldSeconds` may allow: 30 days, as a reservation's own TTL. */
export const maxHoldSecondsSchema = positiveInt(MAX_TTL_SECONDS);

export const extendSchema = z.strictObject({
  ttlSeconds: ttlSecondsSchema,
});

export const writeOffSchema = z.strictObject({
  itemId: itemIdSchema,
  quantity: positiveInt(MAX_QUANTITY),
  reason: text(255, { controls: false }),
  idempotencyKey: idempotencyKeySchema.optional(),
  idempotencyScope: idempotencyKeySchema.optional(),
});

export const auditSchema = z.strictObject({
  itemIds: z
    .array(itemIdSchema, { error: (issue) => `must be an array of item ids, got ${describe(issue.input)}` })
    .max(MAX_BATCH_LIMIT, { error: `must have at most ${MAX_BATCH_LIMIT.toLocaleString('en-US')} ids` })
    .optional(),
});

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const listReservationsSchema = z.strictObject({
  itemId: itemIdSchema.optional(),
  status: z.enum(['PENDING', 'CONFIRMED', 'CANCELLED', 'EXPIRED'], { error: 'must be PENDING, CONFIRMED, CANCELLED or EXPIRED' }).optional(),
  idempotencyScope: idempotencyKeySchema.optional(),
  limit: positiveInt(1000).default(100),
  after: z
    .string({ error: wrongType('string') })
    .regex(UUID_TEXT, { error: 'must be a reservation id (the next of the previous page)' })
    .transform((id) => id.toLowerCase())
    .optional(),
});

/** The host's Kysely instance, recognised by shape (a host may load another copy of Kysely). */
export const kyselySchema = z.custom<Kysely<any>>((v) => typeof (v as Kysely<any> | null)?.getExecutor === 'function', {
  error: 'must be a Kysely instance',
});

export const databaseKindSchema = z.enum(['mysql', 'postgres'], { error: "must be 'mysql' or 'postgres'" });

/** The options every entry point that takes `db` accepts. */
export const dbOptionsShape = {
  db: kyselySchema.refine((db) => !(db as { isTransaction?: boolean }).isTransaction, {
    error: 'must be the Kysely instance, not a Transaction: pass a host transaction per call as { trx }',
  }),
  tablePrefix: z.string({ error: 'must be a string' }).optional(),
  dialect: databaseKindSchema.optional(),
};

/** `telemetry`: a boolean, or an object with a tracer and/or meter provider. */
export const telemetrySchema = z.union([
  z.boolean(),
  z.strictObject({
    tracerProvider: z.custom<{ getTracer(name: string, version?: string): unknown }>((v) => typeof (v as { getTracer?: unknown } | null)?.getTracer === 'function', { error: 'must be a TracerProvider' }).optional(),
    meterProvider: z.custom<{ getMeter(name: string, version?: string): unknown }>((v) => typeof (v as { getMeter?: unknown } | null)?.getMeter === 'function', { error: 'must be a MeterProvider' }).optional(),
  }),
], { error: 'must be true, false or { tracerProvider?, meterProvider? }' });

export const functionSchema = <F>(what = 'a function') => z.custom<F>((v) => typeof v === 'function', { error: `must be ${what}` });

export const batchLimitSchema = (defaultLimit: number) => positiveInt(MAX_BATCH_LIMIT).default(defaultLimit);

/**
 * The times the engine can store on every database (MySQL's DATETIME ends with year 9999), less
 * the longest hold, so that an expiry time fits too.
 */
export const EARLIEST_TIME = Date.UTC(1000, 0, 1);
export const LATEST_TIME = Date.UTC(9999, 11, 31) - MAX_TTL_SECONDS * 1000;

/** Whether `value` is a Date the engine can store: valid, in years 1000–9999. */
export function isStorableDate(value: unknown): value is Date {
  return value instanceof Date && value.getTime() >= EARLIEST_TIME && value.getTime() <= LATEST_TIME;
}

export const dateSchema = z
  .date({
    error: (issue) => (issue.input instanceof Date ? 'must be a valid Date' : `must be a Date, got ${describe(issue.input)}`),
  })
  .refine(isStorableDate, { error: 'must be between the years 1000 and 9999' });

/** How a clock's wrong answer is described. */
export function describeClockValue(value: unknown): string {
  return value instanceof Date ? (Number.isNaN(value.getTime()) ? 'an invalid Date' : `${value.toISOString()}, outside the years 1000–9999`) : describe(value);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The reservation id in the form the engine stores (lower case): ids are matched
 * case-insensitively on every database. Anything but a UUID is a {@link ValidationError}, as a
 * malformed item id is.
 */
export function reservationIdOf(value: unknown): string {
  if (typeof value === 'string' && UUID.test(value)) return value.toLowerCase();
  const got = typeof value === 'string' ? 'a string that is not a UUID' : describe(value);
  throw new ValidationError([{ path: 'reservationId', message: `must be a reservation id (a UUID), got ${got}` }]);
}

/** A name a caller sent, for a message: quoted, at most 64 characters. */
export function quoted(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 63)}…` : text);
}

/** The value at `path` inside `input`, for messages about it. */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[key] : undefined;
  return value;
}

function describeIssues(error: z.ZodError, input: unknown, what: string): string[] {
  return error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.join('.') : what;
    if (issue.code === 'invalid_type' && issue.expected === 'object') return `${path}: must be an object, got ${describe(valueAt(input, issue.path))}`;
    if (issue.code === 'unrecognized_keys') return `${path}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map(quoted).join(', ')}`;
    return `${path}: ${issue.message}`;
  });
}

/** Parses a caller's `input` with `schema` or throws a {@link ValidationError} (400) listing every problem. */
export function parse<S extends z.ZodType>(schema: S, input: unknown, what = 'input'): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data as z.output<S>;
  throw new ValidationError(describeIssues(result.error, input, what));
}

/** Parses the host's `options` with `schema` or throws a {@link ConfigurationError} (500): the host's bug, not its client's. */
export function parseOptions<S extends z.ZodType>(schema: S, options: unknown): z.output<S> {
  const result = schema.safeParse(options);
  if (result.success) return result.data as z.output<S>;
  throw new ConfigurationError(describeIssues(result.error, options, 'options'));
}
