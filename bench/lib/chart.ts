/**
 * One SVG chart per scenario, written next to the results: grouped bars of throughput by
 * config (concurrency, or callers × batch for the drains) and variant, with the scenario's upper
 * limit (the `bare` variant) drawn as a dashed line across each config group instead of a bar.
 * Hand-written SVG, no dependencies; built from the same data as the JSON result, so the charts
 * of a committed results file can be regenerated:
 *
 *   npx tsx bench/lib/chart.ts bench/results/<file>.json [more.json …]
 *
 * writes bench/results/<file>-<scenario>.svg for each scenario and links them from <file>.md
 * when it exists and does not link them yet.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunInfo } from './report.js';
import type { ScenarioResult } from './scenario.js';

/** The variant drawn as the upper limit (a dashed line, not a bar): the bare SQL of hot-item and outbox. */
export const LIMIT_VARIANT = 'bare';

const WIDTH = 900;
const HEIGHT = 420;
const FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif";
/** Tableau 10: distinguishable, and fine on a light background. */
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
const LIMIT_COLOR = '#222222';
const TEXT = '#1f2328';
const MUTED = '#59636e';

export const chartFileName = (baseName: string, scenarioId: string) => `${baseName}-${scenarioId}.svg`;

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
/** Rough text width for layout (no font metrics in a hand-written SVG). */
const textWidth = (s: string, size: number, bold = false) => s.length * size * (bold ? 0.62 : 0.58);
const r1 = (n: number) => Math.round(n * 10) / 10;
/** Relative luminance of #rrggbb, 0 (black) to 1 (white): picks the text colour inside a bar. */
const luminance = (hex: string) => {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
};

/** 3456 → "3.5k", 30892 → "30.9k", 579 → "579", 1234567 → "1.2M". */
export function compact(n: number): string {
  if (!Number.isFinite(n)) return '–';
  const scaled = (value: number, unit: string) => `${value >= 100 ? Math.round(value) : Number(value.toFixed(1))}${unit}`;
  if (Math.abs(n) >= 999_500) return scaled(n / 1e6, 'M');
  if (Math.abs(n) >= 999.5) return scaled(n / 1e3, 'k');
  if (Math.abs(n) >= 10) return String(Math.round(n));
  return String(Number(n.toFixed(2)));
}

/** Axis top and step: 1, 2, 2.5 or 5 × 10^k, about five ticks. */
function niceScale(max: number): { top: number; step: number } {
  const raw = (max > 0 ? max : 1) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  return { top: Math.ceil(max / step - 1e-9) * step || step, step };
}

const KEY_ABBREVIATION: Record<string, string> = { workers: 'W', batch: 'B' };
const KEY_NAME: Record<string, string> = { concurrency: 'concurrency (callers = pool size)', workers: 'W = concurrent callers', batch: 'B = batch size', items: 'items drawn from' };
const part = (key: string, value: number) => `${KEY_ABBREVIATION[key] ?? (key === 'concurrency' ? 'c' : key)}=${value.toLocaleString('en-US')}`;

type Info = Partial<Pick<RunInfo, 'startedAt' | 'mode' | 'database' | 'machine' | 'git'>>;

