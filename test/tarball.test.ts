/**
 * The package as users get it: built, packed with `npm pack`, installed into a scratch project,
 * then used from ESM and CommonJS and type-checked under `strict` with the shipped declarations.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ReservationEngine, createEmbeddedDatabase } from '../src/index.js';
import { describeEachDialect, unique } from './support/db.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const version = (name: string) => JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version as string;
let scratch: string;

const run = (command: string, args: string[], cwd = scratch) => execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });

beforeAll(() => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'reservation-engine-tarball-'));
  run('npm', ['run', 'build'], ROOT);
  const tarball = run('npm', ['pack', '--silent', '--pack-destination', scratch], ROOT).trim().split('\n').at(-1)!;
  writeFileSync(path.join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
  // The host's own dependencies: Kysely and a driver (PGlite here), as the README says to install.
  const drivers = ['mysql2', 'pg', '@electric-sql/pglite'].map((name) => `${name}@${version(name)}`);
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(scratch, tarball), `kysely@${version('kysely')}`, ...drivers]);
}, 180_000);

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

it('ships dist, the README, the CHANGELOG and the LICENSE, and nothing else', () => {
  const files = run('tar', ['-tzf', path.join(scratch, `${pkg.name}-${pkg.version}.tgz`)]).trim().split('\n').sort();
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

it('runs from ESM', () => {
  writeFileSync(path.join(scratch, 'esm.mjs'), program("import { createEmbeddedDatabase, ReservationEngine, ReservationError, runOutboxBatch } from 'reservation-engine';"));
  expect(JSON.parse(run(process.execPath, ['esm.mjs']))).toEqual({ status: 'PENDING', scope: 'tenant', code: 'INSUFFICIENT_STOCK', delivered: 1 });
}, 60_000);

it('runs from CommonJS', () => {
  writeFileSync(
    path.join(scratch, 'cjs.cjs'),
    `(async () => {${program("const { createEmbeddedDatabase, ReservationEngine, ReservationError, runOutboxBatch } = require('reservation-engine');")}})();`,
  );
  expect(JSON.parse(run(process.execPath, ['cjs.cjs']))).toEqual({ status: 'PENDING', scope: 'tenant', code: 'INSUFFICIENT_STOCK', delivered: 1 });
}, 60_000);

it('type-checks a host program under strict with the shipped declarations (ESM and CommonJS resolution)', () => {
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
`,
  );
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  for (const moduleResolution of ['bundler', 'node16']) {
    const module = moduleResolution === 'bundler' ? 'esnext' : 'node16';
    const out = (() => {
      try {
        return run(process.execPath, [tsc, '--noEmit', '--strict', '--skipLibCheck', 'false', '--target', 'es2022', '--module', module, '--moduleResolution', moduleResolution, '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules/@types'), 'host.ts']);
      } catch (error) {
        return String((error as { stdout?: string }).stdout ?? error);
      }
    })();
    expect(out.trim()).toBe('');
  }
}, 60_000);

/** `reservation-engine …` as a user runs it: the bin the package installed, in the scratch project. */
function cli(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(path.join(scratch, 'node_modules/.bin/reservation-engine'), args, {
    cwd: scratch,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, DATABASE_URL: '', ...env },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

it('the command explains itself, and refuses what it cannot do in one line with exit code 2 (usage) or 1 (database)', () => {
  writeFileSync(path.join(scratch, 'noop.mjs'), 'export default async () => {};\n');
  writeFileSync(path.join(scratch, 'broken.mjs'), "import 'no-such-broker';\nexport default async () => {};\n");
  // As a user runs it: through npx, from the installed package.
  const viaNpx = spawnSync('npx', ['--no', '--', 'reservation-engine', '--help'], { cwd: scratch, encoding: 'utf8', timeout: 60_000 });
  expect({ code: viaNpx.status, stdout: viaNpx.stdout }).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: reservation-engine <command>/) });
  expect(cli(['--help'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: reservation-engine <command>/) });
  expect(cli(['expire', '--help'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: reservation-engine expire/) });
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
    [['migrate', '--database-url', 'pglite:./x', '--table-prefix', 'bad-prefix'], 2, /tablePrefix: must be 1–30 letters/],
    [['status', '--database-url', 'pglite:./x', '--dialect', 'mysql'], 2, /--dialect mysql contradicts the database URL, which is postgres/],
    [['work', '--database-url', 'pglite:./x', '--handler', './noop.mjs', '--handler-timeout-ms', '20000'], 2, /handlerTimeoutMs: must be at most half of leaseMs/],
    [['process-outbox', '--database-url', 'pglite:./x', '--handler', './broken.mjs'], 2, /cannot load the handler module \.\/broken\.mjs: Cannot find package 'no-such-broker'/],
  ];
  for (const [args, code, message] of failures) {
    const result = cli(args);
    expect({ args, code: result.code, stdout: result.stdout }).toEqual({ args, code, stdout: '' });
    expect(result.stderr).toMatch(message);
    // One line, no stack trace.
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/^reservation-engine: /);
  }
}, 120_000);

