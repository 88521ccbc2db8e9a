/**
 * Draws examples/observability/dashboard.png from a real run: the example server (embedded
 * database, its worker delivering and expiring), a minute of traffic through its HTTP API — fresh
 * reservations, replays, sold-out requests, confirms, cancels, expiries, and a broker that fails
 * now and then and is down for ten seconds — and a Prometheus-style scrape of `GET /metrics`
 * every two seconds. Each panel of dashboard.json is evaluated on those scrapes with the same
 * query (rates over a 10 s window, quantiles from the histogram buckets as `histogram_quantile`
 * computes them) and drawn Grafana-style into an SVG, turned into a PNG by `rsvg-convert`.
 *
 *   npx tsx examples/observability/render.ts [seconds=60]
 *
 * Grafana itself is not needed (nor installable on the machine this was made on); import
 * dashboard.json into yours to see the same panels live.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer } from '../express/server.js';

const DURATION_S = Number(process.argv[2] ?? 60);
const SCRAPE_MS = 2000;
const RATE_WINDOW = 5; // scrapes: 10 s
const HERE = import.meta.dirname;

type Labels = Record<string, string>;
interface Sample {
  readonly name: string;
  readonly labels: Labels;
  readonly value: number;
}
interface Scrape {
  readonly t: number;
  readonly samples: Sample[];
}

function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels: Labels = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

async function run(): Promise<Scrape[]> {
  let brokerDown = false;
  const server = await startServer({
    port: 0,
    host: '127.0.0.1',
    logger: { info: () => {}, error: () => {} },
    // A broker that fails one delivery in ten, and is down for ten seconds mid-run.
    handler: () => {
      if (brokerDown || Math.random() < 0.1) throw new Error('broker unavailable');
    },
    worker: { idleIntervalMs: 100, maxIdleIntervalMs: 300, outbox: { maxAttempts: 4, baseDelayMs: 500, maxDelayMs: 4000 } },
  });
  const post = async (route: string, body: unknown, key?: string) => {
    const response = await fetch(`${server.url}${route}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(key ? { 'Idempotency-Key': key } : {}) },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as { id?: string } };
  };

  const items: number[] = [];
  for (let i = 0; i < 8; i++) items.push((await post('/items', { sku: `RENDER-${Date.now()}-${i}`, name: `item ${i}`, availableQuantity: i === 0 ? 40 : 400 })).body.id as unknown as number);
  const pending: string[] = [];
  const sent: Array<{ key: string; body: unknown }> = [];
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / 1000;
  const pick = <T>(values: readonly T[]) => values[Math.floor(Math.random() * values.length)]!;

  const client = async (id: number) => {
    while (elapsed() < DURATION_S) {
      const t = elapsed();
      // A flash sale on item 0 from 20 s to 35 s: more clients, most of them refused.
      const flash = t > 20 && t < 35;
      if (id >= 4 && !flash) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      const roll = Math.random();
      if (flash && roll < 0.5) {
        const key = `k-${id}-${Math.random()}`;
        const body = { itemId: items[0], quantity: 1 + Math.floor(Math.random() * 3), ttlSeconds: 3 };
        const r = await post('/reservations', body, key);
        if (r.status === 201 && r.body.id) pending.push(r.body.id);
      } else if (roll < 0.55) {
        const key = `k-${id}-${Math.random()}`;
        const body = { itemId: pick(items.slice(1)), quantity: 1 + Math.floor(Math.random() * 3), ttlSeconds: 2 + Math.floor(Math.random() * 12) };
        const r = await post('/reservations', body, key);
        sent.push({ key, body });
        if (r.status === 201 && r.body.id) pending.push(r.body.id);
      } else if (roll < 0.65 && sent.length > 0) {
        const earlier = pick(sent);
        await post('/reservations', earlier.body, earlier.key);
      } else if (roll < 0.72) {
        await post('/reservations', { itemId: pick(items), quantity: 5000 }, `big-${Math.random()}`);
      } else if (roll < 0.88 && pending.length > 0) {
        await post(`/reservations/${pending.splice(Math.floor(Math.random() * pending.length), 1)[0]}/confirm`, {});
      } else if (roll < 0.96 && pending.length > 0) {
        await post(`/reservations/${pending.splice(Math.floor(Math.random() * pending.length), 1)[0]}/cancel`, {});
      } else {
        await post(`/items/${pick(items)}/restock`, { quantity: 50 });
      }
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
    }
  };

  const scrapes: Scrape[] = [];
  const scraper = (async () => {
    while (elapsed() < DURATION_S + 6) {
      const t = elapsed();
      brokerDown = t > 38 && t < 48;
      scrapes.push({ t: Date.now(), samples: parse(await (await fetch(`${server.url}/metrics`)).text()) });
      await new Promise((resolve) => setTimeout(resolve, SCRAPE_MS));
    }
  })();
  await Promise.all([...Array.from({ length: 10 }, (_, i) => client(i)), scraper]);
  await server.close();
  return scrapes;
}

// ---------------------------------------------------------------------------------------------
// The dashboard's queries, on the scrapes
// ---------------------------------------------------------------------------------------------

type Series = Map<string, Array<number | null>>;

const series = (scrapes: Scrape[], value: (k: number) => Map<string, number>): Series => {
  const result: Series = new Map();
  scrapes.forEach((_, k) => {
    for (const [key, v] of value(k)) {
      if (!result.has(key)) result.set(key, scrapes.map(() => null));
      result.get(key)![k] = v;
    }
  });
  return result;
};

/** sum by (label) (rate(name[window])) at scrape k. */
function rate(scrapes: Scrape[], name: string, by: string | undefined, k: number): Map<string, number> {
  const out = new Map<string, number>();
  const from = Math.max(0, k - RATE_WINDOW);
  if (from === k) return out;
  const seconds = (scrapes[k]!.t - scrapes[from]!.t) / 1000;
  const earlier = new Map(scrapes[from]!.samples.filter((s) => s.name === name).map((s) => [JSON.stringify(s.labels), s.value]));
  for (const s of scrapes[k]!.samples) {
    if (s.name !== name) continue;
    const key = by ? (s.labels[by] ?? '') : '';
    const increase = s.value - (earlier.get(JSON.stringify(s.labels)) ?? 0);
    out.set(key, (out.get(key) ?? 0) + Math.max(0, increase) / seconds);
  }
  return out;
}

