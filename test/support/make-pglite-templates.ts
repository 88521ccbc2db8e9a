/**
 * Makes PGlite's two template data directories in the run's scratch directory (argv[2]): a new
 * cluster and the same one migrated (see ./pglite.ts). test/global-setup.ts runs it in a process
 * of its own, so that it runs while the servers start and the first test files load.
 */
import { writeFile } from 'node:fs/promises';
import { PGlite } from '@electric-sql/pglite';
import { Kysely } from 'kysely';
import { migrateToLatest, PGliteDialect } from '../../src/index.js';
import { PGLITE_TEMPLATES, pgliteTemplateFiles, record } from './scratch.js';

const dir = process.argv[2]!;
const files = pgliteTemplateFiles(dir);
const pglite = await PGlite.create('memory://');
const save = async (file: string) => {
  // Checkpointed: a PGlite started from it has no WAL to replay.
  await pglite.exec('CHECKPOINT');
  await writeFile(file, new Uint8Array(await (await pglite.dumpDataDir('none')).arrayBuffer()));
};
try {
  await save(files.bare);
  await migrateToLatest(new Kysely<any>({ dialect: new PGliteDialect(pglite) }));
  await save(files.migrated);
} finally {
  await pglite.close();
}
record(dir, PGLITE_TEMPLATES);
