import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Drivers and Kysely come from the host application.
  external: ['kysely', 'mysql2', 'pg', '@electric-sql/pglite'],
});
