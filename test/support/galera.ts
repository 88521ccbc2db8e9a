/**
 * A throwaway MariaDB Galera cluster on loopback, for the Galera scenarios and `npm run galera`:
 * N nodes, each a mariadbd with its own data dir, client port, group-communication port, IST
 * port and SST port, all under one temp dir, all picked free at run time. Started from the
 * installed binaries (Debian: `apt-get install mariadb-server galera-4 rsync`), no Docker.
 *
 * The first node bootstraps the cluster (`--wsrep-new-cluster`) from a fresh data dir; the others
 * start empty and receive a full copy by rsync SST, one at a time. Every mariadbd runs as the
 * `mysql` user (`--user=mysql`: rsync SST refuses root), so the temp dir belongs to it.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import { findBinary, findMariaDbServer, getFreePort } from './servers.js';

const execFileAsync = promisify(execFile);

const PROVIDER_PATHS = ['/usr/lib/galera/libgalera_smm.so', '/usr/lib/galera-4/libgalera_smm.so', '/usr/lib64/galera-4/libgalera_smm.so', '/usr/lib64/galera/libgalera_smm.so'];
/** The database and user every node serves: DDL and grants replicate, so one CREATE suffices. */
const DATABASE = 'engine';
const USER = 'engine';
const PASSWORD = 'engine';
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 30_000;
const POLL_MS = 200;

export interface GaleraBinaries {
  readonly server: string;
  readonly provider: string;
  readonly installDb: string;
  readonly rsync: string;
  /** e.g. "MariaDB 10.11.19, Galera 26.4.x" once started; "MariaDB 10.11" before. */
  readonly label: string;
}

/** The binaries a cluster needs, or `undefined` (with {@link missingGalera} saying why) when one is missing. */
export function findGalera(): GaleraBinaries | undefined {
  const server = findMariaDbServer();
  const provider = PROVIDER_PATHS.find(isReadable);
  const installDb = server && findBinary(['mariadb-install-db', 'mysql_install_db'], [path.dirname(server), '/usr/bin']);
  const rsync = findBinary(['rsync'], ['/usr/bin']);
  const sst = findBinary(['wsrep_sst_rsync'], ['/usr/bin']);
  if (!server || !provider || !installDb || !rsync || !sst) return undefined;
  const { stdout = '' } = spawnSync(server, ['--version'], { encoding: 'utf8' });
  if (!/mariadb/i.test(stdout)) return undefined;
  return { server, provider, installDb, rsync, label: `MariaDB ${/Ver\s+(\d+\.\d+\.\d+)/.exec(stdout)?.[1] ?? '?'}` };
}

/** Why {@link findGalera} found nothing, for a test's skip message. */
export function missingGalera(): string {
  const missing = [
    findMariaDbServer() ? undefined : 'mariadbd',
    PROVIDER_PATHS.some(isReadable) ? undefined : `libgalera_smm.so (looked in ${PROVIDER_PATHS.join(', ')})`,
    findBinary(['mariadb-install-db', 'mysql_install_db'], ['/usr/bin']) ? undefined : 'mariadb-install-db',
    findBinary(['rsync'], ['/usr/bin']) ? undefined : 'rsync',
    findBinary(['wsrep_sst_rsync'], ['/usr/bin']) ? undefined : 'wsrep_sst_rsync',
  ].filter(Boolean);
  return missing.length ? `missing ${missing.join(', ')} (Debian: apt-get install mariadb-server galera-4 rsync)` : 'the server is not MariaDB';
}

