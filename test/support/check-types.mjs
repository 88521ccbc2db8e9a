/**
 * Type-checks a host program against the installed package, in a process of its own:
 *   node check-types.mjs '<json: { cwd, files, module, moduleResolution, typeRoots }>'
 * Prints the diagnostics, one a line, and nothing when there are none.
 *
 * As `tsc --noEmit --strict --skipLibCheck false` would report them for the host's own files and
 * for the package's declarations (node_modules/reservation-engine/), which are checked in full:
 * only other packages' declarations (@types/node, kysely, the drivers…) go unchecked here. Their
 * errors are theirs, and checking them all costs some 8 s of CPU a program.
 */
import { createRequire } from 'node:module';
import path from 'node:path';

const request = JSON.parse(process.argv[2]);
const ts = createRequire(import.meta.url)('typescript');
const program = ts.createProgram(
  request.files.map((file) => path.resolve(request.cwd, file)),
  {
    noEmit: true,
    strict: true,
    skipLibCheck: false,
    target: ts.ScriptTarget.ES2022,
    module: request.module === 'node16' ? ts.ModuleKind.Node16 : ts.ModuleKind.ESNext,
    moduleResolution: request.moduleResolution === 'node16' ? ts.ModuleResolutionKind.Node16 : ts.ModuleResolutionKind.Bundler,
    types: ['node'],
    typeRoots: request.typeRoots,
  },
);
const ours = (file) => !file.fileName.includes('/node_modules/') || file.fileName.includes('/node_modules/reservation-engine/');
const checked = program.getSourceFiles().filter(ours);
const diagnostics = [
  ...program.getOptionsDiagnostics(),
  ...program.getGlobalDiagnostics(),
  ...checked.flatMap((file) => [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]),
];
const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => request.cwd, getNewLine: () => '\n' };
process.stdout.write(ts.formatDiagnostics(diagnostics, host));
// Which files were checked, for the test to see that the package's declarations were among them.
process.stderr.write(JSON.stringify(checked.map((file) => path.relative(request.cwd, file.fileName))));
