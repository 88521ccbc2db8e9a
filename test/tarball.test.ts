/**
 * The package as users get it: built, packed with `npm pack`, installed into a scratch project,
 * then used from ESM and CommonJS and type-checked under `strict` with the shipped declarations.
 *
 * The tests run at the same time (they mostly wait for child processes: every call is
 * asynchronous), after the one build, pack and install of the run.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, it } from 'vitest';
import type { Kysely } from 'kysely';
import { ReservationEngine, createEmbeddedDatabase } from '../src/index.js';
import { describeEachDialectConcurrently, unique } from './support/db.js';
import { makeOnce } from './support/shared.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const version = (name: string) => JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version as string;
let scratch: string;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of the processes that run the package: PGlite's WebAssembly compiled by V8's
 * baseline compiler only, which is 40% less CPU for a process that lives a second or two
 * (see ./support/wasm-baseline-only.cjs). How fast it runs, not what it does.
 */
const packageEnv = (env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv => ({
  ...env,
  NODE_OPTIONS: `${env.NODE_OPTIONS ?? ''} --require ${JSON.stringify(path.join(ROOT, 'test/support/wasm-baseline-only.cjs'))}`.trim(),
});

/** Runs a command to its end; resolves with its exit code and output, whatever the code. */
async function outcome(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Outcome> {
  try {
    const { stdout, stderr } = await promisify(execFile)(command, args, {
      cwd: scratch,
      encoding: 'utf8',
      maxBuffer: 16 * 1024 * 1024,
      timeout: 120_000,
      ...options,
      env: packageEnv(options.env),
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string; message: string };
    if (typeof failed.code !== 'number') throw error; // not started, or killed by the timeout
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

/** Runs a command that must succeed; resolves with its stdout. */
async function run(command: string, args: string[], cwd = scratch): Promise<string> {
  const result = await outcome(command, args, { cwd });
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited with code ${result.code}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

beforeAll(async () => {
  // Built, packed and installed once per run, whichever test file asks first.
  scratch = await makeOnce('package', async (dir) => {
    await run('npm', ['run', 'build'], ROOT);
    const tarball = (await run('npm', ['pack', '--silent', '--pack-destination', dir], ROOT)).trim().split('\n').at(-1)!;
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
    // The host's own dependencies: Kysely and a driver (PGlite here), as the README says to install.
    const drivers = ['mysql2', 'pg', '@electric-sql/pglite'].map((name) => `${name}@${version(name)}`);
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(dir, tarball), `kysely@${version('kysely')}`, ...drivers], dir);
  });
}, 180_000);

/** `reservation-engine …` as a user runs it: the bin the package installed, in the scratch project. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return outcome(path.join(scratch, 'node_modules/.bin/reservation-engine'), args, { timeout: 60_000, env: { ...process.env, DATABASE_URL: '', ...env } });
}

// First: the longest (PGlite's run is a dozen processes, one after another, each starting PGlite).
describeEachDialectConcurrently('the reservation-engine command from the installed package', (t) => {
  /** The database the command works on: the test's (server dialects) or a PGlite directory (one process at a time). */
  let url: string;
  let dir: string;
  const withDatabase = async <T>(work: (engine: ReservationEngine) => Promise<T>): Promise<T> => {
    if (t.name !== 'pglite') return work(new ReservationEngine({ db: t.db, clock: () => new Date(Date.now() - 3_600_000) }));
    const db = await createEmbeddedDatabase({ dataDir: dir });
    try {
      return await work(new ReservationEngine({ db, clock: () => new Date(Date.now() - 3_600_000) }));
    } finally {
      await db.destroy();
    }
  };

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'reservation-engine-cli-'));
    url = t.name === 'pglite' ? `pglite:${dir}` : t.url;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('migrate, expire, process-outbox (ES and CommonJS handlers), status, dead-letters and purge', async ({ expect }) => {
    // The servers' test databases are migrated already; the PGlite directory is new.
    const migrate = await cli(['migrate'], { DATABASE_URL: url });
    expect(migrate).toMatchObject({ code: 0, stderr: '' });
    expect(migrate.stdout).toMatch(t.name === 'pglite' ? /^migrate: 6 migrations applied \(reservation_engine_0001_initial, / : /^migrate: 0 migrations applied, already up to date/);

    // Three reservations made an hour ago with the default 15-minute hold: all past it.
    await withDatabase(async (engine) => {
      const item = await engine.createItem({ sku: unique(), name: 'cli', availableQuantity: 10 });
      for (let i = 0; i < 3; i++) await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    });
    expect(JSON.parse((await cli(['status', '--json', '--database-url', url])).stdout)).toMatchObject({ outboxDue: 3, expiryBacklog: 3, deadLetters: 0 });
    const expire = await cli(['expire', '--limit', '2', '--database-url', url]);
    expect(expire).toMatchObject({ code: 0, stderr: '' });
    expect(expire.stdout).toMatch(/^expire: expired=3 failed=0 batches=2 in \d+\.\d\ds\n$/);

    // An ES module handler that fails every event (maxAttempts 1: dead-lettered), then a
    // CommonJS one that delivers, after the dead letters are re-armed. (Handler modules are
    // named per dialect: the dialects' runs share the scratch project, at the same time.)
    const log = path.join(dir, 'delivered.log');
    writeFileSync(path.join(scratch, `failing-${t.name}.mjs`), "export default async () => { throw new Error('broker down'); };\n");
    // module.exports = fn, and a timer left running (a broker client would): the command still exits.
    writeFileSync(
      path.join(scratch, `deliver-${t.name}.cjs`),
      `const fs = require('node:fs');\nsetInterval(() => {}, 1000);\nmodule.exports = async (event) => fs.appendFileSync(${JSON.stringify(log)}, event.id + '\\n');\n`,
    );
    const failing = await cli(['process-outbox', '--handler', `./failing-${t.name}.mjs`, '--max-attempts', '1', '--database-url', url]);
    expect(failing).toMatchObject({ code: 0, stderr: '' });
    expect(failing.stdout).toMatch(/^process-outbox: processed=0 failed=0 dead-lettered=6 released=0 batches=2 in /);
    const listed = await cli(['dead-letters', 'list', '--database-url', url]);
    expect(listed.stdout.trim().split('\n')).toHaveLength(7);
    expect(listed.stdout).toMatch(/^#\d+ reservation\.created attempts=1 dead-lettered=\S+ error="Error: broker down"$/m);
    expect(listed.stdout).toMatch(/^dead-letters: 6 listed$/m);
    expect((await cli(['dead-letters', 'retry', '--all', '--database-url', url])).stdout).toBe('dead-letters: retried=6\n');
    const delivered = await cli(['process-outbox', '--handler', `./deliver-${t.name}.cjs`, '--json', '--database-url', url]);
    expect(JSON.parse(delivered.stdout)).toMatchObject({ processed: 6, failed: 0, deadLettered: 0 });
    expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(6);
    expect((await cli(['status', '--database-url', url])).stdout).toBe('status: outbox-pending=0 outbox-due=0 outbox-lag=0.0s dead-letters=0 expiry-backlog=0\n');

    // The long-running worker: it expires and delivers what comes in, and stops cleanly on SIGTERM.
    await withDatabase(async (engine) => {
      const item = await engine.createItem({ sku: unique(), name: 'worker', availableQuantity: 10 });
      await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    });
    const workLog = path.join(dir, 'worked.log');
    writeFileSync(path.join(scratch, `work-${t.name}.mjs`), `import fs from 'node:fs';\nexport const handler = async (event) => fs.appendFileSync(${JSON.stringify(workLog)}, event.type + '\\n');\n`);
    const worker = spawn(path.join(scratch, 'node_modules/.bin/reservation-engine'), ['work', '--handler', `./work-${t.name}.mjs`, '--idle-interval-ms', '50', '--database-url', url], {
      cwd: scratch,
      env: packageEnv({ ...process.env, DATABASE_URL: '' }),
    });
    let stdout = '';
    let stderr = '';
    worker.stdout.on('data', (chunk) => (stdout += chunk));
    worker.stderr.on('data', (chunk) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => worker.on('exit', (code) => resolve(code)));
    try {
      // The reservation made an hour ago expires; both its events are delivered.
      await expect.poll(() => (existsSync(workLog) ? readFileSync(workLog, 'utf8') : ''), { timeout: 20_000, interval: 100 }).toBe('reservation.created\nreservation.expired\n');
    } finally {
      // Stopped when that fails too: it would outlive the run.
      worker.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stdout).toMatch(/^work: processed=2 failed=0 dead-lettered=0 expired=1 in \d+\.\d\ds\n$/);
    expect(stderr).toMatch(/working \(SIGINT or SIGTERM to stop\)/);
    expect(stderr).toMatch(/SIGTERM: stopping after the batches in hand/);

    // Everything delivered more than 0 days ago goes; nothing is PENDING, so the keys go too.
    const purge = await cli(['purge', '--processed-events-days', '0', '--idempotency-keys-hours', '0', '--database-url', url]);
    expect(purge).toMatchObject({ code: 0, stderr: '' });
    expect(purge.stdout).toMatch(/^purge: outbox-events=8 idempotency-keys=4 restock-keys=0 reservations=0 batches=1 in /);

    // The audit: clean, then an item whose stock was changed behind the engine's back.
    const audited = await cli(['audit', '--database-url', url]);
    expect(audited).toMatchObject({ code: 0, stderr: '' });
    expect(audited.stdout).toMatch(/^audit: items=2 discrepancies=0 in \d+\.\d\ds\n$/);
    const damaged = await withDatabase(async (engine) => {
      const item = await engine.createItem({ sku: unique(), name: 'audit', availableQuantity: 5 });
      await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: unique() });
      return item;
    });
    const damage = (db: Kysely<any>) => db.updateTable('reservation_engine_items').set({ available_quantity: 4 }).where('id', '=', damaged.id).execute();
    if (t.name !== 'pglite') await damage(t.db.withoutPlugins());
    else {
      const db = await createEmbeddedDatabase({ dataDir: dir });
      await damage(db);
      await db.destroy();
    }
    const found = await cli(['audit', '--database-url', url, '--item', String(damaged.id), '--item', '999999']);
    expect(found).toMatchObject({ code: 3, stderr: '' });
    expect(found.stdout).toBe(
      `item ${damaged.id} (${JSON.stringify(damaged.sku)}): received 5 − written off 0 ≠ available 4 + PENDING 2 + CONFIRMED 0: 1 unit too many ` +
        `[received=5 written-off=0 available=4 held=2 pending=2 confirmed=0]\n` +
        (found.stdout.match(/^audit: .*$/m)?.[0] ?? 'no summary') + '\n',
    );
    expect(found.stdout).toMatch(/^audit: items=1 discrepancies=1 unknown-items=999999 in /m);
    expect(JSON.parse((await cli(['audit', '--json', '--database-url', url])).stdout)).toMatchObject({ ok: false, itemsChecked: 3, discrepancies: [{ itemId: damaged.id, difference: -1 }] });
  }, 120_000);
});

