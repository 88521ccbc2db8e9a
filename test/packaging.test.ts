import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../src');
const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? files(path.join(dir, entry.name)) : entry.name.endsWith('.ts') ? [path.join(dir, entry.name)] : [],
  );

it('never imports a database driver statically: a MySQL user needs neither pg nor PGlite, and the reverse', () => {
  const offenders = files(SRC).flatMap((file) => {
    const text = readFileSync(file, 'utf8');
    return [...text.matchAll(/^\s*import\s[^;]*?from\s+['"](mysql2|pg|@electric-sql\/pglite)(\/[^'"]*)?['"]/gm)]
      .filter((m) => !/^\s*import\s+type\s/.test(m[0]))
      .map((m) => `${path.relative(SRC, file)}: ${m[0].trim()}`);
  });
  expect(offenders).toEqual([]);
  // The one driver the library loads itself, PGlite, is loaded lazily.
  expect(readFileSync(path.join(SRC, 'embedded/create-embedded-database.ts'), 'utf8')).toContain("await import('@electric-sql/pglite')");
});

it('declares the drivers as optional peer dependencies', () => {
  const pkg = JSON.parse(readFileSync(path.resolve(SRC, '../package.json'), 'utf8'));
  for (const driver of ['mysql2', 'pg', '@electric-sql/pglite']) {
    expect(pkg.peerDependencies[driver]).toBeDefined();
    expect(pkg.peerDependenciesMeta[driver]).toEqual({ optional: true });
    expect(pkg.dependencies?.[driver]).toBeUndefined();
  }
  expect(pkg.peerDependencies.kysely).toBeDefined();
});
