/**
 * Throwaway MariaDB/MySQL and PostgreSQL servers for the test suite, started
 * straight from the installed binaries (no Docker). Each server gets its own
 * temp dir, loopback port and socket, so several can run side by side.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';

const execFileAsync = promisify(execFile);

export interface ThrowawayServer {
  url: string;
  /** Human-readable server name and version, e.g. "MariaDB 10.11". */
  label: string;
  /**
   * Simulates a crash: ends the server at once, without a clean shutdown, and resolves once it
   * has exited. Clients see their connections drop. The data dir stays: {@link start} brings the
   * server back with its data (for PostgreSQL, all of it only with `crashSafe`).
   */
  crash(): Promise<void>;
  /**
   * Starts the server again after {@link crash}, with the same data, port and URL (crash recovery
   * included); resolves once it accepts connections. Does nothing while it runs.
   */
  start(): Promise<void>;
  /** Stops the server and deletes its temp dir, data included. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;
const POLL_INTERVAL_MS = 100;

const MARIADB_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/local/mysql/bin'];

// ---------------------------------------------------------------------------
// Binary discovery
// ---------------------------------------------------------------------------

/** /usr/lib/postgresql/<version>/bin directories, newest version first. */
export function postgresBinDirs(): string[] {
  const root = '/usr/lib/postgresql';
  let versions: string[];
  try {
    versions = readdirSync(root);
  } catch {
    return [];
  }
  return versions
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    .map((version) => path.join(root, version, 'bin'));
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * Returns the first of `names` found, trying each name on PATH and then in
 * `extraDirs` before moving on to the next name (so earlier names win).
 */
export function findBinary(
  names: string[],
  extraDirs: string[] = [...MARIADB_DIRS, ...postgresBinDirs()],
): string | undefined {
  const pathDirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  const dirs = [...pathDirs, ...extraDirs];
  for (const name of names) {
    for (const dir of dirs) {
      const candidate = path.join(dir, name);
      if (isExecutableFile(candidate)) return candidate;
    }
  }
  return undefined;
}

export function findMariaDbServer(): string | undefined {
  return findBinary(['mariadbd', 'mysqld'], MARIADB_DIRS);
}

interface PostgresBinaries {
  initdb: string;
  postgres: string;
  pgIsReady: string | undefined;
}

/** initdb and postgres must come from the same installation, so look them up as a pair. */
export function findPostgresBinaries(): PostgresBinaries | undefined {
  const found = findBinary(['initdb'], postgresBinDirs());
  if (!found) return undefined;
  // Follow symlinks such as /usr/local/bin/initdb to the real bin dir, where pg_isready lives.
  const initdb = realpathSync(found);
  const binDir = path.dirname(initdb);
  const postgres = path.join(binDir, 'postgres');
  if (!isExecutableFile(postgres)) return undefined;
  const sibling = path.join(binDir, 'pg_isready');
  const pgIsReady = isExecutableFile(sibling) ? sibling : findBinary(['pg_isready'], []);
  return { initdb, postgres, pgIsReady };
}

// ---------------------------------------------------------------------------
// Shared process helpers
// ---------------------------------------------------------------------------

export async function getFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not determine a free port'))));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves true if `promise` settles within `ms`, false otherwise; never holds the event loop past settling. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(resolve, ms, false)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const isRoot = () => process.getuid?.() === 0;

async function tail(files: string[], lines = 30): Promise<string> {
  const parts = await Promise.all(
    files.map(async (file) => {
      const text = await fs.readFile(file, 'utf8').catch(() => '');
      const last = text.trimEnd().split('\n').slice(-lines).join('\n');
      return last ? `--- ${path.basename(file)} ---\n${last}` : '';
    }),
  );
  return parts.filter(Boolean).join('\n') || '(logs are empty)';
}

/** Runs a setup command to completion; on failure the error carries its output. */
async function run(file: string, args: string[], options: { uid?: number; gid?: number; cwd?: string } = {}): Promise<void> {
  try {
    await execFileAsync(file, args, { ...options, maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`${path.basename(file)} failed: ${(error as Error).message}\n${stdout}\n${stderr}`.trimEnd());
  }
}

/**
 * A server's temp dir and the process running in it. dispose() stops the
 * process and deletes the dir; if Node exits first, an 'exit' handler
 * SIGKILLs the process and deletes the dir synchronously instead.
 */
class Sandbox {
  readonly dir: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private spawnError: Error | undefined;
  private disposing: Promise<void> | undefined;
  private readonly onProcessExit = () => {
    if (this.isRunning()) this.child?.kill('SIGKILL');
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      // Best effort: the killed server may still be releasing files.
    }
  };

  private constructor(dir: string) {
    this.dir = dir;
    process.on('exit', this.onProcessExit);
  }

  static async create(prefix: string): Promise<Sandbox> {
    return new Sandbox(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
  }

  /** Starts the server with stdout/stderr appended to `logFile`, so Node holds no pipes to it. */
  spawn(file: string, args: string[], opts: { logFile: string; uid?: number; gid?: number }): void {
    this.spawnError = undefined;
    const logFd = openSync(opts.logFile, 'a');
    try {
      this.child = spawn(file, args, {
        cwd: this.dir,
        stdio: ['ignore', logFd, logFd],
        ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.gid }),
      });
    } finally {
      closeSync(logFd);
    }
    const child = this.child;
    child.unref();
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('error', (error) => (this.spawnError = error));
  }

  isRunning(): boolean {
    const child = this.child;
    return !!child && !this.spawnError && child.exitCode === null && child.signalCode === null;
  }

  describeExit(): string {
    if (this.spawnError) return `could not be spawned (${this.spawnError.message})`;
    return `exited during start-up (code ${this.child?.exitCode}, signal ${this.child?.signalCode})`;
  }

  get isDisposed(): boolean {
    return this.disposing !== undefined;
  }

  /** Sends `signal` and resolves once the process has exited (SIGKILL after STOP_TIMEOUT_MS). The dir stays. */
  async kill(signal: NodeJS.Signals): Promise<void> {
    if (!this.isRunning()) return;
    this.child?.kill(signal);
    if (!(await settlesWithin(this.exited, STOP_TIMEOUT_MS))) {
      this.child?.kill('SIGKILL');
      await this.exited;
    }
  }

  dispose(stopSignal: NodeJS.Signals): Promise<void> {
    this.disposing ??= (async () => {
      await this.kill(stopSignal);
      process.off('exit', this.onProcessExit);
      await fs.rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
    })();
    return this.disposing;
  }
}