it.concurrent('ships dist, the README, the CHANGELOG and the LICENSE, and nothing else', async ({ expect }) => {
  const files = (await run('tar', ['-tzf', path.join(scratch, `${pkg.name}-${pkg.version}.tgz`)])).trim().split('\n').sort();
  expect(files).toContain('package/LICENSE');
  expect(files).toContain('package/README.md');
  expect(files).toContain('package/dist/index.d.ts');
  expect(files).toContain('package/dist/index.d.cts');
  expect(files.filter((f) => !/^package\/(dist\/|README\.md$|CHANGELOG\.md$|LICENSE$|package\.json$)/.test(f))).toEqual([]);
});

const program = (load: string) => `
${load}
const db = await createEmbeddedDatabase({ tablePrefix: 'shop_' });
const engine = new ReservationEngine({ db, tablePrefix: 'shop_' });
const item = await engine.createItem({ sku: 'S-1', name: 'n', availableQuantity: 2 });
const { reservation } = await engine.reserve({ itemId: item.id, quantity: 2, idempotencyKey: 'k', idempotencyScope: 'tenant' });
let code;
try { await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: 'other' }); } catch (error) { code = error instanceof ReservationError && error.code; }
const delivered = await runOutboxBatch({ db, tablePrefix: 'shop_', handler: () => {} });
console.log(JSON.stringify({ status: reservation.status, scope: reservation.idempotencyScope, code, delivered: delivered.processed }));
await db.destroy();
`;

