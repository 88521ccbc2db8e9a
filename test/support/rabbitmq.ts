/**
 * A throwaway RabbitMQ broker for the tests, started straight from Debian's `rabbitmq-server`
 * (no Docker, no systemd): its own temp dir (database, logs, Erlang cookie), loopback AMQP and
 * distribution ports, and its own `epmd`, so that nothing outlives it. As root it runs as the
 * `rabbitmq` user. A node starts in a few seconds.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { getFreePort } from './servers.js';

const SERVER_DIRS = ['/usr/lib/rabbitmq/bin', '/usr/sbin', '/usr/local/sbin'];
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;

export interface ThrowawayBroker {
  /** `amqp://guest:guest@127.0.0.1:<port>` (guest may log in over loopback). */
  readonly url: string;
  /** e.g. "RabbitMQ 3.10.8". */
  readonly label: string;
  /** Stops the broker cleanly (clients see connection.close 320), keeping its data; resolves once it exited. */
  halt(): Promise<void>;
  /** Kills the broker at once (SIGKILL), keeping its data: clients see their sockets drop. */
  crash(): Promise<void>;
  /** Freezes the broker (SIGSTOP): its sockets stay open and it answers nothing, as a hung broker. */
  pause(): void;
  /** Lets a paused broker run again (SIGCONT). */
  resume(): void;
  /** Starts it again after {@link halt} or {@link crash}, same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops it and deletes its temp dir. */
  stop(): Promise<void>;
}

/** The `rabbitmq-server` script, or undefined when RabbitMQ is not installed. */
export function findRabbitMqServer(): string | undefined {
  // The script in /usr/lib/rabbitmq/bin runs the node as the calling user; /usr/sbin's wrapper switches users itself.
  return SERVER_DIRS.map((dir) => path.join(dir, 'rabbitmq-server')).find((file) => existsSync(file));
}

/** Why the RabbitMQ tests cannot run here, or undefined when they can. */
export function rabbitMqMissingReason(): string | undefined {
  if (findRabbitMqServer() === undefined) return 'rabbitmq-server not found (install: apt-get install rabbitmq-server)';
  if (findEpmd() === undefined) return 'epmd not found (it comes with erlang-base)';
  return undefined;
}

function findEpmd(): string | undefined {
  const candidates = ['/usr/bin/epmd', '/usr/local/bin/epmd', ...erlangBinDirs().map((dir) => path.join(dir, 'epmd'))];
  return candidates.find((file) => existsSync(file));
}

function erlangBinDirs(): string[] {
  const root = '/usr/lib/erlang';
  try {
    return readFileSync(path.join(root, 'releases/start_erl.data'), 'utf8').trim().split(/\s+/).slice(0, 1).map((version) => path.join(root, `erts-${version}`, 'bin'));
  } catch {
    return [];
  }
}

/** The `rabbitmq` user's ids when running as root (the node refuses nothing as root, but its files should not be root's). */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => spawnSync('id', [flag, 'rabbitmq'], { encoding: 'utf8' });
  const uid = id('-u');
  const gid = id('-g');
  if (uid.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.setTimeout(1000, () => done(false));
  });
}

/** Whether any process of the group `pgid` is alive: a zombie waiting to be reaped by init does not count. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  if (!existsSync('/proc/self/stat')) return true;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so split after the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') return true;
  }
  return false;
}

/** Starts a broker; resolves once it accepts AMQP connections. */
export async function startRabbitMq(): Promise<ThrowawayBroker> {
  const server = findRabbitMqServer();
  const epmd = findEpmd();
  if (!server || !epmd) throw new Error(rabbitMqMissingReason());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reservation-engine-rabbitmq-'));
  const [port, distPort, epmdPort] = [await getFreePort(), await getFreePort(), await getFreePort()];
  const user = runAs();
  for (const sub of ['mnesia', 'log']) mkdirSync(path.join(dir, sub));
  // No plugins: an empty enabled-plugins file (the management plugin alone doubles the start-up).
  writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
  if (user) for (const entry of ['', 'mnesia', 'log', 'enabled_plugins']) chownSync(path.join(dir, entry), user.uid, user.gid);
  const nodeName = `rabbit-${port}@localhost`;
  const env: NodeJS.ProcessEnv = {
    PATH: `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin:/bin`,
    HOME: dir,
    LANG: 'C.UTF-8',
    ERL_EPMD_PORT: String(epmdPort),
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq'),
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(dir, 'advanced.config'),
    RABBITMQ_CONF_ENV_FILE: path.join(dir, 'rabbitmq-env.conf'),
  };
  const logFile = path.join(dir, 'server.log');
  let epmdProcess: ChildProcess | undefined;
  let node: ChildProcess | undefined;
  let pgid: number | undefined;

  const spawnLogged = (file: string, args: string[]): ChildProcess => {
    const fd = openSync(logFile, 'a');
    try {
      // A process group of its own: the script's children (beam.smp, erl_child_setup…) are stopped with it.
      const child = spawn(file, args, { cwd: dir, env, detached: true, stdio: ['ignore', fd, fd], ...(user ?? {}) });
      child.unref();
      return child;
    } finally {
      closeSync(fd);
    }
  };

  const launch = async () => {
    epmdProcess ??= spawnLogged(epmd, ['-port', String(epmdPort), '-address', '127.0.0.1']);
    node = spawnLogged(server, []);
    pgid = node.pid;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await accepts(port))) {
      if (pgid === undefined || !groupAlive(pgid)) throw new Error(`rabbitmq-server exited during start-up:\n${tail(logFile)}`);
      if (Date.now() > deadline) throw new Error(`rabbitmq-server did not accept connections within ${READY_TIMEOUT_MS / 1000} s:\n${tail(logFile)}`);
      await sleep(100);
    }
  };

  const kill = async (signal: NodeJS.Signals) => {
    const group = pgid;
    if (group === undefined) return;
    try {
      process.kill(-group, signal);
    } catch {
      // Gone already.
    }
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (groupAlive(group)) {
      if (Date.now() > deadline) {
        try {
          process.kill(-group, 'SIGKILL');
        } catch {
          // Gone meanwhile.
        }
      }
      await sleep(50);
    }
    pgid = undefined;
  };

  const cleanUp = () => {
    for (const group of [pgid, epmdProcess?.pid]) {
      if (group === undefined) continue;
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanUp);

  try {
    await launch();
  } catch (error) {
    await kill('SIGKILL');
    process.off('exit', cleanUp);
    cleanUp();
    throw error;
  }
  const version = /RabbitMQ (\d+\.\d+\.\d+)/.exec(readFileSync(logFile, 'utf8'))?.[1];
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    label: `RabbitMQ ${version ?? '?'}`,
    // Erlang takes SIGTERM as `init:stop()`: a clean shutdown.
    halt: () => kill('SIGTERM'),
    pause: () => void (pgid !== undefined && process.kill(-pgid, 'SIGSTOP')),
    resume: () => void (pgid !== undefined && process.kill(-pgid, 'SIGCONT')),
    crash: () => kill('SIGKILL'),
    start: async () => {
      if (pgid !== undefined && groupAlive(pgid)) return;
      await launch();
    },
    stop: async () => {
      await kill('SIGTERM');
      if (epmdProcess?.pid !== undefined) {
        const epmdGroup = epmdProcess.pid;
        try {
          process.kill(-epmdGroup, 'SIGTERM');
        } catch {
          // Gone already.
        }
        while (groupAlive(epmdGroup)) await sleep(20);
      }
      process.off('exit', cleanUp);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
