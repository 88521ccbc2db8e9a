import { type Kysely, sql } from 'kysely';
import type { SchemaNames } from '../schema/tables.js';

/**
 * @internal
 * A table is vacuumed once its dead rows exceed this many plus {@link VACUUM_SCALE_FACTOR} of its
 * live rows: PostgreSQL's `autovacuum_vacuum_threshold` and `autovacuum_vacuum_scale_factor`.
 */
export const VACUUM_THRESHOLD_ROWS = 50;
/** @internal See {@link VACUUM_THRESHOLD_ROWS}. */
export const VACUUM_SCALE_FACTOR = 0.2;
/**
 * @internal
 * A checkpoint is made once this much WAL has been written since the last one: the smallest
 * `max_wal_size` PostgreSQL accepts (two 16 MB segments).
 */
export const CHECKPOINT_WAL_BYTES = 32 * 1024 * 1024;

/** @internal What {@link maintainEmbedded} did. */
export interface EmbeddedMaintenance {
  /** Physical names of the tables vacuumed. */
  readonly vacuumed: readonly string[];
  readonly checkpointed: boolean;
}

const embedded = new WeakMap<object, Promise<boolean>>();

/**
 * @internal
 * Whether `db` talks to PGlite, whatever Kysely dialect carries it (asked once per instance):
 * PostgreSQL in a single-user backend, without autovacuum and without a checkpointer.
 */
export function isEmbeddedPostgres(db: Kysely<any>): Promise<boolean> {
  let answer = embedded.get(db);
  if (!answer) {
    answer = sql<{ pglite: boolean }>`select version() like '%PGlite%' as pglite`
      .execute(db.withoutPlugins())
      .then(({ rows }) => rows[0]?.pglite === true);
    embedded.set(db, answer);
    answer.catch(() => embedded.delete(db));
  }
  return answer;
}

/**
 * @internal
 * What autovacuum and the checkpointer do on a PostgreSQL server, which PGlite has neither of
 * (it runs PostgreSQL as one single-user backend): VACUUM (plain, not FULL) the engine's tables
 * whose dead rows passed autovacuum's default threshold, so that the space of deleted and
 * updated rows is reused; then CHECKPOINT once {@link CHECKPOINT_WAL_BYTES} of WAL have been
 * written since the last checkpoint. A single-user backend never checkpoints on its own (only
 * at shutdown), so without it every write stays in `pg_wal` — in memory with `memory://` —
 * for the life of the process.
 *
 * `db` is the host's Kysely instance, outside any transaction (VACUUM cannot run in one).
 */
export async function maintainEmbedded(host: Kysely<any>, names: SchemaNames): Promise<EmbeddedMaintenance> {
  const db = host.withoutPlugins();
  const tables = (['items', 'reservations', 'idempotency_requests', 'restock_requests', 'outbox'] as const).map((t) => names.table(t));
  // Statistics reach the shared counters at most once a second; this flushes ours when the
  // statement ends, so the next one reads the deletes just made.
  await sql`select pg_stat_force_next_flush()`.execute(db);
  const { rows } = await sql<{ relname: string; live: string | number; dead: string | number }>`
    select relname, n_live_tup as live, n_dead_tup as dead from pg_stat_user_tables
    where relid in (select to_regclass(t) from unnest(${tables}::text[]) as t)`.execute(db);
  const vacuumed = rows
    .filter((r) => Number(r.dead) > VACUUM_THRESHOLD_ROWS + VACUUM_SCALE_FACTOR * Number(r.live))
    .map((r) => r.relname)
    .sort();
  if (vacuumed.length > 0) await sql`vacuum ${sql.join(vacuumed.map((t) => sql.id(t)))}`.execute(db);
  const { rows: wal } = await sql<{ bytes: string | number }>`
    select pg_current_wal_insert_lsn() - redo_lsn as bytes from pg_control_checkpoint()`.execute(db);
  const checkpointed = Number(wal[0]?.bytes ?? 0) >= CHECKPOINT_WAL_BYTES;
  if (checkpointed) await sql`checkpoint`.execute(db);
  return { vacuumed, checkpointed };
}
