#!/usr/bin/env node
/**
 * The `reservation-engine` command: the library's batch jobs from a shell, cron or systemd.
 * Every command prints one summary line (or JSON with --json) and exits 0; a failure prints one
 * line on stderr — never a stack trace — and exits 1 (2 for a usage error). `audit` exits 3 when
 * it found items whose stock does not add up.
 */
import { existsSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { expireBatch } from '../expiry/expire-batch.js';
import { migrateToLatest } from '../migrations/index.js';
import { getBacklog } from '../operations/backlog.js';
import { listDeadLetters, retryDeadLetters } from '../outbox/dead-letters.js';
import { type OutboxHandler, runOutboxBatch } from '../outbox/run-outbox-batch.js';
import { purgeBatch } from '../retention/purge-batch.js';
import { startWorker } from '../worker/start-worker.js';
import { ReservationEngine } from '../engine/reservation-engine.js';
import type { DatabaseKind } from '../types.js';
import { type CliDatabase, openDatabaseUrl, UsageError } from './connect.js';

const HELP: Readonly<Record<string, string>> = {
  '': `Usage: reservation-engine <command> [options]

Commands:
  migrate                       create or update the engine's tables
  expire                        expire reservations past their TTL, until none is due or --budget passes
  process-outbox --handler M    deliver due outbox events with the handler exported by module M, until none is due or --budget passes
  work --handler M              run the worker (expiry and outbox delivery) until SIGINT or SIGTERM
  purge                         delete what is past its retention, until nothing is or --budget passes
  status                        backlog figures: outbox pending/due/lag, dead letters, expiry backlog
  dead-letters list             list dead-lettered events (--limit, --after)
  dead-letters retry            re-arm dead letters: --id <id> (repeatable) or --all
  audit                         check that every item's stock adds up (--item <id>, repeatable); exits 3 if one does not

Options for every command:
  --database-url <url>   mysql://…, postgres://… or pglite:<dir> (default: $DATABASE_URL)
  --table-prefix <p>     the engine's table prefix (default: reservation_engine_)
  --dialect <d>          mysql or postgres, when the URL's scheme does not say
  --json                 print the result as JSON
  --help                 this text, or a command's: reservation-engine <command> --help`,
  migrate: 'Usage: reservation-engine migrate [--database-url <url>] [--table-prefix <p>] [--json]\nCreates or updates the tables; safe to run at every deploy and from several processes.',
  expire: 'Usage: reservation-engine expire [--limit <n>] [--budget <seconds>] [common options]\nRuns expireBatch until a batch comes back short or the budget (default 50 s) is spent.',
  'process-outbox':
    'Usage: reservation-engine process-outbox --handler <module> [--limit <n>] [--budget <seconds>] [--max-attempts <n>] [--lease-ms <ms>] [--handler-timeout-ms <ms>] [common options]\nThe module (ES or CommonJS) exports the handler as `default` or `handler`: (event, { signal }) => Promise<void>.',
  work: 'Usage: reservation-engine work --handler <module> [--limit <n>] [--expire-limit <n>] [--max-attempts <n>] [--lease-ms <ms>] [--handler-timeout-ms <ms>] [--idle-interval-ms <ms>] [common options]\nRuns until SIGINT or SIGTERM, then finishes the batches in hand and prints its totals. Outages are logged on stderr, once each, and survived.',
  purge:
    'Usage: reservation-engine purge [--processed-events-days <d>] [--idempotency-keys-hours <h>] [--finished-reservations-days <d>] [--limit <n>] [--budget <seconds>] [common options]\nDefaults: events 7 days, keys 24 hours, reservations kept.',
  status: 'Usage: reservation-engine status [common options]\nPrints outbox pending/due/lag, dead letters and the expiry backlog.',
  audit:
    'Usage: reservation-engine audit [--item <id>]… [common options]\nChecks per item, from one snapshot: received − written off = available + PENDING + CONFIRMED units, held = PENDING units.\nPrints one line per item that does not add up and exits 3; exits 0 when all do.',
  'dead-letters': 'Usage: reservation-engine dead-letters list [--limit <n>] [--after <id>] | retry (--id <id>… | --all) [common options]',
};

const COMMON = {
  'database-url': { type: 'string' },
  'table-prefix': { type: 'string' },
  dialect: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

const OPTIONS = {
  migrate: {},
  expire: { limit: { type: 'string' }, budget: { type: 'string' } },
  'process-outbox': {
    handler: { type: 'string' },
    limit: { type: 'string' },
    budget: { type: 'string' },
    'max-attempts': { type: 'string' },
    'lease-ms': { type: 'string' },
    'handler-timeout-ms': { type: 'string' },
  },
  work: {
    handler: { type: 'string' },
    limit: { type: 'string' },
    'expire-limit': { type: 'string' },
    'max-attempts': { type: 'string' },
    'lease-ms': { type: 'string' },
    'handler-timeout-ms': { type: 'string' },
    'idle-interval-ms': { type: 'string' },
  },
  purge: {
    limit: { type: 'string' },
    budget: { type: 'string' },
    'processed-events-days': { type: 'string' },
    'idempotency-keys-hours': { type: 'string' },
    'finished-reservations-days': { type: 'string' },
  },
  status: {},
  'dead-letters': { limit: { type: 'string' }, after: { type: 'string' }, id: { type: 'string', multiple: true }, all: { type: 'boolean' } },
  audit: { item: { type: 'string', multiple: true } },
} as const;

type Command = keyof typeof OPTIONS;
type Values = Record<string, string | boolean | string[] | undefined>;

/** Runs the CLI with `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP['']);
    return command === undefined ? 2 : 0;
  }
  let database: CliDatabase | undefined;
  try {
    if (!Object.hasOwn(OPTIONS, command)) throw new UsageError(`unknown command ${JSON.stringify(command)}; see reservation-engine --help`);
    const name = command as Command;
    const { values, positionals } = parse(name, rest);
    if (values.help) {
      console.log(HELP[name]);
      return 0;
    }
    const url = string(values['database-url']) ?? env.DATABASE_URL;
    if (!url) throw new UsageError('no database: pass --database-url or set DATABASE_URL');
    const tablePrefix = string(values['table-prefix']);
    const dialectOption = string(values.dialect);
    if (dialectOption !== undefined && dialectOption !== 'mysql' && dialectOption !== 'postgres') throw new UsageError("--dialect must be mysql or postgres");
    // Load the handler before connecting: a missing module is a usage error, whatever the database.
    const handler = name === 'process-outbox' || name === 'work' ? await loadHandler(string(values.handler), name) : undefined;
    database = await openDatabaseUrl(url);
    if (dialectOption !== undefined && dialectOption !== database.dialect) throw new UsageError(`--dialect ${dialectOption} contradicts the database URL, which is ${database.dialect}`);
    const target = { db: database.db, tablePrefix, dialect: database.dialect };
    const result = await run(name, positionals, values, target, handler);
    console.log(values.json ? JSON.stringify(result.json) : result.line);
    return result.exitCode ?? 0;
  } catch (error) {
    console.error(`reservation-engine: ${describe(error)}`);
    // A bad option the library refused is as much a usage error as one the parser refused.
    return error instanceof UsageError || (error as { code?: unknown } | null)?.code === 'INVALID_CONFIGURATION' ? 2 : 1;
  } finally {
    await database?.db.destroy().catch(() => {});
  }
}

function parse(command: Command, args: readonly string[]): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: [...args], options: { ...COMMON, ...OPTIONS[command] }, strict: true, allowPositionals: command === 'dead-letters' });
    return { values: values as Values, positionals };
  } catch (error) {
    throw new UsageError(`${(error as Error).message.split('\n')[0]}; see reservation-engine ${command} --help`);
  }
}

interface Target {
  readonly db: CliDatabase['db'];
  readonly tablePrefix: string | undefined;
  readonly dialect: DatabaseKind;
}

async function run(command: Command, positionals: string[], values: Values, target: Target, handler: OutboxHandler | undefined): Promise<{ line: string; json: unknown; exitCode?: number }> {
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(2)}s`;
  const budgetMs = number(values.budget, '--budget', 0.001, 86_400) ?? 50;
  const deadline = started + budgetMs * 1000;
  const limit = integer(values.limit, '--limit', 1, 10_000);
  switch (command) {
    case 'migrate': {
      const result = await migrateToLatest(target.db, { tablePrefix: target.tablePrefix, dialect: target.dialect });
      const applied = (result.results ?? []).map((r) => r.migrationName);
      return { line: `migrate: ${applied.length} migration${applied.length === 1 ? '' : 's'} applied${applied.length ? ` (${applied.join(', ')})` : ', already up to date'} in ${elapsed()}`, json: { applied } };
    }
    case 'expire': {
      const totals = { expired: 0, failed: 0, batches: 0 };
      const batchLimit = limit ?? 500;
      for (;;) {
        const batch = await expireBatch({ ...target, limit: batchLimit });
        totals.batches++;
        totals.expired += batch.expired;
        totals.failed += batch.failed;
        if (batch.expired + batch.failed < batchLimit || performance.now() >= deadline) break;
      }
      return { line: `expire: expired=${totals.expired} failed=${totals.failed} batches=${totals.batches} in ${elapsed()}`, json: totals };
    }
    case 'process-outbox': {
      const totals = { processed: 0, failed: 0, deadLettered: 0, released: 0, batches: 0 };
      for (;;) {
        const batch = await runOutboxBatch({
          ...target,
          handler: handler!,
          limit,
          maxAttempts: integer(values['max-attempts'], '--max-attempts', 1, 1000),
          leaseMs: integer(values['lease-ms'], '--lease-ms', 1, 86_400_000),
          handlerTimeoutMs: integer(values['handler-timeout-ms'], '--handler-timeout-ms', 1, 86_400_000),
        });
        totals.batches++;
        totals.processed += batch.processed;
        totals.failed += batch.failed;
        totals.deadLettered += batch.deadLettered;
        totals.released += batch.released;
        // A batch can be short and leave events due (a suspect is claimed alone): stop on an empty one.
        if (batch.processed + batch.failed + batch.deadLettered + batch.released === 0 || performance.now() >= deadline) break;
      }
      const { processed, failed, deadLettered, released, batches } = totals;
      return { line: `process-outbox: processed=${processed} failed=${failed} dead-lettered=${deadLettered} released=${released} batches=${batches} in ${elapsed()}`, json: totals };
    }
    case 'purge': {
      const days = (value: unknown, option: string) => {
        const n = number(value, option, 0, 3650);
        return n === undefined ? undefined : Math.round(n * 86_400_000);
      };
      const hours = number(values['idempotency-keys-hours'], '--idempotency-keys-hours', 0, 87_600);
      const totals = { outboxEvents: 0, idempotencyKeys: 0, restockKeys: 0, reservations: 0, batches: 0 };
      const batchLimit = limit ?? 1000;
      for (;;) {
        const batch = await purgeBatch({
          ...target,
          limit: batchLimit,
          processedEventsMs: days(values['processed-events-days'], '--processed-events-days'),
          idempotencyKeysMs: hours === undefined ? undefined : Math.round(hours * 3_600_000),
          finishedReservationsMs: days(values['finished-reservations-days'], '--finished-reservations-days'),
        });
        totals.batches++;
        totals.outboxEvents += batch.outboxEvents;
        totals.idempotencyKeys += batch.idempotencyKeys;
        totals.restockKeys += batch.restockKeys;
        totals.reservations += batch.reservations;
        const full = Math.max(batch.outboxEvents, batch.idempotencyKeys, batch.restockKeys, batch.reservations) >= batchLimit;
        if (!full || performance.now() >= deadline) break;
      }
      const { outboxEvents, idempotencyKeys, restockKeys, reservations, batches } = totals;
      return {
        line: `purge: outbox-events=${outboxEvents} idempotency-keys=${idempotencyKeys} restock-keys=${restockKeys} reservations=${reservations} batches=${batches} in ${elapsed()}`,
        json: totals,
      };
    }
    case 'work': {
      const stopping = new AbortController();
      const stop = (signal: NodeJS.Signals) => {
        if (stopping.signal.aborted) {
          // A second signal, of either kind: stop now, as a shell's second Ctrl-C expects.
          console.error(`reservation-engine: ${signal} again: exiting without waiting`);
          process.exit(signal === 'SIGINT' ? 130 : 143);
        }
        console.error(`reservation-engine: ${signal}: stopping after the batches in hand (send it again to exit at once)`);
        stopping.abort();
      };
      process.on('SIGINT', stop).on('SIGTERM', stop);
      // The worker's messages on stderr, one line each, without the error objects (no stack
      // traces); stdout keeps the one summary line.
      const line = (message: string) => console.error(`reservation-engine: ${message}`);
      const worker = startWorker({
        ...target,
        handler: handler!,
        signal: stopping.signal,
        outbox: {
          limit,
          maxAttempts: integer(values['max-attempts'], '--max-attempts', 1, 1000),
          leaseMs: integer(values['lease-ms'], '--lease-ms', 1, 86_400_000),
          handlerTimeoutMs: integer(values['handler-timeout-ms'], '--handler-timeout-ms', 1, 86_400_000),
        },
        expire: { limit: integer(values['expire-limit'], '--expire-limit', 1, 10_000) },
        // The longest idle pause grows with a longer idle interval (it doubles up to 5 s by default).
        ...idlePauses(integer(values['idle-interval-ms'], '--idle-interval-ms', 1, 86_400_000)),
        logger: { info: line, warn: line, error: line },
      });
      console.error('reservation-engine: working (SIGINT or SIGTERM to stop)');
      const { outbox, expire } = await worker.stopped;
      const json = { processed: outbox.processed, failed: outbox.failed, deadLettered: outbox.deadLettered, expired: expire.expired, outboxBatches: outbox.batches, expireBatches: expire.batches };
      return {
        line: `work: processed=${outbox.processed} failed=${outbox.failed} dead-lettered=${outbox.deadLettered} expired=${expire.expired} in ${elapsed()}`,
        json,
      };
    }
    case 'status': {
      const b = await getBacklog(target);
      return {
        line: `status: outbox-pending=${b.outboxPending} outbox-due=${b.outboxDue} outbox-lag=${(b.outboxLagMs / 1000).toFixed(1)}s dead-letters=${b.deadLetters} expiry-backlog=${b.expiryBacklog}`,
        json: b,
      };
    }
    case 'dead-letters': {
      const [action, ...extra] = positionals;
      if (extra.length > 0 || (action !== 'list' && action !== 'retry')) throw new UsageError('dead-letters needs list or retry; see reservation-engine dead-letters --help');
      if (action === 'list') {
        const page = await listDeadLetters({ ...target, limit: integer(values.limit, '--limit', 1, 1000), after: string(values.after) });
        const lines = page.deadLetters.map((d) => `#${d.id} ${d.type} attempts=${d.attempts} dead-lettered=${d.deadLetteredAt.toISOString()} error=${JSON.stringify(d.lastError ?? '')}`);
        const summary = `dead-letters: ${page.deadLetters.length} listed${page.next ? ` (more after ${page.next})` : ''}`;
        return { line: [...lines, summary].join('\n'), json: page };
      }
      const ids = values.id as string[] | undefined;
      if ((ids === undefined) === (values.all !== true)) throw new UsageError('dead-letters retry needs --id <id> (repeatable) or --all');
      const { retried } = await retryDeadLetters({ ...target, ...(values.all ? { all: true } : { ids }) });
      return { line: `dead-letters: retried=${retried}`, json: { retried } };
    }
    case 'audit': {
      const itemIds = (values.item as string[] | undefined)?.map((id) => integer(id, '--item', 1, 2_147_483_647)!);
      const report = await new ReservationEngine(target).audit({ itemIds });
      const lines = report.discrepancies.map(
        (d) =>
          `item ${d.itemId} (${JSON.stringify(d.sku)}): ${d.problems.join('; ')} ` +
          `[received=${d.received} written-off=${d.writtenOff} available=${d.available} held=${d.held} pending=${d.pending} confirmed=${d.confirmed}]`,
      );
      const unknown = report.unknownItemIds.length > 0 ? ` unknown-items=${report.unknownItemIds.join(',')}` : '';
      const summary = `audit: items=${report.itemsChecked} discrepancies=${report.discrepancies.length}${unknown} in ${elapsed()}`;
      return { line: [...lines, summary].join('\n'), json: report, exitCode: report.ok ? 0 : 3 };
    }
  }
}

function idlePauses(idleIntervalMs: number | undefined): { idleIntervalMs?: number; maxIdleIntervalMs?: number } {
  return idleIntervalMs === undefined ? {} : { idleIntervalMs, maxIdleIntervalMs: Math.max(5000, idleIntervalMs) };
}

/** The handler a module exports (`default` or `handler`), ES module or CommonJS. */
async function loadHandler(specifier: string | undefined, command: string): Promise<OutboxHandler> {
  if (!specifier) throw new UsageError(`${command} needs --handler <module>`);
  const file = path.resolve(specifier);
  if (!existsSync(file)) throw new UsageError(`cannot load the handler module ${specifier}: not found`);
  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (error) {
    throw new UsageError(`cannot load the handler module ${specifier}: ${describe(error)}`);
  }
  const inner = module.default as Record<string, unknown> | undefined;
  const candidates = [module.handler, module.default, inner?.handler, inner?.default];
  const handler = candidates.find((c) => typeof c === 'function');
  if (!handler) throw new UsageError(`the handler module ${specifier} exports no function as default or handler`);
  return handler as OutboxHandler;
}

function string(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function number(value: unknown, option: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${option} must be a number from ${min} to ${max}, got ${JSON.stringify(String(value))}`);
  return n;
}

function integer(value: unknown, option: string, min: number, max: number): number | undefined {
  const n = number(value, option, min, max);
  if (n !== undefined && !Number.isInteger(n)) throw new UsageError(`${option} must be a whole number from ${min} to ${max}, got ${JSON.stringify(String(value))}`);
  return n;
}

/** One line for any error: its message and, for a lost connection, the driver's reason; never a stack. */
function describe(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return describe(error.errors[0]);
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  if (code === 'OUTCOME_UNKNOWN') return `cannot reach the database: ${describe(error.cause)}`;
  return (error.message || String(code ?? error.name)).split('\n')[0]!;
}

/** Run as a program (not when imported by a test). */
const invoked = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (invoked && import.meta.url === pathToFileURL(invoked).href) {
  const code = await main(process.argv.slice(2));
  // Exit even if a handler module left a timer or a broker connection open; let stdout drain first.
  process.stdout.write('', () => process.exit(code));
}
