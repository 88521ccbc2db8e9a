/**
 * The two ways a variant is driven:
 * - {@link runClosedLoop}: `concurrency` workers each call `op` back to back for a fixed time,
 *   after a warm-up of the same shape (which also opens the pool's connections);
 * - {@link runDrain}: `workers` callers each call `step` until it reports nothing left to do.
 * Both time every call with `process.hrtime.bigint()` and read the server's counters
 * (statements, row-lock waits, server CPU) and Node's CPU time around the measured part only.
 */
import type { ServerCounters } from './db.js';
import { profiled } from './profiler.js';
import { cpuShare, elapsedMs, Latencies, type LatencySummary, now } from './stats.js';

export interface Measurement {
  /** Successful operations (closed loop) or items handled (drain) in the measured part. */
  ops: number;
  /** Calls made in the measured part (drain: batches, including the final empty ones). */
  calls: number;
  /** Successful operations during the warm-up (they count for the correctness checks). */
  warmupOps: number;
  errors: number;
  firstError?: string;
  /** Transactions the variant itself rolled back and ran again (deadlocks), where it counts them. */
  retried?: number;
  wallMs: number;
  /** ops per second of wall time. */
  throughput: number;
  /** Per call. */
  latency: LatencySummary;
  /** CPU the Node process used, in cores (1 = one core busy all the time). */
  nodeCpu: number;
  server?: ServerUsage;
  /** The per-call samples (not written to the results file). */
  samples?: Latencies;
}

export interface ServerUsage {
  /** Statements the server received per op (MySQL `Questions`; includes a handful from the counters themselves). */
  statementsPerOp: number;
  rowLockWaits: number;
  rowLockTimeMs: number;
  /** Server process CPU, in cores, when the server runs on this machine. */
  cpu?: number;
}

export type CounterSource = () => Promise<ServerCounters | undefined>;

export interface ClosedLoopOptions {
  concurrency: number;
  durationMs: number;
  warmupMs: number;
  counters?: CounterSource;
  /** Name of the CPU profile of the measured part, when `--profile` is on. */
  profileName?: string;
}

export interface DrainOptions {
  workers: number;
  counters?: CounterSource;
  profileName?: string;
}

/**
 * Runs `op(worker)` from `concurrency` workers back to back. An op that throws counts as an
 * error (the first message is kept) and the worker carries on.
 */
export async function runClosedLoop(op: (worker: number) => Promise<unknown>, o: ClosedLoopOptions): Promise<Measurement> {
  const errors = { count: 0, first: undefined as string | undefined };
  const phase = async (ms: number, latencies: Latencies | undefined) => {
    const deadline = now() + BigInt(Math.round(ms * 1e6));
    let ok = 0;
    await Promise.all(
      Array.from({ length: o.concurrency }, async (_, worker) => {
        while (now() < deadline) {
          const start = now();
          try {
            await op(worker);
            latencies?.add(elapsedMs(start));
            ok++;
          } catch (error) {
            errors.count++;
            errors.first ??= describe(error);
          }
        }
      }),
    );
    return ok;
  };

  const warmupOps = o.warmupMs > 0 ? await phase(o.warmupMs, undefined) : 0;
  const warmupErrors = errors.count;
  const latencies = new Latencies();
  const before = await o.counters?.();
  const cpu = process.cpuUsage();
  const start = now();
  const ops = await profiled(o.profileName, () => phase(o.durationMs, latencies));
  const wallMs = elapsedMs(start);
  const nodeCpu = cpuShare(cpu, wallMs);
  const after = await o.counters?.();
  return {
    ops,
    calls: ops + errors.count - warmupErrors,
    warmupOps,
    errors: errors.count,
    ...(errors.first === undefined ? {} : { firstError: errors.first }),
    wallMs,
    throughput: (ops / wallMs) * 1000,
    latency: latencies.summary(),
    nodeCpu,
    ...serverUsage(before, after, ops, wallMs),
    samples: latencies,
  };
}

/**
 * Runs `workers` callers of `step(worker)`, each until its step returns 0 (nothing left for
 * it). A step that throws stops that worker and counts as an error.
 */