/** histogram_quantile(q, sum by (le[, by]) (rate(name_bucket[window]))) at scrape k. */
function quantile(scrapes: Scrape[], q: number, name: string, filter: Labels, by: string | undefined, k: number): Map<string, number> {
  const groups = new Map<string, Map<number, number>>();
  const from = Math.max(0, k - RATE_WINDOW);
  if (from === k) return new Map();
  const earlier = new Map(scrapes[from]!.samples.filter((s) => s.name === `${name}_bucket`).map((s) => [JSON.stringify(s.labels), s.value]));
  for (const s of scrapes[k]!.samples) {
    if (s.name !== `${name}_bucket` || Object.entries(filter).some(([l, v]) => s.labels[l] !== v)) continue;
    const key = by ? (s.labels[by] ?? '') : '';
    const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le);
    const buckets = groups.get(key) ?? new Map<number, number>();
    buckets.set(le, (buckets.get(le) ?? 0) + Math.max(0, s.value - (earlier.get(JSON.stringify(s.labels)) ?? 0)));
    groups.set(key, buckets);
  }
  const out = new Map<string, number>();
  for (const [key, buckets] of groups) {
    const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
    const total = sorted.at(-1)?.[1] ?? 0;
    if (total === 0) continue;
    const rank = q * total;
    let previous: [number, number] = [0, 0];
    for (const [le, count] of sorted) {
      if (count >= rank) {
        out.set(key, le === Number.POSITIVE_INFINITY ? previous[0] : previous[0] + ((le - previous[0]) * (rank - previous[1])) / (count - previous[1] || 1));
        break;
      }
      previous = [le, count];
    }
  }
  return out;
}

function gauge(scrapes: Scrape[], name: string, k: number): Map<string, number> {
  const sample = scrapes[k]!.samples.find((s) => s.name === name);
  return new Map(sample ? [['', sample.value]] : []);
}