/** The chart of one scenario, or undefined when it has no rows. */
export function renderChart(info: Info, result: ScenarioResult): string | undefined {
  if (result.rows.length === 0) return undefined;
  // Configs in the order they ran; the variants that have rows, in the scenario's order.
  const configs: Record<string, number>[] = [];
  const value = new Map<string, number>();
  const failed = new Set<string>();
  const cell = (config: Record<string, number>, variant: string) => `${JSON.stringify(config)} ${variant}`;
  for (const row of result.rows) {
    if (!configs.some((c) => JSON.stringify(c) === JSON.stringify(row.config))) configs.push(row.config);
    value.set(cell(row.config, row.variant), row.m.throughput);
    if (row.checks.some((c) => !c.ok)) failed.add(cell(row.config, row.variant));
  }
  const known = result.variants.filter((v) => result.rows.some((r) => r.variant === v.key));
  for (const key of new Set(result.rows.map((r) => r.variant))) if (!known.some((v) => v.key === key)) known.push({ key, label: key, description: '' });
  const limit = known.length > 1 ? known.find((v) => v.key === LIMIT_VARIANT) : undefined;
  const bars = known.filter((v) => v !== limit);

  const dialect = info.database?.dialect ?? '?';
  const date = info.startedAt?.slice(0, 10) ?? '?';
  const title = `${result.title} — ${dialect}, ${date}`;
  // "10.11.19-MariaDB-0+deb12u1" → "10.11.19-MariaDB"; "PostgreSQL 16.4 on x86_64-pc-linux-gnu, …" → "PostgreSQL 16.4".
  const version = info.database?.version?.replace(/ on .*|,.*/, '').split('-').slice(0, 2).join('-');
  const subtitle = [
    `${result.unit}, higher is better`,
    [info.mode && `${info.mode} run`, version, info.machine?.cores && `${info.machine.cores} cores`].filter(Boolean).join(', '),
    info.git?.commit && info.git.commit !== 'unknown' ? `git ${info.git.commit.slice(0, 7)}${info.git.dirty ? ' (dirty)' : ''}` : undefined,
  ]
    .filter(Boolean)
    .join(' · ');

  const out: string[] = [];
  const text = (x: number, y: number, s: string, attrs = '') => out.push(`<text x="${r1(x)}" y="${r1(y)}"${attrs}>${esc(s)}</text>`);
  /** A white halo keeps labels readable over bars and lines. */
  const halo = ' stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke"';

  // Title, subtitle and a legend that wraps.
  text(16, 28, title, ` font-size="17" font-weight="600" fill="${TEXT}"`);
  const failedNote = failed.size ? `<tspan fill="#cf222e">\u00a0· ✗ = a correctness check failed</tspan>` : '';
  out.push(`<text x="16" y="47" font-size="12" fill="${MUTED}">${esc(subtitle)}${failedNote}</text>`);
  const legend = [
    ...bars.map((v, i) => ({ label: v.label, draw: (x: number, y: number) => out.push(`<rect x="${r1(x)}" y="${r1(y - 10)}" width="12" height="12" rx="2" fill="${PALETTE[i % PALETTE.length]}"/>`), swatch: 12 })),
    ...(limit
      ? [{ label: `upper limit: ${limit.label}`, draw: (x: number, y: number) => out.push(`<line x1="${r1(x)}" y1="${r1(y - 4)}" x2="${r1(x + 24)}" y2="${r1(y - 4)}" stroke="${LIMIT_COLOR}" stroke-width="2" stroke-dasharray="6 3"/>`), swatch: 24 }]
      : []),
  ];
  let lx = 16;
  let ly = 70;
  for (const item of legend) {
    const w = item.swatch + 6 + textWidth(item.label, 12) + 20;
    if (lx > 16 && lx + w > WIDTH - 16) {
      lx = 16;
      ly += 19;
    }
    item.draw(lx, ly);
    text(lx + item.swatch + 6, ly, item.label, ` font-size="12" fill="${TEXT}"`);
    lx += w;
  }

  // Plot area.
  const configKeys = Object.keys(configs[0]!);
  const twoLevel = configKeys.length > 1;
  const left = 66;
  const right = WIDTH - 16;
  const top = ly + 22;
  const bottom = HEIGHT - (twoLevel ? 64 : 48);
  const plotH = bottom - top;
  const groupW = (right - left) / configs.length;
  const slot = Math.min(56, (groupW * 0.78) / Math.max(1, bars.length));
  const gap = Math.min(4, slot * 0.15);
  const allValues = [...value.values()].filter(Number.isFinite);
  const longestLabel = Math.max(0, ...[...value].map(([k, v]) => textWidth(`${compact(v)}${failed.has(k) ? ' ✗' : ''}`, 11)));
  const vertical = longestLabel > slot + gap; // labels that do not fit over a bar turn upright
  const headroom = (vertical ? longestLabel + 8 : 20) + (limit ? 10 : 0);
  const { top: yTop, step } = niceScale((Math.max(0, ...allValues) * plotH) / Math.max(1, plotH - headroom));
  const y = (v: number) => bottom - (Math.max(0, v) / yTop) * plotH;

  // Grid, y ticks and the axis titles.
  for (let t = 0; t <= yTop + step / 2; t += step) {
    out.push(`<line x1="${left}" y1="${r1(y(t))}" x2="${right}" y2="${r1(y(t))}" stroke="${t === 0 ? '#8c959f' : '#e6e8eb'}" stroke-width="1"/>`);
    text(left - 8, y(t) + 4, compact(t), ` font-size="12" fill="${MUTED}" text-anchor="end"`);
  }
  const midY = (top + bottom) / 2;
  out.push(`<text x="18" y="${r1(midY)}" font-size="12" fill="${MUTED}" text-anchor="middle" transform="rotate(-90 18 ${r1(midY)})">${esc(result.unit)}</text>`);
  const axisTitle = twoLevel
    ? `${configKeys.slice(1).map((k) => KEY_NAME[k] ?? k).join(', ')}; grouped by ${KEY_NAME[configKeys[0]!] ?? configKeys[0]}`
    : (KEY_NAME[configKeys[0]!] ?? configKeys[0]!);
  text((left + right) / 2, HEIGHT - 10, axisTitle, ` font-size="12" fill="${MUTED}" text-anchor="middle"`);

  // X labels: one row, or inner keys per group and the outer key (first key) per run of groups.
  configs.forEach((config, g) => {
    const cx = left + groupW * (g + 0.5);
    const inner = Object.entries(config).slice(twoLevel ? 1 : 0).map(([k, v]) => part(k, v)).join(' ');
    text(cx, bottom + 18, inner, ` font-size="12" fill="${TEXT}" text-anchor="middle"`);
  });
  if (twoLevel) {
    const outerKey = configKeys[0]!;
    let start = 0;
    for (let g = 1; g <= configs.length; g++) {
      if (g < configs.length && configs[g]![outerKey] === configs[start]![outerKey]) continue;
      const x0 = left + groupW * start;
      const x1 = left + groupW * g;
      out.push(`<line x1="${r1(x0 + 6)}" y1="${bottom + 26}" x2="${r1(x1 - 6)}" y2="${bottom + 26}" stroke="#c8ccd1" stroke-width="1"/>`);
      text((x0 + x1) / 2, bottom + 41, part(outerKey, configs[start]![outerKey]!), ` font-size="12" font-weight="600" fill="${TEXT}" text-anchor="middle"`);
      if (g < configs.length) out.push(`<line x1="${r1(x1)}" y1="${top}" x2="${r1(x1)}" y2="${bottom + 30}" stroke="#d0d7de" stroke-width="1" stroke-dasharray="2 3"/>`);
      start = g;
    }
  }

  // Bars, then the limit lines, then every label on top. The limit's value sits in a badge on
  // its line; a bar label that would touch the line or the badge moves into the bar's top, or
  // above the badge when the bar is too short.
  type Box = { x0: number; x1: number; y0: number; y1: number };
  const hits = (a: Box, b: Box) => a.x0 < b.x1 && a.x1 > b.x0 && a.y0 < b.y1 && a.y1 > b.y0;
  const labels: string[] = [];
  const desc: string[] = [];
  const where = (config: Record<string, number>) => Object.entries(config).map(([k, v]) => part(k, v)).join(' ');
  configs.forEach((config, g) => {
    const gx = left + groupW * g;
    const x0 = gx + groupW / 2 - (slot * bars.length) / 2;
    const parts: string[] = [];
    const avoid: Box[] = [];
    let badgeTop = Infinity;
    let limitPart: string | undefined;
    const limitValue = limit ? value.get(cell(config, limit.key)) : undefined;
    if (limit && limitValue !== undefined) {
      const k = cell(config, limit.key);
      const half = Math.min(groupW / 2 - 4, Math.max(42, (slot * bars.length) / 2 + 12));
      const lx0 = gx + groupW / 2 - half;
      const lx1 = gx + groupW / 2 + half;
      const ly = y(limitValue);
      // "bare 9.8k" where the dashes still show on both sides; else the value alone (the legend names it).
      let label = `${limit.key} ${compact(limitValue)}${failed.has(k) ? ' ✗' : ''}`;
      if (textWidth(label, 11, true) + 10 > (lx1 - lx0) * 0.6) label = label.slice(limit.key.length + 1);
      const w = textWidth(label, 11, true) + 10;
      const cx = (lx0 + lx1) / 2;
      badgeTop = ly - 8;
      avoid.push({ x0: lx0, x1: lx1, y0: ly - 2, y1: ly + 2 }, { x0: cx - w / 2, x1: cx + w / 2, y0: ly - 8, y1: ly + 8 });
      labels.push(
        `<line x1="${r1(lx0)}" y1="${r1(ly)}" x2="${r1(lx1)}" y2="${r1(ly)}" stroke="${LIMIT_COLOR}" stroke-width="2" stroke-dasharray="6 3"><title>${esc(`${limit.label}, ${where(config)}: ${Math.round(limitValue).toLocaleString('en-US')} ${result.unit}`)}</title></line>`,
        `<rect x="${r1(cx - w / 2)}" y="${r1(ly - 8)}" width="${r1(w)}" height="16" rx="3" fill="#ffffff" stroke="${LIMIT_COLOR}" stroke-width="1"/>`,
        `<text x="${r1(cx)}" y="${r1(ly + 4)}" font-size="11" font-weight="600" fill="${failed.has(k) ? '#cf222e' : LIMIT_COLOR}" text-anchor="middle">${esc(label)}</text>`,
      );
      limitPart = `${limit.label} (upper limit) ${Math.round(limitValue)}`;
    }
    bars.forEach((v, i) => {
      const k = cell(config, v.key);
      const val = value.get(k);
      if (val === undefined) return;
      const color = PALETTE[i % PALETTE.length]!;
      const bx = x0 + slot * i + gap / 2;
      const bw = slot - gap;
      const by = y(val);
      out.push(`<rect x="${r1(bx)}" y="${r1(by)}" width="${r1(bw)}" height="${r1(bottom - by)}" fill="${color}"><title>${esc(`${v.label}, ${where(config)}: ${Math.round(val).toLocaleString('en-US')} ${result.unit}`)}</title></rect>`);
      parts.push(`${v.label} ${Math.round(val)}`);
      const label = `${compact(val)}${failed.has(k) ? ' ✗' : ''}`;
      const fill = failed.has(k) ? '#cf222e' : TEXT;
      const cx = bx + bw / 2;
      const w = textWidth(label, 11);
      if (vertical) {
        const box = (base: number): Box => ({ x0: cx - 7, x1: cx + 7, y0: base - w, y1: base });
        const base = avoid.some((a) => hits(a, box(by - 4))) ? Math.min(by, badgeTop) - 4 : by - 4;
        labels.push(`<text x="${r1(cx + 4)}" y="${r1(base)}" font-size="11" fill="${fill}" transform="rotate(-90 ${r1(cx + 4)} ${r1(base)})"${halo}>${esc(label)}</text>`);
        return;
      }
      const box = (baseline: number): Box => ({ x0: cx - w / 2, x1: cx + w / 2, y0: baseline - 11, y1: baseline + 2 });
      const clear = (baseline: number) => !avoid.some((a) => hits(a, box(baseline)));
      if (clear(by - 4)) {
        labels.push(`<text x="${r1(cx)}" y="${r1(by - 4)}" font-size="11" fill="${fill}" text-anchor="middle"${halo}>${esc(label)}</text>`);
      } else if (bottom - by >= 18 && w <= bw && clear(by + 13) && !failed.has(k)) {
        labels.push(`<text x="${r1(cx)}" y="${r1(by + 13)}" font-size="11" fill="${luminance(color) > 0.6 ? TEXT : '#ffffff'}" text-anchor="middle">${esc(label)}</text>`);
      } else {
        labels.push(`<text x="${r1(cx)}" y="${r1(Math.min(by, badgeTop) - 4)}" font-size="11" fill="${fill}" text-anchor="middle"${halo}>${esc(label)}</text>`);
      }
    });
    if (limitPart) parts.push(limitPart);
    desc.push(`${where(config)}: ${parts.join(', ')}`);
  });
  out.push(...labels);

  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-labelledby="t d" font-family="${esc(FONT)}">`,
    `<title id="t">${esc(`${title}: ${result.unit} by variant and config`)}</title>`,
    `<desc id="d">${esc(`${desc.join('; ')}.`)}</desc>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}

