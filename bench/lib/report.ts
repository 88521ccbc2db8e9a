/** Machine information, the Markdown tables, and the JSON/Markdown result files. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chartLink, writeCharts } from './chart.js';
import type { BenchDatabase } from './db.js';
import type { Mode, Row, ScenarioResult } from './scenario.js';
import type { TargetResult } from './targets.js';

export interface RunInfo {
  startedAt: string;
  finishedAt?: string;
  wallSeconds?: number;
  mode: Mode;
  args: string[];
  durationS: number;
  warmupS: number;
  rounds: number;
  concurrencies: number[];
  drainSize: number;
  machine: {
    cpuModel: string;
    cores: number;
    memoryGiB: number;
    os: string;
    node: string;
    loadAverageAtStart: number[];
    loadAverageAtEnd?: number[];
  };
  database?: { dialect: string; version: string; source: string; settings: Record<string, string> };
  git: { commit: string; dirty: boolean };
}

export function collectRunInfo(mode: Mode, args: string[], settings: Pick<RunInfo, 'durationS' | 'warmupS' | 'rounds' | 'concurrencies' | 'drainSize'>): RunInfo {
  const cpus = os.cpus();
  return {
    startedAt: new Date().toISOString(),
    mode,
    args,
    ...settings,
    machine: {
      cpuModel: cpus[0]?.model.trim() ?? 'unknown',
      cores: cpus.length,
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      loadAverageAtStart: os.loadavg().map((n) => Math.round(n * 100) / 100),
    },
    git: gitInfo(),
  };
}

export async function describeDatabase(bench: BenchDatabase): Promise<NonNullable<RunInfo['database']>> {
  return { dialect: bench.dialect, version: bench.version, source: bench.source, settings: await bench.settings() };
}

function gitInfo(): RunInfo['git'] {
  const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no').length > 0 };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

const num = (n: number | undefined, digits = 0) =>
  n === undefined || Number.isNaN(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** CPU microseconds per op from CPU cores and ops/s. */
const perOpUs = (cores: number | undefined, throughput: number) => (cores === undefined || !(throughput > 0) ? undefined : (cores / throughput) * 1e6);

function configLabel(config: Record<string, number>): string {
  const short: Record<string, string> = { concurrency: 'c', workers: 'W', batch: 'B' };
  return Object.entries(config)
    .map(([k, v]) => `${short[k] ?? k}=${v}`)
    .join(' ');
}

function checksLabel(row: Row): string {
  const failed = row.checks.filter((c) => !c.ok);
  if (failed.length === 0) return `ok (${row.checks.length})`;
  return `**FAILED**: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`;
}

