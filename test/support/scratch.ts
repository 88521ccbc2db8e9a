/**
 * The run's scratch directory: made by test/global-setup.ts, deleted at the end of the run. It
 * holds what several test files share (see ./shared.ts) and the files that say how each of
 * those is doing: `<name>.done` once it is ready, `<name>.failed` with the reason it is not.
 * No vitest import here: global setup and the scripts it starts use this module too.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';

/** The files that say how `name` is doing. */
export const marker = (dir: string, name: string, state: 'done' | 'failed' | 'lock') => path.join(dir, `${name}.${state}`);

/** Says that `name` is ready, or why it could not be made. */
export function record(dir: string, name: string, error?: unknown): void {
  if (error === undefined) writeFileSync(marker(dir, name, 'done'), '');
  else writeFileSync(marker(dir, name, 'failed'), error instanceof Error ? (error.stack ?? error.message) : String(error));
}

/** PGlite's template data directories, as tarballs (see ./pglite.ts). */
export const PGLITE_TEMPLATES = 'pglite-templates';
export const pgliteTemplateFiles = (dir: string) => ({
  /** A new cluster, as `new PGlite('memory://')` makes it. */
  bare: path.join(dir, 'pglite-bare.tar'),
  /** The same, migrated to the latest schema with the default table prefix. */
  migrated: path.join(dir, 'pglite-migrated.tar'),
});
