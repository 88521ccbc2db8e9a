/**
 * Seeding (multi-row INSERTs straight into the engine's tables, in the engine's row format),
 * the SQL the raw baselines send, and the stock/count invariants checked after every variant.
 */
import { createHash } from 'node:crypto';
import { ReservationEngine } from '../../src/index.js';
import { uuidv7 } from '../../src/uuid.js';
import { type BenchDatabase, type DialectName, placeholders } from './db.js';
import { prefixTables } from './raw.js';
import type { Checks } from './scenario.js';

const CHUNK_ROWS = 1000;

/** INSERT INTO `table` (columns) VALUES (…), (…) — CHUNK_ROWS rows per statement. */
export async function insertRows(bench: BenchDatabase, table: string, columns: string[], rows: unknown[][]): Promise<void> {
  const tuple = `(${columns.map(() => '?').join(', ')})`;
  for (let i = 0; i < rows.length; i += CHUNK_ROWS) {
    const chunk = rows.slice(i, i + CHUNK_ROWS);
    const text = `INSERT INTO ${table} (${columns.join(', ')}) VALUES ${chunk.map(() => tuple).join(', ')}`;
    await bench.admin.query(bench.sql(text), chunk.flat());
  }
}

/** `count` items with `stock` units each; returns their ids in order. */
export async function seedItems(
  bench: BenchDatabase,
  count: number,
  stock: number | ((index: number) => number),
  /** Units held by PENDING reservations the caller seeds itself (`items.held_quantity`). */
  held: (index: number) => number = () => 0,
): Promise<number[]> {
  const now = new Date();
  const tag = Math.random().toString(36).slice(2, 8);
  const rows = Array.from({ length: count }, (_, i) => {
    const available = typeof stock === 'number' ? stock : stock(i);
    // Received = available + held, as createItem and the PENDING reservations would leave it: engine.audit adds up.
    return [`BENCH-${tag}-${i + 1}`, `Bench item ${i + 1}`, available, held(i), available + held(i), now, now];
  });
  await insertRows(bench, 'items', ['sku', 'name', 'available_quantity', 'held_quantity', 'received_quantity', 'created_at', 'updated_at'], rows);
  const { rows: ids } = await bench.admin.query(bench.sql('SELECT id FROM items WHERE sku LIKE ? ORDER BY id'), [`BENCH-${tag}-%`]);
  return ids.map((r: { id: number | string }) => Number(r.id));
}

/** The outbox payload the engine writes for a reservation (see src/outbox/event-row.ts). */
export function eventPayload(reservation: { id: string; itemId: number; quantity: number; status: string; expiresAt: Date }, now: Date): string {
  return JSON.stringify({
    reservationId: reservation.id,
    itemId: reservation.itemId,
    quantity: reservation.quantity,
    status: reservation.status,
    expiresAt: reservation.expiresAt.toISOString(),
    occurredAt: now.toISOString(),
  });
}

/** The values of one new reservation, as the raw baselines bind them. */
export interface ReservationValues {
  id: string;
  itemId: number;
  quantity: number;
  /** The idempotency scope: '' for none. */
  scope: string;
  key: string;
  hash: string;
  payload: string;
  now: Date;
  expiresAt: Date;
}

/**
 * A statement with named parameters: `sql` has `?` placeholders (or `$n` on PostgreSQL) and
 * `params(v)` binds them in order.
 */
export interface Statement {
  sql: string;
  params(v: ReservationValues): unknown[];
}

function statement(dialect: DialectName, strings: TemplateStringsArray, names: Array<keyof ReservationValues>): Statement {
  const text = strings.reduce((out, part, i) => out + part + (i < names.length ? '?' : ''), '');
  return { sql: placeholders(dialect, text), params: (v) => names.map((n) => v[n]) };
}

/**
 * The SQL of a reservation, per dialect:
 * - `reserve`: what the engine sends today, one round trip: `CALL
 *   reservation_engine_reserve_or_replay(…)` (MySQL/MariaDB) or `SELECT * FROM
 *   reservation_engine_reserve_or_replay(…)` (PostgreSQL), which looks the key up, checks the
 *   stock and writes. {@link verifyEngineStatements} checks it against the engine.
 * - `findByKey`, then `insertIdempotency` … `guardedDecrement`: the client-side transaction the
 *   engine used before its routines (idempotency SELECT; BEGIN; 3 INSERTs; guarded UPDATE; COMMIT).
 * - `lockItem` + `decrement`: the architecture's order (SELECT … FOR UPDATE first).
 * - `bareDecrement`: the limit, one autocommit UPDATE.
 */
