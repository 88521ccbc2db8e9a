/**
 * Decides which SQL dialects the suite runs against and hands their
 * connection URLs to tests via `inject('dialects')`.
 *
 *   MYSQL_URL / POSTGRES_URL   use an existing server instead of a throwaway one
 *   TEST_DIALECTS=mysql,...    only attempt these dialects
 *   REQUIRE_DIALECTS=all|...   fail the run if any of these was skipped (CI)
 */
// Pulls 'vitest' into the program so the augmentation below has something to merge into.
import type {} from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { PGLITE_TEMPLATES, record } from './support/scratch.js';
import {
  findMariaDbServer,
  findPostgresBinaries,
  startMariaDb,
  startPostgres,
  type ThrowawayServer,
} from './support/servers.js';

type DialectName = 'mysql' | 'postgres' | 'pglite';

interface DialectTarget {
  name: DialectName;
  url: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    dialects: Array<{ name: 'mysql' | 'postgres' | 'pglite'; url: string }>;
    /** The run's scratch directory (see test/support/scratch.ts). */
    scratchDir: string;
  }
}

const ALL_DIALECTS: readonly DialectName[] = ['pglite', 'mysql', 'postgres'];

type Outcome =
  | { name: DialectName; status: 'run'; url: string; description: string; server?: ThrowawayServer }
  | { name: DialectName; status: 'skipped'; reason: string };

interface ServerSource {
  envVar: string;
  isInstalled: () => boolean;
  start: () => Promise<ThrowawayServer>;
  missingReason: string;
}

const SERVER_SOURCES: Record<Exclude<DialectName, 'pglite'>, ServerSource> = {
  mysql: {
    envVar: 'MYSQL_URL',
    isInstalled: () => findMariaDbServer() !== undefined,
    start: startMariaDb,
    missingReason: 'no MYSQL_URL and no mariadbd/mysqld found (install: apt-get install mariadb-server)',
  },
  postgres: {
    envVar: 'POSTGRES_URL',
    isInstalled: () => findPostgresBinaries() !== undefined,
    start: startPostgres,
    missingReason: 'no POSTGRES_URL and no initdb/postgres found (install: apt-get install postgresql)',
  },
};

function parseDialectList(envVar: string): DialectName[] | undefined {
  const raw = process.env[envVar]?.trim();
  if (!raw) return undefined;
  if (raw === 'all') return [...ALL_DIALECTS];
  const names = raw.split(',').map((name) => name.trim()).filter(Boolean);
  const unknown = names.filter((name) => !(ALL_DIALECTS as readonly string[]).includes(name));
  if (unknown.length > 0) {
    throw new Error(`${envVar} contains unknown dialect(s) ${unknown.join(', ')}; expected ${ALL_DIALECTS.join(', ')} or "all"`);
  }
  return names as DialectName[];
}

async function startThrowaway(name: DialectName, source: ServerSource): Promise<Outcome> {
  const startedAt = performance.now();
  const server = await source.start();
  const seconds = ((performance.now() - startedAt) / 1000).toFixed(1);
  const { host } = new URL(server.url);
  return { name, status: 'run', url: server.url, server, description: `throwaway ${server.label} on ${host} (${seconds} s)` };
}

async function resolveDialect(name: DialectName): Promise<Outcome> {
  if (name === 'pglite') return { name, status: 'run', url: '', description: 'in-process PGlite' };
  const source = SERVER_SOURCES[name];
  const url = process.env[source.envVar]?.trim();
  if (url) return { name, status: 'run', url, description: source.envVar };
  if (!source.isInstalled()) return { name, status: 'skipped', reason: source.missingReason };
  return startThrowaway(name, source);
}

/**
 * Runs `script` (TypeScript, through tsx) with `args` in a process of its own, without waiting
 * for it. The script records `name` as done itself; exiting otherwise records it as failed.
 */
function inBackground(dir: string, name: string, script: string, args: string[]): { exited: Promise<void>; kill(): void } {
  const root = path.resolve(import.meta.dirname, '..');
  // --liftoff-only: see test/support/wasm-baseline-only.cjs (PGlite's initdb: 40% less CPU).
  const child = execFile(process.execPath, ['--liftoff-only', '--import', 'tsx', path.join(root, script), ...args], { cwd: root, maxBuffer: 16 * 1024 * 1024 });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const exited = new Promise<void>((resolve) => {
    child.once('error', (error) => (record(dir, name, error), resolve()));
    child.once('exit', (code, signal) => {
      if (code !== 0) record(dir, name, `${script} exited with ${signal ?? `code ${code}`}:\n${output}`);
      resolve();
    });
  });
  return { exited, kill: () => void (child.exitCode === null && child.kill('SIGKILL')) };
}

function summaryLine(outcome: Outcome): string {
  const detail = outcome.status === 'run' ? outcome.description : `skipped — ${outcome.reason}`;
  return `[dialects] ${outcome.name}: ${detail}`;
}

function stopAll(outcomes: Outcome[]): () => Promise<void> {
  const servers = outcomes.flatMap((outcome) => (outcome.status === 'run' && outcome.server ? [outcome.server] : []));
  return async () => {
    await Promise.all(servers.map((server) => server.stop()));
  };
}

function assertRequiredRan(outcomes: Outcome[]): void {
  const required = parseDialectList('REQUIRE_DIALECTS') ?? [];
  const missing = outcomes.filter((outcome) => outcome.status === 'skipped' && required.includes(outcome.name));
  if (missing.length === 0) return;
  throw new Error(`REQUIRE_DIALECTS=${process.env.REQUIRE_DIALECTS} but skipped:\n${missing.map(summaryLine).join('\n')}`);
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const attempted = parseDialectList('TEST_DIALECTS') ?? ALL_DIALECTS;
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'reservation-engine-tests-'));
  project.provide('scratchDir', scratch);
  // PGlite's templates are made in a process of their own, while the servers start and the
  // first test files load.
  const templates = attempted.includes('pglite') ? inBackground(scratch, PGLITE_TEMPLATES, 'test/support/make-pglite-templates.ts', [scratch]) : undefined;
  // Servers start concurrently; a server that is installed but fails to start fails the run.
  const settled = await Promise.allSettled(
    ALL_DIALECTS.map(
      (name): Promise<Outcome> =>
        attempted.includes(name)
          ? resolveDialect(name)
          : Promise.resolve({ name, status: 'skipped', reason: 'not in TEST_DIALECTS' }),
    ),
  );
  const outcomes = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const stopServers = stopAll(outcomes);
  const teardown = async () => {
    templates?.kill();
    await Promise.all([stopServers(), templates?.exited]);
    await rm(scratch, { recursive: true, force: true });
  };

  try {
    const failure = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failure) throw failure.reason;
    console.log(outcomes.map(summaryLine).join('\n'));
    assertRequiredRan(outcomes);
  } catch (error) {
    await teardown();
    throw error;
  }

  const dialects: DialectTarget[] = outcomes.flatMap((outcome) =>
    outcome.status === 'run' ? [{ name: outcome.name, url: outcome.url }] : [],
  );
  project.provide('dialects', dialects);
  return teardown;
}