/**
 * Polls `probe` until it returns true. Gives up early if the server process
 * died, and after READY_TIMEOUT_MS; both failures include the log tail.
 */
async function waitUntilReady(
  name: string,
  sandbox: Sandbox,
  logFiles: string[],
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!sandbox.isRunning()) {
      throw new Error(`${name} ${sandbox.describeExit()}. Log tail:\n${await tail(logFiles)}`);
    }
    if (await probe()) return;
    await sleep(POLL_INTERVAL_MS);
  }
  throw new Error(`${name} did not accept connections within ${READY_TIMEOUT_MS / 1000} s. Log tail:\n${await tail(logFiles)}`);
}

/** Starts a crashed server again with `launch`, which spawns it and waits until it is ready. */
async function restart(sandbox: Sandbox, name: string, launch: () => Promise<void>): Promise<void> {
  if (sandbox.isDisposed) throw new Error(`${name} was stopped: its data is gone, it cannot start again`);
  if (sandbox.isRunning()) return;
  await launch();
}

// ---------------------------------------------------------------------------
// MariaDB / MySQL
// ---------------------------------------------------------------------------

interface MySqlFlavour {
  mariadb: boolean;
  label: string;
}

function detectMySqlFlavour(server: string): MySqlFlavour {
  const { stdout = '' } = spawnSync(server, ['--version'], { encoding: 'utf8' });
  const mariadb = /mariadb/i.test(stdout);
  const version = /Ver\s+(\d+\.\d+)/.exec(stdout)?.[1] ?? '?';
  return { mariadb, label: `${mariadb ? 'MariaDB' : 'MySQL'} ${version}` };
}

