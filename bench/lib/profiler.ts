/**
 * `--profile`: a V8 CPU profile of the measured part of every variant (warm-up, seeding and
 * checks left out), written as <dir>/<name>.cpuprofile. Open it in Chrome DevTools or
 * summarise it with `npx tsx bench/profile-summary.ts <file>`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import path from 'node:path';

let dir: string | undefined;
let session: Session | undefined;

export function enableProfiling(directory: string): void {
  dir = directory;
  mkdirSync(dir, { recursive: true });
}

/** Runs `fn` under the CPU profiler when profiling is enabled; writes the profile as `name`. */
export async function profiled<T>(name: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (!dir || !name) return fn();
  if (!session) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 200 });
  }
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    const file = path.join(dir, `${name.replace(/[^\w.=+-]+/g, '_')}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
  }
}
