/**
 * PGlite for the tests, without paying for initdb and the migrations in every test file.
 *
 * Starting PGlite in memory runs initdb: about 4.5 s of CPU. So a process that
 * test/global-setup.ts starts (./make-pglite-templates.ts) does it once per run and saves two
 * data directories as tarballs: a new cluster (what `new PGlite()` gives) and the same one
 * migrated. A test file's PGlite starts from one of them (`loadDataDir`: under 1 s).
 *
 * Test files run one after another in the same worker process (isolate: false in
 * vitest.config.ts), so a file's migrated PGlite can serve the next file too: at teardown it is
 * emptied (DISCARD ALL, TRUNCATE … RESTART IDENTITY) and kept only if it is then exactly as the
 * template was: same schema objects, settings, roles, sequences and rows. A file that changed
 * anything else (created tables, dropped a routine, left a transaction open) costs a fresh one.
 */
import { readFile } from 'node:fs/promises';
import type { PGlite } from '@electric-sql/pglite';
import { PGLITE_TEMPLATES, pgliteTemplateFiles } from './scratch.js';
import { ready, scratchDir } from './shared.js';

const tarballs = new Map<string, Promise<Blob>>();
const readTarball = (file: string) => {
  let blob = tarballs.get(file);
  if (!blob) tarballs.set(file, (blob = readFile(file).then((bytes) => new Blob([bytes]))));
  return blob;
};

async function start(template: 'bare' | 'migrated'): Promise<PGlite> {
  const dir = scratchDir();
  await ready(PGLITE_TEMPLATES, 120_000, dir);
  const { PGlite } = await import('@electric-sql/pglite');
  return PGlite.create({ loadDataDir: await readTarball(pgliteTemplateFiles(dir)[template]) });
}

/** A new PGlite cluster in memory: the same as `new PGlite('memory://')`, faster. */
export function newPGlite(): Promise<PGlite> {
  return start('bare');
}

/** Migrated PGlites returned by {@link releaseMigratedPGlite}, pristine again, for the next file of this worker. */
const idle: PGlite[] = [];
/** What a pristine migrated PGlite looks like (see {@link snapshot}); taken from the first one this worker starts. */
let pristine: Promise<Snapshot> | undefined;

/** A migrated PGlite with empty tables, for one test file: {@link releaseMigratedPGlite} it at the end. */
export async function acquireMigratedPGlite(): Promise<PGlite> {
  const reused = idle.pop();
  if (reused) return reused;
  const pglite = await start('migrated');
  pristine ??= snapshot(pglite);
  await pristine;
  return pglite;
}

/** Takes back a PGlite from {@link acquireMigratedPGlite}: kept for the next file if it can be made pristine again, closed otherwise. */
export async function releaseMigratedPGlite(pglite: PGlite): Promise<void> {
  if (pglite.closed) return;
  try {
    const expected = await pristine!;
    await pglite.exec('DISCARD ALL');
    const truncate = expected.emptyTables.map((table) => `"${table}"`).join(', ');
    if (truncate) await pglite.exec(`TRUNCATE ${truncate} RESTART IDENTITY`);
    const now = await snapshot(pglite);
    if (now.text === expected.text) {
      idle.push(pglite);
      return;
    }
  } catch {
    // An open transaction (DISCARD ALL refuses to run), a broken instance…: not reused.
  }
  await pglite.close().catch(() => {});
}

interface Snapshot {
  /** Everything compared, as text. */
  readonly text: string;
  /** The tables without rows (all but the migration tables): emptied between files. */
  readonly emptyTables: string[];
}

/** The state of a PGlite that a test file can change and the next one could notice. */
async function snapshot(pglite: PGlite): Promise<Snapshot> {
  const catalog = await pglite.query<{ entry: string }>(`
    select entry from (
      select 'namespace ' || nspname as entry from pg_namespace
      union all select 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || c.relpersistence::text
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
      union all select 'column ' || c.oid::regclass::text || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
          || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
        from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attnum > 0 and not a.attisdropped and n.nspname not in ('pg_catalog', 'information_schema')
      union all select 'constraint ' || conrelid::regclass::text || '.' || conname || ' ' || pg_get_constraintdef(oid) from pg_constraint
        where connamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
      union all select 'index ' || pg_get_indexdef(indexrelid) from pg_index
      union all select 'function ' || p.oid::regprocedure::text || ' ' || md5(coalesce(p.prosrc, '')) || ' ' || coalesce(array_to_string(p.proconfig, ','), '')
        from pg_proc p where p.pronamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
      union all select 'trigger ' || pg_get_triggerdef(oid) from pg_trigger where not tgisinternal
      union all select 'type ' || t.oid::regtype::text from pg_type t where t.typnamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
      union all select 'role ' || rolname || ' ' || rolsuper || ' ' || rolcanlogin from pg_roles
      union all select 'database ' || datname || ' ' || coalesce(array_to_string(datacl, ','), '') from pg_database
      union all select 'extension ' || extname || ' ' || extversion from pg_extension
      union all select 'setting ' || coalesce(setdatabase::text, '') || ' ' || coalesce(setrole::text, '') || ' ' || array_to_string(setconfig, ',') from pg_db_role_setting
      union all select 'grant ' || c.oid::regclass::text || ' ' || coalesce(array_to_string(c.relacl, ','), '') from pg_class c
        where c.relnamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) and c.relnamespace::regnamespace::text not like 'pg_toast%'
      union all select 'sequence ' || schemaname || '.' || sequencename || ' ' || coalesce(last_value::text, 'unused') from pg_sequences
      union all select 'session ' || name || '=' || setting from pg_settings where source = 'session'
      union all select 'transaction ' || (select count(*) from pg_prepared_xacts)
    ) entries order by entry`);
  const { rows: tables } = await pglite.query<{ name: string }>(
    `select c.relname as name from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') order by c.relname`,
  );
  const contents: string[] = [];
  const emptyTables: string[] = [];
  for (const { name } of tables) {
    const { rows } = await pglite.query<{ n: number; digest: string }>(
      `select count(*)::int as n, md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) as digest from "${name}" t`,
    );
    contents.push(`rows ${name} ${rows[0]!.n} ${rows[0]!.digest}`);
    if (rows[0]!.n === 0) emptyTables.push(name);
  }
  return { text: [...catalog.rows.map((row) => row.entry), ...contents].join('\n'), emptyTables };
}