async function initMySqlDataDir(server: string, flavour: MySqlFlavour, dir: string): Promise<void> {
  // A private tmpdir: concurrent bootstraps sharing /tmp have failed with
  // "Unknown table 'mysql.tmp_user_sys'".
  const common = [`--datadir=${path.join(dir, 'data')}`, `--tmpdir=${dir}`, ...(isRoot() ? ['--user=root'] : [])];
  if (!flavour.mariadb) {
    await run(server, ['--no-defaults', '--initialize-insecure', ...common]);
    return;
  }
  const installDb = findBinary(['mariadb-install-db', 'mysql_install_db'], [
    path.dirname(server),
    '/usr/bin',
    '/usr/local/mysql/scripts',
  ]);
  if (!installDb) throw new Error(`found ${server} but no mariadb-install-db / mysql_install_db next to it`);
  await run(installDb, [
    '--no-defaults',
    // Tarball installs (/usr/local/mysql) cannot find their files without it.
    `--basedir=${path.dirname(path.dirname(server))}`,
    '--auth-root-authentication-method=normal',
    '--skip-test-db',
    '--skip-name-resolve',
    ...common,
  ]);
}

function mySqlServerArgs(flavour: MySqlFlavour, dir: string, port: number): string[] {
  return [
    '--no-defaults',
    `--datadir=${path.join(dir, 'data')}`,
    `--tmpdir=${dir}`,
    `--socket=${path.join(dir, 'mysqld.sock')}`,
    `--pid-file=${path.join(dir, 'mysqld.pid')}`,
    `--port=${port}`,
    '--bind-address=127.0.0.1',
    // With name resolution off, TCP logins match 'root'@'127.0.0.1', never 'root'@'localhost'.
    '--skip-name-resolve',
    '--innodb-buffer-pool-size=256M',
    '--innodb-flush-log-at-trx-commit=2',
    '--skip-log-bin',
    '--innodb-lock-wait-timeout=20',
    '--max-connections=500',
    '--character-set-server=utf8mb4',
    '--collation-server=utf8mb4_unicode_ci',
    `--log-error=${path.join(dir, 'error.log')}`,
    // MySQL 8's X plugin listens on 33060 by default, which collides between instances.
    ...(flavour.mariadb ? [] : ['--mysqlx=OFF']),
    ...(isRoot() ? ['--user=root'] : []),
  ];
}

async function canConnect(options: mysql.ConnectionOptions): Promise<boolean> {
  try {
    const connection = await mysql.createConnection({ ...options, connectTimeout: 2_000 });
    await connection.end();
    return true;
  } catch {
    return false;
  }
}

/**
 * root@localhost (socket) always exists after initialisation, but TCP logins
 * need 'root'@'127.0.0.1'. MariaDB's installer creates it; MySQL 8 does not.
 */
async function ensureTcpRoot(socketPath: string, port: number): Promise<void> {
  const tcp = { host: '127.0.0.1', port, user: 'root' };
  if (await canConnect(tcp)) return;
  const admin = await mysql.createConnection({ socketPath, user: 'root' });
  try {
    await admin.query(`CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''`);
    await admin.query(`GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION`);
  } finally {
    await admin.end();
  }
  // Surface the real connection error if it still fails.
  await (await mysql.createConnection({ ...tcp, connectTimeout: 5_000 })).end();
}