export function statements(bench: BenchDatabase) {
  const d = bench.dialect;
  const t = (strings: TemplateStringsArray, ...names: Array<keyof ReservationValues>) => statement(d, strings, names);
  return {
    findByKey: t`select r.*, i.payload_hash from idempotency_requests as i inner join reservations as r on r.id = i.reservation_id where i.idempotency_scope = ${'scope'} and i.idempotency_key = ${'key'}`,
    reserve:
      d === 'mysql'
        ? t`call reservation_engine_reserve_or_replay(${'scope'}, ${'key'}, ${'hash'}, ${'id'}, ${'itemId'}, ${'quantity'}, ${'expiresAt'}, ${'now'}, ${'payload'}, null)`
        : t`select * from reservation_engine_reserve_or_replay(${'scope'}, ${'key'}, ${'hash'}, ${'id'}, ${'itemId'}, ${'quantity'}, ${'expiresAt'}, ${'now'}, ${'payload'}, null)`,
    /** A sold-out check as a hand-written app would do it: the cheapest possible answer. */
    readStock: t`select available_quantity from items where id = ${'itemId'}`,
    insertIdempotency: t`insert into idempotency_requests (idempotency_scope, idempotency_key, payload_hash, reservation_id, created_at) values (${'scope'}, ${'key'}, ${'hash'}, ${'id'}, ${'now'})`,
    insertReservation: t`insert into reservations (id, item_id, quantity, status, idempotency_key, expires_at, created_at, updated_at) values (${'id'}, ${'itemId'}, ${'quantity'}, 'PENDING', ${'key'}, ${'expiresAt'}, ${'now'}, ${'now'})`,
    insertOutbox: t`insert into outbox (type, payload, created_at, available_at, attempts) values ('reservation.created', ${'payload'}, ${'now'}, ${'now'}, 0)`,
    guardedDecrement: t`update items set available_quantity = available_quantity - ${'quantity'}, held_quantity = held_quantity + ${'quantity'}, updated_at = ${'now'} where id = ${'itemId'} and available_quantity >= ${'quantity'}`,
    lockItem: t`select available_quantity from items where id = ${'itemId'} for update`,
    decrement: t`update items set available_quantity = available_quantity - ${'quantity'}, updated_at = ${'now'} where id = ${'itemId'}`,
    bareDecrement: t`update items set available_quantity = available_quantity - 1 where id = ${'itemId'} and available_quantity >= 1`,
  };
}

export type Statements = ReturnType<typeof statements>;

/** The outcome the engine's `reserve` routine answered (a CALL's first result set, or the function's row). */
export function reserveOutcomeOf(rows: any[]): string | undefined {
  const row = Array.isArray(rows[0]) ? rows[0][0] : rows[0];
  return row?.outcome;
}

/**
 * The values of one new reservation, made as a hand-written implementation would: a UUID v7
 * (the engine's generator, so the primary key appends the same way), a SHA-256 of the request,
 * the event payload as JSON. No input validation, no canonical JSON.
 */
export function reservationValues(itemId: number, quantity: number, key: string, ttlSeconds = 900): ReservationValues {
  const now = new Date();
  const expiresAt = new Date(now.getTime() + ttlSeconds * 1000);
  const id = uuidv7(now.getTime());
  const hash = createHash('sha256').update(`${itemId}:${quantity}:${ttlSeconds}`).digest('hex');
  return { id, itemId, quantity, scope: '', key, hash, now, expiresAt, payload: eventPayload({ id, itemId, quantity, status: 'PENDING', expiresAt }, now) };
}

