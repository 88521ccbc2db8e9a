/**
 * Summarises a V8 CPU profile (from `npm run bench -- --profile …` or `node --cpu-prof`):
 *   npx tsx bench/profile-summary.ts <file.cpuprofile> [--top 25]
 * Prints where the process spent its time: self time by package (kysely, mysql2, zod, the
 * engine's src/, Node internals, GC), the same with native code charged to the package that
 * called it, inclusive time of the engine's expensive synchronous steps (Kysely query
 * compilation, zod validation, payload hashing, socket writes…), and the top functions.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { positionals, values } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
if (positionals.length !== 1) {
  console.error('usage: npx tsx bench/profile-summary.ts <file.cpuprofile> [--top N]');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;

// Self time per node from the samples (µs).
const self = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]!;
  self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const root = profile.nodes.find((n) => !parent.has(n.id))!;
const total = [...self.values()].reduce((a, b) => a + b, 0);

function category(node: ProfileNode): string {
  const { url, functionName } = node.callFrame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.includes('/src/')) return 'reservation-engine src/';
  if (url.includes('/bench/')) return 'bench/';
  if (url.startsWith('node:')) return 'node internals';
  return url;
}

const inclusive = new Map<number, number>();
function inclusiveTime(node: ProfileNode): number {
  let t = self.get(node.id) ?? 0;
  for (const c of node.children ?? []) t += inclusiveTime(byId.get(c)!);
  inclusive.set(node.id, t);
  return t;
}
inclusiveTime(root);

/** Inclusive time of frames matching `match`, counting only the outermost match on each stack. */
function inclusiveOf(match: (n: ProfileNode) => boolean): number {
  let sum = 0;
  const walk = (node: ProfileNode) => {
    if (match(node)) {
      sum += inclusive.get(node.id) ?? 0;
      return;
    }
    for (const c of node.children ?? []) walk(byId.get(c)!);
  };
  walk(root);
  return sum;
}

const pct = (us: number, of = total) => `${((us / of) * 100).toFixed(1).padStart(5)} %`;
const idle = [...self.entries()].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
const busy = total - idle;
console.log(`profile: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${pct(busy)})\n`);

const cats = new Map<string, number>();
for (const [id, t] of self) {
  const c = category(byId.get(id)!);
  cats.set(c, (cats.get(c) ?? 0) + t);
}
console.log('self time by package (% of busy time):');
for (const [c, t] of [...cats].filter(([c]) => c !== '(idle)').sort((a, b) => b[1] - a[1])) console.log(`  ${pct(t, busy)}  ${c}`);

// Native code and Node internals charged to the nearest package frame that called them
// (e.g. the socket write syscall → mysql2, randomFillSync → the engine's uuidv7).
const isOwner = (c: string) => c !== '(native)' && c !== 'node internals';
const owner = new Map<number, string>();
function ownerOf(id: number): string {
  const cached = owner.get(id);
  if (cached) return cached;
  const node = byId.get(id)!;
  const c = category(node);
  const up = parent.get(id);
  const o = isOwner(c) || up === undefined ? c : ownerOf(up);
  owner.set(id, o);
  return o;
}
const attributed = new Map<string, number>();
for (const [id, t] of self) {
  const o = ownerOf(id);
  if (o !== '(idle)') attributed.set(o, (attributed.get(o) ?? 0) + t);
}
console.log('\nbusy time by package, native code and Node internals charged to their caller (% of busy time):');
for (const [c, t] of [...attributed].filter(([c]) => c !== '(idle)').sort((a, b) => b[1] - a[1])) console.log(`  ${pct(t, busy)}  ${c}`);

const fn = (name: string | RegExp, urlPart: string) => (n: ProfileNode) =>
  (typeof name === 'string' ? n.callFrame.functionName === name : name.test(n.callFrame.functionName)) && n.callFrame.url.includes(urlPart);
const steps: Array<[string, (n: ProfileNode) => boolean]> = [
  ['Kysely: compile queries (compileQuery)', fn('compileQuery', 'kysely')],
  ['Kysely: stack-trace capture (extendStackTrace)', fn('extendStackTrace', 'kysely')],
  ['zod: validation (safeParse)', fn(/^(safeParse|_parse|parse)$/, 'zod')],
  ['engine: parse() (src/validation.ts)', fn('parse', '/src/validation.ts')],
  ['engine: payloadHash', fn('payloadHash', '/src/idempotency/')],
  ['engine: uuidv7', fn('uuidv7', '/src/uuid.ts')],
  ['engine: eventRow', fn('eventRow', '/src/outbox/event-row.ts')],
  ['socket writes (one write syscall per statement; includes time descheduled for the DB thread it woke)', (n) => /^(writeBuffer|writev|writeUtf8String|writeLatin1String)$/.test(n.callFrame.functionName) && !n.callFrame.url],
  ['GC', (n) => n.callFrame.functionName === '(garbage collector)'],
];
console.log('\ninclusive time of steps (% of busy time; synchronous work only — an async step\'s awaited I/O is not in it):');
for (const [label, match] of steps) {
  const t = inclusiveOf(match);
  if (t > 0) console.log(`  ${pct(t, busy)}  ${label}`);
}

const top = Number(values.top);
const fnSelf = new Map<string, number>();
for (const [id, t] of self) {
  const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
  if (functionName === '(idle)') continue;
  const key = `${functionName || '(anonymous)'} ${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(src|bench)\//, '$1/')}:${lineNumber + 1}`;
  fnSelf.set(key, (fnSelf.get(key) ?? 0) + t);
}
console.log(`\ntop ${top} functions by self time (% of busy time):`);
for (const [k, t] of [...fnSelf].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(t, busy)}  ${k}`);
