/**
 * Every TypeScript sample in the README and in the library's TSDoc `@example`s compiles under
 * `strict`, against the library as users import it ('reservation-engine'). The samples use a
 * few names they do not declare (`db`, `engine`, `broker`…): `snippets-env.d.ts` beside this
 * file declares them, with the types a host would have.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
// Under the project (the samples resolve kysely and @types/node from its node_modules); a
// directory of this run's own, as node_modules may be shared with another checkout.
mkdirSync(path.join(ROOT, 'node_modules/.cache'), { recursive: true });
const OUT = mkdtempSync(path.join(ROOT, 'node_modules/.cache/docs-snippets-'));

interface Snippet {
  readonly where: string;
  readonly code: string;
}

function readmeSnippets(): Snippet[] {
  const text = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  return [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => ({ where: `README.md:${text.slice(0, m.index).split('\n').length}`, code: m[1]! }));
}

function tsdocSnippets(): Snippet[] {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
  return files(path.join(ROOT, 'src')).flatMap((file) => {
    const text = readFileSync(file, 'utf8');
    return [...text.matchAll(/@example\s*\n\s*\* ```ts\n([\s\S]*?)\n\s*\* ```/g)].map((m) => ({
      where: `${path.relative(ROOT, file)}:${text.slice(0, m.index).split('\n').length}`,
      code: m[1]!.replace(/^\s*\* ?/gm, ''),
    }));
  });
}

/** A sample without imports of its own may use every export of the library, as if imported. */
const LIBRARY_IMPORT = `import { ${Object.keys(await import('../src/index.js')).join(', ')} } from 'reservation-engine';\n`;

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

it('finds the samples', () => {
  expect(readmeSnippets().length).toBeGreaterThanOrEqual(5);
  expect(tsdocSnippets().length).toBeGreaterThanOrEqual(8);
});

it('every README and TSDoc sample compiles under strict', () => {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  const snippets = [...readmeSnippets(), ...tsdocSnippets()];
  const files = snippets.map((snippet, i) => {
    const file = path.join(OUT, `snippet-${i}.ts`);
    // A sample without imports uses the library's names as if imported; every sample is a module.
    const prelude = /^\s*import\s/m.test(snippet.code) ? '' : LIBRARY_IMPORT;
    writeFileSync(file, `${prelude}${snippet.code}\nexport {};\n`);
    return file;
  });
  const program = ts.createProgram([...files, path.join(ROOT, 'test/snippets-env.d.ts')], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts'],
    types: ['node'],
    skipLibCheck: true,
    esModuleInterop: true,
    baseUrl: ROOT,
    paths: { 'reservation-engine': ['./src/index.ts'], 'reservation-engine/rabbitmq': ['./src/rabbitmq/index.ts'] },
  });
  // The samples' own diagnostics, all of them; the library's files are checked only as far as
  // the samples use them (getPreEmitDiagnostics would check all of src/ too, and throw that away).
  const problems = files
    .map((file) => program.getSourceFile(file)!)
    .flatMap((file) => [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)])
    .filter((d) => d.file && files.includes(path.normalize(d.file.fileName)))
    .map((d) => {
      const index = files.indexOf(path.normalize(d.file!.fileName));
      const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
      return `${snippets[index]!.where} (line ${line + 1} of the sample): ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
  expect(problems).toEqual([]);
}, 60_000);