describeEachDialect('the reservation-engine command from the installed package', (t) => {
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

  it('migrate, expire, process-outbox (ES and CommonJS handlers), status, dead-letters and purge', async () => {
    // The servers' test databases are migrated already; the PGlite directory is new.
    const migrate = cli(['migrate'], { DATABASE_URL: url });
    expect(migrate).toMatchObject({ code: 0, stderr: '' });
    expect(migrate.stdout).toMatch(t.name === 'pglite' ? /^migrate: 4 migrations applied \(reservation_engine_0001_initial, / : /^migrate: 0 migrations applied, already up to date/);

    // Three reservations made an hour ago with the default 15-minute hold: all past it.
    await withDatabase(async (engine) => {
      const item = await engine.createItem({ sku: unique(), name: 'cli', availableQuantity: 10 });
      for (let i = 0; i < 3; i++) await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    });
    expect(JSON.parse(cli(['status', '--json', '--database-url', url]).stdout)).toMatchObject({ outboxDue: 3, expiryBacklog: 3, deadLetters: 0 });
    const expire = cli(['expire', '--limit', '2', '--database-url', url]);
    expect(expire).toMatchObject({ code: 0, stderr: '' });
    expect(expire.stdout).toMatch(/^expire: expired=3 failed=0 batches=2 in \d+\.\d\ds\n$/);

    // An ES module handler that fails every event (maxAttempts 1: dead-lettered), then a
    // CommonJS one that delivers, after the dead letters are re-armed.
    const log = path.join(dir, 'delivered.log');
    writeFileSync(path.join(scratch, 'failing.mjs'), "export default async () => { throw new Error('broker down'); };\n");
    // module.exports = fn, and a timer left running (a broker client would): the command still exits.
    writeFileSync(
      path.join(scratch, 'deliver.cjs'),
      `const fs = require('node:fs');\nsetInterval(() => {}, 1000);\nmodule.exports = async (event) => fs.appendFileSync(${JSON.stringify(log)}, event.id + '\\n');\n`,
    );
    const failing = cli(['process-outbox', '--handler', './failing.mjs', '--max-attempts', '1', '--database-url', url]);
    expect(failing).toMatchObject({ code: 0, stderr: '' });
    expect(failing.stdout).toMatch(/^process-outbox: processed=0 failed=0 dead-lettered=6 released=0 batches=2 in /);
    const listed = cli(['dead-letters', 'list', '--database-url', url]);
    expect(listed.stdout.trim().split('\n')).toHaveLength(7);
    expect(listed.stdout).toMatch(/^#\d+ reservation\.created attempts=1 dead-lettered=\S+ error="Error: broker down"$/m);
    expect(listed.stdout).toMatch(/^dead-letters: 6 listed$/m);
    expect(cli(['dead-letters', 'retry', '--all', '--database-url', url]).stdout).toBe('dead-letters: retried=6\n');
    const delivered = cli(['process-outbox', '--handler', './deliver.cjs', '--json', '--database-url', url]);
    expect(JSON.parse(delivered.stdout)).toMatchObject({ processed: 6, failed: 0, deadLettered: 0 });
    expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(6);
    expect(cli(['status', '--database-url', url]).stdout).toBe('status: outbox-pending=0 outbox-due=0 outbox-lag=0.0s dead-letters=0 expiry-backlog=0\n');

    // The long-running worker: it expires and delivers what comes in, and stops cleanly on SIGTERM.
    await withDatabase(async (engine) => {
      const item = await engine.createItem({ sku: unique(), name: 'worker', availableQuantity: 10 });
      await engine.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    });
    const workLog = path.join(dir, 'worked.log');
    writeFileSync(path.join(scratch, 'work.mjs'), `import fs from 'node:fs';\nexport const handler = async (event) => fs.appendFileSync(${JSON.stringify(workLog)}, event.type + '\\n');\n`);
    const worker = spawn(path.join(scratch, 'node_modules/.bin/reservation-engine'), ['work', '--handler', './work.mjs', '--idle-interval-ms', '50', '--database-url', url], {
      cwd: scratch,
      env: { ...process.env, DATABASE_URL: '' },
    });
    let stdout = '';
    let stderr = '';
    worker.stdout.on('data', (chunk) => (stdout += chunk));
    worker.stderr.on('data', (chunk) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => worker.on('exit', (code) => resolve(code)));
    // The reservation made an hour ago expires; both its events are delivered.
    await expect.poll(() => (existsSync(workLog) ? readFileSync(workLog, 'utf8') : ''), { timeout: 20_000, interval: 100 }).toBe('reservation.created\nreservation.expired\n');
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stdout).toMatch(/^work: processed=2 failed=0 dead-lettered=0 expired=1 in \d+\.\d\ds\n$/);
    expect(stderr).toMatch(/working \(SIGINT or SIGTERM to stop\)/);
    expect(stderr).toMatch(/SIGTERM: stopping after the batches in hand/);

    // Everything delivered more than 0 days ago goes; nothing is PENDING, so the keys go too.
    const purge = cli(['purge', '--processed-events-days', '0', '--idempotency-keys-hours', '0', '--database-url', url]);
    expect(purge).toMatchObject({ code: 0, stderr: '' });
    expect(purge.stdout).toMatch(/^purge: outbox-events=8 idempotency-keys=4 restock-keys=0 reservations=0 batches=1 in /);
  }, 120_000);
});