const normalize = (text: string) =>
  text
    .replace(/[`"]/g, '')
    .replace(/\$\d+/g, '?')
    .replace(/\s+/g, ' ')
    .replace(/\( /g, '(')
    .replace(/ \)/g, ')')
    .trim()
    .toLowerCase();

/**
 * Runs one engine.reserve with Kysely's query log on and compares the statements it sent with
 * the raw baseline's `reserve`. Returns a note for the report; `matches` false
 * means bench/lib/fixtures.ts needs updating to follow the engine.
 */
export async function verifyEngineStatements(bench: BenchDatabase): Promise<{ matches: boolean; note: string }> {
  const sent: string[] = [];
  const db = bench.kysely(1, { log: (event) => sent.push(event.query.sql) });
  try {
    const [itemId] = await seedItems(bench, 1, 10);
    await new ReservationEngine({ db }).reserve({ itemId: itemId!, quantity: 1, idempotencyKey: `verify-${Date.now()}` });
  } finally {
    await bench.closeKysely(db);
  }
  await bench.reset();
  const s = statements(bench);
  const expected = [s.reserve.sql].map((text) => normalize(prefixTables(text)));
  // The engine's one-time session check (MySQL's sql_mode) is not part of a reserve.
  const actual = sent.filter((text) => !/@@session\.sql_mode/.test(text)).map(normalize);
  const matches = expected.length === actual.length && expected.every((e, i) => e === actual[i]);
  return matches
    ? { matches, note: `The raw baseline sends exactly the ${actual.length} statements engine.reserve sent (checked at the start of this run).` }
    : {
        matches,
        note: `WARNING: engine.reserve sent ${actual.length} statements that differ from the raw baseline's — update bench/lib/fixtures.ts. Engine: ${actual.map((a) => `«${a.slice(0, 120)}»`).join(' ')}`,
      };
}

/**
 * After a variant: no item below zero; for every item, available + Σ quantity of its PENDING
 * reservations, single-item ones and lines of several-item ones (+ the bare decrements, which
 * have no reservation) = its initial stock; exactly `reservations` reservations, idempotency
 * records and `reservation.created` events, and, when given, `lines` reservation lines.
 */
export async function checkStock(
  bench: BenchDatabase,
  checks: Checks,
  expected: { initial: Map<number, number>; reservations: number; bareDecrements?: number; lines?: number },
): Promise<void> {
  checks.equal('no item below zero', await bench.count('SELECT COUNT(*) AS n FROM items WHERE available_quantity < 0'), 0);
  const { rows } = await bench.admin.query(
    `SELECT i.id, i.available_quantity AS available, COALESCE(SUM(h.quantity), 0) AS held
       FROM items i LEFT JOIN (
              SELECT item_id, quantity FROM reservations WHERE status = 'PENDING' AND item_id IS NOT NULL
              UNION ALL
              SELECT l.item_id, l.quantity FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id WHERE r.status = 'PENDING'
            ) h ON h.item_id = i.id
      GROUP BY i.id, i.available_quantity`,
  );
  let mismatched = 0;
  let taken = 0;
  for (const row of rows as Array<{ id: unknown; available: unknown; held: unknown }>) {
    const initial = expected.initial.get(Number(row.id));
    const available = Number(row.available);
    const held = Number(row.held);
    if (initial === undefined) mismatched++;
    else if (expected.bareDecrements === undefined && available + held !== initial) mismatched++;
    taken += (initial ?? 0) - available;
  }
  checks.equal('items', rows.length, expected.initial.size);
  if (expected.bareDecrements === undefined) {
    checks.expect('available + Σ held = initial, per item', mismatched === 0, mismatched === 0 ? `all ${rows.length} items` : `${mismatched} items off`);
  } else {
    checks.equal('units taken = successful UPDATEs', taken, expected.bareDecrements);
  }
  checks.equal('reservations = successful ops', await bench.count('SELECT COUNT(*) AS n FROM reservations'), expected.reservations);
  if (expected.lines !== undefined) checks.equal('reservation lines', await bench.count('SELECT COUNT(*) AS n FROM reservation_lines'), expected.lines);
  checks.equal('idempotency records = reservations', await bench.count('SELECT COUNT(*) AS n FROM idempotency_requests'), expected.reservations);
  checks.equal(
    'reservation.created events = reservations',
    await bench.count(bench.sql('SELECT COUNT(*) AS n FROM outbox WHERE type = ?'), ['reservation.created']),
    expected.reservations,
  );
}

export function pick<T>(values: readonly T[]): T {
  return values[Math.floor(Math.random() * values.length)]!;
}
