/**
 * What the cron scripts share: arguments, the database, one summary line, the exit code.
 *
 * Arguments (an argument wins over the environment):
 *   --budget=SECONDS   start no batch after this long (CRON_BUDGET_SECONDS; default 50)
 *   --limit=N          rows per batch (CRON_BATCH_LIMIT; default: the batch function's)
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import { MAX_BATCH_LIMIT } from 'reservation-engine';
import { connectDatabase } from '../database.js';

/** A bit under a minute, so that an every-minute crontab rarely has two copies running (it may: that is safe). */
export const DEFAULT_BUDGET_MS = 50_000;

/** What a cron script was asked to do. */
export interface CronArgs {
  readonly budgetMs: number;
  readonly limit: number | undefined;
}

/**
 * Runs `work` once against DATABASE_URL, prints the line it returns (stdout) or the error
 * (stderr, prefixed with `name`), closes the database, and returns the exit code: 0 or 1.
 */
export async function runCron(name: string, work: (db: Kysely<any>, args: CronArgs) => Promise<string>): Promise<number> {
  let db: Kysely<any> | undefined;
  try {
    const args = parseCronArgs(process.argv.slice(2), process.env);
    db = await connectDatabase(serverDatabaseUrl(process.env.DATABASE_URL));
    console.log(await work(db, args));
    return 0;
  } catch (error) {
    console.error(`${name}: ${describeError(error)}`);
    return 1;
  } finally {
    await db?.destroy().catch(() => {});
  }
}

/** Parses `--budget=SECONDS` and `--limit=N`, falling back to CRON_BUDGET_SECONDS and CRON_BATCH_LIMIT. */
export function parseCronArgs(argv: readonly string[], env: NodeJS.ProcessEnv): CronArgs {
  const { values } = parseArgs({
    args: [...argv],
    options: { budget: { type: 'string' }, limit: { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  const budget = values.budget ?? env.CRON_BUDGET_SECONDS?.trim();
  const limit = values.limit ?? env.CRON_BATCH_LIMIT?.trim();
  return {
    budgetMs: budget ? parseNumber('--budget (seconds)', budget, 0, 86_400, false) * 1000 : DEFAULT_BUDGET_MS,
    limit: limit ? parseNumber('--limit', limit, 1, MAX_BATCH_LIMIT, true) : undefined,
  };
}

/**
 * The DATABASE_URL a cron job can use: a database server. An in-memory database would start
 * empty and vanish with the job; a PGlite directory can be opened by one process at a time,
 * and that is the server.
 */
export function serverDatabaseUrl(url: string | undefined): string {
  const value = url?.trim() ?? '';
  if (value === '') {
    throw new Error('DATABASE_URL is not set: point it at the database the server uses (mysql://… or postgres://…)');
  }
  if (/^pglite:/i.test(value)) {
    throw new Error('DATABASE_URL is a pglite: directory, which only one process may open (the server): cron jobs need MySQL/MariaDB or PostgreSQL');
  }
  return value;
}

/** Whether this module is the program being run (`tsx examples/cron/….ts`), not an import. */
export function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return moduleUrl === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

/** Seconds with two decimals, for summary lines. */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)}s`;
}

function parseNumber(name: string, raw: string, min: number, max: number, integer: boolean): number {
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** The message, and what caused it: connection errors often hide the useful part in `cause` or `errors`. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const nested = error instanceof AggregateError ? error.errors[0] : undefined;
  const message = error.message || (nested instanceof Error ? nested.message : '') || error.name;
  const cause = error.cause instanceof Error && error.cause.message ? ` (${error.cause.message})` : '';
  return `${message}${cause}`;
}