export async function runDrain(step: (worker: number) => Promise<number>, o: DrainOptions): Promise<Measurement> {
  const latencies = new Latencies();
  const errors = { count: 0, first: undefined as string | undefined };
  let items = 0;
  let calls = 0;
  const worker = async (w: number) => {
    for (;;) {
      const t = now();
      let n: number;
      try {
        n = await step(w);
      } catch (error) {
        errors.count++;
        errors.first ??= describe(error);
        return;
      }
      calls++;
      if (n === 0) return;
      latencies.add(elapsedMs(t));
      items += n;
    }
  };
  const before = await o.counters?.();
  const cpu = process.cpuUsage();
  const start = now();
  await profiled(o.profileName, () => Promise.all(Array.from({ length: o.workers }, (_, w) => worker(w))));
  const wallMs = elapsedMs(start);
  const nodeCpu = cpuShare(cpu, wallMs);
  const after = await o.counters?.();
  return {
    ops: items,
    calls,
    warmupOps: 0,
    errors: errors.count,
    ...(errors.first === undefined ? {} : { firstError: errors.first }),
    wallMs,
    throughput: (items / wallMs) * 1000,
    latency: latencies.summary(),
    nodeCpu,
    ...serverUsage(before, after, items, wallMs),
    // For mergeMeasurements (interleaved rounds); not written to the results file.
    samples: latencies,
  };
}

/**
 * One measurement from several slices of the same variant (interleaved rounds): counts and wall
 * time add up, throughput is total ops ÷ total wall time, percentiles come from all samples.
 */
export function mergeMeasurements(parts: Measurement[]): Measurement {
  if (parts.length === 1) return parts[0]!;
  const sum = (f: (m: Measurement) => number) => parts.reduce((a, m) => a + f(m), 0);
  const samples = new Latencies();
  for (const m of parts) if (m.samples) samples.addAll(m.samples);
  const ops = sum((m) => m.ops);
  const wallMs = sum((m) => m.wallMs);
  const errors = sum((m) => m.errors);
  const firstError = parts.find((m) => m.firstError)?.firstError;
  const retried = sum((m) => m.retried ?? 0);
  const servers = parts.map((m) => m.server).filter((s): s is ServerUsage => s !== undefined);
  const cpus = parts.filter((m) => m.server?.cpu !== undefined);
  const server: ServerUsage | undefined =
    servers.length === parts.length
      ? {
          statementsPerOp: sum((m) => m.server!.statementsPerOp * m.ops) / ops,
          rowLockWaits: sum((m) => m.server!.rowLockWaits),
          rowLockTimeMs: sum((m) => m.server!.rowLockTimeMs),
          ...(cpus.length === parts.length ? { cpu: sum((m) => m.server!.cpu! * m.wallMs) / wallMs } : {}),
        }
      : undefined;
  return {
    ops,
    calls: sum((m) => m.calls),
    warmupOps: sum((m) => m.warmupOps),
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    ...(retried ? { retried } : {}),
    wallMs,
    throughput: (ops / wallMs) * 1000,
    latency: samples.summary(),
    nodeCpu: sum((m) => m.nodeCpu * m.wallMs) / wallMs,
    ...(server ? { server } : {}),
    samples,
  };
}

function serverUsage(before: ServerCounters | undefined, after: ServerCounters | undefined, ops: number, wallMs: number): { server?: ServerUsage } {
  if (!before || !after) return {};
  const cpu = before.serverCpuMs !== undefined && after.serverCpuMs !== undefined ? (after.serverCpuMs - before.serverCpuMs) / wallMs : undefined;
  return {
    server: {
      statementsPerOp: ops > 0 ? (after.statements - before.statements) / ops : Number.NaN,
      rowLockWaits: after.rowLockWaits - before.rowLockWaits,
      rowLockTimeMs: after.rowLockTimeMs - before.rowLockTimeMs,
      ...(cpu === undefined ? {} : { cpu }),
    },
  };
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 300);
  return String(error).slice(0, 300);
}