it.concurrent('runs from ESM', async ({ expect }) => {
  writeFileSync(path.join(scratch, 'esm.mjs'), program("import { createEmbeddedDatabase, ReservationEngine, ReservationError, runOutboxBatch } from 'reservation-engine';"));
  expect(JSON.parse(await run(process.execPath, ['esm.mjs']))).toEqual({ status: 'PENDING', scope: 'tenant', code: 'INSUFFICIENT_STOCK', delivered: 1 });
}, 60_000);

it.concurrent('runs from CommonJS', async ({ expect }) => {
  writeFileSync(
    path.join(scratch, 'cjs.cjs'),
    `(async () => {${program("const { createEmbeddedDatabase, ReservationEngine, ReservationError, runOutboxBatch } = require('reservation-engine');")}})();`,
  );
  expect(JSON.parse(await run(process.execPath, ['cjs.cjs']))).toEqual({ status: 'PENDING', scope: 'tenant', code: 'INSUFFICIENT_STOCK', delivered: 1 });
}, 60_000);

it.concurrent('type-checks a host program under strict with the shipped declarations (ESM and CommonJS resolution)', async ({ expect }) => {
  writeFileSync(
    path.join(scratch, 'host.ts'),
    `import { Kysely } from 'kysely';
import {
  ReservationEngine, ValidationError, InvalidStateError, toProblem,
  type ReservationErrorCode, type ReservationStatus, type WriteOptions, type ExpireBatchResult, type ReservationPage, type ItemsTable,
} from 'reservation-engine';
declare const db: Kysely<any>;
const engine = new ReservationEngine({ db, tablePrefix: 'shop_', dialect: 'postgres' });
export async function handle(trx: Kysely<any>): Promise<ReservationStatus> {
  const options: WriteOptions = { trx };
  try {
    const { reservation } = await engine.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'k' }, options);
    return reservation.status;
  } catch (error) {
    if (error instanceof ValidationError) console.log(error.issues.map((issue) => issue.path + ': ' + issue.message));
    if (error instanceof InvalidStateError) {
      const code: 'INVALID_STATE' | 'RESERVATION_EXPIRED' = error.code;
      const status: ReservationStatus = error.currentStatus;
      console.log(code, status);
    }
    const code: ReservationErrorCode | string = toProblem(error).code;
    throw new Error(code);
  }
}
export type Checks = [ExpireBatchResult['failed'], ReservationPage['next'], ItemsTable['held_quantity']];
// The subpath's declarations, without amqplib installed: they name none of its types.
import { consumeOnce, createRabbitMqRelay, type RabbitMqRelay } from 'reservation-engine/rabbitmq';
export const relay: RabbitMqRelay = createRabbitMqRelay({ url: 'amqp://localhost', exchange: 'reservations' });
export const once = (trx: Kysely<any>) => consumeOnce({ db: trx, messageId: 'm-1', handler: async (inner) => inner.selectFrom('orders').selectAll().execute() });
`,
  );
  // A CommonJS host (require condition: index.d.cts), next to the ES module one (index.d.ts).
  writeFileSync(
    path.join(scratch, 'host.cts'),
    `import type { Kysely } from 'kysely';
import { ReservationEngine, ReservationError, toProblem, type ReservationStatus, type ReserveResult } from 'reservation-engine';
import { createRabbitMqRelay, type OutboxBatchHandler } from 'reservation-engine/rabbitmq';
export const batchHandler: OutboxBatchHandler = createRabbitMqRelay({ url: 'amqp://localhost', exchange: 'reservations' }).batchHandler;
declare const db: Kysely<any>;
const engine = new ReservationEngine({ db });
export async function handle(): Promise<ReservationStatus | number> {
  try {
    const result: ReserveResult = await engine.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'k' });
    return result.reservation.status;
  } catch (error) {
    if (error instanceof ReservationError) return error.status;
    return toProblem(error).status;
  }
}
`,
  );
  // Each program as \`tsc --noEmit --strict --skipLibCheck false --target es2022 --types node\` checks
  // it (see ./support/check-types.mjs), in processes of their own, side by side.
  const check = (files: string[], module: 'esnext' | 'node16', moduleResolution: 'bundler' | 'node16') =>
    outcome(process.execPath, [
      path.join(ROOT, 'test/support/check-types.mjs'),
      JSON.stringify({ cwd: scratch, files, module, moduleResolution, typeRoots: [path.join(ROOT, 'node_modules/@types')] }),
    ]);
  const [bundler, node16] = await Promise.all([check(['host.ts'], 'esnext', 'bundler'), check(['host.ts', 'host.cts'], 'node16', 'node16')]);
  for (const result of [bundler, node16]) expect({ code: result.code, diagnostics: result.stdout.trim() }).toEqual({ code: 0, diagnostics: '' });
  // Both entry points' declarations were checked, not skipped as a library's.
  expect(JSON.parse(bundler.stderr)).toEqual(expect.arrayContaining(['host.ts', 'node_modules/reservation-engine/dist/index.d.ts', 'node_modules/reservation-engine/dist/rabbitmq.d.ts']));
  expect(JSON.parse(node16.stderr)).toEqual(
    expect.arrayContaining([
      'host.ts',
      'host.cts',
      'node_modules/reservation-engine/dist/index.d.ts',
      'node_modules/reservation-engine/dist/index.d.cts',
      'node_modules/reservation-engine/dist/rabbitmq.d.cts',
    ]),
  );
});

