/**
 * The engine's promises, checked from the database itself after a workload (the fault suite, the
 * model-based tests, the Galera scenarios). Every check reads the engine's tables directly, never
 * through the engine, so that a bug in the engine cannot hide its own damage.
 *
 * - stock: per item, received (initial + restocks) − written off = available + PENDING +
 *   CONFIRMED units (single-item reservations and lines of several-item ones), available >= 0,
 *   held = PENDING units; and the engine's own `audit()` finds nothing (it checks the same from
 *   the counters the engine keeps, so both must agree with the database);
 * - one reservation per (scope, key), and one idempotency record per reservation;
 * - exactly one outbox event per state change: one `reservation.created` per reservation and one
 *   event for its final state (confirmed / cancelled / expired), any number of
 *   `reservation.extended` while it was PENDING, none other; one `item.written_off` per
 *   acknowledged write-off (when `writeOffReasons` is given);
 * - delivery (when `delivered` is given): every event processed or dead-lettered, every processed
 *   event seen by a handler, and no event delivered that no committed transaction wrote.
 */
import { type Kysely, sql } from 'kysely';
import { ReservationEngine } from '../../src/index.js';

export interface InvariantInput {
  /** The engine's table prefix. @defaultValue 'reservation_engine_' */
  readonly tablePrefix?: string;
  /**
   * Units each item received: its initial stock plus every acknowledged restock. Items not in
   * the map are checked for everything but this sum.
   */
  readonly received?: ReadonlyMap<number, number>;
  /** Units each item had written off (acknowledged write-offs). @defaultValue none */
  readonly writtenOff?: ReadonlyMap<number, number>;
  /** The reasons of acknowledged write-offs, each unique: exactly one `item.written_off` event each, and no other. */
  readonly writeOffReasons?: ReadonlySet<string>;
  /**
   * Ids of the outbox events handlers saw (with repeats: a redelivery is listed again). When
   * given, the delivery checks run too.
   */
  readonly delivered?: readonly string[];
  /** Skip "every event processed or dead-lettered" (the workload left the outbox running). */
  readonly outboxMayBePending?: boolean;
}

export interface InvariantReport {
  /** Human-readable violations: empty when every promise held. */
  readonly violations: string[];
  readonly items: number;
  readonly reservations: number;
  readonly events: number;
  /** Deliveries beyond the first per event (at-least-once redeliveries). */
  readonly duplicatesDelivered: number;
  readonly deadLettered: number;
}

const EVENT_FOR_STATUS: Record<string, string | undefined> = {
  PENDING: undefined,
  CONFIRMED: 'reservation.confirmed',
  CANCELLED: 'reservation.cancelled',
  EXPIRED: 'reservation.expired',
};

