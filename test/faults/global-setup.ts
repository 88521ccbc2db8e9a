/**
 * The fault suite's global setup: throwaway MariaDB and PostgreSQL servers shared by the
 * scenarios that do not crash them (a scenario that crashes its server starts its own), handed
 * to the files as test/global-setup.ts hands them (`inject('dialects')`, `inject('scratchDir')`).
 * The teardown prints the figures every scenario reported as one table and keeps them in
 * `<scratch dir>/faults-report.json`, the only file of the scratch dir left after the run.
 *
 *   FAULTS_DIALECTS=mysql|postgres   only this dialect (default: both)
 *   FAULTS_SOAK=1                    longer scenarios (`npm run test:faults -- --soak` sets it)
 */
import type {} from 'vitest';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startMariaDb, startPostgres, type ThrowawayServer } from '../support/servers.js';
import { formatTable, readFigures } from './support/report.js';

const STARTERS = { mysql: startMariaDb, postgres: () => startPostgres() } as const;
type ServerDialect = keyof typeof STARTERS;

function chosenDialects(): ServerDialect[] {
  const raw = process.env.FAULTS_DIALECTS?.trim();
  if (!raw) return ['mysql', 'postgres'];
  const names = raw.split(',').map((name) => name.trim());
  for (const name of names) if (!(name in STARTERS)) throw new Error(`FAULTS_DIALECTS: unknown dialect ${name}; expected mysql and/or postgres`);
  return names as ServerDialect[];
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'reservation-engine-faults-'));
  project.provide('scratchDir', scratch);
  const names = chosenDialects();
  const started = performance.now();
  const settled = await Promise.allSettled(names.map((name) => STARTERS[name]()));
  const servers = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failure = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure) {
    await Promise.all(servers.map((server) => server.stop()));
    throw failure.reason;
  }
  const byName = new Map<ServerDialect, ThrowawayServer>(names.map((name, index) => [name, servers[index]!]));
  console.log(`[faults] ${servers.map((s) => s.label).join(', ')} started in ${((performance.now() - started) / 1000).toFixed(1)} s${process.env.FAULTS_SOAK === '1' ? '; soak mode' : ''}`);
  project.provide('dialects', names.map((name) => ({ name, url: byName.get(name)!.url })));

  return async () => {
    await Promise.all(servers.map((server) => server.stop()));
    const rows = readFigures(scratch);
    const reportFile = path.join(scratch, 'faults-report.json');
    await writeFile(reportFile, `${JSON.stringify({ soak: process.env.FAULTS_SOAK === '1', scenarios: rows }, null, 2)}\n`);
    // Everything else (compiled scripts, worker logs) goes; the report stays.
    for (const entry of await readdir(scratch)) if (entry !== 'faults-report.json') await rm(path.join(scratch, entry), { recursive: true, force: true });
    console.log(`\n[faults] summary (${reportFile})\n${rows.length > 0 ? formatTable(rows) : '(no scenario reported figures)'}\n`);
  };
}
