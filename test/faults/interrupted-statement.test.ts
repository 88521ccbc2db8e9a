/**
 * One fault of scenario 1 (connection-kills.test.ts) made deterministic: a statement is cancelled
 * while it waits for a row lock inside the engine's transaction (MariaDB `KILL QUERY`, PostgreSQL
 * `pg_cancel_backend`), in `reserve` (its routine's UPDATE of the item) and in `confirm` (its
 * UPDATE of the reservation); the session lives on and goes back to the pool of one connection.
 * Whatever the engine then tells the caller must be what the database holds once that connection
 * is gone, and the connection's next calls must get the library's errors, never raw ones.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import pg from 'pg';
import type { Kysely } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ReservationEngine, ReservationError } from '../../src/index.js';
import { checkInvariants } from '../support/invariants.js';
import { connect, createDatabase, SERVERS, type ServerDialect } from './support/databases.js';
import { describeError, newKey } from './support/workload.js';

/** An admin session that holds the item's row lock and cancels the statement waiting for it. */
interface LockHolder {
  lockRow(table: 'items' | 'reservations', id: number | string): Promise<void>;
  /** The session waiting for a row lock, once there is one. */
  waiter(): Promise<number | undefined>;
  cancel(session: number): Promise<void>;
  release(): Promise<void>;
  close(): Promise<void>;
}

async function lockHolder(dialect: ServerDialect, url: string): Promise<LockHolder> {
  if (dialect === 'mysql') {
    const connection = await mysql.createConnection({ uri: url });
    return {
      async lockRow(table, id) {
        await connection.beginTransaction();
        await connection.query(`SELECT id FROM reservation_engine_${table} WHERE id = ? FOR UPDATE`, [id]);
      },
      async waiter() {
        // innodb_trx is a snapshot up to 100 ms old: it may still list a session of the previous test, gone since.
        const [rows] = await connection.query<mysql.RowDataPacket[]>(
          `SELECT t.trx_mysql_thread_id AS id FROM information_schema.innodb_trx t JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id
           WHERE t.trx_state = 'LOCK WAIT' AND p.db = database() AND p.id <> connection_id()`,
        );
        return rows[0] ? Number(rows[0].id) : undefined;
      },
      cancel: async (session) => void (await connection.query(`KILL QUERY ${session}`)),
      release: () => connection.rollback(),
      close: () => connection.end(),
    };
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return {
    async lockRow(table, id) {
      await client.query('BEGIN');
      await client.query(`SELECT id FROM reservation_engine_${table} WHERE id = $1 FOR UPDATE`, [id]);
    },
    async waiter() {
      const { rows } = await client.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
      return rows[0]?.pid as number | undefined;
    },
    cancel: async (session) => void (await client.query('SELECT pg_cancel_backend($1)', [session])),
    release: async () => void (await client.query('ROLLBACK')),
    close: () => client.end(),
  };
}

/** Waits for a session to wait for a row lock, and cancels its statement. */
async function cancelTheWaiter(holder: LockHolder): Promise<void> {
  let session: number | undefined;
  // InnoDB refreshes information_schema.innodb_trx only every 100 ms.
  for (let i = 0; i < 200 && session === undefined; i++) {
    session = await holder.waiter();
    if (session === undefined) await sleep(150);
  }
  expect(session, 'the engine never waited for the row lock').toBeDefined();
  await holder.cancel(session!);
  await holder.release();
}

/** Settles `promise` to its value or error, recording an error that is not the library's. */
async function settle<T>(promise: Promise<T>, rawErrors: string[], operation: string): Promise<T | undefined> {
  try {
    return await promise;
  } catch (error) {
    if (!(error instanceof ReservationError)) rawErrors.push(`${operation}: ${describeError(error)}`);
    return undefined;
  }
}

for (const target of SERVERS) {
  describe(`a statement cancelled inside the engine's transaction [${target.name}]`, () => {
    let url: string;
    let db: Kysely<any>;
    let checker: Kysely<any>;
    let holder: LockHolder;
    let engine: ReservationEngine;
    let itemId: number;
    const rawErrors: string[] = [];

    beforeEach(async () => {
      url ??= await createDatabase(target);
      // One connection: the engine's retry, and the next calls, get the connection whose statement was cancelled.
      db = connect(target.name, url, 1);
      checker = connect(target.name, url, 1);
      holder = await lockHolder(target.name, url);
      engine = new ReservationEngine({ db });
      itemId = (await engine.createItem({ sku: newKey('sku'), name: 'cancelled', availableQuantity: 10 })).id;
      rawErrors.length = 0;
    });
    afterEach(async () => {
      await holder.close().catch(() => {});
      await db.destroy().catch(() => {});
      await checker.destroy();
    });

    /** The connection's next calls, as the host's next requests would make them; then the connection goes, with anything it left uncommitted. */
    async function nextCallsThenDisconnect(key: string): Promise<string | undefined> {
      const replay = await settle(engine.reserve({ itemId, quantity: 1, idempotencyKey: key }), rawErrors, 'reserve (replay)');
      await settle(engine.restock({ itemId, quantity: 1, idempotencyKey: newKey('restock') }), rawErrors, 'restock');
      await db.destroy();
      return replay?.reservation.id;
    }

    async function expectInDatabase(key: string, acknowledged: Map<string, string>): Promise<void> {
      const report = await checkInvariants(checker, { received: new Map([[itemId, 11]]) });
      const rows = await checker.selectFrom('reservation_engine_reservations').select(['id', 'status']).where('idempotency_key', '=', key).execute();
      const violations = [...report.violations];
      for (const [id, status] of acknowledged) {
        const row = rows.find((r) => String(r.id).toLowerCase() === id.toLowerCase());
        if (!row) violations.push(`reservation ${id} was acknowledged (${status}) for key ${key} but is not in the database`);
        else if (status !== 'PENDING' && row.status !== status) violations.push(`reservation ${id}: ${status} acknowledged, ${row.status} in the database`);
      }
      expect(violations).toEqual([]);
      expect(rawErrors, 'errors that were not ReservationErrors').toEqual([]);
    }

    it('in reserve: acknowledges only a reservation that is committed', async () => {
      await holder.lockRow('items', itemId);
      const key = newKey('reserve');
      const reserving = settle(engine.reserve({ itemId, quantity: 1, idempotencyKey: key }), rawErrors, 'reserve');
      await cancelTheWaiter(holder);
      const acknowledged = new Map<string, string>();
      const first = await reserving;
      if (first) acknowledged.set(first.reservation.id, 'PENDING');
      const replayed = await nextCallsThenDisconnect(key);
      if (replayed) acknowledged.set(replayed, 'PENDING');
      await expectInDatabase(key, acknowledged);
    });

    it('in confirm: the confirmation acknowledged is the one committed', async () => {
      const key = newKey('reserve');
      const { reservation } = await engine.reserve({ itemId, quantity: 1, idempotencyKey: key });
      await holder.lockRow('reservations', reservation.id);
      const confirming = settle(engine.confirm(reservation.id), rawErrors, 'confirm');
      await cancelTheWaiter(holder);
      const acknowledged = new Map<string, string>([[reservation.id, (await confirming) ? 'CONFIRMED' : 'PENDING']]);
      await nextCallsThenDisconnect(key);
      await expectInDatabase(key, acknowledged);
    });
  });
}
