/**
 * Things several test files need and one of them makes, once per run: PGlite's template data
 * directories (made by a process that test/global-setup.ts starts, while the servers start) and
 * the packed package (made by the first test file that asks for it, the others waiting for it).
 *
 * They live in the run's scratch directory (global setup makes it and deletes it at the end).
 * `<name>.done` says one is ready; `<name>.failed` holds why it could not be made.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { inject } from 'vitest';
import { marker, record } from './scratch.js';

/** The run's scratch directory. */
export const scratchDir = (): string => inject('scratchDir');

/** Waits until `name` is ready (or throws why it is not), at most `timeoutMs`. */
export async function ready(name: string, timeoutMs = 120_000, dir = scratchDir()): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (existsSync(marker(dir, name, 'done'))) return;
    if (existsSync(marker(dir, name, 'failed'))) throw new Error(`${name} could not be made:\n${readFileSync(marker(dir, name, 'failed'), 'utf8')}`);
    if (performance.now() > deadline) throw new Error(`${name} was not ready within ${timeoutMs / 1000} s`);
    await sleep(25);
  }
}

/**
 * Makes `name` with `make` if no other test file of this run has started to (an atomic mkdir
 * decides), else waits for that one. Resolves with the directory `make` filled.
 */
export async function makeOnce(name: string, make: (out: string) => Promise<void>, timeoutMs = 180_000): Promise<string> {
  const dir = scratchDir();
  const out = path.join(dir, name);
  let mine = true;
  try {
    mkdirSync(marker(dir, name, 'lock'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    mine = false;
  }
  if (!mine) {
    await ready(name, timeoutMs, dir);
    return out;
  }
  try {
    mkdirSync(out, { recursive: true });
    await make(out);
    record(dir, name);
  } catch (error) {
    record(dir, name, error);
    throw error;
  }
  return out;
}
