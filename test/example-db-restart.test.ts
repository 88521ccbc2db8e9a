/**
 * The example server (examples/express/server.ts) run as its own process, as in production,
 * through database outages on a dedicated throwaway server: its connections ended by the
 * database (pg_terminate_backend / KILL CONNECTION), and the database crashing and coming back.
 * The process must stay up (an 'error' event nobody listens to would end it), answer 503 on
 * /health while the database is gone, and serve again once it is back, without a restart.
 *
 * A connection checked out of the pool is what used to kill it, so each outage strikes while a
 * confirmation waits for a row lock held here: its transaction holds a connection, and its
 * ROLLBACK goes to a connection that is going away.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { compiledScript } from './support/compile.js';
import { DIALECTS, unique } from './support/db.js';
import { type ThrowawayServer, findMariaDbServer, findPostgresBinaries, startMariaDb, startPostgres } from './support/servers.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const SERVER_SCRIPT = 'examples/express/server.ts';

/** Longest wait for one answer of the example server: /health gives up on the database after 2 s. */
const ANSWER_TIMEOUT_MS = 5_000;
/** Longest wait for the example to serve again once the database is back. */
const RECOVERY_TIMEOUT_MS = 15_000;
/** Longest wait for what happens in the background (a lock wait showing up, the worker's log line): far beyond how long it takes. */
const EVENTUALLY_MS = 15_000;

/** A session of our own on the database: holds a row lock, watches and ends the example's sessions. */
interface AdminSession {
  /** Locks the reservation's row in an open transaction, until {@link release}. */
  lockReservation(id: string): Promise<void>;
  /** Sessions waiting for a row lock. */
  lockWaiters(): Promise<number>;
  /** Ends every other session on the database (the example's), as an administrator would; returns how many. */
  endOtherSessions(): Promise<number>;
  /** Rolls back, releasing the lock. */
  release(): Promise<void>;
  close(): Promise<void>;
}

interface Variant {
  readonly name: 'mysql' | 'postgres';
  readonly installed: boolean;
  start(): Promise<ThrowawayServer>;
  /** The example's DATABASE_URL on a freshly started server. */
  databaseUrl(server: ThrowawayServer): Promise<string>;
  admin(databaseUrl: string): Promise<AdminSession>;
}

const MYSQL: Variant = {
  name: 'mysql',
  installed: findMariaDbServer() !== undefined,
  start: startMariaDb,
  async databaseUrl(server) {
    const admin = await mysql.createConnection({ uri: server.url });
    await admin.query('CREATE DATABASE shop');
    await admin.end();
    return `${server.url}shop`;
  },
  async admin(databaseUrl) {
    const connection = await mysql.createConnection({ uri: databaseUrl });
    // Its connection dies with the server: expected, and not to crash the test run.
    connection.on('error', () => {});
    return {
      async lockReservation(id) {
        await connection.beginTransaction();
        await connection.query('SELECT id FROM reservation_engine_reservations WHERE id = ? FOR UPDATE', [id]);
      },
      async lockWaiters() {
        const [rows] = await connection.query<mysql.RowDataPacket[]>(`SELECT count(*) AS n FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'`);
        return Number(rows[0]!.n);
      },
      async endOtherSessions() {
        const [rows] = await connection.query<mysql.RowDataPacket[]>('SELECT id FROM information_schema.processlist WHERE db = database() AND id <> connection_id()');
        // A session may end on its own meanwhile: KILL then fails with "Unknown thread id".
        for (const { id } of rows) await connection.query(`KILL CONNECTION ${Number(id)}`).catch(() => {});
        return rows.length;
      },
      release: () => connection.rollback(),
      close: () => connection.end().catch(() => {}),
    };
  },
};

const POSTGRES: Variant = {
  name: 'postgres',
  installed: findPostgresBinaries() !== undefined,
  // Commits acknowledged before the crash must still be there after it.
  start: () => startPostgres({ crashSafe: true }),
  databaseUrl: async (server) => server.url,
  async admin(databaseUrl) {
    const client = new pg.Client({ connectionString: databaseUrl });
    // Its connection dies with the server: expected, and not to crash the test run.
    client.on('error', () => {});
    await client.connect();
    return {
      async lockReservation(id) {
        await client.query('BEGIN');
        await client.query('SELECT id FROM reservation_engine_reservations WHERE id = $1 FOR UPDATE', [id]);
      },
      async lockWaiters() {
        const { rows } = await client.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
        return rows[0].n as number;
      },
      async endOtherSessions() {
        const { rows } = await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
        return rows.length;
      },
      release: async () => void (await client.query('ROLLBACK')),
      close: () => client.end().catch(() => {}),
    };
  },
};