export function scenarioTable(result: ScenarioResult): string {
  const label = (key: string) => result.variants.find((v) => v.key === key)?.label ?? key;
  const hasServer = result.rows.some((r) => r.m.server);
  const hasServerCpu = result.rows.some((r) => r.m.server?.cpu !== undefined);
  const head = [
    'config',
    'variant',
    result.unit,
    `p50 ms / ${result.latencyOf}`,
    `p99 ms / ${result.latencyOf}`,
    ...result.baselines.map((b) => `× ${label(b)}`),
    ...(hasServer ? ['stmts/op', 'row-lock waits', 'row-lock ms'] : []),
    'node CPU',
    'node µs/op',
    ...(hasServerCpu ? ['db CPU', 'db µs/op'] : []),
    'errors',
    'checks',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 || i === head.length - 1 ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const row of result.rows) {
    const cells = [
      configLabel(row.config),
      label(row.variant),
      num(row.m.throughput),
      num(row.m.latency.p50Ms, 2),
      num(row.m.latency.p99Ms, 2),
      ...result.baselines.map((b) => (row.variant === b ? '1.00' : num(row.ratios[b], 2))),
      ...(hasServer ? [num(row.m.server?.statementsPerOp, 2), num(row.m.server?.rowLockWaits), num(row.m.server?.rowLockTimeMs)] : []),
      num(row.m.nodeCpu, 2),
      num(perOpUs(row.m.nodeCpu, row.m.throughput)),
      ...(hasServerCpu ? [num(row.m.server?.cpu, 2), num(perOpUs(row.m.server?.cpu, row.m.throughput))] : []),
      row.m.retried ? `${row.m.errors} (${row.m.retried} retried)` : String(row.m.errors),
      checksLabel(row),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export function targetsTable(targets: TargetResult[]): string {
  return ['| target | measured | result |', '| --- | ---: | --- |', ...targets.map((t) => `| ${t.target} | ${t.measured} | ${t.status} |`)].join('\n');
}

export function renderMarkdown(info: RunInfo, results: ScenarioResult[], targets: TargetResult[] | undefined, failures: string[], charts: Record<string, string> = {}): string {
  const db = info.database;
  const out = [
    `# reservation-engine benchmark — ${db?.dialect ?? '?'}, ${info.mode} mode`,
    '',
    `- started ${info.startedAt}, took ${num(info.wallSeconds, 0)} s; \`${['npm run bench --', ...info.args].join(' ')}\``,
    `- ${num(info.durationS, 1)} s measured per variant and concurrency${info.rounds > 1 ? `, in ${info.rounds} interleaved slices (A B C A B C …) of ${num(info.durationS / info.rounds, 2)} s, each after a fresh seed and ${num(info.warmupS, 1)} s warm-up` : ` after ${num(info.warmupS, 1)} s warm-up`}; concurrencies ${info.concurrencies.join(', ')} (pool size = concurrency); drains of ${info.drainSize.toLocaleString('en-US')}`,
    `- machine: ${info.machine.cpuModel}, ${info.machine.cores} cores, ${info.machine.memoryGiB} GiB, ${info.machine.os}; load average ${info.machine.loadAverageAtStart.join(' / ')} at start, ${info.machine.loadAverageAtEnd?.join(' / ') ?? '?'} at end`,
    `- Node ${info.machine.node}; database ${db?.version ?? '?'} (${db?.source ?? '?'})${db && Object.keys(db.settings).length ? `; ${Object.entries(db.settings).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''}`,
    `- git ${info.git.commit}${info.git.dirty ? ' (uncommitted changes)' : ''}`,
    '',
    'Throughput is per second of wall time; latencies are per call (p50/p99). Ratios divide a variant\'s throughput by the baseline\'s at the same config, in this run. stmts/op = statements the server received (MySQL `Questions`) ÷ ops; row-lock waits/ms = `Innodb_row_lock_waits` / `Innodb_row_lock_time` during the measured part; CPU in cores (2 = both cores busy) and in CPU-µs per op (per event / reservation for the drains), for this Node process and for the database server process.',
    '',
  ];
  if (failures.length) out.push('## Correctness failures', '', ...failures.map((f) => `- ${f}`), '');
  if (targets) {
    out.push('## Targets', '');
    if (db?.dialect !== 'mysql') out.push('_The targets are defined for MariaDB; shown for reference._', '');
    out.push('The machine is shared and noisy: a ratio near its threshold can flip between runs.', '', targetsTable(targets), '');
  }
  for (const r of results) {
    out.push(`## ${r.title}`, '');
    if (charts[r.id]) out.push(chartLink(r.id, charts[r.id]!), '');
    out.push(r.description, '');
    for (const v of r.variants) out.push(`- **${v.label}**: ${v.description}`);
    for (const note of r.notes) out.push(`- ${note}`);
    out.push('', scenarioTable(r), '');
  }
  return out.join('\n');
}

export function writeResults(dir: string, baseName: string, info: RunInfo, results: ScenarioResult[], targets: TargetResult[] | undefined, failures: string[]): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const json = path.join(dir, `${baseName}.json`);
  const md = path.join(dir, `${baseName}.md`);
  const omitSamples = (key: string, value: unknown) => (key === 'samples' ? undefined : value);
  writeFileSync(json, `${JSON.stringify({ info, targets, failures, results }, omitSamples, 2)}\n`);
  writeFileSync(md, renderMarkdown(info, results, targets, failures, writeCharts(dir, baseName, info, results)));
  return { json, md };
}
