/**
 * The performance targets (on MariaDB and PostgreSQL alike; ratios from the same run). A MISS is reported, never fatal:
 * only correctness failures fail the run.
 */
import type { Row, ScenarioResult } from './scenario.js';

export interface TargetResult {
  target: string;
  measured: string;
  status: 'PASS' | 'MISS' | 'n/a';
}

type Find = (scenario: string, variant: string, config: Record<string, number>) => Row | undefined;

function finder(results: ScenarioResult[]): Find {
  return (scenario, variant, config) =>
    results
      .find((r) => r.id === scenario)
      ?.rows.find((row) => row.variant === variant && Object.entries(config).every(([k, v]) => row.config[k] === v));
}

const fmt = (n: number, digits = 2) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

function ratioTarget(find: Find, target: string, scenario: string, variant: string, baseline: string, config: Record<string, number>, min: number): TargetResult {
  const row = find(scenario, variant, config);
  const ratio = row?.ratios[baseline];
  if (ratio === undefined) return { target, measured: 'not run', status: 'n/a' };
  const base = find(scenario, baseline, config)!;
  return {
    target,
    measured: `${fmt(ratio)}× (${fmt(row!.m.throughput, 0)} vs ${fmt(base.m.throughput, 0)})`,
    status: ratio >= min ? 'PASS' : 'MISS',
  };
}

/** At most `max` times the baseline's per-op latency (p50) at the same config. */
function latencyRatioTarget(find: Find, target: string, scenario: string, variant: string, baseline: string, config: Record<string, number>, max: number): TargetResult {
  const row = find(scenario, variant, config);
  const base = find(scenario, baseline, config);
  if (!row || !base || !(base.m.latency.p50Ms > 0)) return { target, measured: 'not run', status: 'n/a' };
  const ratio = row.m.latency.p50Ms / base.m.latency.p50Ms;
  return {
    target,
    measured: `${fmt(ratio)}× (p50 ${fmt(row.m.latency.p50Ms)} vs ${fmt(base.m.latency.p50Ms)} ms)`,
    status: ratio <= max ? 'PASS' : 'MISS',
  };
}

function rateTarget(find: Find, target: string, scenario: string, variant: string, config: Record<string, number>, min: number, unit: string): TargetResult {
  const row = find(scenario, variant, config);
  if (!row) return { target, measured: 'not run', status: 'n/a' };
  return { target, measured: `${fmt(row.m.throughput, 0)} ${unit}`, status: row.m.throughput >= min ? 'PASS' : 'MISS' };
}

export function evaluateTargets(results: ScenarioResult[], concurrencies: number[]): TargetResult[] {
  const find = finder(results);
  const out: TargetResult[] = [];
  for (const c of [16, 32, 64]) out.push(ratioTarget(find, `hot item, c=${c}: engine ≥ 3× architecture order`, 'hot-item', 'engine', 'arch', { concurrency: c }, 3));
  out.push(ratioTarget(find, 'hot item, c=32: engine ≥ 0.4× bare UPDATE', 'hot-item', 'engine', 'bare', { concurrency: 32 }, 0.4));
  for (const c of [16, 64]) out.push(ratioTarget(find, `1,000 items, c=${c}: engine ≥ 1.5× architecture order`, 'many-items', 'engine', 'arch', { concurrency: c }, 1.5));
  for (const c of concurrencies) out.push(ratioTarget(find, `many items, c=${c}: engine ≥ 0.9× raw`, 'many-items', 'engine', 'raw', { concurrency: c }, 0.9));
  // Issue 10: a fresh reserve is one round trip now, as a replay is; a replay must not be slower.
  for (const c of concurrencies) out.push(ratioTarget(find, `replay, c=${c}: replay ≥ 1× fresh`, 'replay', 'replay', 'fresh', { concurrency: c }, 1));
  for (const c of [32, 64]) {
    out.push(ratioTarget(find, `sold out, c=${c}: engine ≥ 1.2× classic order`, 'sold-out', 'engine', 'classic', { concurrency: c }, 1.2));
    out.push(ratioTarget(find, `sold out, c=${c}: engine ≥ 0.5× bare SELECT`, 'sold-out', 'engine', 'bare', { concurrency: c }, 0.5));
  }
  out.push(
    rateTarget(find, 'outbox, 4 callers, batch 100: ≥ 10,000 events/s', 'outbox', 'engine', { workers: 4, batch: 100 }, 10_000, 'events/s'),
    ratioTarget(find, 'outbox, 4 callers, batch 100: ≥ 0.8× bare loop', 'outbox', 'engine', 'bare', { workers: 4, batch: 100 }, 0.8),
    rateTarget(find, 'expiry, 1 caller, batch 1,000: ≥ 10,000 reservations/s', 'expiry', 'engine', { workers: 1, batch: 1000 }, 10_000, 'reservations/s'),
    rateTarget(find, 'expiry, 4 callers, batch 1,000: ≥ 10,000 reservations/s', 'expiry', 'engine', { workers: 4, batch: 1000 }, 10_000, 'reservations/s'),
    // Issue 14: the relay publishes as fast as amqplib by hand, and the whole relay keeps up with a hand-written one.
    ratioTarget(find, 'rabbitmq, batch 100: relay.batchHandler ≥ 0.7× bare amqplib', 'rabbitmq', 'publisher', 'bare', { batch: 100 }, 0.7),
    ratioTarget(find, 'rabbitmq, batch 100: runOutboxBatch + relay ≥ 0.7× bare SQL + bare amqplib', 'rabbitmq', 'relay', 'bare-relay', { batch: 100 }, 0.7),
  );
  // Issue 13: OpenTelemetry's cost on the reserve path.
  for (const c of concurrencies) {
    out.push(ratioTarget(find, `telemetry, c=${c}: API without SDK ≥ 0.98× off`, 'telemetry', 'api', 'off', { concurrency: c }, 0.98));
    out.push(ratioTarget(find, `telemetry, c=${c}: SDK recording ≥ 0.90× off`, 'telemetry', 'sdk', 'off', { concurrency: c }, 0.9));
    out.push(ratioTarget(find, `telemetry, c=${c}: SDK recording ≥ 0.90× its context manager alone`, 'telemetry', 'sdk', 'ctx', { concurrency: c }, 0.9));
  }
  // Issue 15: a cart of 5 items costs at most twice a reservation of 1 (spread items, as in bench/scenarios/cart.ts).
  for (const c of concurrencies) {
    out.push(latencyRatioTarget(find, `cart, c=${c}: 5-line cart p50 ≤ 2× 1-line reservation`, 'cart', 'cart', 'single', { concurrency: c, items: 10_000 }, 2));
  }
  // Scale: each operation on million-row tables against small ones, same run (configs as in bench/scenarios/scale.ts).
  for (const [op, config] of [
    ['reserve', { 'reserve c': 8 }],
    ['replay', { 'replay c': 8 }],
    ['expireBatch', { 'expireBatch W': 1, B: 500 }],
    ['runOutboxBatch', { 'runOutboxBatch W': 1, B: 100 }],
  ] as const) {
    out.push(ratioTarget(find, `scale: ${op} on 1M-row tables ≥ 0.8× small`, 'scale', 'large', 'small', config, 0.8));
  }
  return out;
}
