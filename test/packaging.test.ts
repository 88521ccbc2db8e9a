import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../src');
const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? files(path.join(dir, entry.name)) : entry.name.endsWith('.ts') ? [path.join(dir, entry.name)] : [],
  );

it('never imports a database driver or amqplib statically: a MySQL user needs neither pg nor PGlite, and the reverse', () => {
  const offenders = files(SRC).flatMap((file) => {
    const text = readFileSync(file, 'utf8');
    return [...text.matchAll(/^\s*import\s[^;]*?from\s+['"](mysql2|pg|@electric-sql\/pglite|amqplib)(\/[^'"]*)?['"]/gm)]
      .filter((m) => !/^\s*import\s+type\s/.test(m[0]))
      .map((m) => `${path.relative(SRC, file)}: ${m[0].trim()}`);
  });
  expect(offenders).toEqual([]);
  // The one driver the library loads itself, PGlite, is loaded lazily.
  expect(readFileSync(path.join(SRC, 'embedded/create-embedded-database.ts'), 'utf8')).toContain("await import('@electric-sql/pglite')");
  // So is amqplib, by the relay, and only when given a url.
  expect(readFileSync(path.join(SRC, 'rabbitmq/amqp.ts'), 'utf8')).toContain("await import('amqplib')");
});

it('declares the drivers as optional peer dependencies', () => {
  const pkg = JSON.parse(readFileSync(path.resolve(SRC, '../package.json'), 'utf8'));
  for (const driver of ['mysql2', 'pg', '@electric-sql/pglite', 'amqplib']) {
    expect(pkg.peerDependencies[driver]).toBeDefined();
    expect(pkg.peerDependenciesMeta[driver]).toEqual({ optional: true });
    expect(pkg.dependencies?.[driver]).toBeUndefined();
  }
  expect(pkg.peerDependencies.kysely).toBeDefined();
});

it('exports exactly the documented public surface: nothing internal', async () => {
  const lib = await import('../src/index.js');
  expect(Object.keys(lib).sort()).toEqual(
    [
      'ConfigurationError',
      'DEFAULT_TABLE_PREFIX',
      'DuplicateSkuError',
      'HoldLimitExceededError',
      'IdempotencyConflictError',
      'InsufficientStockError',
      'InvalidStateError',
      'MAX_AVAILABLE_QUANTITY',
      'MAX_BATCH_LIMIT',
      'MAX_LINES',
      'MAX_QUANTITY',
      'MAX_TTL_SECONDS',
      'NotFoundError',
      'OutcomeUnknownError',
      'PGliteDialect',
      'PROBLEM_CONTENT_TYPE',
      'ReservationEngine',
      'ReservationError',
      'TransactionConflictError',
      'UnsupportedDatabaseError',
      'ValidationError',
      'createEmbeddedDatabase',
      'expireBatch',
      'getBacklog',
      'listDeadLetters',
      'migrateToLatest',
      'observeBacklog',
      'purgeBatch',
      'retryDeadLetters',
      'reservationEngineMigrationProvider',
      'reservationEngineMigrations',
      'runOutboxBatch',
      'startWorker',
      'toProblem',
    ].sort(),
  );
  // Every code the library throws is in the README's error table.
  const readme = readFileSync(path.resolve(SRC, '../README.md'), 'utf8');
  const codes = readFileSync(path.join(SRC, 'errors.ts'), 'utf8').match(/export type ReservationErrorCode =([\s\S]*?);/)![1]!.match(/'([A-Z_]+)'/g)!;
  expect(codes.length).toBeGreaterThanOrEqual(14);
  for (const code of codes) expect(readme).toContain(`\`${code.slice(1, -1)}\``);
});

it('reservation-engine/rabbitmq exports the relay and the inbox, and nothing internal', async () => {
  const rabbitmq = await import('../src/rabbitmq/index.js');
  expect(Object.keys(rabbitmq).sort()).toEqual(['consumeOnce', 'createRabbitMqRelay', 'migrateInbox']);
  const pkg = JSON.parse(readFileSync(path.resolve(SRC, '../package.json'), 'utf8'));
  expect(pkg.exports['./rabbitmq']).toEqual({
    import: { types: './dist/rabbitmq.d.ts', default: './dist/rabbitmq.js' },
    require: { types: './dist/rabbitmq.d.cts', default: './dist/rabbitmq.cjs' },
  });
});

it('ships a LICENSE matching package.json', () => {
  const pkg = JSON.parse(readFileSync(path.resolve(SRC, '../package.json'), 'utf8'));
  expect(pkg.license).toBe('MIT');
  expect(pkg.files).toContain('LICENSE');
  expect(readFileSync(path.resolve(SRC, '../LICENSE'), 'utf8')).toMatch(/^MIT License/);
});