export async function startMariaDb(): Promise<ThrowawayServer> {
  const server = findMariaDbServer();
  if (!server) throw new Error('no mariadbd or mysqld found on PATH or in ' + MARIADB_DIRS.join(', '));
  const flavour = detectMySqlFlavour(server);
  const sandbox = await Sandbox.create('mariadb-');
  const stop = () => sandbox.dispose('SIGTERM');
  try {
    await initMySqlDataDir(server, flavour, sandbox.dir);
    const port = await getFreePort();
    // Most output goes to --log-error; stdout.log catches what is printed before it is opened.
    const stdoutLog = path.join(sandbox.dir, 'stdout.log');
    const socketPath = path.join(sandbox.dir, 'mysqld.sock');
    const logFiles = [path.join(sandbox.dir, 'error.log'), stdoutLog];
    const launch = async () => {
      sandbox.spawn(server, mySqlServerArgs(flavour, sandbox.dir, port), { logFile: stdoutLog });
      await waitUntilReady(flavour.label, sandbox, logFiles, () => canConnect({ socketPath, user: 'root' }));
    };
    await launch();
    await ensureTcpRoot(socketPath, port);
    return {
      url: `mysql://root@127.0.0.1:${port}/`,
      label: flavour.label,
      // mysqld has no immediate-shutdown signal: SIGKILL it. InnoDB recovers at the next start,
      // losing no commit: innodb_flush_log_at_trx_commit=2 writes the log at each one.
      crash: () => sandbox.kill('SIGKILL'),
      start: () => restart(sandbox, flavour.label, launch),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

interface RunAs {
  uid: number;
  gid: number;
}

/** PostgreSQL refuses to run as root, so root hands it to `nobody`. */
function unprivilegedUser(): RunAs | undefined {
  if (!isRoot()) return undefined;
  const id = (flag: string) => {
    const { stdout = '', status } = spawnSync('id', [flag, 'nobody'], { encoding: 'utf8' });
    const value = Number.parseInt(stdout.trim(), 10);
    if (status !== 0 || Number.isNaN(value)) throw new Error('running as root but could not look up user "nobody" for PostgreSQL');
    return value;
  };
  return { uid: id('-u'), gid: id('-g') };
}

function postgresLabel(postgres: string): string {
  const { stdout = '' } = spawnSync(postgres, ['--version'], { encoding: 'utf8' });
  return `PostgreSQL ${/(\d+(?:\.\d+)?)/.exec(stdout)?.[1] ?? '?'}`;
}

function pgIsReadyProbe(pgIsReady: string, port: number): () => Promise<boolean> {
  return async () => {
    try {
      await execFileAsync(pgIsReady, ['-h', '127.0.0.1', '-p', String(port), '-t', '1']);
      return true;
    } catch {
      return false;
    }
  };
}

/**
 * Fallback without pg_isready: the port is open and the log says startup finished, after byte
 * `logStart` (where this start's output begins: the log of an earlier start says so too).
 */
function logAndPortProbe(logFile: string, port: number, logStart: number): () => Promise<boolean> {
  return async () => {
    const log = (await fs.readFile(logFile).catch(() => Buffer.alloc(0))).subarray(logStart).toString('utf8');
    if (!log.includes('database system is ready to accept connections')) return false;
    return new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
  };
}

export interface PostgresOptions {
  /**
   * Acknowledge a commit only once its WAL is written out (synchronous_commit on), so that
   * {@link ThrowawayServer.crash} loses no acknowledged commit. Off by default, for speed: a crash
   * then loses the commits of its last moments, whose WAL was still in the server's memory.
   */
  readonly crashSafe?: boolean;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<ThrowawayServer> {
  const bins = findPostgresBinaries();
  if (!bins) throw new Error('no initdb/postgres found on PATH or in /usr/lib/postgresql/*/bin');
  const runAs = unprivilegedUser();
  const label = postgresLabel(bins.postgres);
  const sandbox = await Sandbox.create('postgres-');
  // SIGINT is PostgreSQL's "fast" shutdown: roll back open sessions and exit.
  const stop = () => sandbox.dispose('SIGINT');
  try {
    const dataDir = path.join(sandbox.dir, 'data');
    const logFile = path.join(sandbox.dir, 'postgres.log');
    await fs.chmod(sandbox.dir, 0o700);
    if (runAs) await fs.chown(sandbox.dir, runAs.uid, runAs.gid);
    const initdbArgs = ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'];
    await run(bins.initdb, initdbArgs, { cwd: sandbox.dir, ...runAs });
    const port = await getFreePort();
    const launch = async () => {
      const logStart = (await fs.stat(logFile).catch(() => undefined))?.size ?? 0;
      const probe = bins.pgIsReady ? pgIsReadyProbe(bins.pgIsReady, port) : logAndPortProbe(logFile, port, logStart);
      sandbox.spawn(bins.postgres, postgresServerArgs(dataDir, sandbox.dir, port, options), { logFile, ...runAs });
      await waitUntilReady(label, sandbox, [logFile], probe);
    };
    await launch();
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      label,
      // SIGQUIT is the "immediate" shutdown: every backend quits at once, no checkpoint, crash
      // recovery at the next start. Not SIGKILL: the postmaster's orphaned backends would keep
      // its shared memory, and the restart would refuse to run until they had gone.
      crash: () => sandbox.kill('SIGQUIT'),
      start: () => restart(sandbox, label, launch),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function postgresServerArgs(dataDir: string, socketDir: string, port: number, options: PostgresOptions): string[] {
  const settings = {
    // A crash of the server process alone loses nothing that was written: fsync can stay off.
    fsync: 'off',
    synchronous_commit: options.crashSafe ? 'on' : 'off',
    full_page_writes: 'off',
    max_connections: '300',
    shared_buffers: '128MB',
  };
  return [
    '-D', dataDir,
    '-p', String(port),
    '-h', '127.0.0.1',
    '-k', socketDir,
    ...Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
  ];
}
