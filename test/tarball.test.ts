/**
 * The package as users get it: built, packed with `npm pack`, installed into a scratch project,
 * then used from ESM and CommonJS and type-checked under `strict` with the shipped declarations.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

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
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(scratch, tarball), `kysely@${version('kysely')}`, `@electric-sql/pglite@${version('@electric-sql/pglite')}`]);
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
