/**
 * A TypeScript script for child processes, compiled once (esbuild, as tsx does) rather than at
 * every start: `node --import tsx script.ts` compiles the script and all of src/ again in each
 * process, about a second of CPU. The result is one ES module in the run's scratch directory;
 * packages stay imports, resolved from the project's node_modules as before.
 */
import { mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import { scratchDir } from './shared.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const compiled = new Map<string, Promise<string>>();

/** Compiles `script` (relative to the project root) once per test worker; resolves with the path of the `.mjs` to run with plain `node`. */
export function compiledScript(script: string): Promise<string> {
  let result = compiled.get(script);
  if (!result) {
    result = (async () => {
      const dir = path.join(scratchDir(), 'compiled', `${process.pid}`);
      mkdirSync(dir, { recursive: true });
      try {
        // Bare imports (kysely, pg…) resolve from here, as from the script's own place.
        symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const outfile = path.join(dir, `${path.basename(script, '.ts')}.mjs`);
      await build({
        entryPoints: [path.join(ROOT, script)],
        outfile,
        bundle: true,
        packages: 'external',
        platform: 'node',
        format: 'esm',
        target: 'node20',
        logLevel: 'silent',
      });
      return outfile;
    })();
    compiled.set(script, result);
  }
  return result;
}
