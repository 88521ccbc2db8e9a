/**
 * `npx tsx scripts/galera-probe.ts`: the measurements behind FINDINGS.md. Starts a 3-node
 * cluster, migrates the engine's schema, and prints what the server and mysql2 answer to each
 * probe (errno, code, sqlState, message), as Markdown. Every statement is sent with mysql2's
 * `query()` (a text-protocol COM_QUERY), as Kysely's MysqlDialect sends it.
 */
import { Kysely, MysqlDialect } from 'kysely';
import { createPool } from 'mysql2';
import mysql from 'mysql2/promise';
import { migrateToLatest, ReservationEngine, ReservationError } from '../src/index.js';
import { startGaleraCluster } from '../test/support/galera.js';

type Conn = mysql.Connection;

function describe(error: unknown): string {
  const e = error as { errno?: number; code?: string; sqlState?: string; message?: string; fatal?: boolean };
  return `errno ${e.errno ?? '-'} ${e.code ?? '-'} sqlState ${e.sqlState ?? '-'}${e.fatal ? ' fatal' : ''}: ${e.message}`;
}

async function attempt(connection: Conn, statement: string): Promise<string> {
  try {
    const [rows] = await connection.query(statement);
    const shown = Array.isArray(rows) ? JSON.stringify(rows).slice(0, 120) : `ok (affected ${(rows as { affectedRows?: number }).affectedRows})`;
    return `ok ${shown}`;
  } catch (error) {
    return describe(error);
  }
}

async function row(statement: string, connection: Conn): Promise<string> {
  return `| \`${statement}\` | ${(await attempt(connection, statement)).replaceAll('|', '\\|')} |`;
}

const out: string[] = [];
const print = (line = '') => {
  out.push(line);
  console.log(line);
};