/** `npm run example`, minus the npm and tsx wrappers: the child process is the server itself. */
class ExampleProcess {
  #output = '';
  readonly #exited: Promise<void>;
  readonly #killOnExit = () => this.child.kill('SIGKILL');

  private constructor(readonly child: ChildProcess) {
    const collect = (chunk: Buffer) => void (this.#output += chunk.toString('utf8'));
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    process.once('exit', this.#killOnExit);
  }

  /** Starts it on a free port; resolves with its URL once it listens. */
  static async start(databaseUrl: string): Promise<{ example: ExampleProcess; url: string }> {
    // Compiled once, as tsx would compile it at every start (./support/compile.ts).
    const child = spawn(process.execPath, [await compiledScript(SERVER_SCRIPT)], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: databaseUrl, PORT: '0', HOST: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const example = new ExampleProcess(child);
    const deadline = performance.now() + 30_000;
    for (;;) {
      const listening = / listening on (http:\/\/\S+)/.exec(example.output);
      if (listening) return { example, url: listening[1]! };
      if (!example.isAlive() || performance.now() > deadline) {
        await example.stop();
        throw new Error(`the example server did not start:\n${example.output}`);
      }
      await sleep(50);
    }
  }

  /** Everything it printed, stdout and stderr interleaved. */
  get output(): string {
    return this.#output;
  }

  isAlive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Fails the test, with the process's output (the crash's stack trace), if it has exited or
   * exits within a moment: a request cut off by its death can fail before Node reports the exit.
   */
  async expectAlive(): Promise<void> {
    await Promise.race([this.#exited, sleep(250)]);
    const { exitCode, signalCode } = this.child;
    expect(this.isAlive(), `the example server exited (code ${exitCode}, signal ${signalCode}). Its output:\n${this.#output}`).toBe(true);
  }

  /** Graceful shutdown, as a process manager asks for it; SIGKILL when that does not finish. */
  async stop(): Promise<void> {
    process.off('exit', this.#killOnExit);
    if (!this.isAlive()) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 12_000);
    await this.#exited;
    clearTimeout(timer);
  }
}

// Needs no database, so it runs in every run (a PGlite-only run too: then it is this file's only test).
it('a process that cannot start (a bad PORT) exits 1 at once and says why', async () => {
  const child = spawn(process.execPath, [await compiledScript(SERVER_SCRIPT)], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', PORT: 'eighty', HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  expect({ code, output }).toEqual({ code: 1, output: expect.stringMatching(/^failed to start: Error: PORT must be an integer from 0 to 65535, got "eighty"/) });
});

const required = (process.env.REQUIRE_DIALECTS ?? '').split(',').map((name) => name.trim());

for (const variant of [MYSQL, POSTGRES]) {
  const inRun = DIALECTS.some((dialect) => dialect.name === variant.name);
  // Missing binaries fail a run that requires the dialect (CI), as test/global-setup.ts does.
  const runnable = variant.installed || required.includes('all') || required.includes(variant.name);
  const skipped = !inRun ? 'not in this run' : !runnable ? 'no server binaries installed' : undefined;

  // Not in this run (TEST_DIALECTS) or not installed and not required: say so, define nothing.
  if (skipped !== undefined) {
    console.warn(`[example-db-restart] ${variant.name}: not run (${skipped})`);
    continue;
  }
  describe(`example server through database outages [${variant.name}]`, () => {
    let server: ThrowawayServer;
    let databaseUrl: string;
    let example: ExampleProcess;
    let exampleUrl: string;
    let itemId: number;

    const health = async () => (await fetch(`${exampleUrl}/health`, { signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS) })).status;
    const post = (path: string, body?: unknown, headers: Record<string, string> = {}) =>
      fetch(`${exampleUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });

    /** Reserves one unit of the item; returns the new reservation's id. */
    async function expectReserves(): Promise<string> {
      const res = await post('/reservations', { itemId, quantity: 1 }, { 'idempotency-key': unique('key') });
      const body = await res.text();
      expect(res.status, body).toBe(201);
      return (JSON.parse(body) as { id: string }).id;
    }

    /** Starts confirming a new reservation whose row `admin` has locked: the transaction waits, holding a connection. */
    async function confirmationHoldingAConnection(admin: AdminSession): Promise<{ status: Promise<number | Error> }> {
      const reservationId = await expectReserves();
      await admin.lockReservation(reservationId);
      const status = post(`/reservations/${reservationId}/confirm`).then(
        (res) => res.status,
        (error: Error) => error,
      );
      // Not faster: InnoDB refreshes its information_schema.innodb_trx snapshot only when it has
      // not been read for 100 ms.
      await expect.poll(() => admin.lockWaiters(), { timeout: EVENTUALLY_MS, interval: 150 }).toBeGreaterThanOrEqual(1);
      // Wrapped: an async function returning the promise itself would wait for it.
      return { status };
    }

    /**
     * The request the outage cut off still gets an answer: an error status, or 200 when the engine
     * retried it on a new connection. Not a failed fetch: that is the process dying under it.
     */
    async function expectAnswered(status: Promise<number | Error>): Promise<void> {
      const answered = await status;
      await example.expectAlive();
      expect(answered).toBeOneOf([200, 500, 503]);
    }

    beforeAll(async () => {
      server = await variant.start();
      databaseUrl = await variant.databaseUrl(server);
    });
    afterAll(() => server?.stop());

    // A process per test: one that died in a test does not fail the next.
    beforeEach(async () => {
      ({ example, url: exampleUrl } = await ExampleProcess.start(databaseUrl));
      const created = await post('/items', { sku: unique('sku'), name: 'T-shirt', availableQuantity: 100 });
      expect(created.status).toBe(201);
      itemId = ((await created.json()) as { id: number }).id;
    });
    afterEach(() => example?.stop());

    it('survives the database ending all its connections, one of them in a transaction', async () => {
      const admin = await variant.admin(databaseUrl);
      try {
        const { status } = await confirmationHoldingAConnection(admin);
        expect(await admin.endOtherSessions()).toBeGreaterThanOrEqual(1);
        // Lets a retry of the confirmation through.
        await admin.release();
        await expectAnswered(status);
      } finally {
        await admin.close();
      }
      await expect.poll(() => health().catch(() => 0), { timeout: RECOVERY_TIMEOUT_MS, interval: 200 }).toBe(200);
      await expectReserves();
      await example.expectAlive();
    });

    it('answers 503 while the database is down, and serves again once it is back', async () => {
      const admin = await variant.admin(databaseUrl);
      const { status } = await confirmationHoldingAConnection(admin).catch(async (error: unknown) => {
        await admin.close();
        throw error;
      });
      const crashedAt = example.output.length;
      await server.crash();
      await admin.close();
      await expectAnswered(status);

      const asked = performance.now();
      expect(await health()).toBe(503);
      expect(performance.now() - asked).toBeLessThan(ANSWER_TIMEOUT_MS);
      // An error answer, at once (503 where the engine recognises the lost connection).
      expect((await post('/reservations', { itemId, quantity: 1 }, { 'idempotency-key': unique('key') })).status).toBeOneOf([500, 503]);
      // The worker logs the outage and keeps going.
      await expect.poll(() => example.output.slice(crashedAt), { timeout: EVENTUALLY_MS }).toMatch(/(expire|outbox): batch failed/);
      await example.expectAlive();

      await server.start();
      await expect.poll(() => health().catch(() => 0), { timeout: RECOVERY_TIMEOUT_MS, interval: 200 }).toBe(200);
      // On the item made before the crash: its data came back with the server.
      const reservationId = await expectReserves();
      // The worker delivers again: the new reservation's event reaches the outbox handler.
      await expect.poll(() => example.output, { timeout: EVENTUALLY_MS }).toMatch(`reservation.created reservation=${reservationId} `);
      await example.expectAlive();
    });
  });
}
