import { defineConfig } from 'tsup';

// Drivers, Kysely and the AMQP client come from the host application.
const external = ['kysely', 'mysql2', 'pg', '@electric-sql/pglite', 'amqplib'];

// `npm run build` empties dist/ first: these two builds run side by side and must not clean it.
export default defineConfig([
  {
    // The library and its `reservation-engine/rabbitmq` subpath.
    entry: { index: 'src/index.ts', rabbitmq: 'src/rabbitmq/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    // import.meta.url in the CommonJS build (the optional OpenTelemetry API is loaded with createRequire).
    shims: true,
    sourcemap: true,
    clean: false,
    target: 'node20',
    external,
  },
  {
    // The `reservation-engine` command: one ES module with its shebang.
    entry: { cli: 'src/cli/main.ts' },
    format: ['esm'],
    sourcemap: true,
    clean: false,
    target: 'node20',
    external,
  },
]);
