#!/usr/bin/env node
/**
 * `npm run test:faults [-- --soak] [vitest arguments…]`: vitest with vitest.faults.config.ts.
 * `--soak` (which vitest itself would reject) sets FAULTS_SOAK=1: every scenario runs about ten
 * times as many operations and faults.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const args = process.argv.slice(2);
const soak = args.includes('--soak');
const vitest = path.join(path.dirname(createRequire(import.meta.url).resolve('vitest/package.json')), 'vitest.mjs');
const child = spawn(process.execPath, [vitest, 'run', '--config', 'vitest.faults.config.ts', ...args.filter((arg) => arg !== '--soak')], {
  stdio: 'inherit',
  env: { ...process.env, ...(soak ? { FAULTS_SOAK: '1' } : {}) },
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