it.concurrent('reservation-engine/rabbitmq loads from ESM and CommonJS without amqplib installed, and its inbox works', async ({ expect }) => {
  // amqplib is an optional peer: the scratch project does not have it, so a relay with a url fails
  // its batches with MISSING_DEPENDENCY (and would connect with it installed).
  const program = (load: string) => `${load}
let config;
try { createRabbitMqRelay({ exchange: 'reservations' }); } catch (error) { config = error instanceof ConfigurationError && error.code; }
const relay = createRabbitMqRelay({ url: 'amqp://127.0.0.1:1', exchange: 'reservations' });
const missing = await relay.batchHandler([], { signal: AbortSignal.timeout(5000) }).then(() => 'published', (error) => error.code);
await relay.close();
const db = await createEmbeddedDatabase();
await migrateInbox(db);
const effect = () => 'effect';
const first = await consumeOnce({ db, messageId: 'm-1', handler: effect });
const again = await consumeOnce({ db, messageId: 'm-1', handler: effect });
await db.destroy();
console.log(JSON.stringify({ config, missing, first, again }));`;
  writeFileSync(
    path.join(scratch, 'rabbitmq-esm.mjs'),
    program("import { ConfigurationError, createEmbeddedDatabase } from 'reservation-engine';\nimport { consumeOnce, createRabbitMqRelay, migrateInbox } from 'reservation-engine/rabbitmq';"),
  );
  writeFileSync(
    path.join(scratch, 'rabbitmq-cjs.cjs'),
    `(async () => {${program("const { ConfigurationError, createEmbeddedDatabase } = require('reservation-engine');\nconst { consumeOnce, createRabbitMqRelay, migrateInbox } = require('reservation-engine/rabbitmq');")}})();`,
  );
  const expected = { config: 'INVALID_CONFIGURATION', missing: 'MISSING_DEPENDENCY', first: { duplicate: false, result: 'effect' }, again: { duplicate: true } };
  const [esm, cjs] = await Promise.all([run(process.execPath, ['rabbitmq-esm.mjs']), run(process.execPath, ['rabbitmq-cjs.cjs'])]);
  expect(JSON.parse(esm)).toEqual(expected);
  expect(JSON.parse(cjs)).toEqual(expected);
}, 60_000);

