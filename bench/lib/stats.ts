/** Latency samples and their summary. All times are measured with `process.hrtime.bigint()`. */

export const now = (): bigint => process.hrtime.bigint();

/** Nanoseconds between two `now()` readings, as milliseconds. */
export const elapsedMs = (from: bigint, to: bigint = now()): number => Number(to - from) / 1e6;

/** A growable buffer of latencies in milliseconds. */
export class Latencies {
  #values = new Float64Array(4096);
  #length = 0;

  add(ms: number): void {
    if (this.#length === this.#values.length) {
      const bigger = new Float64Array(this.#values.length * 2);
      bigger.set(this.#values);
      this.#values = bigger;
    }
    this.#values[this.#length++] = ms;
  }

  addAll(other: Latencies): void {
    for (let i = 0; i < other.#length; i++) this.add(other.#values[i]!);
  }

  get length(): number {
    return this.#length;
  }

  summary(): LatencySummary {
    const sorted = this.#values.slice(0, this.#length).sort();
    return { count: this.#length, p50Ms: percentile(sorted, 0.5), p95Ms: percentile(sorted, 0.95), p99Ms: percentile(sorted, 0.99), maxMs: sorted[sorted.length - 1] ?? Number.NaN };
  }
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length)));
  return sorted[rank - 1]!;
}

/** CPU time this Node process used between two readings, as a share of wall time (1 = one core). */
export function cpuShare(from: NodeJS.CpuUsage, wallMs: number): number {
  const used = process.cpuUsage(from);
  return (used.user + used.system) / 1000 / wallMs;
}
