/**
 * Preloaded (NODE_OPTIONS=--require …) into the short-lived processes that start PGlite: the
 * package's command and programs in test/tarball.test.ts. V8 then compiles PGlite's WebAssembly
 * with its baseline compiler only (Liftoff), and does not recompile the hot functions with its
 * optimizing one (TurboFan) in background threads: that would pay off in a long-running process,
 * but in one that lives a second or two it is 40% of the CPU it uses (measured: a `status` on a
 * PGlite directory 1.15 → 0.73 s of CPU; a first `migrate`, initdb included, 4.9 → 2.9 s).
 * It changes how fast the WebAssembly runs, not what it does.
 */
require('node:v8').setFlagsFromString('--liftoff-only');