export async function checkInvariants(db: Kysely<any>, input: InvariantInput = {}): Promise<InvariantReport> {
  const prefix = input.tablePrefix ?? 'reservation_engine_';
  const t = (name: string) => sql.table(`${prefix}${name}`);
  const violations: string[] = [];

  const items = (
    await sql<{ id: number; available: number; held: number }>`select id, available_quantity as available, held_quantity as held from ${t('items')}`.execute(db)
  ).rows.map((r) => ({ id: Number(r.id), available: Number(r.available), held: Number(r.held) }));
  // Single-item reservations carry their item; several-item ones have their lines apart.
  const units = (
    await sql<{ item_id: number; status: string; units: number }>`
      select item_id, status, sum(quantity) as units from ${t('reservations')} where item_id is not null group by item_id, status
      union all
      select l.item_id, r.status, sum(l.quantity) as units from ${t('reservation_lines')} l join ${t('reservations')} r on r.id = l.reservation_id group by l.item_id, r.status`.execute(db)
  ).rows;
  const unitsOf = (itemId: number, status: string) =>
    units.filter((u) => Number(u.item_id) === itemId && u.status === status).reduce((sum, u) => sum + Number(u.units), 0);
  const cartsWithoutLines = (
    await sql<{ id: string }>`select r.id from ${t('reservations')} r where r.item_id is null and not exists (select 1 from ${t('reservation_lines')} l where l.reservation_id = r.id)`.execute(db)
  ).rows;
  for (const r of cartsWithoutLines) violations.push(`reservation ${r.id}: no item and no lines`);

  for (const item of items) {
    const pending = unitsOf(item.id, 'PENDING');
    const confirmed = unitsOf(item.id, 'CONFIRMED');
    if (item.available < 0) violations.push(`item ${item.id}: available ${item.available} < 0`);
    if (item.held !== pending) violations.push(`item ${item.id}: held ${item.held} but PENDING units ${pending}`);
    const received = input.received?.get(item.id);
    const writtenOff = input.writtenOff?.get(item.id) ?? 0;
    if (received !== undefined && received - writtenOff !== item.available + pending + confirmed) {
      violations.push(
        `item ${item.id}: received ${received} − written off ${writtenOff} ≠ available ${item.available} + PENDING ${pending} + CONFIRMED ${confirmed} (= ${item.available + pending + confirmed})`,
      );
    }
  }
  // The engine's own audit, from its counters: it must find what the checks above find (nothing).
  const audit = await new ReservationEngine({ db, tablePrefix: prefix, telemetry: false }).audit();
  for (const d of audit.discrepancies) violations.push(`audit: item ${d.itemId}: ${d.problems.join('; ')}`);

  const reservations = (
    await sql<{ id: string; status: string; scope: string; idem_key: string }>`
      select id, status, idempotency_scope as scope, idempotency_key as idem_key from ${t('reservations')}`.execute(db)
  ).rows.map((r) => ({ ...r, id: String(r.id).toLowerCase() }));
  const byKey = new Map<string, number>();
  for (const r of reservations) byKey.set(`${r.scope}\u0000${r.idem_key}`, (byKey.get(`${r.scope}\u0000${r.idem_key}`) ?? 0) + 1);
  for (const [key, n] of byKey) if (n > 1) violations.push(`key ${JSON.stringify(key.replace('\u0000', ' / '))}: ${n} reservations`);
  const records = (
    await sql<{ reservation_id: string; n: number }>`select reservation_id, count(*) as n from ${t('idempotency_requests')} group by reservation_id`.execute(db)
  ).rows;
  const recordsOf = new Map(records.map((r) => [String(r.reservation_id).toLowerCase(), Number(r.n)]));
  for (const r of reservations) if (recordsOf.get(r.id) !== 1) violations.push(`reservation ${r.id}: ${recordsOf.get(r.id) ?? 0} idempotency records`);

  const events = (
    await sql<{ id: string | number; type: string; payload: unknown; processed_at: unknown; dead_lettered_at: unknown }>`
      select id, type, payload, processed_at, dead_lettered_at from ${t('outbox')}`.execute(db)
  ).rows.map((e) => {
    const payload = (typeof e.payload === 'string' ? JSON.parse(e.payload) : e.payload) as { reservationId?: string; reason?: string };
    return {
      id: String(e.id),
      type: e.type,
      reservationId: String(payload?.reservationId ?? '').toLowerCase(),
      reason: payload?.reason,
      processed: e.processed_at != null,
      dead: e.dead_lettered_at != null,
    };
  });
  const reservationEvents = events.filter((e) => e.type.startsWith('reservation.'));
  const writeOffs = events.filter((e) => e.type === 'item.written_off');
  for (const e of events) if (!e.type.startsWith('reservation.') && e.type !== 'item.written_off') violations.push(`event ${e.id}: unknown type ${e.type}`);
  if (input.writeOffReasons) {
    const seen = new Map<string, number>();
    for (const e of writeOffs) seen.set(String(e.reason), (seen.get(String(e.reason)) ?? 0) + 1);
    for (const reason of input.writeOffReasons) if (seen.get(reason) !== 1) violations.push(`write-off ${reason}: ${seen.get(reason) ?? 0} item.written_off events`);
    for (const reason of seen.keys()) if (!input.writeOffReasons.has(reason)) violations.push(`item.written_off event for a write-off no client was told of: ${reason}`);
  }
  const eventsOf = new Map<string, string[]>();
  for (const e of reservationEvents) eventsOf.set(e.reservationId, [...(eventsOf.get(e.reservationId) ?? []), e.type]);
  const reservationIds = new Set(reservations.map((r) => r.id));
  for (const r of reservations) {
    // Extensions come in any number (a retried extend may move it again): the rest is exact.
    const types = (eventsOf.get(r.id) ?? []).filter((type) => type !== 'reservation.extended').sort();
    const expected = ['reservation.created', EVENT_FOR_STATUS[r.status]].filter((x): x is string => x !== undefined).sort();
    if (types.join() !== expected.join()) violations.push(`reservation ${r.id} (${r.status}): events [${types.join(', ')}], expected [${expected.join(', ')}]`);
  }
  for (const e of reservationEvents) if (!reservationIds.has(e.reservationId)) violations.push(`event ${e.id} (${e.type}) for unknown reservation ${e.reservationId}`);

  let duplicatesDelivered = 0;
  if (input.delivered) {
    const seen = new Map<string, number>();
    for (const id of input.delivered) seen.set(id, (seen.get(id) ?? 0) + 1);
    for (const n of seen.values()) duplicatesDelivered += n - 1;
    const written = new Set(events.map((e) => e.id));
    for (const id of seen.keys()) if (!written.has(id)) violations.push(`event ${id} delivered, but no committed transaction wrote it`);
    for (const e of events) {
      if (e.processed && !seen.has(e.id)) violations.push(`event ${e.id} (${e.type}) marked processed but never delivered`);
      if (!input.outboxMayBePending && !e.processed && !e.dead) violations.push(`event ${e.id} (${e.type}) neither delivered nor dead-lettered`);
    }
  }

  return {
    violations,
    items: items.length,
    reservations: reservations.length,
    events: events.length,
    duplicatesDelivered,
    deadLettered: events.filter((e) => e.dead).length,
  };
}