function isReadable(file: string): boolean {
  try {
    accessSync(file, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

export interface GaleraNode {
  /** 1-based, as in the node's name `node<n>`. */
  readonly index: number;
  /** `mysql://engine:engine@127.0.0.1:<port>/engine`: for mysql2, add `timezone: 'Z'`. */
  readonly url: string;
  readonly port: number;
  /** Cuts the node off the group (`gmcast.isolate=1`); resolves once it reports a non-primary component. */
  isolate(): Promise<void>;
  /** Undoes {@link isolate}; resolves once the whole cluster has all its nodes again and this one is Synced. */
  rejoin(): Promise<void>;
  /** SIGKILLs the node; resolves once it has exited and the others have a primary component without it. */
  crash(): Promise<void>;
  /** Starts a crashed node again (IST, or SST if needed); resolves once it is Synced. Does nothing while it runs. */
  start(): Promise<void>;
  /** Where its error log is, for a failing test to print. */
  readonly logFile: string;
}

export interface GaleraCluster {
  readonly nodes: readonly GaleraNode[];
  /** Temp dir holding every node's data and logs (deleted by {@link stop}). */
  readonly dir: string;
  readonly label: string;
  /** One line per node: size, status and state as the node reports them. */
  describe(): Promise<string>;
  /** Stops every node and deletes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface GaleraOptions {
  /** @defaultValue 3 */
  readonly nodes?: number;
  /** Written to as nodes start and join. @defaultValue silent */
  readonly log?: (line: string) => void;
}

interface NodePorts {
  readonly client: number;
  readonly gmcast: number;
  readonly ist: number;
  readonly sst: number;
}

/** Picks `count` distinct free loopback ports. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await getFreePort());
  return [...ports];
}

function mysqlIds(): { uid: number; gid: number } {
  const id = (flag: string) => Number.parseInt(spawnSync('id', [flag, 'mysql'], { encoding: 'utf8' }).stdout?.trim() ?? '', 10);
  const uid = id('-u');
  const gid = id('-g');
  if (Number.isNaN(uid) || Number.isNaN(gid)) throw new Error('no "mysql" user: rsync SST needs mariadbd to run as one (Debian\'s mariadb-server creates it)');
  return { uid, gid };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function tail(file: string, lines = 40): Promise<string> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n') || '(log is empty)';
}

/** One mariadbd of the cluster: its dirs, ports and process. */
class NodeProcess {
  readonly dir: string;
  readonly logFile: string;
  readonly socket: string;
  child: ChildProcess | undefined;
  exited: Promise<void> = Promise.resolve();

  constructor(
    readonly index: number,
    root: string,
    readonly ports: NodePorts,
  ) {
    this.dir = path.join(root, `node${index}`);
    this.logFile = path.join(this.dir, 'error.log');
    this.socket = path.join(this.dir, 'mysqld.sock');
  }

  get dataDir(): string {
    return path.join(this.dir, 'data');
  }

  isRunning(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  args(bins: GaleraBinaries, clusterAddress: string, bootstrap: boolean): string[] {
    const providerOptions = [
      `gmcast.listen_addr=tcp://127.0.0.1:${this.ports.gmcast}`,
      `ist.recv_addr=127.0.0.1:${this.ports.ist}`,
      'gcache.size=128M',
      // Loopback: notice a lost node in seconds rather than the WAN-friendly defaults.
      'evs.suspect_timeout=PT3S',
      'evs.inactive_timeout=PT6S',
      'evs.install_timeout=PT4S',
      'evs.keepalive_period=PT0.5S',
      'evs.inactive_check_period=PT0.5S',
      'gmcast.peer_timeout=PT3S',
      'pc.wait_prim_timeout=PT30S',
    ].join(';');
    return [
      '--no-defaults',
      `--basedir=/usr`,
      `--datadir=${this.dataDir}`,
      `--tmpdir=${this.dir}`,
      `--socket=${this.socket}`,
      `--pid-file=${path.join(this.dir, 'mysqld.pid')}`,
      `--port=${this.ports.client}`,
      '--bind-address=127.0.0.1',
      '--skip-name-resolve',
      '--user=mysql',
      `--log-error=${this.logFile}`,
      '--innodb-buffer-pool-size=128M',
      '--innodb-log-file-size=64M',
      '--innodb-flush-log-at-trx-commit=1',
      '--innodb-autoinc-lock-mode=2',
      '--innodb-lock-wait-timeout=20',
      '--binlog-format=ROW',
      '--default-storage-engine=InnoDB',
      '--max-connections=400',
      '--character-set-server=utf8mb4',
      '--collation-server=utf8mb4_unicode_ci',
      '--wsrep-on=ON',
      `--wsrep-provider=${bins.provider}`,
      `--wsrep-cluster-address=${clusterAddress}`,
      '--wsrep-cluster-name=reservation-engine-test',
      `--wsrep-node-name=node${this.index}`,
      `--wsrep-node-address=127.0.0.1:${this.ports.gmcast}`,
      `--wsrep-node-incoming-address=127.0.0.1:${this.ports.client}`,
      `--wsrep-sst-receive-address=127.0.0.1:${this.ports.sst}`,
      '--wsrep-sst-method=rsync',
      '--wsrep-slave-threads=2',
      `--wsrep-provider-options=${providerOptions}`,
      ...(bootstrap ? ['--wsrep-new-cluster'] : []),
    ];
  }

  spawn(bins: GaleraBinaries, clusterAddress: string, bootstrap: boolean): void {
    const out = openSync(path.join(this.dir, 'stdout.log'), 'a');
    try {
      // mariadbd starts as root and switches to mysql itself (--user); the SST scripts it forks run as mysql.
      // PATH must reach rsync, wsrep_sst_rsync, ss/lsof: the SST script looks for them there.
      this.child = spawn(bins.server, this.args(bins, clusterAddress, bootstrap), {
        cwd: this.dir,
        stdio: ['ignore', out, out],
        // A process group of its own: a terminal's Ctrl-C reaches the script, which stops the nodes in order.
        detached: true,
        env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin:/sbin:/bin` },
      });
    } finally {
      closeSync(out);
    }
    const child = this.child;
    child.unref();
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('error', () => {});
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    if (!this.isRunning()) return;
    this.child?.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([this.exited.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS, true)))]);
    clearTimeout(timer);
    if (timedOut) {
      this.child?.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Runs `sql` as root over the socket (root's socket login needs no password). */
  async query<T = Record<string, unknown>>(sql: string): Promise<T[]> {
    const connection = await mysql.createConnection({ socketPath: this.socket, user: 'root', connectTimeout: 3_000 });
    try {
      const [rows] = await connection.query(sql);
      return rows as T[];
    } finally {
      connection.destroy();
    }
  }

  async status(): Promise<{ size: number; status: string; state: string; ready: string } | undefined> {
    try {
      const rows = await this.query<{ Variable_name: string; Value: string }>(
        "show global status where Variable_name in ('wsrep_cluster_size','wsrep_cluster_status','wsrep_local_state_comment','wsrep_ready')",
      );
      const value = (name: string) => rows.find((r) => r.Variable_name.toLowerCase() === name)?.Value ?? '';
      return { size: Number(value('wsrep_cluster_size')), status: value('wsrep_cluster_status'), state: value('wsrep_local_state_comment'), ready: value('wsrep_ready') };
    } catch {
      return undefined;
    }
  }

  /** Polls until `done(status)`; fails early if the process exits, with the log tail. */
  async waitFor(what: string, done: (s: NonNullable<Awaited<ReturnType<NodeProcess['status']>>>) => boolean, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      if (!this.isRunning()) throw new Error(`node${this.index} exited while waiting until ${what} (code ${this.child?.exitCode}, signal ${this.child?.signalCode}). Log tail:\n${await tail(this.logFile)}`);
      const s = await this.status();
      last = s;
      if (s && done(s)) return;
      await sleep(POLL_MS);
    }
    throw new Error(`node${this.index}: not ${what} within ${timeoutMs / 1000} s (last status ${JSON.stringify(last)}). Log tail:\n${await tail(this.logFile)}`);
  }
}

/**
 * Starts an N-node Galera cluster on loopback and resolves once every node is Synced and the
 * database `engine` exists, usable as `engine`/`engine` from 127.0.0.1.
 *
 * @example
 * ```ts
 * const cluster = await startGaleraCluster({ nodes: 3 });
 * try { … cluster.nodes[2].isolate() … } finally { await cluster.stop(); }
 * ```
 */
export async function startGaleraCluster(options: GaleraOptions = {}): Promise<GaleraCluster> {
  const bins = findGalera();
  if (!bins) throw new Error(`cannot start a Galera cluster: ${missingGalera()}`);
  const count = options.nodes ?? 3;
  const log = options.log ?? (() => {});
  const owner = mysqlIds();
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'galera-'));
  const ports = await freePorts(count * 4);
  const processes = Array.from({ length: count }, (_, i) => new NodeProcess(i + 1, root, { client: ports[i * 4]!, gmcast: ports[i * 4 + 1]!, ist: ports[i * 4 + 2]!, sst: ports[i * 4 + 3]! }));
  const clusterAddress = `gcomm://${processes.map((p) => `127.0.0.1:${p.ports.gmcast}`).join(',')}`;

  let stopping: Promise<void> | undefined;
  const onExit = () => {
    for (const p of processes) if (p.isRunning()) p.child?.kill('SIGKILL');
    try {
      rmSync(root, { recursive: true, force: true });
    } catch {
      // Best effort: a killed server may still hold files.
    }
  };
  process.on('exit', onExit);
  const stop = () =>
    (stopping ??= (async () => {
      await Promise.all(processes.map((p) => p.kill('SIGTERM')));
      process.off('exit', onExit);
      await fs.rm(root, { recursive: true, force: true, maxRetries: 3 });
    })());

  const primaryOthers = async (except: NodeProcess, size: number) => {
    for (const other of processes) {
      if (other === except || !other.isRunning()) continue;
      await other.waitFor(`in a primary component of ${size}`, (s) => s.status === 'Primary' && s.size === size && s.state === 'Synced');
    }
  };

  try {
    for (const p of processes) await fs.mkdir(p.dataDir, { recursive: true });
    await chownTree(root, owner.uid, owner.gid);
    // Only the bootstrap node is initialised; the others get its data by SST.
    const bootstrap = processes[0]!;
    await execFileAsync(bins.installDb, [
      '--no-defaults',
      '--basedir=/usr',
      `--datadir=${bootstrap.dataDir}`,
      `--tmpdir=${bootstrap.dir}`,
      '--user=mysql',
      '--auth-root-authentication-method=socket',
      '--skip-test-db',
      '--skip-name-resolve',
    ]).catch((error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`mariadb-install-db failed: ${error.message}\n${error.stdout ?? ''}\n${error.stderr ?? ''}`);
    });

    for (const [i, p] of processes.entries()) {
      log(`starting node${p.index} (port ${p.ports.client})${i === 0 ? ', bootstrapping' : ', joining by SST'}`);
      p.spawn(bins, clusterAddress, i === 0);
      await p.waitFor(`Synced in a primary component of ${i + 1}`, (s) => s.status === 'Primary' && s.state === 'Synced' && s.size === i + 1);
      if (i === 0) {
        await p.query(`create database if not exists \`${DATABASE}\``);
        await p.query(`create user if not exists '${USER}'@'127.0.0.1' identified by '${PASSWORD}'`);
        // An ordinary application user: its own database only (isolate/rejoin go through root's socket).
        await p.query(`grant all privileges on \`${DATABASE}\`.* to '${USER}'@'127.0.0.1'`);
      }
    }

    const version = (await bootstrap.query<{ v: string }>("select concat(@@version, ', Galera ', (select variable_value from information_schema.global_status where variable_name = 'wsrep_provider_version')) as v"))[0]?.v;
    const nodes = processes.map(
      (p): GaleraNode => ({
        index: p.index,
        port: p.ports.client,
        url: `mysql://${USER}:${PASSWORD}@127.0.0.1:${p.ports.client}/${DATABASE}`,
        logFile: p.logFile,
        async isolate() {
          await p.query("set global wsrep_provider_options = 'gmcast.isolate=1'");
          await p.waitFor('non-primary', (s) => s.status !== 'Primary', 30_000);
          await primaryOthers(p, processes.filter((q) => q.isRunning()).length - 1);
        },
        async rejoin() {
          await p.query("set global wsrep_provider_options = 'gmcast.isolate=0'");
          const running = processes.filter((q) => q.isRunning()).length;
          for (const q of processes) if (q.isRunning()) await q.waitFor(`Synced in a primary component of ${running}`, (s) => s.status === 'Primary' && s.state === 'Synced' && s.size === running);
        },
        async crash() {
          await p.kill('SIGKILL');
          await primaryOthers(p, processes.filter((q) => q.isRunning()).length);
        },
        async start() {
          if (p.isRunning()) return;
          if (stopping) throw new Error('the cluster was stopped');
          p.spawn(bins, clusterAddress, false);
          const running = processes.filter((q) => q.isRunning()).length;
          for (const q of processes) if (q.isRunning()) await q.waitFor(`Synced in a primary component of ${running}`, (s) => s.status === 'Primary' && s.state === 'Synced' && s.size === running);
        },
      }),
    );
    return {
      nodes,
      dir: root,
      label: version ? `MariaDB ${version}` : bins.label,
      async describe() {
        const lines = await Promise.all(processes.map(async (p) => `node${p.index} :${p.ports.client} ${p.isRunning() ? JSON.stringify(await p.status()) : 'not running'}`));
        return lines.join('\n');
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await fs.chown(dir, uid, gid);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await chownTree(full, uid, gid);
    else await fs.chown(full, uid, gid);
  }
}