it.concurrent('the command explains itself, and refuses what it cannot do in one line with exit code 2 (usage) or 1 (database)', async ({ expect }) => {
  writeFileSync(path.join(scratch, 'noop.mjs'), 'export default async () => {};\n');
  writeFileSync(path.join(scratch, 'broken.mjs'), "import 'no-such-broker';\nexport default async () => {};\n");
  // As a user runs it: through npx, from the installed package.
  const viaNpx = await outcome('npx', ['--no', '--', 'reservation-engine', '--help'], { timeout: 60_000 });
  expect({ code: viaNpx.code, stdout: viaNpx.stdout }).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: reservation-engine <command>/) });
  expect(await cli(['--help'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: reservation-engine <command>/) });
  expect(await cli(['expire', '--help'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: reservation-engine expire/) });
  const failures: Array<[string[], number, RegExp]> = [
    [['status'], 2, /no database: pass --database-url or set DATABASE_URL/],
    [['launch'], 2, /unknown command "launch"/],
    [['status', '--database-url', 'oracle://db/x'], 2, /unsupported database URL scheme "oracle"/],
    [['status', '--database-url', 'pglite:'], 2, /a pglite: URL needs a directory/],
    [['expire', '--database-url', 'pglite:./x', '--limit', 'lots'], 2, /--limit must be a number from 1 to 10000, got "lots"/],
    [['expire', '--database-url', 'pglite:./x', '--verbose'], 2, /Unknown option '--verbose'/],
    [['process-outbox', '--database-url', 'pglite:./x'], 2, /process-outbox needs --handler <module>/],
    [['work', '--database-url', 'pglite:./x', '--handler', './missing.cjs'], 2, /cannot load the handler module \.\/missing\.cjs: not found/],
    [['process-outbox', '--database-url', 'pglite:./x', '--handler', './missing.mjs'], 2, /cannot load the handler module \.\/missing\.mjs: not found/],
    [['status', '--database-url', 'mysql://root@127.0.0.1:1/shop'], 1, /cannot reach the database: connect ECONNREFUSED 127\.0\.0\.1:1/],
    [['status', '--database-url', 'postgres://x@127.0.0.1:1/shop'], 1, /cannot reach the database: connect ECONNREFUSED 127\.0\.0\.1:1/],
    [['dead-letters', 'retry', '--database-url', 'pglite:./x'], 2, /dead-letters retry needs --id <id> \(repeatable\) or --all/],
    [['audit', '--database-url', 'pglite:./x', '--item', 'seven'], 2, /--item must be a number from 1 to 2147483647, got "seven"/],
    [['migrate', '--database-url', 'pglite:./x', '--table-prefix', 'bad-prefix'], 2, /tablePrefix: must be 1–30 letters/],
    [['status', '--database-url', 'pglite:./x', '--dialect', 'mysql'], 2, /--dialect mysql contradicts the database URL, which is postgres/],
    [['work', '--database-url', 'pglite:./x', '--handler', './noop.mjs', '--handler-timeout-ms', '20000'], 2, /handlerTimeoutMs: must be at most half of leaseMs/],
    [['process-outbox', '--database-url', 'pglite:./x', '--handler', './broken.mjs'], 2, /cannot load the handler module \.\/broken\.mjs: Cannot find package 'no-such-broker'/],
  ];
  // Side by side: each is a process of its own.
  const results = await Promise.all(failures.map(([args]) => cli(args)));
  for (const [i, [args, code, message]] of failures.entries()) {
    const result = results[i]!;
    expect({ args, code: result.code, stdout: result.stdout }).toEqual({ args, code, stdout: '' });
    expect(result.stderr).toMatch(message);
    // One line, no stack trace.
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/^reservation-engine: /);
  }
}, 120_000);