interface Panel {
  readonly title: string;
  readonly unit: 'reqps' | 'ops' | 's' | 'short';
  readonly series: Series;
}

function panels(scrapes: Scrape[]): Panel[] {
  const named = (label: string, value: (k: number) => Map<string, number>) =>
    series(scrapes, (k) => new Map([...value(k)].map(([key, v]) => [key === '' ? label : key, v])));
  const merge = (...parts: Series[]) => new Map(parts.flatMap((part) => [...part]));
  const reserve = { reservation_engine_operation: 'reserve' };
  const duration = 'reservation_engine_operation_duration';
  return [
    { title: 'Reservations by outcome (req/s)', unit: 'reqps', series: series(scrapes, (k) => rate(scrapes, 'reservation_engine_reservations_total', 'reservation_engine_outcome', k)) },
    {
      title: 'Call latency p50 / p95 / p99 (reserve)',
      unit: 's',
      series: merge(
        named('p50', (k) => quantile(scrapes, 0.5, duration, reserve, undefined, k)),
        named('p95', (k) => quantile(scrapes, 0.95, duration, reserve, undefined, k)),
        named('p99', (k) => quantile(scrapes, 0.99, duration, reserve, undefined, k)),
      ),
    },
    { title: 'Call latency p95 by operation', unit: 's', series: series(scrapes, (k) => quantile(scrapes, 0.95, duration, {}, 'reservation_engine_operation', k)) },
    { title: 'Transitions (per s)', unit: 'ops', series: series(scrapes, (k) => rate(scrapes, 'reservation_engine_transitions_total', 'reservation_engine_status', k)) },
    { title: 'Outbox deliveries by result (per s)', unit: 'ops', series: series(scrapes, (k) => rate(scrapes, 'reservation_engine_outbox_events_total', 'reservation_engine_result', k)) },
    { title: 'Outbox lag (age of the oldest due event)', unit: 's', series: named('lag', (k) => gauge(scrapes, 'reservation_engine_outbox_lag', k)) },
    {
      title: 'Outbox pending / due',
      unit: 'short',
      series: merge(named('pending', (k) => gauge(scrapes, 'reservation_engine_outbox_pending', k)), named('due', (k) => gauge(scrapes, 'reservation_engine_outbox_due', k))),
    },
    { title: 'Dead letters', unit: 'short', series: named('dead letters', (k) => gauge(scrapes, 'reservation_engine_outbox_dead_letters', k)) },
    { title: 'Expiry backlog (PENDING past expiresAt)', unit: 'short', series: named('overdue', (k) => gauge(scrapes, 'reservation_engine_expiry_backlog', k)) },
    { title: 'Transaction retries (per s)', unit: 'ops', series: series(scrapes, (k) => rate(scrapes, 'reservation_engine_transaction_retries_total', 'reservation_engine_reason', k)) },
  ];
}

// ---------------------------------------------------------------------------------------------
// Drawing, Grafana's dark theme
// ---------------------------------------------------------------------------------------------

const COLORS = ['#73bf69', '#f2cc0c', '#8ab8ff', '#ff780a', '#f2495c', '#b877d9', '#5794f2', '#fade2a', '#96d98d', '#ff9830'];
const W = 1600;
const PANEL_W = 785;
const PANEL_H = 300;
const GAP = 10;
const TOP = 56;

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function format(value: number, unit: Panel['unit']): string {
  if (unit === 's') return value >= 1 ? `${value.toFixed(1)} s` : `${(value * 1000).toFixed(value * 1000 >= 10 ? 0 : 1)} ms`;
  const n = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(value === 0 ? 0 : 2);
  return unit === 'reqps' ? `${n} req/s` : unit === 'ops' ? `${n}/s` : n;
}

function niceMax(max: number): number {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= max) ?? 10 * power;
}

