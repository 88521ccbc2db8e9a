/**
 * npm run bench -- [--quick] [--dialect mysql|postgres|pglite] [--duration <s>] [--only <scenario,…>] [--concurrency 1,8,…]
 *
 * Starts a throwaway database server as the tests do (or uses MYSQL_URL / POSTGRES_URL),
 * creates a fresh database, migrates it, runs the scenarios, prints the tables and writes
 * bench/results/<date>-<dialect>-<mode>[-<only>].{json,md}. Exits 1 when a correctness check
 * fails; a missed performance target is reported, not fatal. See bench/README.md.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BenchDatabase, type DialectName } from './lib/db.js';
import { collectRunInfo, describeDatabase, scenarioTable, targetsTable, writeResults } from './lib/report.js';
import { enableProfiling } from './lib/profiler.js';
import type { Mode, Scenario, ScenarioContext, ScenarioResult } from './lib/scenario.js';
import { evaluateTargets, type TargetResult } from './lib/targets.js';
import { expiry } from './scenarios/expiry.js';
import { backlog } from './scenarios/backlog.js';
import { cart } from './scenarios/cart.js';
import { embeddedMemory } from './scenarios/embedded-memory.js';
import { hotItem } from './scenarios/hot-item.js';
import { manyItems } from './scenarios/many-items.js';
import { outbox } from './scenarios/outbox.js';
import { rabbitmq } from './scenarios/rabbitmq.js';
import { replay } from './scenarios/replay.js';
import { scale } from './scenarios/scale.js';
import { soldOut } from './scenarios/sold-out.js';
import { telemetry } from './scenarios/telemetry.js';

const SCENARIOS: Scenario[] = [hotItem, manyItems, replay, soldOut, cart, outbox, expiry, backlog, scale, embeddedMemory, telemetry, rabbitmq];
const DIALECTS: DialectName[] = ['mysql', 'postgres', 'pglite'];

const USAGE = `Usage: npm run bench -- [options]
  --quick                 CI smoke run: 0.5 s per variant, concurrencies 1 and 8, drains of 2,000
  --dialect <name>        mysql (default), postgres or pglite
  --duration <seconds>    measured time per variant and concurrency (default 5, quick 0.5)
  --only <list>           scenarios, comma-separated: ${SCENARIOS.map((s) => s.id).join(', ')}
  --concurrency <list>    e.g. 32 or 1,8 (default 1,16,32,64; quick 1,8; pglite 1,8)
  --rounds <n>            split each variant's duration into n interleaved slices (default 3; quick 1)
  --variant <list>        only these variants, e.g. engine (for profiling; no ratios without the baseline)
  --profile               write a CPU profile of each variant's measured part to bench/results/profiles/
  --help`;

function parseCli(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      dialect: { type: 'string', default: 'mysql' },
      duration: { type: 'string' },
      only: { type: 'string' },
      concurrency: { type: 'string' },
      rounds: { type: 'string' },
      variant: { type: 'string' },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const fail = (message: string): never => {
    console.error(`${message}\n\n${USAGE}`);
    process.exit(2);
  };
  const dialect = values.dialect as DialectName;
  if (!DIALECTS.includes(dialect)) fail(`--dialect must be one of ${DIALECTS.join(', ')}`);
  const mode: Mode = values.quick ? 'quick' : 'full';
  const durationS = values.duration === undefined ? (mode === 'quick' ? 0.5 : 5) : Number(values.duration);
  if (!(durationS > 0)) fail('--duration must be a positive number of seconds');
  const only = values.only?.split(',').map((id) => id.trim());
  if (only?.some((id) => !SCENARIOS.some((s) => s.id === id))) fail(`--only must list scenarios among ${SCENARIOS.map((s) => s.id).join(', ')}`);
  const defaultConcurrencies = mode === 'quick' || dialect === 'pglite' ? [1, 8] : [1, 16, 32, 64];
  const concurrencies = values.concurrency === undefined ? defaultConcurrencies : values.concurrency.split(',').map(Number);
  if (concurrencies.some((c) => !Number.isInteger(c) || c < 1 || c > 256)) fail('--concurrency must list integers from 1 to 256');
  const rounds = values.rounds === undefined ? (mode === 'quick' ? 1 : 3) : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) fail('--rounds must be an integer from 1 to 20');
  // The first slice of a variant also opens its pool's connections; later slices only need a short one.
  const warmupS = Math.min(mode === 'quick' ? 0.2 : 0.5, durationS / rounds / 2);
  const variants = values.variant?.split(',').map((v) => v.trim());
  return { dialect, mode, durationS, warmupS, only, concurrencies, concurrencyGiven: values.concurrency !== undefined, variants, profile: values.profile, rounds };
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const cli = parseCli(args);
  const drainSize = cli.mode === 'quick' ? 2_000 : 50_000;
  const info = collectRunInfo(cli.mode, args, { durationS: cli.durationS, warmupS: cli.warmupS, rounds: cli.rounds, concurrencies: cli.concurrencies, drainSize });
  const startedAt = performance.now();
  const log = (message: string) => console.log(message);

  const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
  if (cli.profile) enableProfiling(path.join(resultsDir, 'profiles', `${info.startedAt.slice(0, 19).replace(/:/g, '')}-${cli.dialect}`));
  log(
    `reservation-engine bench: ${cli.dialect}, ${cli.mode} mode, ${cli.durationS} s per variant and concurrency${cli.rounds > 1 ? ` in ${cli.rounds} interleaved rounds` : ''}, concurrencies ${cli.concurrencies.join(', ')}`,
  );
  const bench = await BenchDatabase.open(cli.dialect);
  const results: ScenarioResult[] = [];
  const failures: string[] = [];
  try {
    info.database = await describeDatabase(bench);
    log(`database: ${bench.version} — ${bench.source}${bench.singleConnection ? ' (one connection: concurrent callers queue)' : ''}`);
    const ctx: ScenarioContext = {
      bench,
      mode: cli.mode,
      durationMs: cli.durationS * 1000,
      warmupMs: cli.warmupS * 1000,
      rounds: cli.rounds,
      concurrencies: cli.concurrencies,
      drainSize,
      outboxWorkers: [1, 2, 4],
      outboxBatches: [10, 100, 500],
      expiryWorkers: [1, 4],
      expiryBatches: [100, 1000],
      ...(cli.variants ? { variants: cli.variants } : {}),
      log,
    };
    for (const scenario of SCENARIOS.filter((s) => !cli.only || cli.only.includes(s.id))) {
      log(`\n== ${scenario.title} (${scenario.id})`);
      try {
        const result = await scenario.run(ctx);
        results.push(result);
        for (const row of result.rows) {
          for (const check of row.checks.filter((c) => !c.ok)) {
            failures.push(`${result.id} ${row.variant} ${JSON.stringify(row.config)}: ${check.name}: ${check.detail}`);
          }
        }
      } catch (error) {
        failures.push(`${scenario.id}: aborted: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
        log(`  ABORTED: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  } finally {
    await bench.close();
  }

  info.finishedAt = new Date().toISOString();
  info.wallSeconds = Math.round((performance.now() - startedAt) / 100) / 10;
  info.machine.loadAverageAtEnd = os.loadavg().map((n) => Math.round(n * 100) / 100);
  const targets: TargetResult[] | undefined = cli.mode === 'full' ? evaluateTargets(results, cli.concurrencies) : undefined;

  log('');
  for (const result of results) log(`## ${result.title}\n\n${scenarioTable(result)}\n`);
  if (targets) {
    log(`## Targets${cli.dialect === 'mysql' ? '' : ' (defined for MariaDB; for reference)'}\n\n${targetsTable(targets)}\n`);
  } else {
    log('Targets are evaluated in full mode only.');
  }
  const date = info.startedAt.slice(0, 10);
  const partial = [cli.profile ? 'profile' : undefined, cli.only?.join('+'), cli.variants?.join('+'), cli.concurrencyGiven ? `c${cli.concurrencies.join('+')}` : undefined].filter(Boolean).join('-');
  const baseName = `${date}-${cli.dialect}-${cli.mode}${partial ? `-${partial}` : ''}`;
  const files = writeResults(resultsDir, baseName, info, results, targets, failures);
  log(`results: ${files.md}, ${files.json} (${info.wallSeconds} s)`);
  if (failures.length) {
    console.error(`\n${failures.length} correctness failure(s):\n${failures.map((f) => `- ${f}`).join('\n')}`);
    return 1;
  }
  return 0;
}

// Let the throwaway server's exit handler run on Ctrl-C.
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