/** Writes <baseName>-<scenario>.svg for each scenario with rows; returns the file names by scenario id. */
export function writeCharts(dir: string, baseName: string, info: Info, results: ScenarioResult[]): Record<string, string> {
  const files: Record<string, string> = {};
  for (const result of results) {
    try {
      const svg = renderChart(info, result);
      if (svg === undefined) continue;
      const name = chartFileName(baseName, result.id);
      writeFileSync(path.join(dir, name), svg);
      files[result.id] = name;
    } catch (error) {
      // A chart must never cost the results themselves.
      console.error(`chart of ${result.id} not written: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return files;
}

/** The Markdown line that shows a chart; report.ts puts it right under the scenario's heading. */
export const chartLink = (scenarioId: string, file: string) => `![${scenarioId}](./${file})`;

/** CLI: regenerate the charts of results files, and link them from the .md beside each. */
function main(files: string[]): number {
  if (files.length === 0 || files.some((f) => !f.endsWith('.json'))) {
    console.error('Usage: npx tsx bench/lib/chart.ts bench/results/<file>.json [more.json …]');
    return 2;
  }
  for (const file of files) {
    const data = JSON.parse(readFileSync(file, 'utf8')) as { info?: Info; results?: ScenarioResult[] };
    if (!data.info || !Array.isArray(data.results)) {
      console.error(`${file}: not a bench results file (no info / results)`);
      return 2;
    }
    const dir = path.dirname(file);
    const baseName = path.basename(file, '.json');
    const charts = writeCharts(dir, baseName, data.info, data.results);
    for (const name of Object.values(charts)) console.log(path.join(dir, name));
    const md = path.join(dir, `${baseName}.md`);
    if (!existsSync(md)) continue;
    const lines = readFileSync(md, 'utf8').split('\n');
    let changed = false;
    for (const result of data.results) {
      const name = charts[result.id];
      if (!name || lines.some((l) => l.includes(`(./${name})`))) continue;
      const heading = lines.indexOf(`## ${result.title}`);
      if (heading < 0) continue;
      lines.splice(heading + 1, 0, '', chartLink(result.id, name));
      changed = true;
    }
    if (changed) {
      writeFileSync(md, lines.join('\n'));
      console.log(`${md} (linked the charts)`);
    }
  }
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