function drawPanel(panel: Panel, x: number, y: number, times: number[]): string {
  const plot = { x: x + 70, y: y + 40, w: PANEL_W - 90, h: PANEL_H - 100 };
  const values = [...panel.series.values()].flat().filter((v): v is number => v !== null && Number.isFinite(v));
  const max = niceMax(Math.max(0, ...values) * 1.1);
  const t0 = times[0]!;
  const t1 = times.at(-1)!;
  const px = (t: number) => plot.x + ((t - t0) / (t1 - t0)) * plot.w;
  const py = (v: number) => plot.y + plot.h - (v / max) * plot.h;
  const parts: string[] = [
    `<rect x="${x}" y="${y}" width="${PANEL_W}" height="${PANEL_H}" rx="3" fill="#181b1f" stroke="#2c3235"/>`,
    `<text x="${x + 12}" y="${y + 24}" fill="#ccccdc" font-size="15" font-weight="500">${escape(panel.title)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${py(v)}" y2="${py(v)}" stroke="#2c3235"/>`);
    parts.push(`<text x="${plot.x - 8}" y="${py(v) + 4}" fill="#8e8e8e" font-size="11" text-anchor="end">${escape(format(v, panel.unit))}</text>`);
  }
  for (let i = 0; i <= 5; i++) {
    const t = t0 + ((t1 - t0) * i) / 5;
    parts.push(`<text x="${px(t)}" y="${plot.y + plot.h + 16}" fill="#8e8e8e" font-size="11" text-anchor="middle">${new Date(t).toISOString().slice(11, 19)}</text>`);
  }
  let legendX = plot.x;
  [...panel.series.entries()].forEach(([name, points], index) => {
    const color = COLORS[index % COLORS.length]!;
    const line = points
      .map((v, k) => (v === null || !Number.isFinite(v) ? null : `${px(times[k]!).toFixed(1)},${py(v).toFixed(1)}`))
      .reduce<string[][]>((runs, point) => {
        if (point === null) runs.push([]);
        else runs.at(-1)!.push(point);
        return runs;
      }, [[]])
      .filter((run) => run.length > 0);
    for (const run of line) {
      parts.push(`<polygon points="${run[0]!.split(',')[0]},${plot.y + plot.h} ${run.join(' ')} ${run.at(-1)!.split(',')[0]},${plot.y + plot.h}" fill="${color}" fill-opacity="0.08"/>`);
      parts.push(`<polyline points="${run.join(' ')}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"/>`);
    }
    parts.push(`<rect x="${legendX}" y="${y + PANEL_H - 30}" width="14" height="4" rx="1" fill="${color}"/>`);
    parts.push(`<text x="${legendX + 20}" y="${y + PANEL_H - 24}" fill="#ccccdc" font-size="12">${escape(name)}</text>`);
    legendX += 34 + name.length * 7;
  });
  if (panel.series.size === 0) parts.push(`<text x="${plot.x + plot.w / 2}" y="${plot.y + plot.h / 2}" fill="#8e8e8e" font-size="13" text-anchor="middle">No data</text>`);
  return parts.join('\n');
}

function draw(all: Panel[], scrapes: Scrape[]): string {
  const times = scrapes.map((s) => s.t);
  const rows = Math.ceil(all.length / 2);
  const height = TOP + rows * (PANEL_H + GAP) + GAP;
  const body = all.map((panel, i) => drawPanel(panel, GAP + (i % 2) * (PANEL_W + GAP), TOP + Math.floor(i / 2) * (PANEL_H + GAP), times)).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" font-family="Inter, Helvetica, Arial, sans-serif">
<rect width="${W}" height="${height}" fill="#111217"/>
<text x="${GAP + 4}" y="36" fill="#ccccdc" font-size="20" font-weight="500">reservation-engine</text>
<text x="${W - GAP - 4}" y="36" fill="#8e8e8e" font-size="13" text-anchor="end">examples/observability/dashboard.json · drawn by render.ts from a real run (${scrapes.length} scrapes, rates over 10 s)</text>
${body}
</svg>
`;
}

const scrapes = await run();
const svg = draw(panels(scrapes), scrapes);
const svgFile = path.join(os.tmpdir(), `reservation-engine-dashboard-${process.pid}.svg`);
writeFileSync(svgFile, svg);
execFileSync('rsvg-convert', ['-o', path.join(HERE, 'dashboard.png'), svgFile]);
rmSync(svgFile);
console.log(`wrote ${path.relative(process.cwd(), path.join(HERE, 'dashboard.png'))} from ${scrapes.length} scrapes`);