const cluster = await startGaleraCluster({ nodes: 3, log: (line) => console.error(line) });
const connect = (node: number) => mysql.createConnection({ uri: cluster.nodes[node]!.url, timezone: 'Z' });
try {
  const setup = await connect(0);
  await setup.query('create table probe (id int primary key, v int not null) engine=InnoDB');
  await setup.query('insert into probe values (1, 0), (2, 0), (3, 0), (10, 0), (11, 0), (12, 0), (13, 0), (14, 0), (15, 0)');
  const db1 = new Kysely<any>({ dialect: new MysqlDialect({ pool: createPool({ uri: cluster.nodes[0]!.url, timezone: 'Z' }) }) });
  await migrateToLatest(db1);
  const engine1 = new ReservationEngine({ db: db1 });
  const hot = await engine1.createItem({ sku: 'HOT', name: 'hot', availableQuantity: 1_000_000 });

  // ---------------------------------------------------------------- (a) isolated node
  print('## (a) Statements on an isolated (non-primary) node');
  print();
  const before = await connect(2); // opened, and its transaction begun, before isolation
  await before.query('begin');
  await before.query('update probe set v = 42 where id = 3');
  const idle = await connect(2); // connected before isolation, idle
  const escapes = [
    { name: 'rollback and release', statements: ['rollback and release'] },
    { name: 'set autocommit = 1', statements: ['set autocommit = 1'] },
    { name: 'wsrep_dirty_reads', statements: ['set session wsrep_dirty_reads = on', 'rollback'] },
    { name: 'wsrep_on = off (needs SUPER)', statements: ['set session wsrep_on = off', 'rollback', 'set session wsrep_on = on'] },
    { name: 'changeUser (COM_CHANGE_USER)', statements: [] as string[] },
    { name: 'reset (COM_RESET_CONNECTION)', statements: [] as string[] },
  ];
  const dangling = new Map<string, Conn>();
  for (const [i, { name }] of escapes.entries()) {
    const connection = await connect(2);
    await connection.query('begin');
    await connection.query(`update probe set v = v + 1000 where id = ${10 + i}`);
    dangling.set(name, connection);
  }
  await cluster.nodes[2]!.isolate();
  print(`node3 isolated: ${(await cluster.describe()).split('\n')[2]}`);
  print();
  print('A new connection to the isolated node:');
  let fresh: Conn | undefined;
  try {
    fresh = await connect(2);
    print('connects: ok');
  } catch (error) {
    print(`connect: ${describe(error)}`);
  }
  print();
  print('| statement (connection opened before isolation, idle) | answer |');
  print('| --- | --- |');
  for (const statement of [
    'select 1',
    'do 1',
    "set @x = 1",
    'set session transaction isolation level read committed',
    'set transaction isolation level read committed',
    'begin',
    'select v from probe where id = 1',
    'select v from probe where id = 1 for update',
    'update probe set v = v + 1 where id = 1',
    'insert into probe values (9, 9)',
    'rollback',
    'commit',
    "select @@wsrep_on, @@in_transaction",
    "show status like 'wsrep_local_state_comment'",
    "select variable_value from information_schema.global_status where variable_name = 'wsrep_cluster_status'",
    'select 1 from dual',
    'call reservation_engine_reserve_or_replay(\'\', \'k\', \'h\', \'00000000-0000-7000-8000-000000000000\', 1, 1, now(3), now(3), \'{}\')',
    'kill connection_id()',
  ]) print(await row(statement, idle));
  print(`after KILL: ${await attempt(idle, 'select 1')}`);
  print();
  if (fresh) {
    print('| statement (new connection after isolation) | answer |');
    print('| --- | --- |');
    for (const statement of ['select 1', 'do 1', 'set @x = 1', 'begin', 'select v from probe where id = 1', 'rollback']) print(await row(statement, fresh));
    print();
    print('With `set session wsrep_dirty_reads = on`:');
    print(await row('set session wsrep_dirty_reads = on', fresh));
    print(await row('select v from probe where id = 1', fresh));
    print();
  }

  print('The connection whose transaction began before isolation (`begin; update probe set v = 42 where id = 3`):');
  print();
  print('| statement | answer |');
  print('| --- | --- |');
  for (const statement of ['select @@in_transaction', 'select v from probe where id = 3', 'update probe set v = 43 where id = 3', 'rollback', 'select @@in_transaction', 'commit', 'select @@in_transaction']) {
    print(await row(statement, before));
  }
  print();
  print('Ways out of the dangling transaction, each on its own connection that began `begin; update probe set v = v + 1000 where id = <10 + i>` before isolation:');
  print();
  print('| attempt | answers | @@in_transaction after |');
  print('| --- | --- | --- |');
  for (const { name, statements } of escapes) {
    const connection = dangling.get(name)!;
    const answers: string[] = [];
    for (const statement of statements) answers.push(`\`${statement}\` → ${await attempt(connection, statement)}`);
    if (name === 'reset (COM_RESET_CONNECTION)') {
      try {
        await connection.reset();
        answers.push('reset → ok');
      } catch (error) {
        answers.push(`reset → ${describe(error)}`);
      }
    }
    if (name === 'changeUser (COM_CHANGE_USER)') {
      try {
        await connection.changeUser({ user: 'engine', password: 'engine', database: 'engine' });
        answers.push('changeUser → ok');
      } catch (error) {
        answers.push(`changeUser → ${describe(error)}`);
      }
    }
    print(`| ${name} | ${answers.join('<br>').replaceAll('|', '\\|')} | ${(await attempt(connection, 'select @@in_transaction')).replaceAll('|', '\\|')} |`);
  }
  await cluster.nodes[2]!.rejoin();
  print();
  print(`After rejoin, before any further statement on those connections, node1 sees: ${await attempt(await connect(0), 'select id, v from probe where id >= 10 order by id')}`);
  for (const [i, { name }] of escapes.entries()) {
    const connection = dangling.get(name)!;
    print(`- ${name} (row ${10 + i}): in_transaction ${await attempt(connection, 'select @@in_transaction')}; \`begin\` → ${await attempt(connection, 'begin')}; \`rollback\` → ${await attempt(connection, 'rollback')}`);
  }
  print(`Then node1 sees: ${await attempt(await connect(0), 'select id, v from probe where id >= 10 order by id')}`);
  print();
  print('After rejoin (cluster Synced, size 3), same connection:');
  print();
  print('| statement | answer |');
  print('| --- | --- |');
  for (const statement of ['select @@in_transaction', 'select v from probe where id = 3', 'begin', 'select @@in_transaction', 'update probe set v = v + 100 where id = 2', 'commit']) {
    print(await row(statement, before));
  }
  const check = await connect(0);
  print(`node1 sees afterwards: ${await attempt(check, 'select id, v from probe order by id')}`);
  print();

  // ---------------------------------------------------------------- (b) conflicts
  print('## (b) Cross-node write-write conflicts');
  print();
  const a = await connect(0);
  const b = await connect(1);
  print('At COMMIT (certification failure): node1 `begin; update probe … id=1`; node2 `begin; update probe … id=1; commit`; then node1:');
  print();
  print('| step | answer |');
  print('| --- | --- |');
  print(await row('begin', a));
  print(await row('update probe set v = v + 1 where id = 1', a));
  print(await row('begin', b));
  print(await row('update probe set v = v + 10 where id = 1', b));
  print(await row('commit', b));
  print(await row('commit', a));
  print(await row('select @@in_transaction', a));
  print();
  print('Mid-transaction (brute-force abort): node1 `begin; update … id=1`; node2 autocommit `update … id=1`; then node1:');
  print();
  print('| step | answer |');
  print('| --- | --- |');
  print(await row('begin', a));
  print(await row('update probe set v = v + 1 where id = 1', a));
  print(await row('update probe set v = v + 10 where id = 1', b));
  await new Promise((r) => setTimeout(r, 300));
  print(await row('select v from probe where id = 2', a));
  print(await row('select @@in_transaction', a));
  print(await row('commit', a));
  print();
  print('BF abort while node1 waits on a row lock held by a replicated write: node1 `begin; select … for update`, node2 update, node1 update:');
  print();
  print('| step | answer |');
  print('| --- | --- |');
  print(await row('begin', a));
  print(await row('select v from probe where id = 1 for update', a));
  print(await row('update probe set v = v + 10 where id = 1', b));
  print(await row('update probe set v = v + 1 where id = 1', a));
  print(await row('rollback', a));
  print();

  // The engine's stored procedure under cross-node contention, raw through mysql2.
  print('`call reservation_engine_reserve_or_replay(…)` from 8 connections on node1 and 8 on node2 at once, one hot item, 400 calls each side:');
  print();
  const tally = new Map<string, number>();
  const note = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);
  let ok = 0;
  const workers = await Promise.all(Array.from({ length: 16 }, (_, i) => connect(i % 2)));
  let next = 0;
  await Promise.all(
    workers.map(async (connection) => {
      while (next < 800) {
        const n = next++;
        const id = `00000000-0000-7000-8000-${String(n).padStart(12, '0')}`;
        try {
          await connection.query('call reservation_engine_reserve_or_replay(?, ?, ?, ?, ?, ?, ?, ?, ?)', [
            '',
            `probe-${n}`,
            'h'.repeat(64),
            id,
            hot.id,
            1,
            new Date(Date.now() + 600_000),
            new Date(),
            JSON.stringify({ reservationId: id }),
          ]);
          ok++;
        } catch (error) {
          note(describe(error));
        }
      }
    }),
  );
  print(`- ok: ${ok}`);
  for (const [key, n] of tally) print(`- ${n} × ${key}`);
  print();
  print('Same through one Kysely per node (`engine.reserve`, 8 concurrent callers per node, 300 calls per node), errors reaching the caller:');
  print();
  const db2 = new Kysely<any>({ dialect: new MysqlDialect({ pool: createPool({ uri: cluster.nodes[1]!.url, timezone: 'Z', connectionLimit: 8 }) }) });
  const engine2 = new ReservationEngine({ db: db2 });
  const seen = new Map<string, number>();
  const mark = (error: unknown) => {
    const key = error instanceof ReservationError ? `ReservationError ${error.code}${error.cause ? ` (cause ${describe(error.cause)})` : ''}` : `RAW ${describe(error)}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  };
  let reserved = 0;
  await Promise.all(
    [engine1, engine2].flatMap((engine, node) =>
      Array.from({ length: 8 }, async (_, worker) => {
        for (let n = 0; n < 38; n++) {
          try {
            await engine.reserve({ itemId: hot.id, quantity: 1, idempotencyKey: `engine-${node}-${worker}-${n}` });
            reserved++;
          } catch (error) {
            mark(error);
          }
        }
      }),
    ),
  );
  print(`- reserved: ${reserved}`);
  for (const [key, n] of seen) print(`- ${n} × ${key}`);
  print();

  print('## (c) The engine on an isolated node');
  print();
  const db3 = new Kysely<any>({ dialect: new MysqlDialect({ pool: createPool({ uri: cluster.nodes[2]!.url, timezone: 'Z', connectionLimit: 4 }) }) });
  const engine3 = new ReservationEngine({ db: db3 });
  const mine = await engine3.reserve({ itemId: hot.id, quantity: 1, idempotencyKey: 'iso-before' });
  const openBefore = await connect(2);
  await openBefore.query('begin');
  await openBefore.query('update probe set v = v + 5000 where id = 15');
  await cluster.nodes[2]!.isolate();
  const calls: [string, () => Promise<unknown>][] = [
    ['reserve', () => engine3.reserve({ itemId: hot.id, quantity: 1, idempotencyKey: 'iso-1' })],
    ['reserve (replay of a committed key)', () => engine3.reserve({ itemId: hot.id, quantity: 1, idempotencyKey: 'iso-before' })],
    ['confirm', () => engine3.confirm(mine.reservation.id)],
    ['cancel', () => engine3.cancel(mine.reservation.id)],
    ['restock (keyed)', () => engine3.restock({ itemId: hot.id, quantity: 1, idempotencyKey: 'iso-r' })],
    ['getItem', () => engine3.getItem(hot.id)],
    ['createItem', () => engine3.createItem({ sku: 'ISO', name: 'iso', availableQuantity: 1 })],
  ];
  const { runOutboxBatch, expireBatch } = await import('../src/index.js');
  calls.push(['runOutboxBatch', () => runOutboxBatch({ db: db3, handler: () => {} })]);
  calls.push(['expireBatch', () => expireBatch({ db: db3 })]);
  print('| call | outcome |');
  print('| --- | --- |');
  for (const [name, call] of calls) {
    const started = performance.now();
    try {
      let timer: NodeJS.Timeout | undefined;
      const pending = call();
      pending.catch(() => {});
      const done = await Promise.race([pending.then(() => true), new Promise<false>((resolve) => (timer = setTimeout(resolve, 5_000, false)))]);
      clearTimeout(timer);
      print(`| ${name} | ${done ? 'ok' : 'still pending after 5 s'} (${(performance.now() - started).toFixed(0)} ms) |`);
    } catch (error) {
      const shown = error instanceof ReservationError ? `ReservationError ${error.code}; cause: ${error.cause ? describe(error.cause) : '-'}` : `**raw** ${describe(error)}`;
      print(`| ${name} | ${shown.replaceAll('|', '\\|')} (${(performance.now() - started).toFixed(0)} ms) |`);
    }
  }
  print();
  const db4 = new Kysely<any>({ dialect: new MysqlDialect({ pool: createPool({ uri: cluster.nodes[2]!.url, timezone: 'Z', connectionLimit: 4 }) }) });
  const engine4 = new ReservationEngine({ db: db4 });
  print('Then `getItem` ten times in a row on a fresh engine on node 3 (pool of 4 connections), each given 3 s:');
  print();
  for (let n = 0; n < 10; n++) {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      engine4.getItem(hot.id).then(
        () => 'ok',
        (error: unknown) => (error instanceof ReservationError ? error.code : `raw ${describe(error)}`),
      ),
      new Promise<string>((resolve) => (timer = setTimeout(resolve, 3_000, 'still pending after 3 s'))),
    ]);
    clearTimeout(timer);
    print(`- call ${n + 1}: ${outcome} (${(performance.now() - started).toFixed(0)} ms)`);
  }
  print();
  print('A connection (no SUPER) whose raw CALL failed on the isolated node, and one with an open transaction:');
  print();
  print('| statement | answer |');
  print('| --- | --- |');
  const caller = await connect(2);
  print(await row("call reservation_engine_reserve_or_replay('', 'k2', 'h', '00000000-0000-7000-8000-000000000001', 1, 1, now(3), now(3), '{}')", caller));
  for (const statement of ['select @@in_transaction', 'rollback', 'set session wsrep_dirty_reads = on', 'rollback', 'set session wsrep_dirty_reads = off', 'select @@in_transaction']) print(await row(statement, caller));
  print(await row('select @@in_transaction', openBefore));
  for (const statement of ['set session wsrep_dirty_reads = on', 'rollback', 'set session wsrep_dirty_reads = default', 'select @@in_transaction', 'select v from probe where id = 1']) print(await row(statement, openBefore));
  await cluster.nodes[2]!.rejoin();
  print();
  print(`After rejoin: ${await attempt(await connect(0), 'select v from probe where id = 15')} (row 15 was updated in the rolled-back transaction)`);
  await Promise.all([db1.destroy(), db2.destroy(), Promise.race([db3.destroy(), db4.destroy(), new Promise((r) => setTimeout(r, 2_000))])]);
  for (const c of [setup, before, idle, fresh, check, a, b, ...workers]) c?.destroy();
} finally {
  await cluster.stop();
}
